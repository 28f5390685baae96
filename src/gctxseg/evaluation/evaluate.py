"""Scoring a labelled folder: a trained model's predictions, or a folder of predicted masks (no model).

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

``score_prediction_folder`` reads each image's prediction from a folder of masks instead (as nnU-Net's
``compute_metrics_on_folder``) and writes the same files through the same scoring (``_evaluate``).

Per-image scores and their empty cases: :mod:`gctxseg.metrics`; what an evaluation pools and writes (also of OCT
volume files, :mod:`gctxseg.evaluation.volume_files`): :mod:`gctxseg.evaluation.results`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..clinical.agreement import etdrs_agreement, write_agreement
from ..clinical.measurements import MeasurementOptions, class_names_for, fill_counts, plan_measurements
from ..core.outputs import check_output_folder, staged_output
from ..data import (
    READABLE_SUFFIXES,
    DatasetError,
    ImagePair,
    MaskValueMap,
    expand_slices,
    find_pairs,
    read_image,
    read_info,
    read_mask,
)
from ..data.errors import raise_collected
from ..data.io import file_stem, is_scan
from ..inference.predictor import PREDICT_BATCH, EnsemblePredictor, Predictor, load_predictor
from ..metrics import Spacing, check_spacing
from .image_scores import scored_image
from .results import (
    CSV_COLUMNS,
    EVALUATION_ENTRIES,
    EvaluationResult,
    ScoredImages,
    pooled_summary,
    tta_name,
    write_evaluation_files,
)

__all__ = [
    "CSV_COLUMNS",
    "EvaluationResult",
    "evaluate_folder",
    "score_labels",
    "score_prediction_folder",
]


def _read_truth(pair: ImagePair) -> tuple[np.ndarray, str | None]:
    """A ground-truth mask as read, and what is wrong with its size (None where it fits its image)."""
    mask = read_mask(pair.mask, pair.slice_index)
    h, w = read_info(pair.image).size
    if mask.shape != (h, w):
        return mask, (f"{pair.mask}: {mask.shape[0]}x{mask.shape[1]} but its image is {h}x{w}; "
                      "re-export the mask at the image size")
    return mask, None


def _check_masks(pairs, value_map) -> None:
    """Read every mask before predicting anything: sizes and values, all problems, one error."""
    problems = []
    for pair in pairs:
        try:
            mask, problem = _read_truth(pair)
            if problem:
                problems.append(problem)
                continue
            value_map.encode(mask, source=pair.mask)
        except DatasetError as err:
            problems.append(str(err))
    raise_collected(problems)


def evaluate_folder(
    weights: str | Path | list[str | Path],
    data: str | Path | Sequence[ImagePair],
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
        data: images folder (or its file pairs, e.g. a CV fold's).
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
            evaluation even without the marker of :mod:`gctxseg.core.outputs`, as gctxseg 0.1.0 builds wrote it
            before output folders were marked (``gctxseg report`` evaluates into it and has no ``--out``).

    Returns:
        the summary, the per-image rows, the pooled confusion matrix.

    Raises:
        DatasetError: no images, missing masks, mask sizes or values not fitting (all checked first, one
            error), or an unreadable image.
        ValueError: unreadable checkpoint, bad option, an ``out`` that is not evaluate's to write
            (:mod:`gctxseg.core.outputs`: the input folders, a folder of other files, one being written now).
        OSError: the disk refused a write (the previous evaluation in ``out`` is then kept).
    """
    spacing = check_spacing(spacing)
    cases = _cases(data, img_f, mask_f, out, measure, out_owned)  # a wrong --out is refused before the weights are read
    predictor = load_predictor(weights, device, amp, tta=tta, tta_vflip=tta_vflip, infer_mode=infer_mode,
                               compile=compile)
    _check_masks(cases.pairs, predictor.value_map)
    head = _model_head(weights, cases, infer_mode, tta, tta_vflip)
    predictions = _ModelPredictions(predictor, cases.pairs)
    return _evaluate(cases, predictions, predictor.value_map, head, nsd_tolerance, spacing, worst_k)


