"""The retina read-out of OCT volume files (``.vol``, ``.e2e``, DICOM OPT) from each file's own geometry.

``predict`` plans the volume files of its source folder here (:func:`plan_volume_files`) and, once
:func:`gctxseg.workflows.predict_volumes.predict_volume_files` has segmented them, reads each out here; each
becomes one ``volume`` row of ``measurements.csv``, one row of ``etdrs.csv`` and an en-face map, measured with the
A-scan and axial spacing, the distance between B-scans and the eye the file states
(:mod:`gctxseg.data.oct_volumes`), never with flags. B-scans are laid out superior-first and left to right as their
positions on the localizer say (:func:`~gctxseg.data.oct_volumes.raster_layout`); a raster that is not parallel or
not evenly spaced, or a geometry that is missing or implausible, is measured in pixels only, with the reason in the
row's note. :func:`volume_readout` is the one measurement path (tests feed it the phantom's true masks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..data.errors import DatasetError
from ..data.oct_volumes import (
    OctVolume,
    RasterLayout,
    heyex_xml_images,
    is_volume_file,
    raster_layout,
    read_oct_volume,
)
from .enface import LocalizerView
from .etdrs import Fovea, fluid_thickness_px
from .etdrs_rows import VolumeReport, etdrs_columns, etdrs_record, fluid_classes, locate_fovea
from .measurements import Geometry, Measurement, MeasurementOptions, count_classes

__all__ = ["LISTED_VOLUME_SUFFIXES", "VolumeFile", "VolumeResult", "split_volume_files", "plan_volume_files",
           "geometry_flags_given", "refuse_geometry_flags", "describe_volume", "volume_readout", "volume_columns_eye",
           "localizer_view"]

# what predict lists beside pictures (multi-frame .dcm are found too; an XML export's own pictures are not listed)
LISTED_VOLUME_SUFFIXES = (".vol", ".e2e", ".xml", ".fda")


@dataclass(frozen=True)
class VolumeFile:
    """A volume file as planned: its path, its output name, its eye and layout (the B-scans are read again when
    predicted, so a folder of volumes is never held in memory at once)."""

    path: Path
    name: str
    eye: str | None
    line: str  # the geometry line the run prints


@dataclass
class VolumeResult:
    """One predicted volume: its row of ``measurements.csv``, its ETDRS report, its masks folder."""

    row: Measurement
    report: VolumeReport
    masks: Path


def split_volume_files(files: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(pictures and single files, volume files) of a listing; the B-scan and localizer pictures of a HEYEX XML
    export are its volume's, not pictures of their own."""
    volumes = [p for p in files if is_volume_file(p)]
    members = {m for p in volumes if p.suffix.lower() == ".xml" for m in heyex_xml_images(p)}
    return [p for p in files if p not in volumes and p not in members], volumes


_GEOMETRY_FLAGS = {"pixel_spacing": "--pixel-spacing", "slice_spacing": "--slice-spacing",
                   "group_regex": "--group-regex", "eye": "--eye", "fovea": "--fovea"}


def geometry_flags_given(measure: MeasurementOptions) -> list[str]:
    """The flags of ``measure`` that say a geometry or an eye (a volume file states its own)."""
    return [flag for key, flag in _GEOMETRY_FLAGS.items() if getattr(measure, key)]


def refuse_geometry_flags(given: Sequence[str]) -> None:
    """Raise ValueError naming the first of ``given``: volume files are measured on their own geometry and eye,
    so the flag would be ignored without a word."""
    if given:
        raise ValueError(f"{given[0]}: OCT volume files are measured on their own geometry and eye; drop the flag")


def describe_volume(volume: OctVolume, layout: RasterLayout) -> str:
    """One line: which geometry the read-out uses for ``volume`` and where each number comes from."""
    geo = volume.geometry
    s, h, w = volume.bscans.shape
    parts = [f"{volume.name} ({volume.format}, {s} B-scans of {h}x{w})"]
    if geo.ascan_mm is not None and geo.axial_mm is not None:
        parts.append(f"{geo.ascan_mm:g} mm per A-scan ({geo.sources.get('ascan_mm')}), {geo.axial_mm:g} mm axial "
                     f"({geo.sources.get('axial_mm')})")
    if layout.slice_mm is not None:
        parts.append(f"{layout.slice_mm:g} mm between B-scans ({layout.source})")
    parts.append(f"eye {volume.eye} ({volume.eye_source})" if volume.eye else "eye not in the file (quadrants by "
                 "image side)")
    if layout.slice_mm is None or geo.ascan_mm is None or geo.axial_mm is None:
        parts.append("read-out in pixels: " + (layout.note or "no geometry in the file"))
    elif layout.note:  # measured in mm, with a caveat (e.g. the B-scans' order taken from the file)
        parts.append("note: " + layout.note)
    return "; ".join(parts)


