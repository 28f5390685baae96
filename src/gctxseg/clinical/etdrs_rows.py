"""One row of ``etdrs.csv`` per volume: fluid per ETDRS subfield (nL), the hole's diameters (µm), the grid's centre.

Built from a label stack with :mod:`gctxseg.clinical.etdrs`; blank cells where the spacing is unknown (never 0), the
partial sectors named in ``partial`` and said in ``note``. ``predict`` writes ``etdrs.csv`` and an en-face map
per volume (``enface/NAME.png``, shown in ``index.html``) for every B-scan group (``--group-regex``) and DICOM
series; ``evaluate`` does the same for the grader's masks and the predictions and adds their agreement (MAE,
bias, limits of agreement per subfield and hole diameter: :func:`gctxseg.clinical.agreement.etdrs_agreement`) to
``summary.json``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.files import atomic_write_csv
from . import etdrs
from .enface import plot_enface_map, plot_enface_on_localizer
from .macular_hole import hole_diameters_mm, hole_size_class

__all__ = ["VolumeReport", "etdrs_columns", "etdrs_record", "fluid_classes", "grey_image", "hole_classes",
           "locate_fovea", "volume_reports", "write_etdrs_csv", "write_volume_reports"]

_HOLE = ("mld_um", "mld_bscan", "base_um", "base_bscan", "size_class")


def etdrs_columns(class_names: Sequence[str], eye: str | None) -> list[str]:
    """Header: units in the names; per fluid class 9 subfields, 3 circles and the total; the hole's numbers."""
    fluid = [n for n in class_names if "hole" not in n.lower()]
    areas = [*etdrs.subfield_names(eye), *etdrs.CIRCLES, "total"]
    return (["file", "eye", "quadrants", "fovea_slice", "fovea_column", "fovea_from", "partial"]
            + [f"{n}_{a}_nl" for n in fluid for a in areas] + [f"hole_{h}" for h in _HOLE] + ["note"])


def hole_classes(class_names: Sequence[str]) -> tuple[int, ...]:
    return tuple(c for c, n in enumerate(class_names, 1) if "hole" in n.lower())


def fluid_classes(class_names: Sequence[str]) -> list[tuple[int, str]]:
    holes = hole_classes(class_names)
    return [(c, n) for c, n in enumerate(class_names, 1) if c not in holes]


def locate_fovea(name: str, labels: np.ndarray, spacing: tuple[float | None, float | None, float | None],
                 class_names: Sequence[str], fovea: tuple[int, int] | None = None,
                 images: np.ndarray | None = None) -> etdrs.Fovea:
    """The grid centre: the given ``--fovea`` (checked), else :func:`gctxseg.clinical.etdrs.find_fovea`'s."""
    if fovea is not None:
        return etdrs.check_fovea(fovea, (labels.shape[0], labels.shape[2]), name)
    known = all(v is not None for v in spacing)
    return etdrs.find_fovea(labels, spacing if known else None, hole_classes(class_names), images)


def etdrs_record(name: str, labels: np.ndarray, spacing: tuple[float | None, float | None, float | None],
                 class_names: Sequence[str], eye: str | None, where: etdrs.Fovea) -> dict[str, str]:
    """The cells of one volume (``labels``: ``S x H x W`` class indices 0..K-1; classes named ``*hole*`` are holes)
    on the grid centred at ``where`` (:func:`locate_fovea`)."""
    known = all(v is not None for v in spacing)
    holes, fluids = hole_classes(class_names), fluid_classes(class_names)
    shape = (labels.shape[0], labels.shape[2])
    record = dict.fromkeys(etdrs_columns(class_names, eye), "")
    record.update(file=name, eye=eye or "", quadrants="nasal/temporal" if eye else "image sides (no --eye)",
                  fovea_slice=f"{where.slice:.2f}", fovea_column=f"{where.column:.2f}", fovea_from=where.source)
    slice_mm, row_mm, col_mm = spacing
    if known:
        partial = etdrs.partial_subfields(shape, where, slice_mm, col_mm, eye)
        record["partial"] = " ".join(partial)
        if partial:
            record["note"] = f"scan smaller than the 6 mm grid: {', '.join(partial)} partial (scanned part only)"
        for c, n in fluids:
            volumes = etdrs.subfield_volumes_nl(etdrs.fluid_thickness_px(labels, (c,)), where, spacing, eye)
            record.update({f"{n}_{a}_nl": format(v, ".6g") for a, v in volumes.items()})
    else:
        record["note"] = ("no pixel or slice spacing: subfield volumes left blank; pass --pixel-spacing and "
                          "--slice-spacing")
    if holes and row_mm is not None and col_mm is not None:  # a diameter lies in one B-scan: no slice spacing
        record.update(_hole_cells(labels, holes, row_mm, col_mm))
    return record


