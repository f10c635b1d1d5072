"""Wall-clock timing for throughput numbers: the best of a few runs.

The minimum, not the mean: the fastest run is the one least disturbed by the rest of the machine, so it is the
number that repeats from one measurement to the next.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


def best_seconds(fn: Callable[[], object], repeats: int = 3, *, warmup: int = 1) -> float:
    """The shortest of ``repeats`` timed calls of ``fn``, in seconds, after ``warmup`` untimed calls (first-call
    costs: lazy initialization, allocator growth, kernel selection)."""
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
