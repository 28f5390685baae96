"""``evaluate`` on a folder of OCT volume files (``.vol``, ``.e2e``, HEYEX ``.xml``, ``.fda``, DICOM OPT).

Each volume's B-scans are predicted and scored against its true masks (:func:`gctxseg.data.oct_volumes.volume_truth`:
a mask folder in ``gctxseg convert oct-volumes``' layout, else a DICOM SEG beside a DICOM source), HD95 and NSD in
mm where the file gives its pixel spacing. The fluid read-out of the truth and of the prediction is measured on the
file's own geometry (:func:`gctxseg.clinical.volume_readout.volume_readout`, the prediction on the truth's grid
centre): ``grader_etdrs.csv``, ``predicted_etdrs.csv``, ``enface/`` and their agreement per ETDRS subfield (nL) and
hole diameter (µm), and the volume per class (mm³) in ``amounts_per_image.csv`` and ``summary.json``'s
``agreement``. No spacing, grouping or eye flags: they are refused, as the files carry their geometry.

HEYEX files carry layer lines (ILM, RPE, ... per A-scan) drawn by the device or a grader: they outline retinal
layers, not fluid or hole regions, so they are not a truth for these classes and are not used (the run says so).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from ..clinical.agreement import etdrs_agreement, write_agreement
from ..clinical.etdrs_rows import write_volume_reports
from ..clinical.measurements import MeasurementOptions, class_names_for
from ..clinical.volume_readout import (
    describe_volume,
    geometry_flags_given,
    refuse_geometry_flags,
    split_volume_files,
    volume_readout,
)
from ..core.outputs import check_output_folder, staged_output
from ..data.errors import DatasetError, raise_collected
from ..data.oct_volumes import bscan_input, raster_layout, read_oct_volume, volume_truth
from ..inference.predictor import load_predictor
from ..metrics import score_image
from .results import (
    EVALUATION_ENTRIES,
    EvaluationResult,
    ScoredImages,
    pooled_summary,
    tta_name,
    write_evaluation_files,
)

__all__ = ["HEYEX_LAYERS_NOT_USED", "volume_files_in", "evaluate_volume_folder"]

HEYEX_LAYERS_NOT_USED = ("HEYEX layer lines (ILM, RPE ... boundaries per A-scan) are not used as truth: they outline "
                         "retinal layers, not fluid or hole regions")


def volume_files_in(data: str | Path) -> list[Path]:
    """The OCT volume files of the folder ``data`` (empty where it holds none, or is not a folder)."""
    data = Path(data)
    if not data.is_dir():
        return []
    return split_volume_files(sorted(p for p in data.iterdir() if p.is_file()))[1]


def _unreadable_dicom(data: Path) -> list[str]:
    """A line per ``.dcm`` of the folder that pydicom cannot read: not a volume file, it would be left out of the
    scores without a word."""
    import pydicom

    problems = []
    for path in sorted(p for p in data.iterdir() if p.is_file() and p.suffix.lower() == ".dcm"):
        try:
            pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as err:  # pydicom raises many types for a damaged or foreign file
            line = str(err).replace(" Use force=True to force reading.", "").replace("\n", " ")[:160]
            problems.append(f"{path}: not a readable DICOM file ({type(err).__name__}: {line}); re-export it, or "
                            "move it out of the folder")
    return problems


def _check_options(measure: MeasurementOptions, spacing) -> None:
    refuse_geometry_flags(geometry_flags_given(measure) + (["--spacing"] if spacing else []))


def evaluate_volume_folder(weights, data: str | Path, out: str | Path | None, *, masks: str | Path | None = None,
                           mask_f: str = ".png", device: str = "auto", amp: str = "auto", tta: bool = False,
                           tta_vflip: bool = False, infer_mode: str = "resize", compile: bool = False,
                           nsd_tolerance: float = 2.0, spacing=None, worst_k: int = 4,
                           measure: MeasurementOptions | None = None, out_owned: bool = False):
    """Score a model on the volume files of ``data`` (module docstring; ``gctxseg evaluate --data`` takes this path
    where the folder holds volume files); the arguments are :func:`gctxseg.evaluation.evaluate.evaluate_folder`'s,
    ``masks`` the true masks' folder (default: the sibling ``masks`` folder of ``data``).

    Raises:
        DatasetError: an unreadable volume file, or one without its true masks (all checked first, one error).
        ValueError: a spacing, grouping or eye flag (the files carry their geometry); a bad ``out``.
    """
    data = Path(data)
    measure = measure or MeasurementOptions()
    _check_options(measure, spacing)
    files = volume_files_in(data)
    masks = Path(masks) if masks is not None else data.parent / "masks"
    rules = dict(noun="evaluation files", protected=[(data, "the volume files folder"), (masks, "the masks folder")],
                 adopt_unmarked=out_owned, fix=f"pass a new folder, e.g. --out {data.parent / (data.name + '_eval')}")
    if out is not None:  # a wrong --out costs nothing: refused before the weights are read
        check_output_folder(out, "evaluate", EVALUATION_ENTRIES, **rules)
    predictor = load_predictor(weights, device, amp, tta=tta, tta_vflip=tta_vflip, infer_mode=infer_mode,
                               compile=compile)
    class_names = class_names_for(measure, predictor.num_classes)
    sources = _check_truth(files, masks, predictor.value_map, mask_f, class_names)
    columns_eye = "OD" if all(eye for _, eye, _ in sources.values()) else None
    in_mm = all(ruler is not None for *_, ruler in sources.values())  # one unit for every HD95 and NSD
    scored = ScoredImages(torch.zeros(predictor.num_classes, predictor.num_classes, dtype=torch.int64))
    truth_rows, pred_rows, truth_reports, pred_reports = [], [], [], []
    for path in files:  # one volume in memory at a time
        volume = read_oct_volume(path)
        truth = volume_truth(volume, masks, predictor.value_map, mask_f, class_names).labels
        ruler = sources[path][2] if in_mm else None
        pred = _score_volume(scored, volume, truth, predictor, nsd_tolerance, ruler, worst_k)
        name = path.name
        row, report = volume_readout(volume, truth, class_names, columns_eye, name)
        truth_rows.append(row)
        truth_reports.append(report)
        row, report = volume_readout(volume, pred, class_names, columns_eye, name, fovea=report.fovea)
        pred_rows.append(row)
        pred_reports.append(report)
    names = [f"class {c} (value {v})" for c, v in enumerate(predictor.value_map.values)]
    summary = _volume_summary(weights, data, files, sources, scored, names, predictor, infer_mode, tta, tta_vflip,
                              nsd_tolerance, in_mm)
    if not in_mm:
        summary["note"] = "a volume file without a pixel spacing: HD95 and NSD of every file in pixels"
    writing = staged_output(out, "evaluate", EVALUATION_ENTRIES, **rules) if out is not None else nullcontext()
    with writing as staging:
        _, summary["agreement"] = write_agreement(truth_rows, pred_rows, class_names, staging)
        summary["etdrs agreement"] = etdrs_agreement(truth_reports, pred_reports, class_names, columns_eye)
        if staging is not None:
            write_volume_reports(truth_reports, staging, class_names, columns_eye, "grader_")
            write_volume_reports(pred_reports, staging, class_names, columns_eye, "predicted_", say=False)
            write_evaluation_files(staging, summary, scored, names)
    return EvaluationResult(summary, scored.rows, scored.total, Path(out) if out is not None else None)


def _volume_summary(weights, data: Path, files: Sequence[Path], sources: dict, scored: ScoredImages, names: list[str],
                    predictor, infer_mode: str, tta: bool, tta_vflip: bool, nsd_tolerance: float, in_mm: bool) -> dict:
    """``summary.json``'s scores of a volume folder (the read-outs' agreement is added while writing)."""
    value_map = predictor.value_map
    count = len(scored.per_image)
    return {
        "weights": str(weights), "data": str(data), "images": count, "volumes": len(files),
        "truth": {p.name: line for p, (line, *_) in sources.items()},
        "infer mode": infer_mode, "tta": tta_name(tta, tta_vflip),
        "nsd tolerance": nsd_tolerance, "spacing": "each file's own" if in_mm else None,
        "distance unit": "mm" if in_mm else "px", "mask values": value_map.to_dict(),
        **pooled_summary(scored, names, value_map.values),
        "seconds per image": scored.seconds / max(1, count), "device": str(predictor.device),
    }  # fmt: skip


def _check_truth(files: Sequence[Path], masks: Path, value_map, mask_f: str,
                 class_names: Sequence[str]) -> dict[Path, tuple[str, str | None, tuple[float, float] | None]]:
    """Read every volume and its truth before predicting anything; say each one's geometry and truth (all
    problems, one error). Returns path -> (where its truth came from, its eye, its (axial, A-scan) mm)."""
    problems, sources, heyex = _unreadable_dicom(files[0].parent) if files else [], {}, False
    for path in files:
        try:
            volume = read_oct_volume(path)
            truth = volume_truth(volume, masks, value_map, mask_f, class_names)
            if int(truth.labels.max(initial=0)) >= len(class_names) + 1:
                raise DatasetError(f"{truth.source}: class {int(truth.labels.max())} but the model has "
                                   f"{len(class_names)} foreground classes; check the segments")
        except DatasetError as err:
            problems.append(str(err))
            continue
        heyex = heyex or volume.format.startswith("HEYEX")
        geo = volume.geometry
        ruler = (geo.axial_mm, geo.ascan_mm) if geo.axial_mm is not None and geo.ascan_mm is not None else None
        sources[path] = (truth.source, volume.eye, ruler)
        print(f"geometry: {describe_volume(volume, raster_layout(volume))}")
        print(f"truth: {volume.name}: {truth.source}")
    raise_collected(problems)
    if heyex:
        print(f"note: {HEYEX_LAYERS_NOT_USED}", file=sys.stderr)
    return sources


def _score_volume(scored, volume, truth: np.ndarray, predictor, nsd_tolerance: float, ruler, worst_k: int):
    """Predict and score each B-scan of ``volume`` (``metrics_per_image.csv``: ``NAME:B-SCAN``, file order);
    returns the predicted labels (``S x H x W``)."""
    preds = []
    for k, (bscan, target) in enumerate(zip(volume.bscans, truth)):
        image = bscan_input(predictor.intensity, bscan)
        t0 = time.perf_counter()
        pred = np.asarray(predictor.predict_image(image, f"{volume.path} (B-scan {k})"))
        scored.seconds += time.perf_counter() - t0
        scores = score_image(pred, target, predictor.num_classes, nsd_tolerance, ruler)
        scored.add(len(scored.per_image), f"{volume.name}:{k}", scores, (image, target, pred), worst_k)
        preds.append(pred)
    return np.stack(preds)

