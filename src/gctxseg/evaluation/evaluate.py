"""Scoring a labelled folder with a trained model.

``evaluate_folder`` predicts every image of ``.../images`` at its original size (see
:class:`gctxseg.inference.predictor.Predictor` for ``resize``/``sliding`` inference and test-time augmentation), maps
the masks of the sibling ``masks`` folder with the checkpoint's mask-value map, and writes:

- ``summary.json``: the seed project's metric block from pixel counts summed over all images (pixel
  accuracy; per-class Precision, Recall, F1, Dice, IoU; their means), then per class the per-image
  aggregates: mean image Dice, HD95 mean/median, NSD mean, how many images were missed or false alarms;
- ``metrics_per_image.csv``: one row per image and foreground class: ``file, class, dice, iou, hd95, nsd,
  truth_pixels, pred_pixels`` (a NIfTI volume is scored slice by slice, ``file`` = ``NAME.nii.gz:SLICE``);
- ``confusion_matrix.png``, ``dice_histogram.png``, ``worst_cases.png``, ``best_cases.png``;
- ``amounts_per_image.csv``, ``bland_altman.png``, ``amount_scatter.png`` and ``summary.json``'s ``agreement``:
  true vs predicted area per image and volume per volume, in mm² / mm³ where the spacing is known
  (:mod:`gctxseg.clinical.agreement`, :mod:`gctxseg.clinical.measurements`).

Per-image scores and their empty cases: :mod:`gctxseg.metrics`.
"""

from __future__ import annotations

import heapq
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..clinical.agreement import write_agreement
from ..clinical.measurements import MeasurementOptions, class_names_for, fill_counts, plan_measurements
from ..core.files import atomic_write_csv, atomic_write_json
from ..core.outputs import check_output_folder, staged_output
from ..data import DatasetError, expand_slices, find_pairs, read_info, read_mask
from ..data.errors import raise_collected
from ..inference.predictor import Predictor, load_predictor
from ..metrics import Spacing, score_image, scores_from_confusion
from ..runs.evalsummary import ClassScores, EvaluationSummary
from ..visualize.plots import (
    plot_cases,
    plot_confusion_matrix,
    plot_dice_histogram,
)

__all__ = [
    "CSV_COLUMNS",
    "EvaluationResult",
    "evaluate_folder",
]

CSV_COLUMNS = ("file", "class", "dice", "iou", "hd95", "nsd", "truth_pixels", "pred_pixels")


@dataclass
class EvaluationResult:
    """What :func:`evaluate_folder` computed (and wrote, when it had an output folder)."""

    summary: dict  # summary.json as written (EvaluationSummary.from_json reads it)
    rows: list[dict] = field(default_factory=list)  # metrics_per_image.csv, one dict per image and class
    confusion: torch.Tensor | None = None  # K x K pixel counts over all images, rows = truth
    out: Path | None = None

    @property
    def record(self) -> EvaluationSummary:
        """The summary as a record (attributes rather than its JSON keys)."""
        return EvaluationSummary.from_json(self.summary)


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _mean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _image_score(scores: dict) -> float:
    """Ranking key of an image: mean foreground Dice over the classes present; 1 when nothing is anywhere."""
    defined = [d for d in scores["dice"] if not math.isnan(d)]
    return sum(defined) / len(defined) if defined else 1.0


def _check_masks(pairs, value_map) -> None:
    """Read every mask before predicting anything: sizes and values, all problems, one error."""
    problems = []
    for pair in pairs:
        try:
            mask = read_mask(pair.mask, pair.slice_index)
            h, w = read_info(pair.image).size
            if mask.shape != (h, w):
                problems.append(
                    f"{pair.mask}: {mask.shape[0]}x{mask.shape[1]} but its image is {h}x{w}; "
                    "re-export the mask at the image size"
                )
                continue
            value_map.encode(mask, source=pair.mask)
        except DatasetError as err:
            problems.append(str(err))
    raise_collected(problems)