def _model_head(weights, cases: _Cases, infer_mode: str, tta: bool, tta_vflip: bool) -> dict:
    """``summary.json``'s first keys for a model's predictions: the weights, the cases, how they were predicted."""
    return {"weights": str(weights), "data": cases.data, "images": len(cases.pairs), "infer mode": infer_mode,
            "tta": tta_name(tta, tta_vflip)}


def score_prediction_folder(
    predictions: str | Path,
    data: str | Path | Sequence[ImagePair],
    img_f: str = ".jpg",
    mask_f: str = ".png",
    out: str | Path | None = None,
    *,
    nsd_tolerance: float = 2.0,
    spacing: Spacing = None,
    worst_k: int = 4,
    measure: MeasurementOptions | None = None,
    mask_values: Sequence[int] | None = None,
) -> EvaluationResult:
    """Score a folder of predicted masks against the truth of a labelled folder, no model needed (as nnU-Net's
    ``compute_metrics_on_folder``): the same figures and files as :func:`evaluate_folder`, through its scoring.

    A case's prediction is the file of ``predictions`` with the stem of its image (``NAME.png``, a volume's
    ``NAME.nii.gz``), holding the truth masks' values, as ``gctxseg predict`` writes them; a ``gctxseg predict``
    output folder is read from its ``masks/``. Files of other suffixes (``.csv``, ``.json``) are not looked at.

    Args:
        predictions: folder of predicted masks.
        data: images folder (truth in the sibling ``masks``), or its file pairs (e.g. a CV fold's).
        img_f: image file suffix.
        mask_f: truth mask file suffix.
        out: folder for ``summary.json``, ``metrics_per_image.csv`` and the plots (nothing written if None).
        nsd_tolerance: NSD tolerance in pixels (in the unit of ``spacing`` when given), default 2.
        spacing: pixel size, one number or ``(row, column)``, e.g. in mm; None = pixels.
        worst_k: images in the worst/best case grids.
        measure: pixel/slice spacing, B-scan grouping and class names of the true-vs-predicted amounts.
        mask_values: the mask value of each class, background first (default: the values the truth masks
            hold; with N ``measure.class_names``, 0..N where the masks hold class numbers and not every class).

    Raises:
        DatasetError: a truth case without a prediction, a prediction without truth, a prediction or truth
            mask whose size does not fit, a value outside the classes' (all checked first, one error).
        ValueError: no ``predictions`` folder, a bad option, an ``out`` that is not evaluate's to write.
        OSError: the disk refused a write (the previous evaluation in ``out`` is then kept).
    """
    spacing = check_spacing(spacing)
    folder = Path(predictions)
    cases = _cases(data, img_f, mask_f, out, measure, False, (folder, "the predictions folder"))
    predicted, problems = _match_predictions(cases.pairs, folder)
    value_map, more = _check_predictions(cases.pairs, predicted, mask_values, len(cases.measure.class_names))
    raise_collected(problems + more)
    head = {"predictions": str(folder), "data": cases.data, "images": len(cases.pairs)}
    return _evaluate(cases, _FolderPredictions(predicted, value_map), value_map, head, nsd_tolerance, spacing,
                     worst_k)


