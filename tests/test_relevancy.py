"""Relevancy: equals a per-layer oracle, batching-invariant, second order matches finite differences."""

from __future__ import annotations

import pytest
import torch
from clip_factory import CONFIGS, make_clip

from relevancy.attention import AttentionCapture, text_blocks, vision_blocks
from relevancy.explain import encode_text_ids, explain, relevancy_maps
from relevancy.tokens import tokenize

torch.set_num_threads(1)
PHRASES = ["a red circle and a blue square", "a small green star", "two crosses", "the yellow triangle"]


def _ids(clip, phrases, length=None):
    length = length or clip.context_length
    return torch.stack([tokenize(p, clip.context_length).padded_ids(length) for p in phrases])


def _images(clip, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = clip.image_size
    return torch.randn(n, 3, s, s, generator=g)


def oracle(clip, images, ids, score="logit", l0_img=0, l0_txt=0):
    """The reference rule, written plainly: stock encode_text, one autograd.grad per layer,
    full-matrix recursion R = R + Ā R, then read the CLS / EOT rows."""
    m = clip.model
    vis, txt = vision_blocks(m), text_blocks(m)
    with AttentionCapture(vis + txt) as cap, torch.enable_grad():
        pix = images.clone().requires_grad_(True)
        emb_hook = m.token_embedding.register_forward_hook(lambda mod, i, o: o.requires_grad_(True))
        try:
            f = torch.nn.functional.normalize(m.encode_image(pix), dim=-1)
            g = torch.nn.functional.normalize(m.encode_text(ids), dim=-1)
        finally:
            emb_hook.remove()
        logits = f @ g.T * (m.logit_scale.exp() if score == "logit" else 1.0)
        s = logits.diagonal().sum()
        outs = []
        for probs, l0 in ((cap.probs[:len(vis)], l0_img), (cap.probs[len(vis):], l0_txt)):
            b, _, n, _ = probs[0].shape
            r = torch.eye(n).expand(b, n, n).clone()
            for a in probs[l0:]:
                (grad,) = torch.autograd.grad(s, [a], retain_graph=True)
                cam = (grad * a).clamp(min=0).mean(dim=1)
                r = r + torch.bmm(cam, r)
            outs.append(r.detach())
    eot = ids.argmax(-1)
    img = outs[0][:, 0, 1:]
    text = outs[1][torch.arange(len(eot)), eot]
    return img, text, (f * g).sum(-1).detach()


@pytest.mark.parametrize("name", ["small", "deeper"])
@pytest.mark.parametrize("score", ["logit", "cos"])
@pytest.mark.parametrize("layers", [(0, 0), (1, 1), (-1, -1)])
def test_single_call_equals_per_layer_oracle(name, score, layers):
    clip = make_clip(CONFIGS[name], seed=11)
    images, ids = _images(clip, 3), _ids(clip, PHRASES[:3])
    want_img, want_txt, want_cos = oracle(clip, images, ids, score, *layers)
    got = relevancy_maps(clip, images, ids, score=score, start_layer_image=layers[0],
                         start_layer_text=layers[1])
    t = got.text.shape[1]
    torch.testing.assert_close(got.image.flatten(1), want_img, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got.text, want_txt[:, :t], atol=1e-5, rtol=1e-4)
    assert torch.count_nonzero(want_txt[:, t:]) == 0  # nothing after the last EOT is lost
    torch.testing.assert_close(got.similarity, want_cos, atol=1e-5, rtol=1e-5)
    assert got.image.abs().sum() > 0 and got.text.abs().sum() > 0


def test_score_choice_changes_the_map():
    clip = make_clip(CONFIGS["small"], seed=2)
    images, ids = _images(clip, 2), _ids(clip, PHRASES[:2])
    a = relevancy_maps(clip, images, ids, score="logit")
    b = relevancy_maps(clip, images, ids, score="cos")
    assert (a.text - b.text).abs().max() > 1e-3


def test_truncated_text_encoder_equals_stock():
    clip = make_clip(CONFIGS["wide"], seed=3)
    ids = _ids(clip, PHRASES)
    t = int(ids.argmax(-1).max()) + 1
    with torch.no_grad():
        torch.testing.assert_close(encode_text_ids(clip, ids[:, :t]), clip.model.encode_text(ids),
                                   atol=1e-5, rtol=1e-5)


def test_batched_equals_one_by_one_and_is_independent_of_batch_mates():
    clip = make_clip(CONFIGS["deeper"], seed=5)
    images = _images(clip, 2, seed=3)
    batched = explain(clip, images, PHRASES, batch_size=64)
    singles = [[explain(clip, images[i:i + 1], [p]) for p in PHRASES] for i in range(2)]
    for j in range(len(PHRASES)):
        for i in range(2):
            s = singles[i][j]
            p = batched.pair(i, j)
            torch.testing.assert_close(batched.image_relevance[p], s.image_relevance[0], atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(batched.text_relevance[p], s.text_relevance[0], atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(batched.similarity[p], s.similarity[0], atol=1e-6, rtol=1e-5)
    # phrase 0 with different batch mates, and in chunks of 3 (mixed padding lengths)
    other = explain(clip, images[:1], [PHRASES[0], "an enormous purple heart shaped balloon"])
    torch.testing.assert_close(other.image_relevance[0], batched.image_relevance[0], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(other.text_relevance[0], batched.text_relevance[0], atol=2e-5, rtol=1e-4)
    chunked = explain(clip, images, PHRASES, batch_size=3)
    torch.testing.assert_close(chunked.image_relevance, batched.image_relevance, atol=2e-5, rtol=1e-4)


def test_weights_get_no_gradients():
    clip = make_clip(CONFIGS["small"])
    relevancy_maps(clip, _images(clip, 1), _ids(clip, PHRASES[:1]))
    for p in clip.model.parameters():
        assert not p.requires_grad and p.grad is None


def test_explanation_shapes_and_pair_order():
    clip = make_clip(CONFIGS["small"])
    exp = explain(clip, _images(clip, 2), PHRASES[:3])
    assert exp.image_relevance.shape == (6, 4, 4)
    assert exp.pair(1, 2) == 5  # phrase-major
    prompt = exp.prompts[0]
    assert [len(t) for t in exp.text_relevance[:2]] == [len(prompt.tokens)] * 2


def test_start_layer_out_of_range_is_a_clear_error():
    clip = make_clip(CONFIGS["small"])
    with pytest.raises(ValueError, match="start_layer_image=5 .*2-layer"):
        relevancy_maps(clip, _images(clip, 1), _ids(clip, PHRASES[:1]), start_layer_image=5)


def test_second_order_gradients_match_finite_differences():
    clip = make_clip(CONFIGS["small"], seed=9, dtype=torch.float64)
    ids = _ids(clip, PHRASES[:2])
    base = _images(clip, 2, seed=4).double()
    w_img = torch.linspace(-1, 1, 16, dtype=torch.float64).reshape(4, 4)

    def loss(pix: torch.Tensor, create_graph: bool) -> torch.Tensor:
        out = relevancy_maps(clip, pix, ids, score="cos", create_graph=create_graph)
        return (out.image * w_img).sum() + (out.text[:, 1:4] ** 2).sum() - out.similarity.sum()

    pix = base.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(pix, True), pix)
    assert grad.abs().sum() > 0
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        direction = torch.randn(base.shape, generator=g, dtype=torch.float64)
        eps = 1e-5
        up = loss(base + eps * direction, False).item()
        down = loss(base - eps * direction, False).item()
        fd = (up - down) / (2 * eps)
        an = float((grad * direction).sum())
        assert abs(fd - an) <= 1e-5 + 1e-4 * abs(fd), (fd, an)


def test_first_order_maps_are_detached():
    clip = make_clip(CONFIGS["small"])
    out = relevancy_maps(clip, _images(clip, 1), _ids(clip, PHRASES[:1]))
    assert not out.image.requires_grad and not out.text.requires_grad


def test_prompt_only_mode_gives_text_maps_without_an_image():
    clip = make_clip(CONFIGS["small"], seed=4)
    exp = explain(clip, None, PHRASES[:2])
    assert exp.image_relevance is None and exp.n_images == 1
    assert torch.isnan(exp.similarity).all()
    assert all(t.abs().sum() > 0 for t in exp.text_relevance)
    with_image = explain(clip, _images(clip, 1), PHRASES[:2])
    assert not torch.allclose(exp.text_relevance[0], with_image.text_relevance[0])
