"""Side-by-side timing shared by the benchmark scripts (imported from their own folder)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def seconds_of(fn: Callable[[], object]) -> Callable[[], float]:
    """A measure: the wall-clock seconds of one call of ``fn``."""

    def measure() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return measure


def interleaved_medians(measures: Mapping[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median of each measure over ``repeats`` rounds; every round runs every measure once, in turn,
    so that load changes on the machine hit all of them alike."""
    values: dict[str, list[float]] = {k: [] for k in measures}
    for _ in range(repeats):
        for name, measure in measures.items():
            values[name].append(measure())
    return {k: statistics.median(v) for k, v in values.items()}
