"""``gctxseg predict`` on a folder: segment every image and volume file, then measure the masks
(``measurements.csv``, ``etdrs.csv``, en-face maps) and draw the gallery, all staged and swapped in whole.

The predictor (one checkpoint or an ensemble) comes from :mod:`gctxseg.inference`; this module is the workflow
around it: choosing the output names, the folder rules of ``--out`` and the measuring steps after the masks.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..clinical.etdrs_rows import grey_image, volume_reports, write_volume_reports
from ..clinical.measurements import (
    Measurement,
    MeasurementOptions,
    class_names_for,
    describe_spacing,
    measure_written_masks,
    plan_measurements,
    write_measurements_csv,
)
from ..clinical.volume_readout import (
    LISTED_VOLUME_SUFFIXES,
    geometry_flags_given,
    plan_volume_files,
    refuse_geometry_flags,
    split_volume_files,
    volume_columns_eye,
)
from ..core.outputs import check_output_folder as check_outputs
from ..core.outputs import is_disk_error, staged_output
from ..data import DatasetError, read_mask
from ..data.folder import is_apple_double
from ..data.io import NIFTI_SUFFIXES, READABLE_SUFFIXES, file_stem, read_volume, write_volume_mask
from ..inference.predictor import EnsemblePredictor, Predictor, intensity_outlier, load_predictor
from ..reporting.gallery import write_gallery
from ..visualize.colors import overlay
from .predict_volumes import predict_volume_files, say_geometry

__all__ = ["OUTPUT_ENTRIES", "PredictionSummary", "check_class_codes", "check_output_folder", "output_names",
           "predict_folder",
           "write_folder_measurements"]


@dataclass
class PredictionSummary:
    """What a folder prediction did."""

    written: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # one line per bad file
    measurements: list = field(default_factory=list)  # measurements.Measurement rows of measurements.csv
    class_names: list[str] = field(default_factory=list)  # foreground classes, as in the CSV header



def _predict_volume(predictor: Predictor, path: Path, out: Path, name: str) -> Path:
    """Segment a NIfTI volume slice by slice; write its mask volume on the input's grid and one overlay."""
    predictor.intensity.check(path)
    volume, _ = read_volume(path)  # D x H x W, values as read
    slices = [predictor.intensity.apply(s[..., None]) for s in volume]
    pred = np.stack([predictor.predict_image(s, f"{path} (slice {k})") for k, s in enumerate(slices)])
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    mask_path = out / "masks" / f"{name}{suffix}"
    write_volume_mask(mask_path, predictor.value_map.decode(pred), like=path)
    shown = int((pred > 0).reshape(len(pred), -1).sum(1).argmax())  # the slice with the most foreground
    Image.fromarray(overlay(slices[shown], pred[shown])).save(out / "overlays" / f"{name}.png")
    return mask_path



def _source_files(source: Path, suffixes: tuple[str, ...]) -> tuple[list[Path], list[str]]:
    """(the files of ``source`` to segment, sorted: pictures of ``suffixes`` and OCT volume files; one failure line
    for each file whose name cannot be written).

    Raises:
        DatasetError: no file to segment.
    """
    suffixes = tuple(suffixes) + LISTED_VOLUME_SUFFIXES  # OCT volume files (.vol, .e2e) beside the pictures
    listed = sorted(p for p in source.iterdir()
                    if p.is_file() and p.name.lower().endswith(suffixes) and not is_apple_double(p))
    unnamed = [_undecodable_name(p) for p in listed if not _is_text_name(p)]  # each fails alone, in one line
    files = [p for p in listed if _is_text_name(p)]
    if not files:
        raise DatasetError(unnamed[0] if unnamed else
                           f"{source}: no images ({', '.join(suffixes)}); put images there or pass --source DIR")
    return files, unnamed


