"""CLI: ``python -m relevancy.shapes generate|train|evaluate ...``.

generate  write N scenes as PNGs plus ``scenes.jsonl`` (captions, objects, boxes); masks optional.
train     train a tiny CLIP from a JSON config and export it (open_clip hub layout) to ``--out``.
evaluate  print the shapes-world metrics of a model file or folder, one ``name: value`` per line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _generate(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from .world import ShapeWorld, WorldConfig

    world = ShapeWorld(WorldConfig(image_size=args.size))
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "scenes.jsonl").open("w") as fh:
        for i in range(args.n):
            s = world.sample(rng, args.objects, args.split)
            name = f"scene_{i:05d}.png"
            Image.fromarray(s.image).save(out / name)
            objs = []
            for k, o in enumerate(s.objects):
                rec = {"shape": o.shape, "colour": o.colour, "size": o.size, "box": list(o.box)}
                if args.masks:
                    mname = f"scene_{i:05d}_mask{k}.png"
                    Image.fromarray(o.mask.astype("uint8") * 255).save(out / mname)
                    rec["mask"] = mname
                objs.append(rec)
            fh.write(json.dumps({"image": name, "captions": s.captions, "objects": objs,
                                 "background": s.background}) + "\n")
    print(f"wrote {args.n} scenes to {out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch

    from .train import TrainConfig, train

    cfg = TrainConfig.from_json(args.config)
    if args.seed is not None:
        cfg.seed = args.seed
    if args.steps is not None:
        cfg.steps = args.steps
    if args.probe_every is not None:
        cfg.probe_every = args.probe_every
    if args.init is not None:
        cfg.init = args.init
    if args.threads:
        torch.set_num_threads(args.threads)
    probe = None
    if cfg.probe_every:
        from .evaluate import make_probe
        from .train import sidecar_config

        probe = make_probe(sidecar_config(cfg))
    print(f"training {cfg.steps} steps, seed {cfg.seed}, {torch.get_num_threads()} threads "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}) -> {args.out}", flush=True)
    _, summary = train(cfg, out=args.out, log=lambda s: print(s, flush=True), probe=probe,
                       checkpoint_dir=args.checkpoints)
    print(f"training_seconds: {summary['seconds']}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from ..loading import load_clip
    from .evaluate import evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    clip = load_clip(args.model)
    res = evaluate(clip, n=args.n, seed=args.seed, relevancy=not args.no_relevancy)
    for k, v in res.items():
        print(f"{k}: {v:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m relevancy.shapes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write scenes (PNG + scenes.jsonl)")
    g.add_argument("--out", required=True)
    g.add_argument("--n", type=int, default=16)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--size", type=int, default=64)
    g.add_argument("--objects", type=int, default=None, help="objects per scene (default 1-3)")
    g.add_argument("--split", default="train", choices=("train", "heldout", "all"))
    g.add_argument("--masks", action="store_true", help="also write one mask PNG per object")
    t = sub.add_parser("train", help="train a tiny CLIP")
    t.add_argument("--config", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=None, help="override the config's seed")
    t.add_argument("--steps", type=int, default=None, help="override the config's step count")
    t.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    t.add_argument("--probe-every", type=int, default=None,
                   help="log quick metrics (own seed) every N steps; overrides the config")
    t.add_argument("--init", default=None,
                   help="fine-tune: start from this model file or folder (same architecture); overrides the config")
    t.add_argument("--checkpoints", default=None, help="also export the model at every probe to DIR/step_N")
    e = sub.add_parser("evaluate", help="print metrics of a model")
    e.add_argument("--model", default=None, help="model file or folder (default: models/shapes)")
    e.add_argument("--n", type=int, default=500, help="scenes per scene family")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threads", type=int, default=0)
    e.add_argument("--no-relevancy", action="store_true", help="skip the relevancy metrics")
    args = p.parse_args(argv)
    if args.cmd == "evaluate" and args.model is None:
        from ..loading import default_model_path

        args.model = str(default_model_path())
    return {"generate": _generate, "train": _train, "evaluate": _evaluate}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
