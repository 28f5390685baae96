"""Scoring a labelled folder with a trained model, the run report, and comparing runs.

``evaluate_folder`` predicts every image of ``.../images`` at its original size (see
:class:`gctxseg.predict.Predictor` for ``resize``/``sliding`` inference and test-time augmentation), maps
the masks of the sibling ``masks`` folder with the checkpoint's mask-value map, and writes:

- ``summary.json``: the seed project's metric block from pixel counts summed over all images (pixel
  accuracy; per-class Precision, Recall, F1, Dice, IoU; their means), then per class the per-image
  aggregates: mean image Dice, HD95 mean/median, NSD mean, how many images were missed or false alarms;
- ``metrics_per_image.csv``: one row per image and foreground class: ``file, class, dice, iou, hd95, nsd,
  truth_pixels, pred_pixels`` (a NIfTI volume is scored slice by slice, ``file`` = ``NAME.nii.gz:SLICE``);
- ``confusion_matrix.png``, ``dice_histogram.png``, ``worst_cases.png``, ``best_cases.png``;
- ``amounts_per_image.csv``, ``bland_altman.png``, ``amount_scatter.png`` and ``summary.json``'s ``agreement``:
  true vs predicted area per image and volume per volume, in mm² / mm³ where the spacing is known
  (:mod:`gctxseg.agreement`, :mod:`gctxseg.measurements`).

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
Dice here is 2TP / (2TP + FP + FN) from the image's pixel counts (as :mod:`gctxseg.metrics`); MONAI's
``compute_dice`` would give NaN (``ignore_empty=True``) or 1 (``ignore_empty=False``) where the truth is
empty, and we want a false alarm on a healthy scan to score 0.
"""

from __future__ import annotations

import heapq
import json
import math
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import compute_hausdorff_distance, compute_surface_dice

from .agreement import write_agreement
from .checkpoint import load_checkpoint
from .data import DatasetError, expand_slices, find_pairs, read_info, read_mask
from .data.errors import raise_collected
from .data.splits import run_fold_files
from .measurements import MeasurementOptions, class_names_for, fill_counts, plan_measurements
from .metrics import confusion_matrix, scores_from_confusion
from .outputs import check_output_file, check_output_folder, staged_output
from .predict import Predictor, load_predictor
from .report import (
    format_table,
    is_gctxseg_plot,
    plot_cases,
    plot_compare_curves,
    plot_confusion_matrix,
    plot_dice_histogram,
    summarize_run,
    write_html_report,
)
from .utils import atomic_write_csv, atomic_write_json

__all__ = [
    "CSV_COLUMNS",
    "EvaluationResult",
    "surface_metrics",
    "score_image",
    "evaluate_folder",
    "write_run_report",
    "measure_throughput",
    "compare_runs",
]

CSV_COLUMNS = ("file", "class", "dice", "iou", "hd95", "nsd", "truth_pixels", "pred_pixels")

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


@dataclass
class EvaluationResult:
    """What :func:`evaluate_folder` computed (and wrote, when it had an output folder)."""

    summary: dict
    rows: list[dict] = field(default_factory=list)  # metrics_per_image.csv, one dict per image and class
    confusion: torch.Tensor | None = None  # K x K pixel counts over all images, rows = truth
    out: Path | None = None


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


