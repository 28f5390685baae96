"""Bounds on the numbers that size a run: one check for a flag and for a file read back.

A checkpoint's ``base_size`` and a ``--base-size`` flag set the same thing (the network's input size), as do the
``--time-budget`` flags of ``train``, ``cv``, ``plan`` and ``pretrain``; each is checked here, so what the command
line refuses a received file cannot set, and the other way round. The functions return the problem (or raise
``ValueError``) before anything is allocated: ``--base-size 100000 100000`` would ask for 40 GB per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["MIN_SIDE", "MAX_SIDE", "MAX_PIXELS", "MAX_TIME_BUDGET_MIN", "input_size_problem", "check_input_size",
           "check_time_budget"]

# The input size, per side: 8 px is the smallest that survives the networks' downsampling (TrainConfig has
# always required it); 8192 lets one side be long (a wide-field B-scan of 8192 x 1024).
MIN_SIDE = 8
MAX_SIDE = 8192
# H x W: 4096 x 4096. One float32 feature map of 32 channels at that size is 2 GiB, and a U-Net keeps several per
# stage for the backward pass, so larger inputs do not train at batch 1 on an 80 GB GPU, and are no use at
# inference either (the network is run at its training size). Every 2D modality gctxseg reads fits at its native
# resolution: OCT B-scans (up to 1024 x 1024), CT slices (512 x 512), fundus photographs (up to 12 M px).
MAX_PIXELS = 4096 * 4096
# A year of minutes: no run is planned for longer; a larger figure is a typo, and would plan absurd epoch counts.
MAX_TIME_BUDGET_MIN = 365 * 24 * 60


def input_size_problem(size: Any) -> str | None:
    """Why ``size`` is no network input size ``(H, W)``, or None: two ints of MIN_SIDE..MAX_SIDE, at most
    MAX_PIXELS together."""
    if not isinstance(size, Sequence) or isinstance(size, str) or len(size) != 2:
        return "must be two sizes H W"
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in size):
        return "must be two whole numbers of pixels H W"
    if not all(MIN_SIDE <= s <= MAX_SIDE for s in size):
        return f"each side must be {MIN_SIDE}..{MAX_SIDE} px"
    if size[0] * size[1] > MAX_PIXELS:
        return f"H x W = {size[0] * size[1]:,} px, more than {MAX_PIXELS:,} (4096 x 4096)"
    return None


def check_input_size(size: Any, flag: str = "--base-size") -> tuple[int, int]:
    """``size`` as ``(H, W)``.

    Raises:
        ValueError: one line naming ``flag``: not two ints of MIN_SIDE..MAX_SIDE with H x W <= MAX_PIXELS.
    """
    problem = input_size_problem(list(size) if isinstance(size, tuple) else size)
    if problem:
        shown = " ".join(map(str, size)) if isinstance(size, (list, tuple)) else str(size)
        raise ValueError(f"{flag} {shown}: {problem}; e.g. {flag} 256 512 (or leave it out to have it planned)")
    return int(size[0]), int(size[1])


def check_time_budget(minutes: float | None, flag: str = "--time-budget") -> float | None:
    """``minutes`` when it is a positive finite number of minutes up to a year; None stays None (no budget).

    Raises:
        ValueError: one line naming ``flag``: zero, negative, NaN, infinite or more than a year.
    """
    if minutes is None:
        return None
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not math.isfinite(minutes) or not (
        0 < minutes <= MAX_TIME_BUDGET_MIN
    ):
        raise ValueError(f"{flag} {minutes}: must be minutes > 0 and at most {MAX_TIME_BUDGET_MIN:,} (a year); "
                         f"e.g. {flag} 30, or leave it out to train the planned epochs")
    return float(minutes)
