"""Parity and speed against the paper's own CLIP bundle (the reference implementation).

The reference code is not part of this project. Point ``--reference`` at a checkout of the paper's
official repository (the folder holding ``external/TransformerMMExplainability/CLIP/clip``); its
``model.py`` is imported from there at run time (not its package ``__init__``, which needs old
torchvision). Recipe (ALGORITHM.md §5): a ViT-B/32-shaped CLIP from the reference's own ``CLIP``
class with random weights (attention sharpened ×3, ``logit_scale = ln 100``, every tensor rounded
through fp16 because the reference casts to fp16), built by the reference's ``build_model`` then
``.float()``, and by *our* loader from the same OpenAI-format state dict. Then embeddings, image
and text relevancy (reference: one ``autograd.grad`` per layer through its hooked attention) are
compared and timed side by side.

Prints ``name: value`` lines: max abs differences and ``reference_over_ours``.
Usage: ``python bench/reference_parity.py --reference PATH [--repeats 3]``
"""

from __future__ import annotations

import argparse
import copy
import importlib
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_timing import interleaved_medians, seconds_of  # noqa: E402

from relevancy.explain import relevancy_maps  # noqa: E402
from relevancy.loading import load_clip_from_state_dict  # noqa: E402
from relevancy.tokens import tokenize  # noqa: E402


def import_reference(root: Path) -> types.ModuleType:
    """Import the reference bundle's ``model.py`` as ``ntlb_reference_clip.model``."""
    clip_dir = root / "external" / "TransformerMMExplainability" / "CLIP" / "clip"
    if not (clip_dir / "model.py").is_file():
        raise SystemExit(f"--reference {root}: no external/TransformerMMExplainability/CLIP/clip/model.py there")
    if not hasattr(F, "_pad"):
        F._pad = F.pad  # the bundle aliases a private name that modern torch removed
    pkg = types.ModuleType("ntlb_reference_clip")
    pkg.__path__ = [str(clip_dir)]
    sys.modules["ntlb_reference_clip"] = pkg
    return importlib.import_module("ntlb_reference_clip.model")


def reference_relevancy(model: torch.nn.Module, image: torch.Tensor, ids: torch.Tensor):
    """The reference procedure: full forward with its capturing attention, one grad call per layer."""
    logits, _ = model(image, ids)
    s = logits.diagonal().sum()
    out = []
    for blocks, row in ((model.visual.transformer.resblocks, 0), (model.transformer.resblocks, None)):
        b = image.shape[0]
        n = blocks[0].attn.attn_output_weights.shape[-1]
        r = torch.eye(n).expand(b, n, n).clone()
        for blk in blocks:
            a = blk.attn.attn_output_weights  # (B·H, N, N), stored by the bundle's attention
            (g,) = torch.autograd.grad(s, [a], retain_graph=True)
            a, g = a.reshape(b, -1, n, n), g.reshape(b, -1, n, n)
            r = r + torch.bmm((g * a).clamp(min=0).mean(dim=1), r)
        rows = r[:, 0] if row == 0 else r[torch.arange(b), ids.argmax(-1)]
        out.append(rows.detach())
    return out[0][:, 1:], out[1], (logits.diagonal() / model.logit_scale.exp()).detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ref_mod = import_reference(args.reference)
    torch.manual_seed(0)
    proto = ref_mod.CLIP(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12)
    sd = proto.state_dict()
    with torch.no_grad():
        for k in sd:
            if k.endswith("attn.in_proj_weight"):
                sd[k] = sd[k] * 3
        sd["logit_scale"] = torch.tensor(100.0).log()
        sd = {k: v.half().float() if v.is_floating_point() else v for k, v in sd.items()}
    sd["input_resolution"], sd["context_length"], sd["vocab_size"] = (torch.tensor(224), torch.tensor(77),
                                                                      torch.tensor(49408))
    reference = ref_mod.build_model(copy.deepcopy(sd)).float().eval()
    ours = load_clip_from_state_dict(copy.deepcopy(sd))  # OpenAI format → QuickGELU by default

    g = torch.Generator().manual_seed(1)
    phrases = ["a photo of a red car next to a green tree", "two dogs playing in the snow"]
    images = torch.randn(2, 3, 224, 224, generator=g)
    ids = torch.stack([tokenize(p).padded_ids(77) for p in phrases])
    with torch.no_grad():
        di = (reference.encode_image(images) - ours.model.encode_image(images)).abs().max()
        dt = (reference.encode_text(ids) - ours.model.encode_text(ids)).abs().max()
    ref_img, ref_txt, ref_cos = reference_relevancy(reference, images, ids)
    got = relevancy_maps(ours, images, ids, score="logit")
    t = got.text.shape[1]
    print(f"encode_image_max_abs_diff: {float(di):.3g}")
    print(f"encode_text_max_abs_diff: {float(dt):.3g}")
    print(f"similarity_max_abs_diff: {float((got.similarity - ref_cos).abs().max()):.3g}")
    print(f"image_relevancy_max_abs_diff: {float((got.image.flatten(1) - ref_img).abs().max()):.3g}")
    print(f"text_relevancy_max_abs_diff: {float((got.text - ref_txt[:, :t]).abs().max()):.3g}")
    print(f"text_relevancy_after_eot_max_abs: {float(ref_txt[:, t:].abs().max()):.3g}")
    print(f"image_relevancy_max_abs: {float(ref_img.abs().max()):.3g}")
    print(f"text_relevancy_max_abs: {float(ref_txt.abs().max()):.3g}")

    def run_ref() -> None:
        reference_relevancy(reference, images, ids)

    def run_ours() -> None:
        relevancy_maps(ours, images, ids, score="logit")

    med = interleaved_medians({"ref": seconds_of(run_ref), "ours": seconds_of(run_ours)}, args.repeats)
    ref_s, ours_s = med["ref"], med["ours"]
    print(f"reference_s: {ref_s:.3f}")
    print(f"ours_s: {ours_s:.3f}")
    print(f"reference_over_ours: {ref_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
