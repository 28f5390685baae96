"""The size of a full-thickness macular hole in one B-scan, as the IVTS grades it (Duker et al. 2013).

The minimum linear diameter (MLD) is the narrowest width of the hole parallel to the RPE, the base diameter its
width at the RPE; size class small <= 250 µm < medium <= 400 µm < large. Pure numpy, spacings in mm (``row_mm``
axial, ``col_mm`` lateral); docs/measurements.md.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["hole_diameters_mm", "hole_size_class"]

def hole_diameters_mm(hole: np.ndarray, row_mm: float, col_mm: float) -> tuple[float, float] | None:
    """(MLD, base diameter) in mm of the hole in one B-scan (``H x W`` bool), or None without a hole.

    Each row of the hole is measured edge to edge (leftmost to rightmost hole pixel, each a full pixel wide);
    the RPE's direction is the line fitted through the hole's lowest pixel per column, and widths are taken
    parallel to it (times the cosine of its angle, in mm). MLD is the narrowest row, base diameter the
    lowest row (at the RPE). A ragged top row of a predicted mask can make the MLD too small.
    """
    rows = np.nonzero(hole.any(axis=1))[0]
    if rows.size == 0:
        return None
    cols_any = np.nonzero(hole.any(axis=0))[0]
    bottoms = hole.shape[0] - 1 - np.argmax(hole[::-1, cols_any], axis=0)  # lowest hole row per column
    cosine = 1.0
    if cols_any.size >= 2 and np.ptp(bottoms) > 0:
        slope = np.polyfit(cols_any * col_mm, bottoms * row_mm, 1)[0]
        cosine = 1.0 / math.sqrt(1.0 + slope * slope)
    widths = []
    for r in rows:
        c = np.nonzero(hole[r])[0]
        widths.append((c[-1] - c[0] + 1) * col_mm * cosine)
    return float(min(widths)), float(widths[-1])


def hole_size_class(mld_um: float | None) -> str:
    """IVTS size class of a full-thickness macular hole by its MLD (Duker et al. 2013)."""
    if mld_um is None:
        return ""
    return "small" if mld_um <= 250 else "medium" if mld_um <= 400 else "large"
