"""What an evaluation gathers and writes, whatever the predictions came from (a model, a folder of masks, the
B-scans of OCT volume files).

:class:`ScoredImages` pools each image's scores (:func:`gctxseg.metrics.score_image`) as they come: the summed
confusion counts, the rows of ``metrics_per_image.csv``, the amounts per file, the worst and best cases.
:func:`pooled_summary` turns them into ``summary.json``'s scores (pixel counts summed over all images, then per class
the per-image aggregates), and :func:`write_evaluation_files` writes the summary, the CSV and the plots. The names
an evaluation folder may hold are :data:`EVALUATION_ENTRIES` (:mod:`gctxseg.core.outputs`' rule).
"""

from __future__ import annotations

import heapq
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.files import atomic_write_csv, atomic_write_json
from ..metrics import nanmean, scores_from_confusion
from ..runs.evalsummary import ClassScores, EvaluationSummary
from ..visualize.plots import plot_cases, plot_confusion_matrix, plot_dice_histogram

__all__ = ["CSV_COLUMNS", "EVALUATION_ENTRIES", "EvaluationResult", "ScoredImages", "pooled_summary",
           "tta_name", "write_evaluation_files"]

CSV_COLUMNS = ("file", "class", "dice", "iou", "hd95", "nsd", "truth_pixels", "pred_pixels")

# What `evaluate` writes into --out: a new or empty folder, or a previous evaluation (gctxseg.core.outputs' rule)
EVALUATION_ENTRIES = frozenset({
    "summary.json", "metrics_per_image.csv", "confusion_matrix.png", "dice_histogram.png", "worst_cases.png",
    "best_cases.png", "amounts_per_image.csv", "bland_altman.png", "amount_scatter.png", "grader_etdrs.csv",
    "predicted_etdrs.csv", "enface",
})


@dataclass
class EvaluationResult:
    """What :func:`gctxseg.evaluation.evaluate.evaluate_folder` computed (and wrote, when it had an output folder)."""

    summary: dict  # summary.json as written (EvaluationSummary.from_json reads it)
    rows: list[dict] = field(default_factory=list)  # metrics_per_image.csv, one dict per image and class
    confusion: torch.Tensor | None = None  # K x K pixel counts over all images, rows = truth
    out: Path | None = None

    @property
    def record(self) -> EvaluationSummary:
        """The summary as a record (attributes rather than its JSON keys)."""
        return EvaluationSummary.from_json(self.summary)


def tta_name(tta: bool, tta_vflip: bool) -> str:
    """``summary.json``'s name of the test-time flips: ``off``, ``hflip`` or ``hflip+vflip``."""
    return "hflip+vflip" if tta_vflip else "hflip" if tta else "off"


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _image_score(scores: dict) -> float:
    """Ranking key of an image: mean foreground Dice over the classes present; 1 when nothing is anywhere."""
    defined = [d for d in scores["dice"] if not math.isnan(d)]
    return sum(defined) / len(defined) if defined else 1.0


@dataclass
class ScoredImages:
    """What scoring every image gathers: pooled counts, per-image scores and rows, amounts, extreme cases."""

    total: torch.Tensor
    per_image: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    truth_counts: dict[Path, list[int]] = field(default_factory=dict)  # per image file (a volume's slices summed)
    pred_counts: dict[Path, list[int]] = field(default_factory=dict)
    worst: list = field(default_factory=list)  # heaps of (key, index, case): the worst_k lowest / highest scores
    best: list = field(default_factory=list)
    kept: dict[Path, np.ndarray] = field(default_factory=dict)  # predicted labels of B-scans of volumes
    seconds: float = 0.0  # forward passes, where the caller times the model itself (volume files)

    def add(self, index: int, file: str, scores: dict, case: tuple, worst_k: int) -> None:
        """Pool one image's ``scores`` (:func:`gctxseg.metrics.score_image`): its rows of metrics_per_image.csv
        under ``file``, and ``case`` (image, truth, prediction) among the worst/best ``worst_k``."""
        self.total += scores["confusion"]
        self.per_image.append(scores)
        for c in range(len(scores["dice"])):
            self.rows.append({"file": file, "class": c + 1,
                              **{key: scores[key][c] for key in CSV_COLUMNS[2:]}})  # fmt: skip
        if worst_k > 0:
            score = _image_score(scores)
            image, target, pred = case
            shown = (f"{file} Dice {score:.3f}", image, target.astype(np.uint8), pred.astype(np.uint8))
            for heap, key in ((self.worst, -score), (self.best, score)):
                (heapq.heappush if len(heap) < worst_k else heapq.heappushpop)(heap, (key, -index, shown))


