"""Converters from public datasets (OCT, fundus) to gctxseg's layout (``OUT/images``, ``OUT/masks``,
``OUT/splits.json``).

Like nnU-Net's dataset conversion scripts: a user downloads a public set as it ships and gets a folder that
``gctxseg train --folds`` / ``gctxseg cv`` read directly, with the patient-wise folds written beside it.

Duke DME (Chiu et al., Biomed. Opt. Express 6(4), 2015): 10 patients with diabetic macular edema, 61 B-scans
each of 496x768 pixels, 11 of them graded by two graders. Two forms are read:

- the original ``Subject_NN.mat`` files (``images`` 496x768x61, ``manualFluid1``/``manualFluid2`` of the same
  shape, NaN on B-scans the grader did not grade; any value > 0 is fluid): only graded B-scans are kept;
- a PNG copy (``img_for_inference/img_N.png`` RGB copies of grey scans, ``annotation/img_N.png`` with fluid
  where the value is > 127; ``img_N`` belongs to patient ``N // 11 + 1``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from ..core.files import atomic_write_json
from ..core.outputs import output_lock, staging_beside
from .errors import DatasetError
from .splits import group_kfold

__all__ = ["convert_drive", "convert_duke_dme", "convert_oct_volumes", "CONVERTERS"]

T = TypeVar("T")
DUKE_SCANS_PER_PATIENT_PNG = 11  # the PNG copy holds the 11 graded B-scans of each patient, in order


DUKE_STEM = re.compile(r"p\d\d_b\d\d")  # patient and B-scan of every file convert duke-dme writes


def duke_stem(patient: int, scan: int) -> str:
    """The file stem of one Duke DME B-scan: ``pPP_bSS`` (``DUKE_STEM``)."""
    return f"p{patient:02d}_b{scan:02d}"


def _one_source_each(sources: list[tuple[str, Path]], out_name: Callable[[str], str]) -> None:
    """Refuse two sources that would be written under one output name (``img_1.png`` and ``img_01.png``, or
    ``21_training.tif`` and ``21_copy.tif``): the second would overwrite the first and the counts would be wrong."""
    first: dict[str, Path] = {}
    for key, path in sources:
        if key in first:
            raise DatasetError(f"{first[key]} and {path}: both convert to {out_name(key)}; keep one of them (move "
                               f"the other out of {path.parent})")
        first[key] = path


def _unused(folder: Path, used: set[Path], why: str) -> list[str]:
    """One line for each file of ``folder`` the converter read past (``used`` are the ones it converts)."""
    if not folder.is_dir():
        return []
    return [f"{p}: {why}" for p in sorted(folder.iterdir()) if p.is_file() and p not in used]


def _say_skipped(lines: list[str]) -> None:
    """Name each source file a converter reads past (a stray file beside the scans): converted or named, never
    dropped without a word. Not an error: the download converts without it."""
    for line in lines:
        print(f"skipped {line}", file=sys.stderr)


def _write_pair(out: Path, name: str, image: np.ndarray, fluid: np.ndarray) -> bool:
    """Write one scan and its 0/255 fluid mask; returns whether the scan holds fluid."""
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="L").save(out / "images" / f"{name}.png")
    Image.fromarray(np.where(fluid, 255, 0).astype(np.uint8), mode="L").save(out / "masks" / f"{name}.png")
    return bool(fluid.any())


def _check_out(src: Path, out: Path, force: bool) -> None:
    """OUT must be a new (or, with ``force``, replaceable) folder outside the download."""
    if src.resolve().is_relative_to(out.resolve()) or out.resolve().is_relative_to(src.resolve()):
        raise DatasetError(f"{out}: the output folder and the source {src} overlap; convert into a folder outside "
                           "the download")
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: a file, not a folder; pass a new folder as OUT")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not force:
        raise DatasetError(f"{out}: not empty ({len(held)} entries, e.g. {held[0]}); convert into a new folder, or "
                           "pass --force to replace it")


def _staged(out: Path, write: Callable[[Path], T]) -> T:
    """Run ``write`` into a hidden staging folder of a unique name beside OUT, locked against a second writer, and
    move it into place at the end (:mod:`gctxseg.core.outputs`): a failure halfway leaves nothing, and no folder of
    the user's is taken for a staging folder."""
    with output_lock(out, "convert"), staging_beside(out, "convert") as staging:
        return write(staging)