def predict_folder(
    weights: str | Path | list[str | Path],
    source: str | Path = "inference/img",
    out: str | Path = "inference/out",
    device: str = "auto",
    amp: str = "auto",
    suffixes: tuple[str, ...] = READABLE_SUFFIXES,
    *,
    tta: bool = False,
    tta_vflip: bool = False,
    infer_mode: str = "resize",
    compile: bool = False,
    measure: MeasurementOptions | None = None,
    class_codes: str | Path | None = None,
) -> PredictionSummary:
    """Segment every image in ``source``; write ``out/masks/NAME.png`` and ``out/overlays/NAME.png``.

    Masks hold the dataset's original values (e.g. 0/128/255). Each DICOM slice gets its own mask; a
    NIfTI volume is segmented slice by slice into ``out/masks/NAME.nii.gz`` (or ``.nii``) with the
    input's affine and voxel sizes, and its overlay shows the slice with the most foreground. Intensities
    are mapped as in training (the checkpoint's CT window). Files whose stems collide (``a.png`` and
    ``a.jpg``) are written under their whole names (``a.png.png``, ``a.jpg.png``). A file that fails for
    any reason is listed in the summary's ``failed`` (one line each) and the others are still processed.
    ``weights`` may name several checkpoints or a ``gctxseg cv`` folder (:func:`load_predictor`).
    ``tta``, ``tta_vflip``, ``infer_mode`` and ``compile`` are those of :class:`Predictor`.
    ``out/measurements.csv`` and ``out/index.html`` (the gallery) hold each image's amounts per class, in
    mm² / mm³ where ``measure`` or the files give the spacing (:mod:`gctxseg.clinical.measurements`).
    OCT volume files (``.vol``, ``.e2e``, multi-frame DICOM) are measured on their own geometry
    (:mod:`gctxseg.clinical.volume_readout`) and, where highdicom is installed, get a DICOM SEG and a TID 1500 report in
    ``out/dicom/`` (:mod:`gctxseg.clinical.dicom_out`; ``class_codes`` is a JSON of the segments' codes).

    Raises:
        DatasetError: ``source`` missing or holding no images; slices of one volume differing in size.
        ValueError: unreadable checkpoint; bad ``measure`` options.
    """
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise DatasetError(f"{source}: folder not found; pass --source DIR with images to segment")
    check_output_folder(source, out)  # before the weights are read: a wrong --out costs nothing
    files, unnamed = _source_files(source, suffixes)
    names = output_names(files)
    files, volume_files = split_volume_files(files)  # each volume file is measured on its own geometry
    measure = measure or MeasurementOptions()
    _check_flags_for_volume_files(measure, files, volume_files)
    plan = plan_measurements(files, measure, source)  # bad spacing or grouping stops here, before any prediction
    volumes, unread = plan_volume_files(volume_files, names)
    dicom_codes = _dicom_codes(class_codes, volumes)  # a bad --class-codes stops here, before the weights are read
    if files:
        print(f"pixel spacing: {describe_spacing(files, measure, source)}")
    say_geometry(volumes)
    predictor = load_predictor(weights, device, amp, tta=tta, tta_vflip=tta_vflip, infer_mode=infer_mode,
                               compile=compile)
    class_names = class_names_for(measure, predictor.num_classes)
    check_class_codes(class_codes, dicom_codes, class_names)
    with staged_output(out, "predict", OUTPUT_ENTRIES, **_output_rules(source)) as staging:
        summary = _predict_into(staging, predictor, files, names, volumes, plan, measure, class_names,
                                failed=unnamed + unread, dicom_codes=dicom_codes)
    summary.written = [out / path.relative_to(staging) for path in summary.written]
    return summary



def _check_flags_for_volume_files(measure: MeasurementOptions, pictures: list[Path], volume_files: list[Path]) -> None:
    """A geometry or eye flag is refused where only volume files would see it (each states its own), and said to
    apply to the pictures alone where both are in the folder."""
    given = geometry_flags_given(measure)
    if not volume_files or not given:
        return
    if not pictures:
        refuse_geometry_flags(given)
    print(f"note: {', '.join(given)} apply to the {len(pictures)} picture(s); the {len(volume_files)} OCT volume "
          "file(s) are measured on their own geometry and eye", file=sys.stderr)


