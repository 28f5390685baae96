"""Surface distances of one image, per foreground class: HD95 and normalised surface Dice (NSD), MONAI's.

``compute_hausdorff_distance(percentile=95)`` and ``compute_surface_dice`` at a tolerance of ``nsd_tolerance``,
on the boundary pixels of each class, Euclidean, in pixels, or in the unit of ``spacing`` (row, column) when
given; the tolerance is then in that unit too. Empty cases: :mod:`gctxseg.metrics`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import compute_hausdorff_distance, compute_surface_dice

__all__ = ["Spacing", "check_spacing", "surface_metrics"]

Spacing = float | tuple[float, float] | None


def check_spacing(spacing: Spacing | list[float]) -> Spacing:
    """``spacing`` as the surface metrics take it (one float, a ``(row, column)`` tuple of floats, or None).

    Raises:
        ValueError: a size that is not > 0.
    """
    if spacing is None:
        return None
    spacing = float(spacing) if isinstance(spacing, (int, float)) else tuple(float(s) for s in spacing)
    if any(s <= 0 for s in np.atleast_1d(spacing)):
        raise ValueError(f"spacing must be > 0, got {spacing}")
    return spacing


def _one_hot(labels: np.ndarray | torch.Tensor, num_classes: int) -> torch.Tensor:
    """``H x W`` indices -> ``1 x K x H x W`` float one-hot, MONAI's layout."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    return F.one_hot(labels, num_classes).permute(2, 0, 1)[None].float()


def surface_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    nsd_tolerance: float = 2.0,
    spacing: Spacing = None,
) -> tuple[list[float], list[float]]:
    """HD95 and normalised surface Dice of each foreground class of one image (MONAI's implementations).

    Args:
        pred: ``H x W`` predicted class indices.
        target: ``H x W`` true class indices.
        num_classes: K (background = 0 is left out).
        nsd_tolerance: NSD tolerance, in pixels (in the unit of ``spacing`` when given).
        spacing: pixel size, one number or ``(row, column)``; None = 1 pixel.

    Returns:
        ``(hd95, nsd)``, lists over classes 1..K-1; empty cases as in :mod:`gctxseg.metrics`.
    """
    if nsd_tolerance < 0 or not math.isfinite(nsd_tolerance):
        raise ValueError(f"nsd_tolerance must be a finite number >= 0, got {nsd_tolerance}")
    y_pred, y = _one_hot(pred, num_classes), _one_hot(target, num_classes)
    with warnings.catch_warnings():  # MONAI warns on every empty class; the package docstring documents them
        warnings.simplefilter("ignore")
        hd95 = compute_hausdorff_distance(y_pred, y, percentile=95, spacing=spacing)[0]
        nsd = compute_surface_dice(y_pred, y, [float(nsd_tolerance)] * (num_classes - 1), spacing=spacing)[0]
    return [float(v) for v in hd95], [float(v) for v in nsd]