def _class_summary(k: int, name: str, value: int, pooled: dict, per_image: list[dict]) -> ClassScores:
    dice = [s["dice"][k] for s in per_image]
    hd95 = [s["hd95"][k] for s in per_image]
    truth = [s["truth_pixels"][k] > 0 for s in per_image]
    predicted = [s["pred_pixels"][k] > 0 for s in per_image]
    finite_hd = _finite(hd95)
    return ClassScores(
        class_index=k + 1, value=value, name=name, dice=pooled["Dice"][k], iou=pooled["IoU"][k],
        precision=pooled["Precision"][k], recall=pooled["Recall"][k], mean_image_dice=_mean(dice),
        mean_image_iou=_mean([s["iou"][k] for s in per_image]), hd95_mean=_mean(finite_hd),
        hd95_median=statistics.median(finite_hd) if finite_hd else math.nan,
        nsd_mean=_mean([s["nsd"][k] for s in per_image]), images_with_truth=sum(truth),
        images_with_prediction=sum(predicted), missed=sum(t and not p for t, p in zip(truth, predicted)),
        false_alarms=sum(p and not t for t, p in zip(truth, predicted)),
    )


def evaluate_folder(
    weights: str | Path | list[str | Path],
    data: str | Path,
    img_f: str = ".jpg",
    mask_f: str = ".png",
    out: str | Path | None = None,
    *,
    device: str = "auto",
    amp: str = "auto",
    tta: bool = False,
    tta_vflip: bool = False,
    infer_mode: str = "resize",
    compile: bool = False,
    nsd_tolerance: float = 2.0,
    spacing: Spacing = None,
    worst_k: int = 4,
    measure: MeasurementOptions | None = None,
    out_owned: bool = False,
) -> EvaluationResult:
    """Score a trained model on a labelled folder (``data`` = ``.../images``, masks in ``.../masks``).

    Args:
        weights: ``best.pt`` / ``last.pt``.
        data: images folder.
        img_f: image file suffix.
        mask_f: mask file suffix.
        out: folder for ``summary.json``, ``metrics_per_image.csv`` and the plots (nothing written if None).
        device: ``auto``, ``cpu``, ``cuda`` ...
        amp: ``auto``, ``bf16``, ``fp16`` or ``off``.
        tta: horizontal-flip test-time augmentation.
        tta_vflip: vertical flips too.
        infer_mode: ``resize`` or ``sliding`` (see :class:`gctxseg.inference.predictor.Predictor`).
        compile: ``torch.compile`` the model with frozen weights.
        nsd_tolerance: NSD tolerance in pixels (in the unit of ``spacing`` when given), default 2.
        spacing: pixel size, one number or ``(row, column)``, e.g. in mm; None = pixels.
        worst_k: images in the worst/best case grids.
        measure: pixel/slice spacing, B-scan grouping and class names of the true-vs-predicted amounts.
        out_owned: ``out`` sits in a folder gctxseg owns (a run folder's ``eval``): taken as an earlier
            evaluation even without the marker of :mod:`gctxseg.core.outputs` (written before markers existed).

    Returns:
        the summary, the per-image rows, the pooled confusion matrix.

    Raises:
        DatasetError: no images, missing masks, mask sizes or values not fitting (all checked first, one
            error), or an unreadable image.
        ValueError: unreadable checkpoint, bad option, an ``out`` that is not evaluate's to write
            (:mod:`gctxseg.core.outputs`: the input folders, a folder of other files, one being written now).
        OSError: the disk refused a write (the previous evaluation in ``out`` is then kept).
    """
    spacing = _checked_spacing(spacing)
    # a NIfTI volume is scored slice by slice; ``data`` may also be the file pairs themselves (a CV fold)
    from_folder = isinstance(data, (str, Path))
    pairs = expand_slices(find_pairs(data, img_f, mask_f) if from_folder else list(data))
    measure = measure or MeasurementOptions()
    images = list(dict.fromkeys(p.image for p in pairs))
    plan = plan_measurements(images, measure, data if from_folder else images[0].parent)  # checked before predicting
    if out is not None:  # a wrong --out costs nothing: refused before the weights are read
        rules = _output_rules(pairs, Path(out), out_owned)
        check_output_folder(out, "evaluate", EVALUATION_ENTRIES, **rules)
    predictor = load_predictor(weights, device, amp, tta=tta, tta_vflip=tta_vflip, infer_mode=infer_mode,
                               compile=compile)
    _check_masks(pairs, predictor.value_map)
    in_volumes = {m for row in plan if row.kind in ("group", "series") for m in row.members}
    scored = _score_pairs(pairs, predictor, nsd_tolerance, spacing, worst_k, keep=in_volumes)
    value_map = predictor.value_map
    names = [f"class {c} (value {v})" for c, v in enumerate(value_map.values)]
    summary = {
        "weights": str(weights),
        "data": str(data) if from_folder else f"{len(pairs)} listed files",
        "images": len(pairs),
        "infer mode": infer_mode,
        "tta": "hflip+vflip" if tta_vflip else "hflip" if tta else "off",
        "nsd tolerance": nsd_tolerance,
        "spacing": spacing,
        "distance unit": "px" if spacing is None else "spacing unit",
        "mask values": value_map.to_dict(),
        **_pooled_summary(scored, names, value_map.values),
        "seconds per image": scored.seconds / max(1, len(pairs)),
        "device": str(predictor.device),
    }
    class_names = class_names_for(measure, predictor.num_classes)
    if out is None:
        _add_agreement(summary, plan, pairs, scored, value_map, class_names, measure, None)
        return EvaluationResult(summary, scored.rows, scored.total, None)
    with staged_output(out, "evaluate", EVALUATION_ENTRIES, **rules) as staging:
        _add_agreement(summary, plan, pairs, scored, value_map, class_names, measure, staging)
        _write_evaluation(staging, summary, scored, names)
    return EvaluationResult(summary, scored.rows, scored.total, Path(out))


