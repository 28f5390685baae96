"""One image's scores, remembered for the length of a block: ``gctxseg cv`` scores each held-out scan in its fold's
report (:func:`gctxseg.evaluation.evaluate.score_labels`) and again in its configuration's summary
(:func:`gctxseg.crossval.folds.summarize_cv`); inside :func:`remembered_image_scores` the second is the first's.

The same labels against the same truth (their bytes, shape and type) at the same tolerance and spacing give the same
scores: the key is both label maps' digests, so nothing scored from other labels is ever taken. The surface metrics
cost milliseconds a scan; the digests a tenth of that. Outside a block every call scores."""

from __future__ import annotations

import hashlib

import numpy as np

from ..core.remembered import Remembered
from ..metrics import score_image
from ..metrics.surface import Spacing

__all__ = ["remembered_image_scores", "scored_image"]

_SCORES = Remembered()
remembered_image_scores = _SCORES.block


def scored_image(pred: np.ndarray, target: np.ndarray, num_classes: int, nsd_tolerance: float = 2.0,
                 spacing: Spacing = None) -> dict[str, object]:
    """:func:`gctxseg.metrics.score_image`, taken from the open block where these labels were scored before."""
    if not _SCORES.open:
        return score_image(pred, target, num_classes, nsd_tolerance, spacing)
    key = _key(pred, target, num_classes, nsd_tolerance, spacing)
    if (kept := _SCORES.get(key)) is None:
        kept = score_image(pred, target, num_classes, nsd_tolerance, spacing)
        _SCORES.keep(key, {**kept, "confusion": kept["confusion"].clone()})
    return {**kept, "confusion": kept["confusion"].clone()}  # a caller's changes to what it is given stay its own


def _key(pred: np.ndarray, target: np.ndarray, *settings) -> tuple:
    """What one image's scores are taken from: both label maps' digests, shapes and types, and the settings."""
    arrays = [np.ascontiguousarray(np.asarray(a)) for a in (pred, target)]
    return (*((hashlib.blake2b(a.data, digest_size=16).digest(), a.shape, a.dtype.str) for a in arrays),
            repr(settings))