def score_labels(
    labels: Mapping[str, np.ndarray],
    pairs: Sequence[ImagePair],
    value_map: MaskValueMap,
    out: str | Path | None,
    *,
    weights: str,
    nsd_tolerance: float = 2.0,
    out_owned: bool = False,
    head: Mapping[str, object] | None = None,
    figures_skipped: str | None = None,
) -> EvaluationResult:
    """Score class labels already predicted (``gctxseg cv``'s out-of-fold arrays, argmaxed; a run's final
    validation) against the truth of ``pairs``: the same figures and files as :func:`evaluate_folder` makes of
    ``weights``, without predicting again.

    Args:
        labels: each pair's ``name`` -> its predicted class indices at the image's size.
        pairs: the labelled 2D images (no volume slices).
        value_map: the mask values of the classes the labels index.
        out: folder for ``summary.json``, ``metrics_per_image.csv`` and the plots (nothing written if None).
        weights: the weights that predicted ``labels``, as ``summary.json`` names them.
        nsd_tolerance: NSD tolerance in pixels.
        out_owned: as :func:`evaluate_folder`'s.
        head: ``summary.json`` entries that replace the ones made here (``data``: the folder the pairs are from;
            ``seconds per image`` and ``device`` of the prediction, where it was timed).
        figures_skipped: why the plots are not drawn (``summary.json``'s "figures not drawn"); None: drawn.

    Raises:
        DatasetError: a pair without labels, labels of another size than the pair's mask, masks not fitting (all
            checked first, one error).
    """
    cases = _cases(list(pairs), "", "", out, None, out_owned)
    _check_masks(cases.pairs, value_map)
    raise_collected([problem for p in cases.pairs if (problem := _labels_problem(p, labels)) is not None])
    summary_head = {**_model_head(weights, cases, "resize", False, False), **(head or {})}
    if figures_skipped is not None:
        summary_head["figures not drawn"] = figures_skipped
    return _evaluate(cases, _LabelPredictions(labels), value_map, summary_head, nsd_tolerance, None, 4,
                     figures=figures_skipped is None)


def _labels_problem(pair: ImagePair, labels: Mapping[str, np.ndarray]) -> str | None:
    """What is wrong with ``pair``'s predicted labels (missing, or not at its image's size), None where nothing."""
    if pair.name not in labels:
        return f"{pair.image}: no predicted labels"
    size = tuple(read_info(pair.image).size)
    shape = tuple(labels[pair.name].shape)
    return None if shape == size else f"{pair.image}: labels of {shape} but its image is {size}"


@dataclass
class _Cases:
    """The labelled cases an evaluation scores, their measurement plan, and where (and under which rules) it
    writes."""

    pairs: list[ImagePair]
    plan: list
    measure: MeasurementOptions
    data: str  # as summary.json names it
    out: Path | None
    rules: dict


def _cases(data, img_f: str, mask_f: str, out: str | Path | None, measure: MeasurementOptions | None,
           out_owned: bool, *inputs: tuple[Path, str]) -> _Cases:
    """Pair the files (a NIfTI volume one slice each), plan the amounts, and check ``out`` against the
    ``inputs`` and the folders read, before any prediction is read or made."""
    from_folder = isinstance(data, (str, Path))
    pairs = expand_slices(find_pairs(data, img_f, mask_f) if from_folder else list(data))
    measure = measure or MeasurementOptions()
    images = list(dict.fromkeys(p.image for p in pairs))
    plan = plan_measurements(images, measure, data if from_folder else images[0].parent)
    rules = {}
    if out is not None:
        rules = _output_rules(pairs, Path(out), out_owned, inputs)
        check_output_folder(out, "evaluate", EVALUATION_ENTRIES, **rules)
    shown = str(data) if from_folder else f"{len(pairs)} listed files"
    return _Cases(pairs, plan, measure, shown, None if out is None else Path(out), rules)


def _evaluate(cases: _Cases, predictions: _Predictions, value_map: MaskValueMap, head: dict,
              nsd_tolerance: float, spacing: Spacing, worst_k: int, figures: bool = True) -> EvaluationResult:
    """The one scoring path of a model's and a folder's predictions: score every case, summarise, compare the
    amounts, write ``cases.out`` (its plots only with ``figures``)."""
    in_volumes = {m for row in cases.plan if row.kind in ("group", "series") for m in row.members}
    scored = _score_pairs(cases.pairs, predictions, value_map, nsd_tolerance, spacing, worst_k, keep=in_volumes)
    names = [f"class {c} (value {v})" for c, v in enumerate(value_map.values)]
    summary = {
        **head,
        "nsd tolerance": nsd_tolerance,
        "spacing": spacing,
        "distance unit": "px" if spacing is None else "spacing unit",
        "mask values": value_map.to_dict(),
        **pooled_summary(scored, names, value_map.values),
        **predictions.timing(len(cases.pairs)),
    }
    class_names = class_names_for(cases.measure, value_map.num_classes)
    agreement = (summary, cases.plan, cases.pairs, scored, value_map, class_names, cases.measure)
    if cases.out is None:
        _add_agreement(*agreement, None)
        return EvaluationResult(summary, scored.rows, scored.total, None)
    with staged_output(cases.out, "evaluate", EVALUATION_ENTRIES, **cases.rules) as staging:
        _add_agreement(*agreement, staging, figures)
        write_evaluation_files(staging, summary, scored, names, figures)
    return EvaluationResult(summary, scored.rows, scored.total, cases.out)