def _class_summary(k: int, name: str, value: int, pooled: dict, per_image: list[dict]) -> dict:
    dice = [s["dice"][k] for s in per_image]
    hd95 = [s["hd95"][k] for s in per_image]
    truth = [s["truth_pixels"][k] > 0 for s in per_image]
    predicted = [s["pred_pixels"][k] > 0 for s in per_image]
    finite_hd = _finite(hd95)
    return {
        "class": k + 1,
        "value": value,
        "name": name,
        "dice": pooled["Dice"][k],
        "iou": pooled["IoU"][k],
        "precision": pooled["Precision"][k],
        "recall": pooled["Recall"][k],
        "mean image dice": _mean(dice),
        "mean image iou": _mean([s["iou"][k] for s in per_image]),
        "hd95 mean": _mean(finite_hd),
        "hd95 median": statistics.median(finite_hd) if finite_hd else math.nan,
        "nsd mean": _mean([s["nsd"][k] for s in per_image]),
        "images with truth": sum(truth),
        "images with prediction": sum(predicted),
        "missed": sum(t and not p for t, p in zip(truth, predicted)),
        "false alarms": sum(p and not t for t, p in zip(truth, predicted)),
    }


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
        infer_mode: ``resize`` or ``sliding`` (see :class:`gctxseg.predict.Predictor`).
        compile: ``torch.compile`` the model with frozen weights.
        nsd_tolerance: NSD tolerance in pixels (in the unit of ``spacing`` when given), default 2.
        spacing: pixel size, one number or ``(row, column)``, e.g. in mm; None = pixels.
        worst_k: images in the worst/best case grids.
        measure: pixel/slice spacing, B-scan grouping and class names of the true-vs-predicted amounts.
        out_owned: ``out`` sits in a folder gctxseg owns (a run folder's ``eval``): taken as an earlier
            evaluation even without the marker of :mod:`gctxseg.outputs` (written before markers existed).

    Returns:
        the summary, the per-image rows, the pooled confusion matrix.

    Raises:
        DatasetError: no images, missing masks, mask sizes or values not fitting (all checked first, one
            error), or an unreadable image.
        ValueError: unreadable checkpoint, bad option, an ``out`` that is not evaluate's to write
            (:mod:`gctxseg.outputs`: the input folders, a folder of other files, one being written now).
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


# What `evaluate` writes into --out: a new or empty folder, or a previous evaluation (gctxseg.outputs' rule)
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
    from .clinical import etdrs_agreement, grey_image, volume_reports, write_volume_reports

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
        scored.total += scores["confusion"]
        scored.per_image.append(scores)
        for counts, key in ((scored.truth_counts, "truth_pixels"), (scored.pred_counts, "pred_pixels")):
            counts[pair.image] = [a + b for a, b in zip(counts.get(pair.image, [0] * (k - 1)), scores[key])]
        file = pair.image.name if pair.slice_index is None else f"{pair.image.name}:{pair.slice_index}"
        for c in range(k - 1):
            scored.rows.append({"file": file, "class": c + 1,
                                **{key: scores[key][c] for key in CSV_COLUMNS[2:]}})  # fmt: skip
        if worst_k > 0:
            score = _image_score(scores)
            case = (f"{file} Dice {score:.3f}", image, target.astype(np.uint8), pred.astype(np.uint8))
            for heap, key in ((scored.worst, -score), (scored.best, score)):
                item = (key, -i, case)
                (heapq.heappush if len(heap) < worst_k else heapq.heappushpop)(heap, item)
    return scored


def _pooled_summary(scored: _ScoredPairs, names: list[str], values: Sequence[int]) -> dict:
    pooled = scores_from_confusion(scored.total)
    per_class = [_class_summary(c, names[c + 1], values[c + 1], pooled, scored.per_image)
                 for c in range(len(names) - 1)]  # fmt: skip
    return {
        **pooled,
        "mean hd95": _mean([c["hd95 mean"] for c in per_class]),
        "mean nsd": _mean([c["nsd mean"] for c in per_class]),
        "mean image dice": _mean([c["mean image dice"] for c in per_class]),
        "per class": per_class,
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


def write_run_report(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    device: str = "auto",
    amp: str = "auto",
    tta: bool = False,
    infer_mode: str = "resize",
    evaluate: bool = True,
) -> Path:
    """Evaluate a run's ``best.pt`` on its validation set into ``run_dir/eval`` and write ``report.html``.

    Args:
        run_dir: a run folder written by ``gctxseg train``.
        data: images folder to evaluate on (default: the run's validation folder, from the checkpoint).
        device: ``auto``, ``cpu``, ``cuda`` ...
        amp: ``auto``, ``bf16``, ``fp16`` or ``off``.
        tta: horizontal-flip test-time augmentation.
        infer_mode: ``resize`` or ``sliding``.
        evaluate: False = reuse ``run_dir/eval`` as it is (or leave the evaluation out).

    Returns:
        the path of ``report.html``.
    """
    run_dir = Path(run_dir)
    weights = run_dir / "best.pt"
    eval_dir = run_dir / "eval"
    if evaluate and weights.is_file():
        cfg = load_checkpoint(weights)["config"]
        if data is None and cfg.get("folds"):  # a cross-validation fold: its held-out patients
            data = run_fold_files(cfg, run_dir)[1]
        evaluate_folder(
            weights, data or cfg["data_val"], cfg["img_f"], cfg["mask_f"], eval_dir,
            device=device, amp=amp, tta=tta, infer_mode=infer_mode, out_owned=True,
        )  # fmt: skip
    return write_html_report(run_dir, eval_dir)


# ---------------------------------------------------------------- comparing runs


@torch.no_grad()
def measure_throughput(predictor: Predictor, batch: int = 1, min_seconds: float = 1.0, min_repeats: int = 3) -> float:
    """Forward passes per second of the model alone on random inputs at the training size (images/s).

    One warm-up pass, then at least ``min_repeats`` timed passes and ``min_seconds``. Pre- and
    post-processing (reading, resizing, TTA) are not included; on a shared CPU the figure is noisy.
    """
    x = torch.randn(batch, predictor.channels, *predictor.base_size, device=predictor.device)
    sync = torch.cuda.synchronize if predictor.device.type == "cuda" else (lambda: None)
    predictor._probabilities(x)  # warm-up
    sync()
    repeats, start = 0, time.perf_counter()
    while repeats < min_repeats or time.perf_counter() - start < min_seconds:
        predictor._probabilities(x)
        sync()
        repeats += 1
    return batch * repeats / (time.perf_counter() - start)


def compare_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path | None = "compare.png",
    device: str = "auto",
    amp: str = "off",
    timing_seconds: float = 1.0,
    *,
    force: bool = False,
) -> tuple[list[dict], str]:
    """Best validation figures, size and measured inference speed of several runs side by side.

    Images/s is measured now, on this machine, with :func:`measure_throughput` (batch 1, the run's training
    size, no TTA), so every run is timed under the same conditions; it is not read from the logs.

    Args:
        run_dirs: run folders (with ``log.json`` and ``best.pt`` or ``last.pt``).
        out: PNG of the runs' curves together (None = no plot).
        device: where to time inference.
        amp: precision of the timing (default fp32).
        timing_seconds: how long to time each run (at least 3 passes).
        force: replace an existing ``out`` that is not a plot gctxseg drew (never a file of the runs compared).

    Returns:
        the rows (one dict per run) and the same as a printable table.

    Raises:
        ValueError: a folder without ``log.json`` or checkpoint; an ``out`` that is a file of the runs, or an
            existing file that is not a gctxseg plot (:func:`gctxseg.outputs.check_output_file`).
    """
    if out is not None:  # before any run is read: a wrong --out costs nothing
        runs_files = [f for d in map(Path, run_dirs) if d.is_dir() for f in d.iterdir()]
        check_output_file(out, "compare", inputs=runs_files, suffix=".png", is_own=is_gctxseg_plot, force=force)
    rows, logs = [], {}
    for run_dir in map(Path, run_dirs):
        if not (run_dir / "log.json").is_file():
            raise ValueError(f"{run_dir}: no log.json; pass run folders written by 'gctxseg train'")
        summary = summarize_run(run_dir)
        weights = run_dir / "best.pt" if (run_dir / "best.pt").is_file() else run_dir / "last.pt"
        predictor = Predictor(weights, device, amp)
        log = json.loads((run_dir / "log.json").read_text())
        label = run_dir.name if run_dir.name not in logs else str(run_dir)
        logs[label] = log
        best = summary["best val"]
        rows.append({
            "run": label,
            "model": summary["model"],
            "best epoch": summary["best epoch"] + 1,
            "epochs": summary["epochs"],
            "val mean dice": best.get("mean dice"),
            "val mean iou": best.get("mean iou"),
            "val pixel acc": best.get("pixel accuracy"),
            "params (M)": summary["parameters"] / 1e6,
            "G mult-adds": (log["model"].get("flops") or 0) / 1e9,
            "input": "x".join(str(s) for s in predictor.base_size),
            "images/s": measure_throughput(predictor, min_seconds=timing_seconds),
        })  # fmt: skip
    if out is not None and logs:
        plot_compare_curves(logs, out)
    device_name = str(predictor.device) if rows else device
    table = format_table(rows) + (
        f"\nimages/s: forward passes at batch 1 on {device_name} ({torch.get_num_threads()} threads), measured now"
    )
    return rows, table