def _mat_subjects(src: Path) -> list[tuple[int, Path]]:
    """(patient, file) of every ``Subject_NN.mat``; a file of another name there is named before anything is read,
    and two files of one patient (``Subject_1.mat``, ``Subject_01.mat``) are refused."""
    subjects = []
    for mat in sorted(src.glob("Subject_*.mat")):
        number = re.fullmatch(r"Subject_(\d+)", mat.stem)
        if number is None:
            raise DatasetError(f"{mat}: not a Duke DME subject file (Subject_NN.mat); move it out of {src}")
        subjects.append((int(number.group(1)), mat))
    _one_source_each([(str(patient), mat) for patient, mat in subjects],
                     lambda p: f"patient {int(p):02d}'s scans (p{int(p):02d}_bSS)")
    return subjects


def _duke_from_mat(src: Path, out: Path, grader: int) -> tuple[dict[str, str], int]:
    from scipy.io import loadmat

    groups: dict[str, str] = {}  # file stem -> patient
    with_fluid = 0
    for patient, mat in _mat_subjects(src):
        try:
            content = loadmat(mat)
        except Exception as err:  # scipy raises several types for a broken or HDF5 file
            reason = type(err).__name__
            raise DatasetError(f"{mat}: not readable as a MATLAB file ({reason}); download it again") from None
        key = f"manualFluid{grader}"
        if "images" not in content or key not in content:
            raise DatasetError(f"{mat}: no 'images' and '{key}' arrays; is this a Duke DME 2015 subject file?")
        images, fluid = np.asarray(content["images"], dtype=np.float64), np.asarray(content[key], dtype=np.float64)
        if images.ndim != 3 or fluid.shape != images.shape:
            raise DatasetError(f"{mat}: images {images.shape} and {key} {fluid.shape} must be equal H x W x scans")
        for scan in range(images.shape[2]):
            graded = ~np.isnan(fluid[:, :, scan])
            if not graded.any():
                continue  # this B-scan was not graded
            name = duke_stem(patient, scan)
            with_fluid += _write_pair(out, name, images[:, :, scan], np.nan_to_num(fluid[:, :, scan]) > 0)
            groups[name] = name.split("_")[0]
    return groups, with_fluid