def _output_rules(pairs, out: Path, adopt_unmarked: bool, inputs: Sequence[tuple[Path, str]] = ()) -> dict:
    """The folders ``evaluate`` reads (images, ground-truth masks, ``inputs``), never written into; the advice of a
    refusal."""
    protected = {p.image.parent: "the images folder" for p in pairs}
    protected.update({p.mask.parent: "the ground-truth masks folder" for p in pairs})
    protected.update(dict(inputs))
    return dict(noun="evaluation files", fix=f"pass a new folder, e.g. --out {out.parent / (out.name + '_eval')}",
                protected=list(protected.items()), adopt_unmarked=adopt_unmarked)


def _add_agreement(summary: dict, plan, pairs, scored: ScoredImages, value_map, class_names, measure,
                   out: Path | None, figures: bool = True) -> None:
    """True vs predicted amounts (and ETDRS grids of volumes) into ``summary``, their files into ``out`` (the
    amounts' plots only with ``figures``)."""
    _, summary["agreement"] = write_agreement(fill_counts(plan, scored.truth_counts),
                                              fill_counts(plan, scored.pred_counts), class_names, out,
                                              figures)  # fmt: skip
    if any(row.kind in ("group", "series") for row in plan):
        summary["etdrs agreement"] = _volume_agreement(plan, pairs, scored, value_map, class_names, measure, out)


def _volume_agreement(plan, pairs, scored: ScoredImages, value_map, class_names, measure, out: Path | None) -> list:
    """The grader's and the predicted ETDRS rows and en-face maps of every volume (``grader_etdrs.csv``,
    ``predicted_etdrs.csv``, ``enface/``), the predictions on the grader's grid; their agreement per column."""
    from ..clinical.etdrs_rows import grey_image, volume_reports, write_volume_reports

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


def _score_pairs(pairs, predictions: _Predictions, value_map: MaskValueMap,
                 nsd_tolerance: float, spacing: Spacing, worst_k: int, keep: frozenset | set = frozenset()
                 ) -> ScoredImages:
    """Score every pair's prediction (``predictions(pair)`` gives the image shown and the predicted labels); the
    predictions of the images in ``keep`` (B-scans of volumes) are kept for ETDRS."""
    k = value_map.num_classes
    scored = ScoredImages(torch.zeros(k, k, dtype=torch.int64))
    for i, pair in enumerate(pairs):
        target = value_map.encode(read_mask(pair.mask, pair.slice_index), source=pair.mask)
        image, pred = predictions(pair)
        scores = scored_image(pred, target, k, nsd_tolerance, spacing)
        if pair.image in keep and pair.slice_index is None:
            scored.kept[pair.image] = np.asarray(pred, dtype=np.uint8)
        for counts, key in ((scored.truth_counts, "truth_pixels"), (scored.pred_counts, "pred_pixels")):
            counts[pair.image] = [a + b for a, b in zip(counts.get(pair.image, [0] * (k - 1)), scores[key])]
        file = pair.image.name if pair.slice_index is None else f"{pair.image.name}:{pair.slice_index}"
        scored.add(i, file, scores, (image, target, pred), worst_k)
    return scored


# ---------------------------------------------------------------- where the predictions come from
# (a source is called with a case and gives the image shown and the predicted labels; ``timing`` adds its seconds)


