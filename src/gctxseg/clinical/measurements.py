"""Fluid amounts a clinic reads: pixels, area in mm² and volume in mm³ per foreground class.

What is measured (one row of ``measurements.csv`` each):

- ``image``: a picture or a single DICOM slice: pixels per class and, when the pixel spacing is known,
  the area (pixels x the area of one pixel);
- ``volume``: a NIfTI volume: voxels per class and the volume (voxels x ``|det|`` of the affine's 3 x 3
  part, exact for anisotropic, rotated or sheared grids; spatial units metre/micron converted to mm);
- ``group``: B-scans joined into one volume by ``--group-regex`` (the regex's ``volume`` group, else its
  first group, of the file stem; a regex without a group is refused), ``--slice-spacing`` MM apart: volume =
  sum of the B-scans' areas x the slice spacing (Cavalieri). The B-scans are stacked by their number (the last
  number of the stem outside the volume's name); two of one number in a volume are refused;
- ``series``: DICOM slices sharing a SeriesInstanceUID, their spacing from ImagePositionPatient (else
  SpacingBetweenSlices, SliceThickness, ``--slice-spacing``).

Where the pixel spacing comes from: the DICOM ``PixelSpacing`` or the NIfTI affine; for pictures (and
DICOM without it) ``--pixel-spacing ROW_MM COL_MM``, else a ``spacing.json`` in the images folder or the
two above it (``gctxseg synth`` writes ``data/spacing.json``, found for ``data/val/images``). Each of the
three passes :func:`validate_spacing` (two numbers, finite, > 0, at most 10 mm per pixel), or the run stops
with one line naming it. A number whose unit cannot be known is left blank, never 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..core.files import atomic_write_csv
from ..data import DatasetError, read_info, read_mask
from ..data.io import DICOM_SUFFIXES, NIFTI_SUFFIXES, file_stem, read_volume
from ..data.oct_volumes import EVEN_TOLERANCE
from ..data.spacing import (
    SPACING_FILE,
    SpacingError,
    find_spacing_file,
    read_spacing_file,
    validate_slice_spacing,
    validate_spacing,
    write_spacing_file,
)
from .etdrs import check_fovea

__all__ = [
    "SPACING_FILE",
    "Geometry",
    "MeasurementOptions",
    "Measurement",
    "class_names_for",
    "SpacingError",
    "validate_spacing",
    "find_spacing_file",
    "read_spacing_file",
    "write_spacing_file",
    "geometry_of",
    "plan_measurements",
    "count_classes",
    "mask_counts",
    "fill_counts",
    "measure_written_masks",
    "measurement_record",
    "measurement_columns",
    "write_measurements_csv",
]

_UNIT_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001, "unknown": 1.0}  # NIfTI xyzt units; unknown = mm


@dataclass(frozen=True)
class MeasurementOptions:
    """How to turn pixels into mm: the command-line flags of ``predict`` and ``evaluate``.

    Attributes:
        pixel_spacing: (row, column) pixel size in mm of pictures (and DICOM without PixelSpacing).
        slice_spacing: distance in mm between the B-scans of a group (or DICOM slices without positions).
        group_regex: regular expression on the file stem whose ``volume`` group (else first group) names the
            volume a B-scan belongs to; files it does not match stay single images (one must match).
        class_names: names of the foreground classes 1..K-1 (default ``class1``, ``class2`` ...).
    """

    pixel_spacing: tuple[float, float] | None = None
    slice_spacing: float | None = None
    group_regex: str | None = None
    class_names: tuple[str, ...] = ()
    eye: str | None = None  # OD | OS: names the ETDRS quadrants nasal/temporal (else by image side)
    fovea: tuple[int, int] | None = None  # B-scan and column of the ETDRS grid's centre (else found per volume)

    def check(self) -> None:
        """Raise ValueError with one line for each kind of bad option (the first found)."""
        if self.pixel_spacing is not None:  # 1e200 passed the old "> 0" test and overflowed areas to inf
            try:
                validate_spacing(self.pixel_spacing, "--pixel-spacing",
                                 "give mm between rows, between columns, e.g. --pixel-spacing 0.0039 0.0117")
            except SpacingError as err:  # a flag, not the data: a usage error (exit 2)
                raise ValueError(str(err)) from None
        if self.slice_spacing is not None:  # 1e300 passed "> 0" and gave inf mm³: the pixel spacing's bounds
            try:
                validate_slice_spacing(self.slice_spacing, "--slice-spacing", "give the mm between B-scans, e.g. "
                                       "--slice-spacing 0.12")
            except SpacingError as err:
                raise ValueError(str(err)) from None
        if self.group_regex is not None:
            try:
                pattern = re.compile(self.group_regex)
            except re.error as err:
                raise ValueError(f"--group-regex {self.group_regex!r}: not a regular expression ({err})") from None
            if pattern.groups == 0:  # the whole match ('eye') is the same for every eye: all would join one volume
                raise ValueError(f"--group-regex {self.group_regex!r}: no capture group, so nothing in it names a "
                                 "volume and every scan it matches would join one; put the part of the file name "
                                 "that names the eye's volume in parentheses, e.g. '(eye\\d+)_b\\d+'")
        if self.eye is not None and self.eye not in ("OD", "OS"):
            raise ValueError(f"--eye {self.eye}: OD (right eye) or OS (left eye)")
        if self.fovea is not None and (len(self.fovea) != 2 or min(self.fovea) < 0):
            raise ValueError(f"--fovea {self.fovea}: give the B-scan and the column, both >= 0")
        if any(not name or "," in name for name in self.class_names):
            raise ValueError(f"--class-names {' '.join(self.class_names)}: names must be non-empty, without commas")


def class_names_for(options: MeasurementOptions, num_classes: int) -> list[str]:
    """Foreground class names 1..K-1: the given ones, ``classN`` for the rest.

    Raises:
        ValueError: more names than foreground classes, or a name given twice or equal to another class's
            default name (the CSV's columns would repeat, both holding one class's numbers).
    """
    names = list(options.class_names)
    if len(names) > num_classes - 1:
        raise ValueError(f"--class-names: {len(names)} names for {num_classes - 1} foreground classes; "
                         "give one name per class after background")
    names += [f"class{c}" for c in range(len(names) + 1, num_classes)]
    for c, name in enumerate(names, start=1):
        first = names.index(name) + 1
        if first != c:  # two CSV columns of one name, and a reader sees one class's numbers in both
            given = " ".join(options.class_names)
            raise ValueError(f"--class-names {given}: {name!r} would name classes {first} and {c} (unnamed "
                             "classes are called classN); give each class its own name")
    return names


# ---------------------------------------------------------------- geometry of one file


@dataclass(frozen=True)
class Geometry:
    """Grid of one image or volume, in mm where known (None where not)."""

    rows: int
    cols: int
    slices: int | None = None
    row_mm: float | None = None
    col_mm: float | None = None
    slice_mm: float | None = None
    pixel_mm2: float | None = None  # area of one pixel (one slice's pixel for a volume)
    voxel_mm3: float | None = None  # volume of one voxel (volumes only)
    series: str | None = None  # DICOM SeriesInstanceUID
    position: float | None = None  # DICOM slice position along the slice normal, mm

    @property
    def size(self) -> tuple[int, int]:
        return self.rows, self.cols


def _nifti_geometry(path: Path) -> Geometry:
    import nibabel as nib

    info = read_info(path)
    unit = _UNIT_TO_MM.get(nib.load(path).header.get_xyzt_units()[0], 1.0)
    axes = np.asarray(info.affine, dtype=np.float64)[:3, :3] * unit  # voxel index steps in world mm
    rows, cols = (i for i in range(3) if i != info.slice_axis)
    step_r, step_c, step_s = axes[:, rows], axes[:, cols], axes[:, info.slice_axis]

    def f32(x: float) -> float:  # the header stores the affine in float32: keep what it can say
        return float(f"{float(x):.7g}")

    return Geometry(
        *info.size,
        slices=info.depth,
        row_mm=f32(np.linalg.norm(step_r)),
        col_mm=f32(np.linalg.norm(step_c)),
        slice_mm=f32(np.linalg.norm(step_s)),
        pixel_mm2=f32(np.linalg.norm(np.cross(step_r, step_c))),  # area of the parallelogram a pixel spans
        voxel_mm3=f32(abs(np.linalg.det(axes))),  # exact for anisotropic, rotated and sheared grids
    )


def _dicom_geometry(path: Path, spacing: tuple[float, float] | None) -> Geometry:
    """``spacing``: the header's PixelSpacing as :func:`read_info` checked it, else the pictures' spacing."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    row_mm, col_mm = spacing or (None, None)
    position = None
    orientation, origin = getattr(ds, "ImageOrientationPatient", None), getattr(ds, "ImagePositionPatient", None)
    if orientation is not None and origin is not None:
        normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
        position = float(np.dot(normal, np.asarray(origin, float)))
    between = getattr(ds, "SpacingBetweenSlices", None) or getattr(ds, "SliceThickness", None)
    return Geometry(
        int(ds.Rows), int(ds.Columns),
        row_mm=row_mm, col_mm=col_mm, slice_mm=float(between) if between else None,
        pixel_mm2=row_mm * col_mm if row_mm else None,
        series=str(getattr(ds, "SeriesInstanceUID", "") or "") or None, position=position,
    )  # fmt: skip


