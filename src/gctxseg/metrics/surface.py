"""Surface distances of one image, per foreground class: HD95 and normalised surface Dice (NSD), MONAI's.

The figures of ``compute_hausdorff_distance(percentile=95)`` and ``compute_surface_dice`` at a tolerance of
``nsd_tolerance``, on the boundary pixels of each class, Euclidean, in pixels, or in the unit of ``spacing`` (row,
column) when given; the tolerance is then in that unit too. Empty cases: :mod:`gctxseg.metrics`.

Both are taken from one call of MONAI's ``get_edge_surface_distance`` per class, the call each of those two
functions makes on its own: the edges and distances, most of their cost, are found once instead of twice.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics.utils import get_edge_surface_distance, prepare_spacing

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
    y_pred, y = _one_hot(pred, num_classes)[0], _one_hot(target, num_classes)[0]
    spacing = prepare_spacing(spacing=spacing, batch_size=1, img_dim=2)[0]
    hd95, nsd = [], []
    for c in range(1, num_classes):
        with warnings.catch_warnings():  # MONAI warns on every empty class; the package docstring documents them
            warnings.simplefilter("ignore")
            _, distances, _ = get_edge_surface_distance(y_pred[c], y[c], spacing=spacing, symmetric=True,
                                                        class_index=c)
        hd95.append(_as_monai(torch.stack([_percentile_95(d) for d in distances]).max()))
        boundary = sum(len(d) for d in distances)
        correct = sum(int((d <= nsd_tolerance).sum()) for d in distances)
        nsd.append(_as_monai(correct / boundary) if boundary else math.nan)
    return hd95, nsd


def _percentile_95(distances: torch.Tensor) -> torch.Tensor:
    """The 95th percentile of one direction's distances, as ``compute_hausdorff_distance`` takes it (NaN: none)."""
    return torch.quantile(distances, 0.95) if len(distances) else torch.tensor(math.nan, dtype=distances.dtype)


def _as_monai(value: torch.Tensor | float) -> float:
    """A figure rounded to the float32 that MONAI's functions return it in."""
    return float(torch.tensor(float(value), dtype=torch.float32))