class _ModelPredictions:
    """A model's prediction of each case, timed (``summary.json``'s seconds per image are the forward passes).

    The cases are predicted ``PREDICT_BATCH`` at a time, in the order they are scored (``pairs``)."""

    def __init__(self, predictor: Predictor | EnsemblePredictor, pairs: Sequence[ImagePair]) -> None:
        self.predictor, self.pairs = predictor, list(pairs)
        self.position = {pair: i for i, pair in enumerate(self.pairs)}
        self.seconds = 0.0
        self.ready: dict[ImagePair, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, pair: ImagePair) -> tuple[np.ndarray, np.ndarray]:
        if pair not in self.ready:
            first = self.position[pair]
            chunk = [p for p in self.pairs[first:first + PREDICT_BATCH] if p not in self.ready]
            # intensities mapped as in training (CT window)
            images = [self.predictor.read(p.image, p.slice_index) for p in chunk]
            t0 = time.perf_counter()
            preds = self.predictor.predict_images(images, [str(p) for p in chunk])
            self.seconds += time.perf_counter() - t0
            self.ready.update(zip(chunk, zip(images, preds)))
        return self.ready.pop(pair)

    def timing(self, images: int) -> dict:
        return {"seconds per image": self.seconds / max(1, images), "device": str(self.predictor.device)}


class _FolderPredictions:
    """Each case's predicted mask file, read and mapped to classes with the truth's values."""

    def __init__(self, predicted: dict[ImagePair, Path], value_map: MaskValueMap) -> None:
        self.predicted = predicted
        self.value_map = value_map

    def __call__(self, pair: ImagePair) -> tuple[np.ndarray, np.ndarray]:
        path = self.predicted[pair]
        return _shown_image(pair), self.value_map.encode(read_mask(path, pair.slice_index), source=path)

    def timing(self, images: int) -> dict:
        return {}


class _LabelPredictions:
    """Each case's labels, predicted before (:func:`score_labels`)."""

    def __init__(self, labels: Mapping[str, np.ndarray]) -> None:
        self.labels = labels

    def __call__(self, pair: ImagePair) -> tuple[np.ndarray, np.ndarray]:
        return _shown_image(pair), np.asarray(self.labels[pair.name])

    def timing(self, images: int) -> dict:
        return {}


_Predictions = _ModelPredictions | _FolderPredictions | _LabelPredictions


def _shown_image(pair: ImagePair) -> np.ndarray:
    """A case's image as the worst/best grids show it: a picture as read, a scan scaled from its 0.5th to 99.5th
    percentile (without a model there is no training window to show it in)."""
    image = read_image(pair.image, pair.slice_index)
    if is_scan(pair.image):
        low, high = np.percentile(image, (0.5, 99.5))
        image = np.clip((image - low) / max(float(high - low), 1e-6), 0, 1)
    return image


