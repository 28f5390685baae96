"""Scoring, one file per family, each a function of arrays (and numbers) that reads no file and runs no model.

- :mod:`~gctxseg.metrics.overlap`: a confusion matrix summed over a split (:class:`ConfusionMatrix` accumulates
  it over batches), and precision, recall, F1, Dice and IoU read from its counts;
- :mod:`~gctxseg.metrics.surface`: HD95 and normalised surface Dice (NSD) of one image, MONAI's;
- :mod:`~gctxseg.metrics.predictions`: one image's every figure (:func:`score_image`), a set's pooled scores
  (:func:`score_predictions`);
- :mod:`~gctxseg.metrics.agreement`: predicted against true amounts (MAE, bias, limits of agreement).

Scoring a folder of predicted masks against a folder of truth is :mod:`gctxseg.evaluation`'s (it reads the files).

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

from .agreement import agreement_by_unit, agreement_summary, level_of, primary_unit
from .overlap import ConfusionMatrix, confusion_matrix, nanmean, scores_from_confusion
from .predictions import pool_image_scores, pooled_mean_dice, score_image, score_predictions
from .surface import Spacing, check_spacing, surface_metrics

__all__ = [
    "ConfusionMatrix",
    "Spacing",
    "agreement_by_unit",
    "agreement_summary",
    "check_spacing",
    "confusion_matrix",
    "level_of",
    "nanmean",
    "pool_image_scores",
    "pooled_mean_dice",
    "primary_unit",
    "score_image",
    "score_predictions",
    "scores_from_confusion",
    "surface_metrics",
]
