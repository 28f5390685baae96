"""The helpers the benchmark scripts share (they run as ``python benchmarks/NAME.py``): timing and precision."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from gctxseg.engine import autocast_dtype


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Mean seconds of ``repeats`` calls of ``fn`` after one untimed warm-up call (allocations, kernel choice)."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def amp_context(amp: str, device: torch.device) -> Callable[[], AbstractContextManager]:
    """A factory of the autocast context ``gctxseg train --amp AMP`` runs under on ``device`` (none for fp32)."""
    dtype = autocast_dtype(amp, device)
    return (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
