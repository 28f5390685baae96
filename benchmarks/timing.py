"""The one timing helper the benchmark scripts share (they run as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Mean seconds of ``repeats`` calls of ``fn`` after one untimed warm-up call (allocations, kernel choice)."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats
