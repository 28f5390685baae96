"""The records of an evaluation folder's ``summary.json`` (``gctxseg evaluate``, the report's evaluation).

``summary.json`` holds the run's settings, the pooled scores (:class:`~gctxseg.runs.runlog.PooledScores`), one
:class:`ClassScores` per foreground class and the true-vs-predicted amounts' :class:`AmountAgreement` per class
and level (also per ETDRS column of volumes, under ``"etdrs agreement"``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.records import JsonRecord, inline, key, optional, records
from .runlog import PooledScores

__all__ = ["AmountAgreement", "ClassScores", "EvaluationSummary"]


@dataclass(frozen=True)
class ClassScores(JsonRecord):
    """One foreground class: pooled Dice/IoU/precision/recall and the per-image aggregates."""

    class_index: int = key("class")
    value: int = key("value")
    name: str = key("name")
    dice: float = key("dice")
    iou: float = key("iou")
    precision: float = key("precision")
    recall: float = key("recall")
    mean_image_dice: float = key("mean image dice")
    mean_image_iou: float = key("mean image iou")
    hd95_mean: float = key("hd95 mean")
    hd95_median: float = key("hd95 median")
    nsd_mean: float = key("nsd mean")
    images_with_truth: int = key("images with truth")
    images_with_prediction: int = key("images with prediction")
    missed: int = key("missed")  # truth present, nothing predicted
    false_alarms: int = key("false alarms")  # predicted, no truth


@dataclass(frozen=True)
class AmountAgreement(JsonRecord):
    """True vs predicted amounts of one class at one level (``image``, ``volume``): Bland-Altman figures."""

    level: str
    class_name: str = key("class")
    unit: str = key("unit")
    n: int = key("n")
    mean_truth: float = key("mean truth")
    mean_predicted: float = key("mean predicted")
    mean_absolute_error: float = key("mean absolute error")
    bias: float = key("bias")
    sd_of_differences: float = key("sd of differences")
    limits_of_agreement: list[float] = key("limits of agreement")  # bias -/+ 1.96 SD


@dataclass(frozen=True, kw_only=True)
class EvaluationSummary(JsonRecord):
    """``summary.json`` of an evaluation folder: a model's (``weights``, its inference settings and timing) or a
    folder of predicted masks' (``predictions``; ``evaluate --predictions``)."""

    weights: str | None = optional()
    predictions: str | None = optional()
    data: str
    images: int
    infer_mode: str | None = optional()
    tta: str | None = optional()
    nsd_tolerance: float
    spacing: float | list[float] | None
    distance_unit: str
    mask_values: dict
    pooled: PooledScores = inline(PooledScores)
    mean_hd95: float = key("mean hd95")
    mean_nsd: float = key("mean nsd")
    mean_image_dice: float = key("mean image dice")
    per_class: list[ClassScores] = records("per class", ClassScores)
    confusion_matrix: list[list[int]] = key("confusion matrix")
    seconds_per_image: float | None = optional("seconds per image")
    device: str | None = optional("device")
    figures_not_drawn: str | None = optional("figures not drawn")  # why (a fold of a cv under a time budget)
    agreement: list[AmountAgreement] = records(None, AmountAgreement, default_factory=list)
    etdrs_agreement: list[AmountAgreement] | None = optional(None, AmountAgreement)
