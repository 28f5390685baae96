"""Overlap: a confusion matrix accumulated over every pixel of a split, and the scores read from its counts.

Per-class precision, recall, F1, Dice and IoU are computed from summed counts (tp, fp, fn), not as a
mean of per-image or per-batch values, so a split's figure does not depend on how it was batched.
A class absent from both truth and prediction has no defined score: it is NaN and left out of the means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

__all__ = ["ConfusionMatrix", "confusion_matrix", "nanmean", "scores_from_confusion"]


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


def nanmean(values: Iterable[float]) -> float:
    """Mean of the values that are not NaN (NaN when none is): how every mean over classes or images skips the
    undefined ones."""
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
        "mean precision": nanmean(precision),
        "mean recall": nanmean(recall),
        "mean f1 score": nanmean(f1),
        "mean dice": nanmean(dice),
        "mean iou": nanmean(iou),
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