def geometry_of(path: str | Path, pixel_spacing: tuple[float, float] | None = None) -> Geometry:
    """Grid and spacing of a file from its header; ``pixel_spacing`` (mm) for pictures and DICOM without one.

    Raises:
        DatasetError: unreadable file; a :class:`SpacingError` for a DICOM PixelSpacing that is not plausible.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return _nifti_geometry(path)
    if name.endswith(DICOM_SUFFIXES):
        header = read_info(path).spacing  # the reader's one-line errors for bad DICOM and a bad PixelSpacing
        return _dicom_geometry(path, header or pixel_spacing)
    rows, cols = read_info(path).size
    if pixel_spacing is None:
        return Geometry(rows, cols)
    return Geometry(rows, cols, row_mm=pixel_spacing[0], col_mm=pixel_spacing[1],
                    pixel_mm2=pixel_spacing[0] * pixel_spacing[1])  # fmt: skip


# ---------------------------------------------------------------- what is measured


@dataclass
class Measurement:
    """One row of ``measurements.csv``: a file, a B-scan group or a DICOM series, and its amounts per class.

    ``pixels`` are per foreground class (voxels for volumes, summed over the members of a group or series);
    None until :func:`fill_counts` sets them (and left None when a member could not be measured).
    """

    file: str
    kind: str  # image | volume | group | series
    geometry: Geometry
    members: tuple[Path, ...]
    pixels: list[int] | None = None
    member_areas: list[float | None] | None = None  # summed member areas per class (group/series), mm²
    note: str = ""

    def areas(self) -> list[float | None]:
        """Area in mm² per class of an image; None for volumes (a volume has no one area) and unknown spacing."""
        if self.pixels is None or self.kind != "image" or self.geometry.pixel_mm2 is None:
            return [None] * len(self.pixels or [])
        return [n * self.geometry.pixel_mm2 for n in self.pixels]

    def volumes(self) -> list[float | None]:
        """Volume in mm³ per class of a volume, group or series; None for single images and unknown spacing."""
        if self.pixels is None or self.kind == "image":
            return [None] * len(self.pixels or [])
        if self.kind == "volume":
            v = self.geometry.voxel_mm3
            return [None if v is None else n * v for n in self.pixels]
        s = self.geometry.slice_mm
        return [None if a is None or s is None else a * s for a in (self.member_areas or [])]


def _group_key(stem: str, pattern: re.Pattern) -> tuple[str, int | None] | None:
    """(volume, B-scan number) of a file stem, None where the pattern does not match it. The volume is the
    ``volume`` group, else the first group (:meth:`MeasurementOptions.check` refuses a pattern without one); the
    B-scan number is the last number of the stem once the volume's part is taken out (``eye2_b017`` -> 17), None
    where there is none."""
    m = pattern.search(stem)
    if m is None:
        return None
    group = "volume" if "volume" in pattern.groupindex else 1
    key = m[group]
    if not key:  # e.g. '(x*)' matches nothing everywhere: every scan would join one unnamed volume
        raise ValueError(f"--group-regex {pattern.pattern!r}: names an empty volume in {stem!r}; make the part it "
                         "captures non-empty, e.g. '(eye\\d+)_b\\d+'")
    start, end = m.span(group)
    numbers = re.findall(r"\d+", stem[:start] + "_" + stem[end:])
    return key, int(numbers[-1]) if numbers else None


def _order_bscans(key: str, members: Sequence[tuple[Path, Geometry, int | None]]) -> list[tuple[Path, Geometry]]:
    """The members of a B-scan group in B-scan order; two scans of one B-scan number (two eyes joined by too wide a
    pattern, or a copy) or a scan without a number are refused, as the ETDRS grid would be laid over both."""
    unnumbered = next((path for path, _, number in members if number is None), None)
    if unnumbered is not None:
        raise DatasetError(f"{key}: {unnumbered.name} has no B-scan number beside the volume's name, so its place in "
                           "the volume is unknown; name B-scans with their number (e.g. eye1_b017) or fix "
                           "--group-regex")
    seen: dict[int, Path] = {}
    for path, _, number in members:
        if number in seen:
            raise DatasetError(f"{key}: {seen[number].name} and {path.name} are both B-scan {number} of one volume; "
                               "fix --group-regex so that its capture group names one eye (e.g. '(eye\\d+)_b\\d+'), "
                               "or move the duplicate out")
        seen[number] = path
    return [(path, geo) for path, geo, _ in sorted(members, key=lambda m: m[2])]


def _check_equal_sizes(key: str, members: Sequence[tuple[Path, Geometry]]) -> None:
    first_path, first = members[0]
    for path, geo in members[1:]:
        if geo.size != first.size:
            raise DatasetError(
                f"{key}: slices of one volume differ in size ({first_path.name} {first.rows}x{first.cols}, "
                f"{path.name} {geo.rows}x{geo.cols}); re-export them at one size or fix --group-regex"
            )


def _check_distinct_positions(uid: str, members: Sequence[tuple[Path, Geometry]]) -> None:
    """Two slices of a DICOM series at one position (a series exported twice into one folder) would be stacked and
    counted twice: refused."""
    for (path_a, a), (path_b, b) in zip(members, members[1:]):
        if a.position is not None and b.position is not None and abs(b.position - a.position) <= 1e-6:
            raise DatasetError(f"DICOM series {uid}: {path_a.name} and {path_b.name} are both at position "
                               f"{a.position:g} mm; move the duplicate out of the folder")


def _check_grid_options(options: MeasurementOptions, rows: Sequence[Measurement]) -> None:
    """``--eye`` and ``--fovea`` place the ETDRS grid of B-scan volumes; with none to place it on they would be
    ignored without a word: refused."""
    given = [flag for flag, value in (("--eye", options.eye), ("--fovea", options.fovea)) if value is not None]
    if given and not any(row.kind in ("group", "series") for row in rows):
        raise ValueError(f"{' and '.join(given)}: place the ETDRS grid of B-scan volumes, and there are none (B-scans "
                         "are joined by --group-regex with --slice-spacing, or are a DICOM series); add "
                         "--group-regex, e.g. '(eye\\d+)_b\\d+', or drop " + " and ".join(given))


def _series_slice_mm(uid: str, members: Sequence[tuple[Path, Geometry]],
                     fallback: float | None) -> tuple[float | None, str]:
    """Slice distance of a DICOM series: median gap of the positions, else the header's, else ``fallback``; None
    and why where the positions are not evenly spaced (a slice missing: its volume would be measured short)."""
    positions = sorted(g.position for _, g in members if g.position is not None)
    gaps = np.diff(positions)
    if len(positions) == len(members) and len(gaps):
        median = float(np.median(gaps))
        if gaps.max() - gaps.min() > EVEN_TOLERANCE * median:
            return None, (f"DICOM series {uid}: slices not evenly spaced ({gaps.min():.4g} to {gaps.max():.4g} mm "
                          "apart: a slice missing?); volume not measured, add the missing slices")
        return median, ""
    return members[0][1].slice_mm or fallback, ""


def _volume_rows(groups: dict, series: dict, slice_spacing: float | None) -> list[Measurement]:
    """One row per B-scan group (``--group-regex``: key -> (path, geometry, B-scan number)) and per DICOM series of
    two slices or more (uid -> (path, geometry)), its members in order and checked."""
    rows = []
    for key, numbered in groups.items():
        members = _order_bscans(key, numbered)
        _check_equal_sizes(key, members)
        first = members[0][1]
        geo = replace(first, slices=len(members), slice_mm=slice_spacing, series=None, position=None)
        rows.append(Measurement(key, "group", geo, tuple(p for p, _ in members)))
    for uid, members in series.items():
        if len(members) < 2:
            continue  # a lone slice is an image, not a volume
        _check_equal_sizes(f"DICOM series {uid}", members)
        members = sorted(members, key=lambda m: (m[1].position is None, m[1].position or 0.0, m[0].name))
        _check_distinct_positions(uid, members)
        slice_mm, note = _series_slice_mm(uid, members, slice_spacing)
        geo = replace(members[0][1], slices=len(members), slice_mm=slice_mm, position=None)
        rows.append(Measurement(f"series {uid}", "series", geo, tuple(p for p, _ in members), note=note))
    return rows


def plan_measurements(
    files: Sequence[str | Path], options: MeasurementOptions, folder: str | Path | None = None
) -> list[Measurement]:
    """One row per file, then one per B-scan group and DICOM series; checked before anything is predicted.

    Args:
        files: the images and volumes to measure.
        options: pixel and slice spacing, grouping, class names.
        folder: the images folder, where (or up to two levels above) to look for ``spacing.json`` when
            ``options.pixel_spacing`` is None.

    Raises:
        ValueError: a bad option, ``--group-regex`` without a slice spacing or matching no file, ``--eye`` or
            ``--fovea`` without a volume to place the grid on.
        DatasetError: slices of one volume that differ in size, or share a B-scan number (a DICOM series: a
            position), or a grouped B-scan without a number (unreadable files are left out of the plan).
        SpacingError: a DICOM PixelSpacing or ``spacing.json`` that is not two plausible numbers.
    """
    options.check()
    spacing = options.pixel_spacing or (read_spacing_file(folder) if folder is not None else None)
    pattern = re.compile(options.group_regex) if options.group_regex else None
    if pattern is not None and options.slice_spacing is None:
        raise ValueError(f"--group-regex {options.group_regex!r} joins B-scans into volumes but no --slice-spacing "
                         "was given; pass the distance between B-scans in mm, e.g. --slice-spacing 0.12")
    rows, groups, series = [], {}, {}
    for path in map(Path, files):
        try:
            geo = geometry_of(path, spacing)
        except SpacingError:  # a readable file with a wrong ruler would be predicted and measured wrong or
            raise  # not at all, without a word: stop here with its one line
        except Exception:  # unreadable (a DatasetError, a decompression bomb, a PIL bug): it fails, and is
            continue  # reported, when it is predicted; the others go on
        if path.name.lower().endswith(NIFTI_SUFFIXES):
            rows.append(Measurement(path.name, "volume", geo, (path,)))
            continue
        rows.append(Measurement(path.name, "image", geo, (path,)))
        found = _group_key(file_stem(path), pattern) if pattern is not None else None
        if found is not None:
            groups.setdefault(found[0], []).append((path, geo, found[1]))
        elif geo.series is not None:
            series.setdefault(geo.series, []).append((path, geo))
    if pattern is not None and not groups and rows:
        raise ValueError(f"--group-regex {options.group_regex!r}: matches none of the {len(rows)} file names in "
                         f"{folder or 'the source'} (e.g. {file_stem(rows[0].members[0])!r}); fix the pattern, e.g. "
                         "'(eye\\d+)_b\\d+' for eye1_b017.png")
    if options.slice_spacing is not None and pattern is None and not series:
        raise ValueError(f"--slice-spacing {options.slice_spacing:g} is used for B-scans joined by --group-regex or "
                         "DICOM series without positions, and there are neither; add --group-regex or drop it")
    rows += _volume_rows(groups, series, options.slice_spacing)
    _check_grid_options(options, rows)
    if options.fovea is not None:  # a grid centre outside a volume stops here, before anything is predicted
        for row in rows:
            if row.kind in ("group", "series"):
                check_fovea(options.fovea, (row.geometry.slices, row.geometry.cols), row.file)
    return rows


# ---------------------------------------------------------------- counting


def describe_spacing(files: Sequence[str | Path], options: MeasurementOptions, folder: str | Path | None) -> str:
    """Which pixel spacing measurements use, and where it comes from (``predict`` says it on every run)."""
    headers = [p for p in map(Path, files) if p.name.lower().endswith(DICOM_SUFFIXES + NIFTI_SUFFIXES)]
    pictures = len(files) > len(headers)
    parts = []
    if options.pixel_spacing is not None:
        parts.append(f"--pixel-spacing {options.pixel_spacing[0]:g} x {options.pixel_spacing[1]:g} mm")
    elif pictures:
        found = find_spacing_file(folder) if folder is not None else None
        spacing = read_spacing_file(folder) if found is not None else None
        parts.append(f"{found}: {spacing[0]:g} x {spacing[1]:g} mm" if spacing else
                     "none for pictures: areas and volumes left blank (give --pixel-spacing ROW_MM COL_MM)")
    if headers:
        without = [p for p in headers if _header_spacing(p) is None]
        parts.append(f"the DICOM/NIfTI headers of {len(headers) - len(without)} file(s)")
        if without:
            parts.append(f"none in the header of {len(without)} file(s) (e.g. {without[0].name}): "
                         + ("--pixel-spacing" if options.pixel_spacing is not None else "their areas left blank (give "
                            "--pixel-spacing ROW_MM COL_MM)"))
    if options.slice_spacing is not None:
        parts.append(f"--slice-spacing {options.slice_spacing:g} mm between B-scans")
    return "; ".join(parts)


def _header_spacing(path: Path) -> tuple[float, float] | None:
    try:
        return read_info(path).spacing
    except (DatasetError, ValueError):  # unreadable or implausible: the plan names it
        return None


def count_classes(labels: np.ndarray, num_classes: int) -> list[int]:
    """Pixels (voxels) of each foreground class 1..K-1 in a class-index array of any shape."""
    return np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=num_classes)[1:num_classes].tolist()


def mask_counts(mask_path: str | Path, value_map, num_classes: int) -> list[int]:
    """Foreground pixels per class of a written mask file (PNG with the dataset's values, or NIfTI volume)."""
    mask_path = Path(mask_path)
    if mask_path.name.lower().endswith(NIFTI_SUFFIXES):
        raw, _ = read_volume(mask_path, labels=True)
    else:
        raw = read_mask(mask_path)
    return count_classes(value_map.encode(raw, source=mask_path), num_classes)


def fill_counts(plan: Sequence[Measurement], counts: dict[Path, Sequence[int]]) -> list[Measurement]:
    """Copies of ``plan`` with the pixels of each file (``counts``: source file -> per-class pixels) and
    the sums of groups and series; a row with a member missing from ``counts`` keeps ``pixels`` None."""
    filled = []
    by_file = {}
    for row in plan:
        row = replace(row)
        if row.kind in ("image", "volume"):
            path = row.members[0]
            row.pixels = list(counts[path]) if path in counts else None
            row.note = "" if row.pixels is not None else "not measured (prediction failed)"
            by_file[path] = row
        filled.append(row)
    for row in filled:
        if row.kind not in ("group", "series"):
            continue
        parts = [by_file.get(p) for p in row.members]
        if any(p is None or p.pixels is None for p in parts):
            row.note = f"{sum(p is None or p.pixels is None for p in parts)} of {len(parts)} slices not measured"
            continue
        row.pixels = [sum(col) for col in zip(*(p.pixels for p in parts))]
        areas = [p.areas() for p in parts]
        row.member_areas = [None if any(a is None for a in col) else sum(col) for col in zip(*areas)]
    return filled


# ---------------------------------------------------------------- the CSV


def measurement_columns(class_names: Sequence[str]) -> list[str]:
    """Header of ``measurements.csv``: units in the names."""
    base = ["file", "kind", "slices", "rows", "cols", "row_spacing_mm", "col_spacing_mm", "slice_spacing_mm"]
    per_class = [f"{n}_{what}" for n in class_names for what in ("pixels", "area_mm2", "volume_mm3")]
    return base + per_class + ["note"]


def _number(value: float | int | None) -> str:
    if value is None:
        return ""  # unknown: blank, never 0
    return str(value) if isinstance(value, int) else format(value, ".10g")


def measurement_record(row: Measurement, class_names: Sequence[str]) -> dict[str, str]:
    """A row as CSV cells (strings; blanks where a number or its unit cannot be known)."""
    g = row.geometry
    record = {
        "file": row.file, "kind": row.kind, "slices": _number(g.slices), "rows": _number(g.rows),
        "cols": _number(g.cols), "row_spacing_mm": _number(g.row_mm), "col_spacing_mm": _number(g.col_mm),
        "slice_spacing_mm": _number(g.slice_mm if row.kind != "image" else None),
    }  # fmt: skip
    pixels = row.pixels or [None] * len(class_names)
    areas, volumes = row.areas() or [None] * len(class_names), row.volumes() or [None] * len(class_names)
    for name, n, a, v in zip(class_names, pixels, areas, volumes):
        record.update({f"{name}_pixels": _number(n), f"{name}_area_mm2": _number(a), f"{name}_volume_mm3": _number(v)})
    record["note"] = row.note
    return record


def write_measurements_csv(rows: Sequence[Measurement], path: str | Path, class_names: Sequence[str]) -> Path:
    """Write ``measurements.csv`` (atomically) and return its path."""
    atomic_write_csv(path, measurement_columns(class_names), (measurement_record(r, class_names) for r in rows))
    return Path(path)


def measure_written_masks(
    plan: Sequence[Measurement], masks: Mapping[Path, Path], value_map, num_classes: int
) -> list[Measurement]:
    """Fill ``plan`` from the masks ``predict`` wrote (``masks``: source file -> its mask, as named by
    ``predict.output_names``; looked up by source, never by stem, so ``a.jpg`` and ``a.png`` both count)."""
    counts = {}
    for row in plan:
        if row.kind in ("image", "volume") and row.members[0] in masks:
            counts[row.members[0]] = mask_counts(masks[row.members[0]], value_map, num_classes)
    return fill_counts(plan, counts)
