"""Segmentation metrics: a confusion matrix accumulated over every pixel of a split, and one image's scores.

Per-class precision, recall, F1, Dice and IoU are computed from summed counts (tp, fp, fn), not as a
mean of per-image or per-batch values, so a split's figure does not depend on how it was batched.
A class absent from both truth and prediction has no defined score: it is NaN and left out of the means.

Surface metrics are MONAI's: ``compute_hausdorff_distance(percentile=95)`` (HD95) and
``compute_surface_dice`` (normalised surface Dice, NSD, at a tolerance of ``nsd_tolerance``), on the
boundary pixels of each class, Euclidean, in pixels, or in the unit of ``spacing`` (row, column) when
given; the tolerance is then in that unit too.

Empty cases, per image and class (what MONAI 1.6 returns for HD95 and NSD; checked in the tests):

=====================  ========  ======  =====================================  ======
truth / prediction     Dice      IoU     HD95                                   NSD
=====================  ========  ======  =====================================  ======
both empty             NaN       NaN     NaN                                    NaN
truth empty, pred not  0         0       NaN (MONAI: 95th percentile of inf)    0
pred empty, truth not  0         0       NaN (MONAI: 95th percentile of inf)    0
=====================  ========  ======  =====================================  ======

Means skip NaN. So a missed lesion or a false alarm costs Dice and NSD (both 0) but leaves HD95 out;
``summary.json`` counts those images per class (``missed``, ``false alarms``) so they are not hidden.
Dice here is 2TP / (2TP + FP + FN) from the image's pixel counts (as :func:`scores_from_confusion`); MONAI's
``compute_dice`` would give NaN (``ignore_empty=True``) or 1 (``ignore_empty=False``) where the truth is
empty, and we want a false alarm on a healthy scan to score 0.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import compute_hausdorff_distance, compute_surface_dice

__all__ = ["ConfusionMatrix", "Spacing", "confusion_matrix", "score_image", "scores_from_confusion", "surface_metrics"]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``K x K`` int64 counts, rows = truth, columns = prediction.

    Args:
        pred: class indices, any shape (e.g. ``N x H x W``).
        target: class indices, same shape as ``pred``.
        num_classes: K.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    index = target.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes).cpu()


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def scores_from_confusion(cm: torch.Tensor, include_background: bool = False) -> dict[str, object]:
    """The seed project's metric block from a confusion matrix.

    Returns:
        ``pixel accuracy``; lists over the foreground classes 1..K-1 (all classes with
        ``include_background``) of ``Precision``, ``Recall``, ``F1 score``, ``Dice``, ``IoU``; and their
        NaN-skipping means ``mean precision``, ``mean recall``, ``mean f1 score``, ``mean dice``, ``mean iou``.
    """
    cm = cm.double()
    tp = cm.diag()
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    classes = range(0 if include_background else 1, cm.shape[0])
    precision, recall, f1, dice, iou = [], [], [], [], []
    for c in classes:
        t, p, n = tp[c].item(), fp[c].item(), fn[c].item()
        absent = t + p + n == 0
        precision.append(math.nan if absent else _ratio(t, t + p) if t + p > 0 else 0.0)
        recall.append(math.nan if absent else _ratio(t, t + n) if t + n > 0 else 0.0)
        dice.append(math.nan if absent else 2 * t / (2 * t + p + n))
        f1.append(dice[-1])  # pixel-wise F1 and Dice are the same quantity: 2TP / (2TP + FP + FN)
        iou.append(math.nan if absent else t / (t + p + n))
    total = cm.sum().item()
    return {
        "pixel accuracy": _ratio(tp.sum().item(), total),
        "Precision": precision,
        "Recall": recall,
        "F1 score": f1,
        "Dice": dice,
        "IoU": iou,
        "mean precision": _nanmean(precision),
        "mean recall": _nanmean(recall),
        "mean f1 score": _nanmean(f1),
        "mean dice": _nanmean(dice),
        "mean iou": _nanmean(iou),
    }


class ConfusionMatrix:
    """Accumulate a confusion matrix over batches: ``update``, then ``compute``; ``reset`` to reuse.

    Under DDP, ``all_reduce`` sums the counts of every rank (counts are summed, never scores averaged).
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.matrix += confusion_matrix(pred, target, self.num_classes)

    def all_reduce(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            backend = torch.distributed.get_backend()
            device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else "cpu"
            counts = self.matrix.to(device)
            torch.distributed.all_reduce(counts)
            self.matrix = counts.cpu()

    def compute(self, include_background: bool = False) -> dict[str, object]:
        return scores_from_confusion(self.matrix, include_background)

    def reset(self) -> None:
        self.matrix.zero_()


Spacing = float | tuple[float, float] | None



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
        ``(hd95, nsd)``, lists over classes 1..K-1; empty cases as in the module docstring.
    """
    if nsd_tolerance < 0 or not math.isfinite(nsd_tolerance):
        raise ValueError(f"nsd_tolerance must be a finite number >= 0, got {nsd_tolerance}")
    y_pred, y = _one_hot(pred, num_classes), _one_hot(target, num_classes)
    with warnings.catch_warnings():  # MONAI warns on every empty class; the module docstring documents them
        warnings.simplefilter("ignore")
        hd95 = compute_hausdorff_distance(y_pred, y, percentile=95, spacing=spacing)[0]
        nsd = compute_surface_dice(y_pred, y, [float(nsd_tolerance)] * (num_classes - 1), spacing=spacing)[0]
    return [float(v) for v in hd95], [float(v) for v in nsd]



def score_image(
    pred: np.ndarray, target: np.ndarray, num_classes: int, nsd_tolerance: float = 2.0, spacing: Spacing = None
) -> dict[str, object]:
    """Every per-image figure of one prediction.

    Returns:
        ``confusion`` (``K x K`` counts) and lists over the foreground classes 1..K-1 of ``dice``, ``iou``,
        ``hd95``, ``nsd``, ``truth_pixels``, ``pred_pixels``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
    cm = confusion_matrix(torch.as_tensor(pred), torch.as_tensor(target), num_classes)
    scores = scores_from_confusion(cm)
    hd95, nsd = surface_metrics(pred, target, num_classes, nsd_tolerance, spacing)
    return {
        "confusion": cm,
        "dice": scores["Dice"],
        "iou": scores["IoU"],
        "hd95": hd95,
        "nsd": nsd,
        "truth_pixels": cm.sum(1)[1:].tolist(),
        "pred_pixels": cm.sum(0)[1:].tolist(),
    }
