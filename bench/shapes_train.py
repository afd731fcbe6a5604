"""Cost of a shapes-world training step (the shipped recipe, ``configs/default.json``) on CPU.

Prints one figure per line as ``name: value``:
- ``step_s_base``: seconds per step without the explainability term (two-object phase);
- ``step_s_relevancy``: the same with the term as configured (``relevancy_pairs`` pairs);
- ``relevancy_over_base``: their ratio (what the term costs);
- ``step_s_patch4`` and ``patch4_over_patch8``: the recipe with a patch-4 vision tower (16x16 maps).

Each variant trains ``--steps`` steps from scratch past the single-object phase (data generation
included, first 2 steps skipped); variants are interleaved over ``--repeats`` rounds and the median
per-step time is reported.
Usage: ``python bench/shapes_train.py [--steps 8] [--repeats 2] [--threads 2]``
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_timing import interleaved_medians  # noqa: E402

from relevancy.shapes.train import TrainConfig, train  # noqa: E402


def variant(base: TrainConfig, steps: int, relevancy: bool, patch: int) -> TrainConfig:
    cfg = copy.deepcopy(base)
    cfg.steps, cfg.single_object_steps, cfg.probe_every, cfg.log_every = steps, 0, 0, 1
    cfg.relevancy_start_step = 0
    if not relevancy:
        cfg.relevancy_weight = 0.0
    cfg.model_cfg["vision_cfg"]["patch_size"] = patch
    return cfg


def step_seconds(cfg: TrainConfig, warmup: int = 2) -> float:
    """Median seconds between consecutive steps' log lines, after ``warmup`` steps."""
    stamps: list[float] = []
    train(cfg, log=lambda s: stamps.append(time.perf_counter()))
    gaps = [b - a for a, b in zip(stamps[warmup:-1], stamps[warmup + 1:], strict=True)]
    return statistics.median(gaps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base = TrainConfig.from_json(ROOT / "relevancy" / "shapes" / "configs" / "default.json")
    variants = {"base": variant(base, args.steps, False, 8), "relevancy": variant(base, args.steps, True, 8),
                "patch4": variant(base, args.steps, True, 4)}
    med = interleaved_medians({k: functools.partial(step_seconds, cfg) for k, cfg in variants.items()},
                              args.repeats)
    print(f"step_s_base: {med['base']:.3f}")
    print(f"step_s_relevancy: {med['relevancy']:.3f}")
    print(f"relevancy_over_base: {med['relevancy'] / med['base']:.3f}")
    print(f"step_s_patch4: {med['patch4']:.3f}")
    print(f"patch4_over_patch8: {med['patch4'] / med['relevancy']:.3f}")


if __name__ == "__main__":
    main()