def _predict_into(staging: Path, predictor: Predictor | EnsemblePredictor, files: list[Path],
                  names: dict[Path, str], volumes: list, plan, measure, class_names: list[str],
                  failed: list[str], dicom_codes: dict | None = None) -> PredictionSummary:
    """Masks, overlays, measurements and gallery of ``files`` and volume files into ``staging`` (swapped in for
    --out later); ``failed`` are the lines of files that failed before prediction."""
    (staging / "masks").mkdir()
    (staging / "overlays").mkdir()
    summary, masks, outliers = PredictionSummary(failed=list(failed)), {}, []
    for path in files:
        name = names[path]
        try:
            masks[path] = _predict_file(predictor, path, staging, name, outliers)
            summary.written.append(masks[path])
        except KeyboardInterrupt:
            raise
        except DatasetError as err:
            summary.failed.append(str(err))
        except Exception as err:  # any other failure of one file (a decompression bomb, a PIL bug): the rest go on
            if is_disk_error(err):  # ... but a full disk fails every file: stop, the previous output stays
                raise
            summary.failed.append(f"{path}: {type(err).__name__}: {err}".splitlines()[0])
    if outliers:
        print(f"note: {len(outliers)} of {len(files)} image(s) lie far outside the training images' intensities, "
              f"first {outliers[0]}; their predictions may miss what is there: check the export (bit depth, "
              "windowing)", file=sys.stderr)
    columns_eye = volume_columns_eye(volumes, measure.eye, any(r.kind in ("group", "series") for r in plan))
    done, lost = predict_volume_files(predictor, volumes, staging, class_names, columns_eye, overlay, dicom_codes)
    summary.failed += lost
    summary.written += [r.masks for r in done]
    summary.measurements = write_folder_measurements(plan, masks, predictor.value_map, staging, class_names,
                                                     measure.eye, measure.fovea, volumes=done,
                                                     columns_eye=columns_eye)
    summary.class_names = class_names
    return summary



# What `predict` writes into --out. The rule (gctxseg.core.outputs, docs/reliability.md): --out is a new or empty
# folder, or one holding only a previous prediction (these entries and gctxseg's marker), which is then replaced
# whole once the new one is complete, so no stale mask or row of an earlier run sits beside the new ones. Anything
# else in it, or an --out that would overlap the source or write over the masks beside it, is refused.
OUTPUT_ENTRIES = frozenset({"masks", "overlays", "measurements.csv", "index.html", "etdrs.csv", "enface", "dicom"})



def _dicom_codes(class_codes: str | Path | None, volumes: list) -> dict | None:
    """The segments' codes of the run's DICOM SEG/SR (empty: the defaults), None where none is written: no volume
    file, or highdicom not installed (one line says so; with ``--class-codes`` that is a refusal).

    Raises:
        ValueError: ``class_codes`` unreadable, or given without highdicom.
    """
    from ..clinical.dicom_out import DICOM_INSTALL, have_highdicom, read_class_codes

    if not have_highdicom():
        if class_codes is not None:
            raise ValueError(f"--class-codes {class_codes}: writing DICOM SEG/SR needs highdicom; {DICOM_INSTALL}")
        if volumes:
            print(f"note: DICOM SEG/SR not written (highdicom is not installed; {DICOM_INSTALL})", file=sys.stderr)
        return None
    codes = read_class_codes(class_codes) if class_codes is not None else {}
    return codes if volumes else None



def check_class_codes(class_codes: str | Path | None, codes: dict | None, class_names: Sequence[str]) -> None:
    """Refuse a ``--class-codes`` key that is not one of the run's classes (a typo would leave a class uncoded)."""
    unknown = [name for name in codes or {} if name not in class_names]
    if unknown:
        raise ValueError(f"{class_codes}: key {unknown[0]!r} is not a class of this run ({', '.join(class_names)}); "
                         "name the classes as --class-names does")



def _output_rules(source: Path) -> dict:
    """The inputs ``predict`` never writes into, and the advice of its refusals (:mod:`gctxseg.core.outputs`)."""
    fix = f"pass a new folder, e.g. --out {source.parent / (source.name + '_predictions')}"
    return dict(noun="predictions", fix=fix,
                protected=[(source, "the source folder"),
                           (source.parent / "masks", "the masks beside the source (ground truth)")])



