"""Scores of predicted label maps against true ones: one image's every figure, and a set's pooled scores.

A set is pooled as :mod:`gctxseg.metrics.overlap` pools a split: Dice and IoU from the confusion counts summed
over its images; HD95 and NSD are per image, averaged over the images where they are defined.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .overlap import confusion_matrix, scores_from_confusion
from .surface import Spacing, surface_metrics

__all__ = ["pool_image_scores", "pooled_mean_dice", "score_image", "score_predictions"]


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


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def score_predictions(preds: Sequence[np.ndarray], targets: Sequence[np.ndarray], num_classes: int,
                      surface: bool = True) -> dict:
    """Pooled (summed confusion) Dice/IoU per class, and per-image HD95 and NSD (2 px) means where defined
    (NaN without ``surface``: a ranking by Dice need not pay for them).

    Returns:
        lists over the foreground classes 1..K-1 of ``dice``, ``iou``, ``hd95``, ``nsd``, and ``images``.
    """
    if not surface:
        total = sum((confusion_matrix(torch.as_tensor(p), torch.as_tensor(t), num_classes)
                     for p, t in zip(preds, targets)), torch.zeros(num_classes, num_classes, dtype=torch.int64))
        pooled = scores_from_confusion(total)
        return {"dice": pooled["Dice"], "iou": pooled["IoU"], "hd95": [float("nan")] * (num_classes - 1),
                "nsd": [float("nan")] * (num_classes - 1), "images": len(preds)}
    return pool_image_scores([score_image(p, t, num_classes) for p, t in zip(preds, targets)], num_classes)


def pool_image_scores(image_scores: Sequence[dict], num_classes: int) -> dict:
    """:func:`score_predictions` of images already scored one by one (:func:`score_image`): a summary pools each
    image's scores into its fold's figures and into the pooled ones without scoring it twice."""
    total = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    surface: dict[str, list[list[float]]] = {m: [[] for _ in range(num_classes - 1)] for m in ("hd95", "nsd")}
    for scores in image_scores:
        total += scores["confusion"]
        for metric, per_class in surface.items():
            for c, value in enumerate(scores[metric]):
                if math.isfinite(value):
                    per_class[c].append(value)
    pooled = scores_from_confusion(total)
    return {"dice": pooled["Dice"], "iou": pooled["IoU"], **{m: [_mean(v) for v in per_class]
            for m, per_class in surface.items()}, "images": len(image_scores)}


def pooled_mean_dice(preds: Sequence[np.ndarray], targets: Sequence[np.ndarray], num_classes: int) -> float:
    """Mean over the foreground classes of the Dice pooled over a set (:func:`score_predictions`), 0 where no
    class is defined: one number to rank predictions of the same images by."""
    dice = score_predictions(preds, targets, num_classes, surface=False)["dice"]
    finite = [d for d in dice if d is not None and math.isfinite(d)]
    return float(np.mean(finite)) if finite else 0.0