# What `evaluate` writes into --out: a new or empty folder, or a previous evaluation (gctxseg.core.outputs' rule)
EVALUATION_ENTRIES = frozenset({
    "summary.json", "metrics_per_image.csv", "confusion_matrix.png", "dice_histogram.png", "worst_cases.png",
    "best_cases.png", "amounts_per_image.csv", "bland_altman.png", "amount_scatter.png", "grader_etdrs.csv",
    "predicted_etdrs.csv", "enface",
})


def _output_rules(pairs, out: Path, adopt_unmarked: bool) -> dict:
    """The folders ``evaluate`` reads (images, ground-truth masks), never written into; the advice of a refusal."""
    protected = {p.image.parent: "the images folder" for p in pairs}
    protected.update({p.mask.parent: "the ground-truth masks folder" for p in pairs})
    return dict(noun="evaluation files", fix=f"pass a new folder, e.g. --out {out.parent / (out.name + '_eval')}",
                protected=list(protected.items()), adopt_unmarked=adopt_unmarked)


def _add_agreement(summary: dict, plan, pairs, scored: _ScoredPairs, value_map, class_names, measure,
                   out: Path | None) -> None:
    """True vs predicted amounts (and ETDRS grids of volumes) into ``summary``, their files into ``out``."""
    _, summary["agreement"] = write_agreement(fill_counts(plan, scored.truth_counts),
                                              fill_counts(plan, scored.pred_counts), class_names, out)  # fmt: skip
    if any(row.kind in ("group", "series") for row in plan):
        summary["etdrs agreement"] = _volume_agreement(plan, pairs, scored, value_map, class_names, measure, out)


def _volume_agreement(plan, pairs, scored: _ScoredPairs, value_map, class_names, measure, out: Path | None) -> list:
    """The grader's and the predicted ETDRS rows and en-face maps of every volume (``grader_etdrs.csv``,
    ``predicted_etdrs.csv``, ``enface/``), the predictions on the grader's grid; their agreement per column."""
    from ..clinical.etdrs_rows import etdrs_agreement, grey_image, volume_reports, write_volume_reports

    mask_of = {p.image: p.mask for p in pairs if p.slice_index is None}
    rows = fill_counts(plan, scored.truth_counts)

    def truth_of(path: Path):
        return value_map.encode(read_mask(mask_of[path]), source=mask_of[path]) if path in mask_of else None

    truth = volume_reports(rows, truth_of, grey_image, class_names, measure.eye, measure.fovea)
    centres = {r.name: r.fovea for r in truth}
    pred = volume_reports(rows, scored.kept.get, grey_image, class_names, measure.eye, measure.fovea, centres)
    if out is not None:
        write_volume_reports(truth, out, class_names, measure.eye, "grader_")
        write_volume_reports(pred, out, class_names, measure.eye, "predicted_", say=False)
    return etdrs_agreement(truth, pred, class_names, measure.eye)