def _hole_cells(labels: np.ndarray, holes: Sequence[int], row_mm: float, col_mm: float) -> dict[str, str]:
    """The largest minimum linear and base diameters over the B-scans, and where each was measured."""
    per_bscan = [hole_diameters_mm(np.isin(b, holes), row_mm, col_mm) for b in labels]
    measured = [(d, s) for s, d in enumerate(per_bscan) if d is not None]
    if not measured:
        return {}
    (mld, _), mld_s = max(measured, key=lambda m: m[0][0])
    (_, base), base_s = max(measured, key=lambda m: m[0][1])
    return dict(hole_mld_um=format(mld * 1000, ".4g"), hole_mld_bscan=str(mld_s), hole_base_um=format(base * 1000,
                ".4g"), hole_base_bscan=str(base_s), hole_size_class=hole_size_class(mld * 1000))


def write_etdrs_csv(records: Sequence[dict[str, str]], path: str | Path, class_names: Sequence[str],
                    eye: str | None) -> Path:
    """Write ``etdrs.csv`` atomically and return its path."""
    atomic_write_csv(path, etdrs_columns(class_names, eye), records)
    return Path(path)


# ---------------------------------------------------------------- volumes of predict and evaluate


@dataclass
class VolumeReport:
    """One volume's ETDRS row and en-face map (``thickness_um``: S x W fluid thickness, None without spacing)."""

    name: str
    record: dict[str, str]
    fovea: etdrs.Fovea
    thickness_um: np.ndarray | None
    slice_mm: float | None
    col_mm: float | None
    eye: str | None = None  # a volume file's own eye (its en-face map's N/T), else the run's --eye
    localizer: object | None = None  # a volume file's enface.LocalizerView: the map is also drawn on its fundus


def volume_reports(rows: Sequence, labels_of: Callable[[Path], np.ndarray | None],
                   images_of: Callable[[Path], np.ndarray | None], class_names: Sequence[str],
                   eye: str | None = None, fovea: tuple[int, int] | None = None,
                   centres: dict[str, etdrs.Fovea] | None = None) -> list[VolumeReport]:
    """A report per B-scan group and DICOM series of ``rows`` (measurements.Measurement) whose every member's
    labels ``labels_of`` gives (class indices, H x W); the B-scans in the rows' order (by number in
    a group, by position in a series).
    ``centres`` (volume -> grid centre) places the grid where another report found it (predictions are compared
    with the grader's on the grader's grid).

    Raises:
        DatasetError: ``fovea`` outside a volume.
    """
    reports = []
    for row in rows:
        if row.kind not in ("group", "series"):
            continue
        members = list(row.members)  # in B-scan order (plan_measurements: by number, or DICOM position)
        labels = [labels_of(m) for m in members]
        if any(lab is None for lab in labels):
            continue  # a member failed to predict: its row in measurements.csv says so
        stack = np.stack(labels)
        geo = row.geometry
        spacing = (geo.slice_mm, geo.row_mm, geo.col_mm)
        where = (centres or {}).get(row.file)
        if where is None:  # the pictures are read only where the grid centre is still to be found from them
            grey = [images_of(m) for m in members] if fovea is None else [None]
            images = np.stack(grey) if all(g is not None for g in grey) else None
            where = locate_fovea(row.file, stack, spacing, class_names, fovea, images)
        record = etdrs_record(row.file, stack, spacing, class_names, eye, where)
        thickness = None
        fluid = tuple(c for c, _ in fluid_classes(class_names))
        if all(v is not None for v in spacing) and fluid:
            thickness = etdrs.fluid_thickness_px(stack, fluid) * geo.row_mm * 1000
        reports.append(VolumeReport(row.file, record, where, thickness, geo.slice_mm, geo.col_mm))
    return reports


def grey_image(path: Path) -> np.ndarray | None:
    """A picture as ``H x W`` grey values (its channels' mean), or None when it cannot be read (fovea finding)."""
    from ..data import read_image

    try:
        return read_image(path).mean(axis=-1)
    except Exception:  # the fovea is then placed without the picture (by the hole, or the scan's centre)
        return None


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "volume"


def write_volume_reports(reports: Sequence[VolumeReport], out: str | Path, class_names: Sequence[str],
                         eye: str | None, prefix: str = "", say: bool = True) -> dict[str, Path]:
    """``out/{prefix}etdrs.csv`` and ``out/enface/{prefix}NAME.png`` per volume; one line per volume whose grid is
    partial or whose spacing is unknown. Returns volume name -> en-face map (maps are drawn where spacing is known).
    """
    out = Path(out)
    if not reports:
        return {}
    write_etdrs_csv([r.record for r in reports], out / f"{prefix}etdrs.csv", class_names, eye)
    maps = {}
    for r in reports:
        if say and r.record["note"]:
            print(f"{r.name}: {r.record['note']}", file=sys.stderr)
        if r.thickness_um is None:
            continue
        title = f"{prefix.rstrip('_') + ': ' if prefix else ''}{r.name}, fluid thickness ({r.fovea.source} fovea)"
        maps[r.name] = plot_enface_map(r.thickness_um, r.fovea, r.slice_mm, r.col_mm, r.eye or eye,
                                       out / "enface" / f"{prefix}{_file_name(r.name)}.png", title)
        if r.localizer is not None:
            plot_enface_on_localizer(r.thickness_um, r.fovea, r.localizer, r.eye or eye,
                                     out / "enface" / f"{prefix}{_file_name(r.name)}_localizer.png", title)
    return maps