def _png_copy_scans(src: Path) -> list[tuple[int, Path, Path]]:
    """(index, image, annotation) of every scan of the PNG copy, each checked before anything is written: names
    ``img_N.png``, an annotation of the same size beside each image."""
    root = src / "data" if (src / "data" / "annotation").is_dir() else src
    images_dir, annotation_dir = root / "img_for_inference", root / "annotation"
    scans = []
    for image_path in sorted(images_dir.glob("*.png")):
        match = re.fullmatch(r"img_(\d+)\.png", image_path.name)
        if match is None:
            raise DatasetError(f"{image_path}: not a scan of the PNG copy (img_N.png); move it out of {images_dir}")
        annotation = annotation_dir / image_path.name
        if not annotation.is_file():
            raise DatasetError(f"{annotation}: no annotation for {image_path}; the PNG copy is incomplete")
        try:
            with Image.open(image_path) as image, Image.open(annotation) as mask:
                sizes = image.size, mask.size
        except OSError as err:
            raise DatasetError(f"{image_path} / {annotation}: unreadable ({err}); download the PNG copy "
                               "again") from None
        if sizes[0] != sizes[1]:
            raise DatasetError(f"{annotation}: {sizes[1][1]}x{sizes[1][0]} but its scan is {sizes[0][1]}x{sizes[0][0]}"
                               "; the PNG copy is damaged, download it again")
        scans.append((int(match.group(1)), image_path, annotation))
    _one_source_each([(str(index), image_path) for index, image_path, _ in scans],
                     lambda i: duke_stem(int(i) // DUKE_SCANS_PER_PATIENT_PNG + 1, int(i) % DUKE_SCANS_PER_PATIENT_PNG))
    return sorted(scans)


def _png_copy_skipped(src: Path, scans: list[tuple[int, Path, Path]]) -> list[str]:
    """The files of the PNG copy's two folders that are no scan or no scan's annotation, one line each."""
    root = src / "data" if (src / "data" / "annotation").is_dir() else src
    images = {image for _, image, _ in scans}
    annotations = {annotation for _, _, annotation in scans}
    return (_unused(root / "img_for_inference", images, "not a scan of the PNG copy (img_N.png); not converted")
            + _unused(root / "annotation", annotations, "no scan img_for_inference/ of this name; not converted"))


def _mat_skipped(src: Path) -> list[str]:
    subjects = {mat for _, mat in _mat_subjects(src)}
    return [f"{p}: not a Duke DME subject file (Subject_NN.mat); not converted"
            for p in sorted(src.glob("*.mat")) if p not in subjects]


def _read_png(path: Path) -> np.ndarray:
    """A PNG of the copy as grey pixels; a damaged one (the header reads, the pixels do not) named in one line."""
    try:
        with Image.open(path) as picture:
            return np.asarray(picture.convert("L"))
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: damaged ({type(err).__name__}: {err}); download the PNG copy again") from None


def _duke_from_png(src: Path, out: Path) -> tuple[dict[str, str], int]:
    groups: dict[str, str] = {}  # file stem -> patient
    with_fluid = 0
    for index, image_path, annotation in _png_copy_scans(src):
        patient, scan = index // DUKE_SCANS_PER_PATIENT_PNG + 1, index % DUKE_SCANS_PER_PATIENT_PNG
        grey, fluid = _read_png(image_path), _read_png(annotation) > 127
        name = duke_stem(patient, scan)
        with_fluid += _write_pair(out, name, grey, fluid)
        groups[name] = name.split("_")[0]
    return groups, with_fluid


def convert_duke_dme(src: str | Path, out: str | Path, folds: int = 5, grader: int = 1, seed: int = 0,
                     force: bool = False) -> dict:
    """Convert Duke DME (``.mat`` files or the PNG copy) in ``src`` to ``out``; returns a summary.

    Writes ``out/images/pPP_bSS.png`` (grey), ``out/masks/pPP_bSS.png`` (0 = background, 255 = fluid),
    ``out/groups.json`` (file stem -> patient) and ``out/splits.json`` (``folds`` folds by patient, in
    nnU-Net's ``splits_final.json`` shape).
    """
    src, out = Path(src), Path(out)
    has_mat = any(src.glob("Subject_*.mat"))
    has_png = (src / "img_for_inference").is_dir() or (src / "data" / "img_for_inference").is_dir()
    if not (has_mat or has_png):
        raise DatasetError(
            f"{src}: neither Subject_NN.mat files nor an img_for_inference/annotation PNG copy; "
            "point SRC at the folder holding them"
        )
    _check_out(src, out, force)
    if has_mat:  # every source checked before writing: names, one source per output, what is left out
        patients = {patient for patient, _ in _mat_subjects(src)}
        skipped = _mat_skipped(src)
    else:
        scans = _png_copy_scans(src)
        patients = {i // DUKE_SCANS_PER_PATIENT_PNG for i, _, _ in scans}
        skipped = _png_copy_skipped(src, scans)
    if len(patients) < folds:
        raise DatasetError(f"{src}: {len(patients)} patient(s), fewer than --folds {folds}; pass --folds "
                           f"{max(2, len(patients))} or fewer")
    _say_skipped(skipped)

    def write(staging: Path) -> tuple[dict[str, str], int]:
        (staging / "images").mkdir()
        (staging / "masks").mkdir()
        groups, with_fluid = _duke_from_mat(src, staging, grader) if has_mat else _duke_from_png(src, staging)
        atomic_write_json(staging / "groups.json", groups)
        atomic_write_json(staging / "splits.json", group_kfold(groups, folds, seed))
        return groups, with_fluid

    groups, with_fluid = _staged(out, write)
    return {"scans": len(groups), "patients": len(set(groups.values())), "with fluid": with_fluid,
            "folds": folds, "source": "mat" if has_mat else "png"}


# DRIVE's two subsets as it ships (``training``: images 21-40, ``test`` or ``testing``: images 01-20), each holding
# ``images/NN_<subset>.tif`` and ``1st_manual/NN_manual1.gif`` (the first observer's vessels, 0/255)
DRIVE_SUBSETS = {"train": ("training",), "test": ("test", "testing")}


def _drive_subset(src: Path, names: tuple[str, ...]) -> list[tuple[str, Path, Path]]:
    """(stem, image, vessel label) of one DRIVE subset, every image checked to have its label first."""
    folder = next((src / n for n in names if (src / n / "images").is_dir()), None)
    if folder is None:
        raise DatasetError(f"{src}: no {' or '.join(n + '/images' for n in names)}; point SRC at the DRIVE folder "
                           "holding training/ and test/")
    items = []
    for image_path in sorted(folder.glob("images/*.tif")):
        number = re.match(r"(\d+)_", image_path.name)
        if number is None:
            raise DatasetError(f"{image_path}: not a DRIVE photograph (NN_{folder.name}.tif); move it out of "
                               f"{image_path.parent}")
        label = folder / "1st_manual" / f"{number.group(1)}_manual1.gif"
        if not label.is_file():
            raise DatasetError(f"{image_path}: no first-observer label {label}; the DRIVE copy is incomplete")
        items.append((number.group(1), image_path, label))
    if not items:
        raise DatasetError(f"{folder / 'images'}: no .tif images; is this the DRIVE set?")
    _one_source_each([(stem, image_path) for stem, image_path, _ in items],
                     lambda stem: f"{folder.name} photograph {stem} ({stem}.png)")
    return items


def _drive_skipped(src: Path, subsets: dict[str, list[tuple[str, Path, Path]]]) -> list[str]:
    """The files of each subset's images/ and 1st_manual/ that are no photograph or no photograph's label."""
    skipped = []
    for items in subsets.values():
        folder = items[0][1].parent.parent
        skipped += _unused(folder / "images", {image for _, image, _ in items}, "not a .tif photograph; not converted")
        skipped += _unused(folder / "1st_manual", {label for _, _, label in items},
                           "no photograph of this number in images/; not converted")
    return skipped


def _write_drive_pair(out: Path, stem: str, image_path: Path, label: Path) -> bool:
    try:
        with Image.open(image_path) as image, Image.open(label) as vessels:
            rgb, mask = np.asarray(image.convert("RGB")), np.asarray(vessels.convert("L")) > 127
    except (OSError, ValueError) as err:
        raise DatasetError(f"{image_path} / {label}: unreadable ({type(err).__name__}); download DRIVE "
                           "again") from None
    if rgb.shape[:2] != mask.shape:
        raise DatasetError(f"{label}: {mask.shape[0]}x{mask.shape[1]} but its image is {rgb.shape[0]}x{rgb.shape[1]}")
    Image.fromarray(rgb, mode="RGB").save(out / "images" / f"{stem}.png")
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(out / "masks" / f"{stem}.png")
    return bool(mask.any())


def convert_drive(src: str | Path, out: str | Path, folds: int = 5, seed: int = 0, force: bool = False) -> dict:
    """Convert DRIVE (Staal et al., IEEE TMI 23(4), 2004: 40 colour fundus photographs of 565x584, retinal vessels
    labelled by hand) in ``src`` to ``out``; returns a summary.

    Keeps DRIVE's own split: ``out/train`` (the 20 training images) and ``out/test`` (the 20 test images), each
    with ``images/NN.png`` (RGB), ``masks/NN.png`` (0 = background, 255 = vessel, the first observer) and a
    ``groups.json`` (each photograph from its own subject); ``out/train/splits.json`` holds ``folds`` folds of the
    training images for ``gctxseg cv``. Train and test read as ``--data-train out/train/images --data-val
    out/test/images``. Dice counts the whole picture, the dark ring outside the field of view too.
    """
    src, out = Path(src), Path(out)
    subsets = {part: _drive_subset(src, names) for part, names in DRIVE_SUBSETS.items()}  # all checked first
    _check_out(src, out, force)
    if len(subsets["train"]) < folds:
        raise DatasetError(f"{src}: {len(subsets['train'])} training images, fewer than --folds {folds}")
    _say_skipped(_drive_skipped(src, subsets))

    groups = {part: {stem: stem for stem, _, _ in items} for part, items in subsets.items()}  # one subject each

    def write(staging: Path) -> int:
        written = 0
        for part, items in subsets.items():
            (staging / part / "images").mkdir(parents=True)
            (staging / part / "masks").mkdir()
            written += sum(_write_drive_pair(staging / part, *item) for item in items)
            atomic_write_json(staging / part / "groups.json", groups[part])
        atomic_write_json(staging / "train" / "splits.json", group_kfold(groups["train"], folds, seed))
        return written

    with_vessels = _staged(out, write)
    return {"photographs": sum(map(len, subsets.values())), "with vessels": with_vessels, "folds": folds,
            "source": "drive"}


CONVERTERS = {"duke-dme": convert_duke_dme, "drive": convert_drive}


# ---------------------------------------------------------------- a clinic's own volume files


def _volume_sources(src: Path) -> tuple[list[Path], list[str]]:
    """The volume files of ``src`` (``.vol``/``.e2e``/``.xml``, multi-frame DICOM) and a line per other file."""
    from .oct_volumes import heyex_xml_images, is_volume_file

    if not src.is_dir():
        raise DatasetError(f"{src}: folder not found; point SRC at a folder of HEYEX .vol/.e2e/.xml or OCT DICOM files")
    files = sorted(p for p in src.iterdir() if p.is_file())
    volumes = [p for p in files if is_volume_file(p)]
    if not volumes:
        raise DatasetError(f"{src}: no OCT volume files (.vol, .e2e, .xml, .fda, multi-frame .dcm); point SRC at the "
                           "device exports")
    _one_source_each([(p.stem, p) for p in volumes], lambda stem: f"{stem}_bNNN.png and geometry/{stem}.json")
    members = {m for p in volumes if p.suffix.lower() == ".xml" for m in heyex_xml_images(p)}  # an export's pictures
    skipped = [f"{p}: not an OCT volume file; not converted" for p in files if p not in volumes and p not in members]
    return volumes, skipped


def _geometry_record(volume, layout) -> dict:
    """``OUT/geometry/NAME.json``: what the read-out of these B-scans needs, each number with where it came from."""
    count, rows, cols = volume.bscans.shape
    return {"file": volume.path.name, "format": volume.format, "bscans": count, "rows": rows, "columns": cols,
            "eye": volume.eye, "eye_source": volume.eye_source, "geometry": volume.geometry.to_dict(),
            "layout": {"slice_mm": layout.slice_mm, "slice_mm_source": layout.source,
                       "superior_first": list(layout.order), "flip_columns": layout.flip_columns,
                       "note": layout.note},
            "localizer_mm": list(volume.localizer_mm) if volume.localizer_mm else None}


def _write_volume(out: Path, volume) -> int:
    from .oct_volumes import raster_layout

    name = volume.path.stem
    width = max(3, len(str(len(volume.bscans) - 1)))
    for k, bscan in enumerate(volume.bscans):
        Image.fromarray(bscan, mode="L").save(out / "images" / f"{name}_b{k:0{width}d}.png")
    record = _geometry_record(volume, raster_layout(volume))
    if volume.localizer is not None:
        Image.fromarray(volume.localizer, mode="L").save(out / "localizer" / f"{name}.png")
        record["localizer"] = f"localizer/{name}.png"
    atomic_write_json(out / "geometry" / f"{name}.json", record)
    return width


def convert_oct_volumes(src: str | Path, out: str | Path, folds: int | None = None, force: bool = False) -> dict:
    """Convert a folder of OCT volume files (HEYEX ``.vol``/``.e2e``/``.xml`` through eyepy, OCT multi-frame DICOM;
    :func:`gctxseg.data.oct_volumes.read_oct_volume`) to B-scan pictures for annotation and training.

    Writes ``out/images/NAME_bNNN.png`` (each B-scan, grey, in the file's order), ``out/geometry/NAME.json`` (A-scan
    and axial spacing, the distance between B-scans, each B-scan's position, the eye, each with where it came from,
    and the superior-first order the read-out uses), ``out/localizer/NAME.png`` (the fundus picture, where the file
    holds one) and ``out/groups.json`` (B-scan stem -> volume, so ``gctxseg cv`` keeps an exam's B-scans in one
    fold). No ``masks/``: device exports carry no fluid or hole annotations (HEYEX layer lines outline retinal
    layers, not these classes); annotate ``images/`` and put the masks in ``out/masks/``.

    Every file is read (and a corrupt one named, in one line) before anything is written. ``folds`` is not used:
    no ``splits.json`` is written (there are no masks to train on yet; ``gctxseg cv`` makes its folds from
    ``groups.json`` once there are).
    """
    from .oct_volumes import read_oct_volume

    src, out = Path(src), Path(out)
    volumes, skipped = _volume_sources(src)
    _check_out(src, out, force)
    bscans = {p: len(read_oct_volume(p).bscans) for p in volumes}  # a corrupt file stops here, before writing
    _say_skipped(skipped)

    def write(staging: Path) -> dict[str, str]:
        for folder in ("images", "geometry", "localizer"):
            (staging / folder).mkdir()
        groups = {}
        for path in volumes:
            width = _write_volume(staging, read_oct_volume(path))  # one volume in memory at a time
            groups.update({f"{path.stem}_b{k:0{width}d}": path.stem for k in range(bscans[path])})
        atomic_write_json(staging / "groups.json", groups)
        return groups

    groups = _staged(out, write)
    return {"volumes": len(volumes), "scans": len(groups), "source": "oct-volumes"}


CONVERTERS["oct-volumes"] = convert_oct_volumes
