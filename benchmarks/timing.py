"""The helpers the benchmark scripts share (they run as ``python benchmarks/NAME.py``): timing and precision."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from gctxseg.core.precision import autocast_context, autocast_dtype


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Mean seconds of ``repeats`` calls of ``fn`` after one untimed warm-up call (allocations, kernel choice)."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def amp_context(amp: str, device: torch.device) -> Callable[[], AbstractContextManager]:
    """A factory of the autocast context ``gctxseg train --amp AMP`` runs under on ``device`` (none for fp32)."""
    return functools.partial(autocast_context, device, autocast_dtype(amp, device))