def check_output_folder(source: Path, out: Path) -> None:
    """Refuse an ``out`` that would overwrite the source, its sibling ``masks/`` or files ``predict`` did not write.

    Raises:
        ValueError: one line naming the folder and the fix (a flag, not the data: exit 2).
    """
    check_outputs(out, "predict", OUTPUT_ENTRIES, **_output_rules(source))



def output_names(files: Sequence[Path]) -> dict[Path, str]:
    """The one owner of "input -> output names": each input's stem for ``masks/`` and ``overlays/``, or its whole
    name where stems collide (``a.png``, ``a.jpg``); measurements and the gallery look masks up by input.
    Collisions are found case-blind (a case-insensitive disk would merge ``A.png`` and ``a.png``)."""
    stems = [file_stem(p).casefold() for p in files]
    names = {p: p.name if stems.count(stem) > 1 else file_stem(p) for p, stem in zip(files, stems)}
    taken: set[str] = set()
    for path, name in names.items():  # a whole name may still meet another's stem (a.jpg and a.jpg.png)
        unique, k = name, 2
        while unique.casefold() in taken:
            unique, k = f"{name}_{k}", k + 1
        names[path] = unique
        taken.add(unique.casefold())
    return names



def _is_text_name(path: Path) -> bool:
    """False for a file name that is not UTF-8 (``scan\\xff.png`` on Linux: Python holds it with surrogates, which
    no CSV, web page or terminal line can carry)."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True



def _undecodable_name(path: Path) -> str:
    shown = os.fsencode(path).decode("utf-8", "backslashreplace")  # the bytes as \xff escapes: one printable line
    return f"{shown}: the file name is not UTF-8 text, so no CSV or page can name it; rename it and predict again"



def _predict_file(predictor: Predictor, path: Path, out: Path, name: str, outliers: list[str]) -> Path:
    """Segment one file into ``out/masks`` and ``out/overlays`` under ``name``; returns the mask's path. A picture
    far outside the training intensities adds a line to ``outliers`` (the first is said, the rest counted)."""
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        return _predict_volume(predictor, path, out, name)
    image = predictor.read(path)
    outlier = intensity_outlier(image, predictor.training_range)
    if outlier:
        outliers.append(f"{path}: {outlier}")
    pred = predictor.predict_image(image, path)
    mask_path = out / "masks" / f"{name}.png"
    Image.fromarray(predictor.value_map.decode(pred)).save(mask_path)
    Image.fromarray(overlay(image, pred)).save(out / "overlays" / f"{name}.png")
    return mask_path


def write_folder_measurements(
    plan: Sequence[Measurement], masks: Mapping[Path, Path], value_map, out: str | Path, class_names: Sequence[str],
    eye: str | None = None, fovea: tuple[int, int] | None = None, volumes: Sequence = (),
    columns_eye: str | None = None,
) -> list[Measurement]:  # fmt: skip
    """``predict``'s last step: measure its masks into ``out/measurements.csv``, each volume's ETDRS grid and
    hole into ``out/etdrs.csv`` with its en-face map in ``out/enface/``, and the gallery ``out/index.html``.
    ``volumes``: volume files already measured on their own geometry (:mod:`gctxseg.clinical.volume_readout`), whose
    ``etdrs.csv`` quadrants are named by ``columns_eye``."""
    rows = measure_written_masks(plan, masks, value_map, len(class_names) + 1)

    def labels_of(path: Path):
        return value_map.encode(read_mask(masks[path]), source=masks[path]) if path in masks else None

    reports = volume_reports(rows, labels_of, grey_image, class_names, eye, fovea)
    rows += [v.row for v in volumes]
    reports += [v.report for v in volumes]
    write_measurements_csv(rows, Path(out) / "measurements.csv", class_names)
    maps = write_volume_reports(reports, out, class_names, eye or columns_eye)
    shown = {**masks, **{v.row.members[0]: v.masks for v in volumes}}  # a volume's masks folder names its overlay
    write_gallery(out, rows, class_names, shown, maps)
    return rows