def _checked_spacing(spacing: Spacing) -> Spacing:
    if spacing is None:
        return None
    spacing = float(spacing) if isinstance(spacing, (int, float)) else tuple(float(s) for s in spacing)
    if any(s <= 0 for s in np.atleast_1d(spacing)):
        raise ValueError(f"spacing must be > 0, got {spacing}")
    return spacing


@dataclass
class _ScoredPairs:
    """What scoring every file pair gathers: pooled counts, per-image scores and rows, amounts, extreme cases."""

    total: torch.Tensor
    per_image: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    truth_counts: dict[Path, list[int]] = field(default_factory=dict)  # per image file (a volume's slices summed)
    pred_counts: dict[Path, list[int]] = field(default_factory=dict)
    worst: list = field(default_factory=list)  # heaps of (key, index, case): the worst_k lowest / highest scores
    best: list = field(default_factory=list)
    seconds: float = 0.0
    kept: dict[Path, np.ndarray] = field(default_factory=dict)  # predicted labels of B-scans of volumes

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


def _score_pairs(pairs, predictor: Predictor, nsd_tolerance: float, spacing: Spacing, worst_k: int,
                 keep: frozenset | set = frozenset()) -> _ScoredPairs:
    """Score every pair; the predictions of the images in ``keep`` (B-scans of volumes) are kept for ETDRS."""
    k = predictor.num_classes
    scored = _ScoredPairs(torch.zeros(k, k, dtype=torch.int64))
    for i, pair in enumerate(pairs):
        image = predictor.read(pair.image, pair.slice_index)  # intensities mapped as in training (CT window)
        target = predictor.value_map.encode(read_mask(pair.mask, pair.slice_index), source=pair.mask)
        t0 = time.perf_counter()
        pred = predictor.predict_image(image, str(pair))
        scored.seconds += time.perf_counter() - t0
        scores = score_image(pred, target, k, nsd_tolerance, spacing)
        if pair.image in keep and pair.slice_index is None:
            scored.kept[pair.image] = np.asarray(pred, dtype=np.uint8)
        for counts, key in ((scored.truth_counts, "truth_pixels"), (scored.pred_counts, "pred_pixels")):
            counts[pair.image] = [a + b for a, b in zip(counts.get(pair.image, [0] * (k - 1)), scores[key])]
        file = pair.image.name if pair.slice_index is None else f"{pair.image.name}:{pair.slice_index}"
        scored.add(i, file, scores, (image, target, pred), worst_k)
    return scored


def _pooled_summary(scored: _ScoredPairs, names: list[str], values: Sequence[int]) -> dict:
    pooled = scores_from_confusion(scored.total)
    per_class = [_class_summary(c, names[c + 1], values[c + 1], pooled, scored.per_image)
                 for c in range(len(names) - 1)]  # fmt: skip
    return {
        **pooled,
        "mean hd95": _mean([c.hd95_mean for c in per_class]),
        "mean nsd": _mean([c.nsd_mean for c in per_class]),
        "mean image dice": _mean([c.mean_image_dice for c in per_class]),
        "per class": [c.to_json() for c in per_class],
        "confusion matrix": scored.total.tolist(),
    }


def _write_evaluation(out: Path, summary: dict, scored: _ScoredPairs, names: list[str]) -> None:
    atomic_write_json(out / "summary.json", summary)
    atomic_write_csv(out / "metrics_per_image.csv", CSV_COLUMNS, scored.rows)
    plot_confusion_matrix(scored.total.numpy(), names, out / "confusion_matrix.png")
    per_class_dice = {names[c + 1]: [s["dice"][c] for s in scored.per_image] for c in range(len(names) - 1)}
    plot_dice_histogram(per_class_dice, out / "dice_histogram.png")
    if scored.worst:
        plot_cases([c for *_, c in sorted(scored.worst, reverse=True)], out / "worst_cases.png", "worst cases")
        plot_cases([c for *_, c in sorted(scored.best, reverse=True)], out / "best_cases.png", "best cases")


# ---------------------------------------------------------------- comparing runs