def _listed(names: Sequence[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f", ... {len(names) - shown} more" if len(names) > shown else "")


def _match_predictions(pairs: Sequence[ImagePair], folder: Path) -> tuple[dict[ImagePair, Path], list[str]]:
    """Each pair's prediction in ``folder`` (the mask file of its image's stem; a ``gctxseg predict`` output
    folder's ``masks/``), and the cases without one and the predictions without a case, one problem each.

    Raises:
        ValueError: ``folder`` is not a folder.
    """
    if not folder.is_dir():
        raise ValueError(f"{folder}: --predictions folder not found; pass the folder of predicted masks")
    files = [f for f in sorted(folder.iterdir()) if f.is_file() and f.name.lower().endswith(READABLE_SUFFIXES)]
    if not files and (folder / "masks").is_dir():
        return _match_predictions(pairs, folder / "masks")
    by_case: dict[str, list[Path]] = {}
    for file in files:
        by_case.setdefault(file_stem(file), []).append(file)
    problems = [f"{found[0]}: {len(found)} predictions of case {case} ({', '.join(f.name for f in found)}); "
                "keep one" for case, found in by_case.items() if len(found) > 1]
    cases = list(dict.fromkeys(file_stem(p.image) for p in pairs))
    missing = [c for c in cases if c not in by_case]
    if missing:
        problems.append(f"{folder}: no prediction for {len(missing)} of {len(cases)} truth case(s) "
                        f"({_listed(missing)}); predict them, or score a folder of the cases predicted")
    extra = sorted(set(by_case) - set(cases))
    if extra:
        problems.append(f"{folder}: {len(extra)} prediction(s) without a truth mask ({_listed(extra)}); move them "
                        "out, or pass the --data folder they were predicted from")
    return {p: by_case[file_stem(p.image)][0] for p in pairs if file_stem(p.image) in by_case}, problems


def _check_predictions(pairs: Sequence[ImagePair], predicted: dict[ImagePair, Path],
                       mask_values: Sequence[int] | None, named: int) -> tuple[MaskValueMap | None, list[str]]:
    """Read every truth mask and prediction before scoring any: sizes, and values against the classes' (see
    :func:`score_prediction_folder`'s ``mask_values``); the value map and every problem (a volume's once)."""
    problems, truth_values, found, first_with = [], set(), [], {}
    for pair in pairs:
        try:
            truth, problem = _read_truth(pair)
            problems += [problem] if problem else []
            for value in np.unique(truth).tolist():
                first_with.setdefault(value, pair.mask)
            truth_values.update(first_with)
            if pair not in predicted:
                continue
            where = predicted[pair] if pair.slice_index is None else f"{predicted[pair]} (slice {pair.slice_index})"
            pred = read_mask(predicted[pair], pair.slice_index)
            if pred.shape != truth.shape:
                problems.append(f"{predicted[pair]}: {pred.shape[0]}x{pred.shape[1]} but its truth mask "
                                f"{pair.mask} is {truth.shape[0]}x{truth.shape[1]}; predict at the image's size")
            else:
                found.append((where, set(np.unique(pred).tolist())))
        except DatasetError as err:
            problems.append(str(err))
    value_map, problem = _class_values(truth_values, mask_values, named, pairs)
    problems += [problem] if problem else []
    problems += _values_beyond_names(truth_values, first_with, named) if mask_values is None else []
    for where, values in found if value_map is not None else ():
        unknown = sorted(values - set(value_map.values))
        if unknown:
            problems.append(f"{where}: value(s) {unknown} not among the classes' mask values {value_map.values}; "
                            "write the predictions with the truth masks' values, as gctxseg predict does")
    return value_map, list(dict.fromkeys(problems))


def _values_beyond_names(truth: set[int], first_with: dict[int, Path], named: int) -> list[str]:
    """More foreground values in the truth masks than ``--class-names`` names: a stray value (a mask painted with
    one wrong pixel) would be scored as a class of its own, at Dice 0, and pull the mean down."""
    foreground = sorted(truth - {0})
    if not named or len(foreground) <= named:
        return []
    stray = [v for v in foreground if v > named] or foreground  # class numbers 1..N: the others are stray
    where = "; ".join(f"{v} first in {first_with[v]}" for v in stray)
    return [f"{first_with[stray[0]]}: the truth masks hold {len(foreground)} foreground values {foreground} but "
            f"--class-names names {named} classes ({where}); fix the mask(s), or name every class"]


def _class_values(truth: set[int], given: Sequence[int] | None, named: int,
                  pairs: Sequence[ImagePair]) -> tuple[MaskValueMap | None, str | None]:
    """The classes' mask values: ``given``, else the truth's, widened to 0..``named`` for masks of class numbers
    that do not hold every named class; and what is wrong with them."""
    masks = pairs[0].mask.parent if pairs else "the truth masks"
    if given is not None:
        unknown = sorted(truth - {int(v) for v in given})
        problem = f"{masks}: truth value(s) {unknown} not among the mask values {sorted(given)}" if unknown else None
        return MaskValueMap(given), problem
    if not truth:
        return None, None  # no truth mask could be read: each one is a problem already
    values = set(range(named + 1)) if named and truth <= set(range(named + 1)) else truth
    if len(values) < 2:
        return None, (f"{masks}: every truth mask holds only the value {min(values)}: no class to score; pass "
                      "--class-names to name the classes the values 1..N stand for")
    return MaskValueMap(values), None
