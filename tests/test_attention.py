"""Attention capture: equal to the stock forward, keeps valid probabilities, removable."""

from __future__ import annotations

import pytest
import torch
from clip_factory import CONFIGS, make_clip

from relevancy.attention import AttentionCapture, explicit_attention, text_blocks, vision_blocks
from relevancy.tokens import tokenize

torch.set_num_threads(1)


def _batch(clip, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = clip.image_size
    ids = torch.stack([tokenize(t, clip.context_length).padded_ids(clip.context_length)
                       for t in ("a cat on a mat", "red, green and blue stars!", "x")])
    return torch.randn(3, 3, s, s, generator=g), ids


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_captured_forward_equals_stock(name):
    clip = make_clip(CONFIGS[name], seed=7)
    m = clip.model
    images, ids = _batch(clip)
    with torch.no_grad():
        want_i, want_t = m.encode_image(images), m.encode_text(ids)
        with AttentionCapture(vision_blocks(m) + text_blocks(m)) as cap:
            got_i, got_t = m.encode_image(images), m.encode_text(ids)
            probs = list(cap.probs)
    assert (got_i - want_i).abs().max() <= 1e-5
    assert (got_t - want_t).abs().max() <= 1e-5
    n_vis = len(vision_blocks(m))
    heads_v = CONFIGS[name]["vision_cfg"]["width"] // CONFIGS[name]["vision_cfg"]["head_width"]
    grid = (CONFIGS[name]["vision_cfg"]["image_size"] // CONFIGS[name]["vision_cfg"]["patch_size"]) ** 2
    for p in probs[:n_vis]:
        assert p.shape == (3, heads_v, grid + 1, grid + 1)
    for p in probs:
        torch.testing.assert_close(p.sum(-1), torch.ones_like(p.sum(-1)))
    for p in probs[n_vis:]:  # the causal text mask gives exact zeros above the diagonal
        assert p.shape[1] == CONFIGS[name]["text_cfg"]["heads"]
        assert torch.count_nonzero(torch.triu(p, diagonal=1)) == 0


def test_capture_keeps_gradients_and_is_removable():
    clip = make_clip(CONFIGS["small"])
    m = clip.model
    blocks = vision_blocks(m)
    images, _ = _batch(clip)
    images.requires_grad_(True)
    cap = AttentionCapture(blocks)
    out = m.encode_image(images).sum()
    (g,) = torch.autograd.grad(out, [cap.probs[0]])
    assert g.shape == cap.probs[0].shape and g.abs().sum() > 0
    cap.remove()
    assert all("attention" not in vars(b) for b in blocks)
    assert all(p is None for p in cap.probs)
    with torch.no_grad():
        m.encode_image(images)  # stock path works again
    assert all(p is None for p in cap.probs)


def test_double_install_is_refused():
    clip = make_clip(CONFIGS["small"])
    with AttentionCapture(vision_blocks(clip.model)), pytest.raises(RuntimeError, match="already"):
        AttentionCapture(vision_blocks(clip.model))


def test_explicit_attention_matches_torch_mha_with_bool_and_float_masks():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True).eval()
    x = torch.randn(2, 6, 32)
    causal = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)
    additive = torch.zeros(6, 6).masked_fill(causal, float("-inf"))
    with torch.no_grad():
        for mask in (None, causal, additive):
            want, want_w = mha(x, x, x, attn_mask=mask, need_weights=True, average_attn_weights=False)
            got, probs = explicit_attention(mha, x, mask)
            assert (got - want).abs().max() <= 1e-5
            assert (probs - want_w).abs().max() <= 1e-6
