"""Command line: ``python -m relevancy explain --image IMG --text "a|b" --out DIR``.

Writes ``DIR/report.json`` and one heatmap overlay PNG per (image, phrase).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .explain import explain
from .images import display_heatmaps, load_image, overlay, preprocess_pil
from .loading import CheckpointError, default_model_path, load_clip
from .report import LEFT_BEHIND_THRESHOLD, explanation_results
from .tokens import split_phrases


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the CLI."""
    ap = argparse.ArgumentParser(prog="python -m relevancy", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("explain", help="relevancy heatmaps and token coverage for images × phrases")
    ex.add_argument("--model", help="checkpoint file or folder (default: the shipped shapes model)")
    ex.add_argument("--image", action="append", required=True, help="image file (repeatable)")
    ex.add_argument("--text", required=True, help="phrases separated by '|' or new lines")
    ex.add_argument("--score", choices=("logit", "cos"), default="logit")
    ex.add_argument("--start-layer-image", type=int, default=0, help="first image layer (-1 = last only)")
    ex.add_argument("--start-layer-text", type=int, default=0, help="first text layer (-1 = last only)")
    ex.add_argument("--threshold", type=float, default=LEFT_BEHIND_THRESHOLD,
                    help="relevance below which a semantic word is 'left behind'")
    act = ex.add_mutually_exclusive_group()
    act.add_argument("--quick-gelu", dest="quick_gelu", action="store_true", default=None,
                     help="the model uses QuickGELU (OpenAI weights)")
    act.add_argument("--gelu", dest="quick_gelu", action="store_false", help="the model uses GELU")
    ex.add_argument("--device", default="cpu")
    ex.add_argument("--out", required=True, help="output folder")
    return ap


def run_explain(args: argparse.Namespace) -> dict:
    """Run ``explain`` and write the report and overlays; returns the report."""
    phrases = split_phrases(args.text)
    if not phrases:
        raise ValueError("--text has no phrases; give e.g. --text 'a red circle|a blue square'.")
    clip = load_clip(args.model or default_model_path(), quick_gelu=args.quick_gelu, device=args.device)
    pil = [load_image(p) for p in args.image]
    exp = explain(clip, preprocess_pil(clip, pil), phrases, score=args.score,
                  start_layer_image=args.start_layer_image, start_layer_text=args.start_layer_text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for p, rep in enumerate(explanation_results(exp, args.threshold)):
        i, j = rep.pop("image_index"), p // exp.n_images
        im = pil[i]
        heat = display_heatmaps(exp.image_relevance[p][None], im.height, im.width)[0]
        name = f"heatmap_{i:02d}_{j:02d}.png"
        rgb = overlay(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0), heat)
        Image.fromarray((rgb * 255).round().byte().numpy()).save(out / name)
        results.append({"image": str(args.image[i]), **rep, "heatmap": name})
    report = {"model": str(clip.path), "score": args.score, "start_layer_image": args.start_layer_image,
              "start_layer_text": args.start_layer_text, "threshold": args.threshold, "results": results}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    torch.set_grad_enabled(False)
    try:
        report = run_explain(args)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for r in report["results"]:
        behind = ", ".join(r["left_behind"]) or "none"
        print(f"{Path(r['image']).name} | {r['phrase']!r}: cos={r['similarity']:.3f} "
              f"coverage={r['coverage']:.2f} left behind: {behind} -> {r['heatmap']}")
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0
