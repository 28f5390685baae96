"""One row of ``etdrs.csv`` per volume: fluid per ETDRS subfield (nL), the hole's diameters (µm), the grid's centre.

Built from a label stack with :mod:`gctxseg.etdrs`; blank cells where the spacing is unknown (never 0), the
partial sectors named in ``partial`` and said in ``note``. Not yet called by ``predict``/``evaluate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import etdrs
from .utils import atomic_write_csv

__all__ = ["etdrs_columns", "etdrs_record", "write_etdrs_csv"]

_HOLE = ("mld_um", "mld_bscan", "base_um", "base_bscan", "size_class")


def etdrs_columns(class_names: Sequence[str], eye: str | None) -> list[str]:
    """Header: units in the names; per fluid class 9 subfields, 3 circles and the total; the hole's numbers."""
    fluid = [n for n in class_names if "hole" not in n.lower()]
    areas = [*etdrs.subfield_names(eye), *etdrs.CIRCLES, "total"]
    return (["file", "eye", "quadrants", "fovea_slice", "fovea_column", "fovea_from", "partial"]
            + [f"{n}_{a}_nl" for n in fluid for a in areas] + [f"hole_{h}" for h in _HOLE] + ["note"])


def etdrs_record(name: str, labels: np.ndarray, spacing: tuple[float | None, float | None, float | None],
                 class_names: Sequence[str], eye: str | None = None, fovea: tuple[int, int] | None = None,
                 images: np.ndarray | None = None) -> dict[str, str]:
    """The cells of one volume (``labels``: ``S x H x W`` class indices 0..K-1; classes named ``*hole*`` are holes).

    Raises:
        DatasetError: ``fovea`` outside the stack (one line).
    """
    known = all(v is not None for v in spacing)
    holes = tuple(c for c, n in enumerate(class_names, 1) if "hole" in n.lower())
    fluids = [(c, n) for c, n in enumerate(class_names, 1) if c not in holes]
    shape = (labels.shape[0], labels.shape[2])
    where = etdrs.check_fovea(fovea, shape, name) if fovea is not None else etdrs.find_fovea(
        labels, spacing if known else None, holes, images)
    record = dict.fromkeys(etdrs_columns(class_names, eye), "")
    record.update(file=name, eye=eye or "", quadrants="nasal/temporal" if eye else "image sides (no --eye)",
                  fovea_slice=f"{where.slice:.2f}", fovea_column=f"{where.column:.2f}", fovea_from=where.source)
    if not known:
        record["note"] = ("no pixel or slice spacing: subfield volumes and hole diameters left blank; pass "
                          "--pixel-spacing and --slice-spacing")
        return record
    slice_mm, row_mm, col_mm = spacing
    partial = etdrs.partial_subfields(shape, where, slice_mm, col_mm, eye)
    record["partial"] = " ".join(partial)
    if partial:
        record["note"] = f"scan smaller than the 6 mm grid: {', '.join(partial)} partial (scanned part only)"
    for c, n in fluids:
        volumes = etdrs.subfield_volumes_nl(etdrs.fluid_thickness_px(labels, (c,)), where, spacing, eye)
        record.update({f"{n}_{a}_nl": format(v, ".6g") for a, v in volumes.items()})
    per_bscan = [etdrs.hole_diameters_mm(np.isin(b, holes), row_mm, col_mm) if holes else None for b in labels]
    measured = [(d, s) for s, d in enumerate(per_bscan) if d is not None]
    if measured:
        (mld, _), mld_s = max(measured, key=lambda m: m[0][0])
        (_, base), base_s = max(measured, key=lambda m: m[0][1])
        record.update(hole_mld_um=format(mld * 1000, ".4g"), hole_mld_bscan=str(mld_s),
                      hole_base_um=format(base * 1000, ".4g"), hole_base_bscan=str(base_s),
                      hole_size_class=etdrs.hole_size_class(mld * 1000))
    return record


def write_etdrs_csv(records: Sequence[dict[str, str]], path: str | Path, class_names: Sequence[str],
                    eye: str | None) -> Path:
    """Write ``etdrs.csv`` atomically and return its path."""
    atomic_write_csv(path, etdrs_columns(class_names, eye), records)
    return Path(path)
