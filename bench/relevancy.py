"""Relevancy speed and memory on a ViT-B/32-shaped CLIP with random weights (CPU).

Prints one figure per line as ``name: value``:
- ``relevancy_over_forward``: ours (image + text maps, all layers, 1 phrase) ÷ a plain no-grad
  forward of the stock model (target ≤ 2.5);
- ``per_layer_over_ours``: a straightforward per-layer implementation (below) ÷ ours (target ≥ 3);
- ``batched8_over_single8``: 8 phrases on one image in one call ÷ 8 single calls (target ≤ 0.7);
- ``peak_rss_mb``: peak resident memory after building the model and one relevancy call (before
  the baseline runs; ``peak_rss_mb_with_baseline`` is the whole run);
- ``relevancy_over_trimmed_forward`` (extra): ours ÷ a no-grad forward whose text tower also runs on
  SOT..EOT only, i.e. the cost of the maps without the text-trimming saving.

All timings are medians over ``--repeats`` interleaved runs, measured side by side in one process.
Usage: ``python bench/relevancy.py [--repeats 5] [--threads 2]``
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_timing import interleaved_medians, seconds_of  # noqa: E402

from relevancy.attention import AttentionCapture, text_blocks, vision_blocks  # noqa: E402
from relevancy.explain import encode_text_ids, explain, relevancy_maps  # noqa: E402
from relevancy.loading import ClipSpec, LoadedClip, build_model, default_preprocess_cfg  # noqa: E402
from relevancy.tokens import tokenize  # noqa: E402

VIT_B_32 = {"embed_dim": 512, "quick_gelu": True,
            "vision_cfg": {"image_size": 224, "patch_size": 32, "width": 768, "layers": 12, "head_width": 64},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}
PHRASES = ["a photo of a red car parked next to a tall green tree", "a dog", "two cats on a sofa",
           "a blue bicycle", "a bowl of ramen with an egg", "a snowy mountain at sunset",
           "an astronaut riding a horse", "a wooden table with three apples"]


def per_layer_baseline(clip: LoadedClip, image: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The reference's way: stock forward, one autograd.grad per layer, full-matrix recursion."""
    m = clip.model
    vis, txt = vision_blocks(m), text_blocks(m)
    with AttentionCapture(vis + txt) as cap, torch.enable_grad():
        pix = image.clone().requires_grad_(True)
        hook = m.token_embedding.register_forward_hook(lambda mod, i, o: o.requires_grad_(True))
        try:
            f = torch.nn.functional.normalize(m.encode_image(pix), dim=-1)
            g = torch.nn.functional.normalize(m.encode_text(ids), dim=-1)
        finally:
            hook.remove()
        s = (f @ g.T * m.logit_scale.exp()).diagonal().sum()
        rows = []
        for probs, row in ((cap.probs[:len(vis)], 0), (cap.probs[len(vis):], int(ids.argmax()))):
            b, _, n, _ = probs[0].shape
            r = torch.eye(n).expand(b, n, n).clone()
            for a in probs:
                (grad,) = torch.autograd.grad(s, [a], retain_graph=True)
                r = r + torch.bmm((grad * a).clamp(min=0).mean(dim=1), r)
            rows.append(r[:, row].detach())
    return tuple(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = ClipSpec(VIT_B_32, default_preprocess_cfg(224), "openai")
    clip = LoadedClip(build_model(spec).eval().requires_grad_(False), spec, None)
    m = clip.model
    image = torch.randn(1, 3, 224, 224)
    prompts = [tokenize(p) for p in PHRASES]
    ids1 = prompts[0].padded_ids(77)[None]
    images8 = image.expand(8, -1, -1, -1)

    def forward() -> None:
        with torch.no_grad():
            m.encode_image(image)
            m.encode_text(ids1)

    def forward_trimmed() -> None:  # the text tower on SOT..EOT only, as ours runs it
        with torch.no_grad():
            m.encode_image(image)
            encode_text_ids(clip, ids1[:, : int(ids1.argmax()) + 1])

    def ours() -> None:
        relevancy_maps(clip, image, ids1)

    def baseline() -> None:
        per_layer_baseline(clip, image, ids1)

    def batched8() -> None:
        explain(clip, image, prompts, batch_size=8)

    def single8() -> None:
        for p in prompts:
            explain(clip, image, [p])

    got = relevancy_maps(clip, image, ids1)
    rss_ours = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # model + our relevancy only
    # parity: the baseline and ours must agree, or the timing comparison is meaningless
    base_img, base_txt = per_layer_baseline(clip, image, ids1)
    assert torch.allclose(got.image.flatten(1), base_img[:, 1:], atol=1e-5, rtol=1e-4)
    assert torch.allclose(got.text, base_txt[:, :got.text.shape[1]], atol=1e-5, rtol=1e-4)
    del images8

    fns = {"forward": forward, "forward_trimmed": forward_trimmed, "ours": ours, "baseline": baseline, "batched8": batched8, "single8": single8}
    for fn in fns.values():  # warm-up
        fn()
    med = interleaved_medians({k: seconds_of(fn) for k, fn in fns.items()}, args.repeats)
    print(f"forward_s: {med['forward']:.4f}")
    print(f"relevancy_s: {med['ours']:.4f}")
    print(f"per_layer_s: {med['baseline']:.4f}")
    print(f"relevancy_over_forward: {med['ours'] / med['forward']:.3f}")
    print(f"relevancy_over_trimmed_forward: {med['ours'] / med['forward_trimmed']:.3f}")
    print(f"per_layer_over_ours: {med['baseline'] / med['ours']:.3f}")
    print(f"batched8_over_single8: {med['batched8'] / med['single8']:.3f}")
    print(f"peak_rss_mb: {rss_ours:.1f}")
    print(f"peak_rss_mb_with_baseline: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")


if __name__ == "__main__":
    main()