def plan_volume_files(files: Sequence[Path], names: Mapping[Path, str]) -> tuple[list[VolumeFile], list[str]]:
    """Read each volume file's header and geometry before anything is predicted; unreadable ones give one line
    each (the others go on)."""
    planned, failed = [], []
    for path in files:
        try:
            volume = read_oct_volume(path)
        except DatasetError as err:
            failed.append(str(err))
            continue
        planned.append(VolumeFile(path, names[path], volume.eye, describe_volume(volume, raster_layout(volume))))
    return planned, failed


def volume_columns_eye(volumes: Sequence[VolumeFile], folder_eye: str | None, picture_volumes: bool) -> str | None:
    """The eye that names ``etdrs.csv``'s quadrant columns: nasal/temporal where every volume knows its eye (and
    the picture volumes of the same folder have ``--eye``), else by image side for all."""
    if picture_volumes and folder_eye is None:
        return None
    return "OD" if volumes and all(v.eye for v in volumes) else None


def _laid_out(stack: np.ndarray, layout: RasterLayout) -> np.ndarray:
    """``S x H x W`` in the file's order -> superior-first, columns left to right on the localizer."""
    stack = stack[list(layout.order)]
    return stack[..., ::-1] if layout.flip_columns else stack


def volume_readout(volume: OctVolume, labels: np.ndarray, class_names: Sequence[str], columns_eye: str | None,
                   name: str | None = None, fovea: Fovea | None = None) -> tuple[Measurement, VolumeReport]:
    """The ``measurements.csv`` row and ETDRS report of ``labels`` (``S x H x W`` class indices, the file's B-scan
    order) on ``volume``'s own geometry.

    ``columns_eye`` (:func:`volume_columns_eye`) None names quadrants by image side even where the file knows the
    eye (so that every row of one ``etdrs.csv`` has the same columns). ``fovea`` places the grid where another
    read-out of the volume found it (``evaluate`` measures the predictions on the grader's grid).
    """
    name = name or volume.name
    layout, geo = raster_layout(volume), volume.geometry
    stack, images = _laid_out(labels, layout), _laid_out(volume.bscans, layout)
    spacing = (layout.slice_mm, geo.axial_mm, geo.ascan_mm)
    known = all(v is not None for v in spacing)
    eye = volume.eye if columns_eye else None
    where = fovea or locate_fovea(name, stack, spacing, class_names, None, images.astype(np.float32))
    record = etdrs_record(name, stack, spacing, class_names, eye, where)
    if columns_eye and not volume.eye:  # the other rows name quadrants nasal/temporal; this file cannot
        columns = etdrs_columns(class_names, columns_eye)
        record = {k: v for k, v in record.items() if k in columns}
        layout = replace(layout, note="; ".join(filter(None, [layout.note, "eye not in the file: quadrant volumes "
                                                               "left blank (central, circles and total kept)"])))
    record["eye"] = volume.eye or ""
    if layout.note:
        record["note"] = "; ".join(filter(None, [layout.note, record["note"] if known else ""]))
    thickness = None
    fluid = tuple(c for c, _ in fluid_classes(class_names))
    if known and fluid:
        thickness = fluid_thickness_px(stack, fluid) * geo.axial_mm * 1000
    s, h, w = labels.shape
    pixel = geo.axial_mm * geo.ascan_mm if geo.axial_mm and geo.ascan_mm else None
    grid = Geometry(h, w, slices=s, row_mm=geo.axial_mm, col_mm=geo.ascan_mm, slice_mm=layout.slice_mm,
                    pixel_mm2=pixel, voxel_mm3=pixel * layout.slice_mm if known else None)
    row = Measurement(name, "volume", grid, (volume.path,), pixels=count_classes(labels, len(class_names) + 1),
                      note=layout.note)
    report = VolumeReport(name, record, where, thickness, layout.slice_mm, geo.ascan_mm, volume.eye,
                          localizer_view(volume, layout) if thickness is not None else None)
    return row, report


def localizer_view(volume: OctVolume, layout: RasterLayout) -> LocalizerView | None:
    """Where the laid-out en-face map (superior-first, left to right) lies on the volume's localizer, from the
    B-scans' start/end positions (mm, or localizer pixels times the localizer's pixel spacing: a DICOM OPT's frame
    locations on the Ophthalmic Photography it references); None where the file has no localizer (or none with a
    pixel spacing), no positions or no raster."""
    geo = volume.geometry
    if (volume.localizer is None or volume.localizer_mm is None or geo.position_unit not in ("mm", "localizer pixel")
            or layout.slice_mm is None or geo.ascan_mm is None):
        return None
    x0, y0, x1, y1 = geo.positions[layout.order[0]]  # the superior B-scan
    if geo.position_unit == "localizer pixel":
        (row_mm, col_mm) = volume.localizer_mm
        x0, y0, x1, y1 = x0 * col_mm, y0 * row_mm, x1 * col_mm, y1 * row_mm
    return LocalizerView(volume.localizer, volume.localizer_mm, min(x0, x1), (y0 + y1) / 2, geo.ascan_mm,
                         layout.slice_mm)