def _class_summary(k: int, name: str, value: int, pooled: dict, per_image: list[dict]) -> ClassScores:
    dice = [s["dice"][k] for s in per_image]
    hd95 = [s["hd95"][k] for s in per_image]
    truth = [s["truth_pixels"][k] > 0 for s in per_image]
    predicted = [s["pred_pixels"][k] > 0 for s in per_image]
    finite_hd = _finite(hd95)
    return ClassScores(
        class_index=k + 1, value=value, name=name, dice=pooled["Dice"][k], iou=pooled["IoU"][k],
        precision=pooled["Precision"][k], recall=pooled["Recall"][k], mean_image_dice=nanmean(dice),
        mean_image_iou=nanmean([s["iou"][k] for s in per_image]), hd95_mean=nanmean(finite_hd),
        hd95_median=statistics.median(finite_hd) if finite_hd else math.nan,
        nsd_mean=nanmean([s["nsd"][k] for s in per_image]), images_with_truth=sum(truth),
        images_with_prediction=sum(predicted), missed=sum(t and not p for t, p in zip(truth, predicted)),
        false_alarms=sum(p and not t for t, p in zip(truth, predicted)),
    )


def pooled_summary(scored: ScoredImages, names: list[str], values: Sequence[int]) -> dict:
    """``summary.json``'s scores of ``scored``: the metric block of the summed pixel counts, the means over the
    classes, one :class:`~gctxseg.runs.evalsummary.ClassScores` per foreground class and the confusion matrix
    (``names`` and mask ``values`` of every class, background first)."""
    pooled = scores_from_confusion(scored.total)
    per_class = [_class_summary(c, names[c + 1], values[c + 1], pooled, scored.per_image)
                 for c in range(len(names) - 1)]  # fmt: skip
    return {
        **pooled,
        "mean hd95": nanmean([c.hd95_mean for c in per_class]),
        "mean nsd": nanmean([c.nsd_mean for c in per_class]),
        "mean image dice": nanmean([c.mean_image_dice for c in per_class]),
        "per class": [c.to_json() for c in per_class],
        "confusion matrix": scored.total.tolist(),
    }


def write_evaluation_files(out: Path, summary: dict, scored: ScoredImages, names: list[str],
                           figures: bool = True) -> None:
    """``summary.json``, ``metrics_per_image.csv`` and, with ``figures``, the confusion matrix, the Dice histogram
    and the worst and best cases into ``out`` (the amounts' files are
    :func:`gctxseg.clinical.agreement.write_agreement`'s)."""
    atomic_write_json(out / "summary.json", summary)
    atomic_write_csv(out / "metrics_per_image.csv", CSV_COLUMNS, scored.rows)
    if not figures:
        return
    plot_confusion_matrix(scored.total.numpy(), names, out / "confusion_matrix.png")
    per_class_dice = {names[c + 1]: [s["dice"][c] for s in scored.per_image] for c in range(len(names) - 1)}
    plot_dice_histogram(per_class_dice, out / "dice_histogram.png")
    if scored.worst:
        plot_cases([c for *_, c in sorted(scored.worst, reverse=True)], out / "worst_cases.png", "worst cases")
        plot_cases([c for *_, c in sorted(scored.best, reverse=True)], out / "best_cases.png", "best cases")
