"""What a retina clinic reads from a B-scan stack: fluid in the ETDRS grid and the en-face fluid map, around the fovea.

Pure numpy; every function takes label stacks ``S x H x W`` (B-scan, row = depth, column = lateral) and
spacings in mm: ``slice_mm`` between B-scans, ``row_mm`` axial, ``col_mm`` lateral.

Conventions (docs/measurements.md):

- En-face position of A-scan ``(s, c)``: ``x = (c - fovea_col) * col_mm`` (to the image right) and
  ``y = (s - fovea_slice) * slice_mm``; B-scan 0 is taken as the most superior (the top of the en-face map).
  Each A-scan stands for the rectangle ``col_mm x slice_mm`` around it (the band between B-scans), and its
  fluid is shared among the subfields in proportion to the part of that rectangle inside each (sub-sampled),
  so a circle crossing a sparse raster is not rounded to whole B-scans.
- ETDRS grid (ETDRS Research Group 1991): circles of 1, 3 and 6 mm diameter around the fovea; the central
  subfield, and the inner (1-3 mm) and outer (3-6 mm) rings split at 45 degrees into superior, nasal, inferior
  and temporal quadrants. Nasal is the image right of a right eye (OD) and the image left of a left eye (OS),
  as fundus images and OCT B-scans are displayed; without the eye the quadrants are named ``left``/``right``.

The macular hole's size: :mod:`gctxseg.clinical.macular_hole`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..data.errors import DatasetError

__all__ = [
    "RADII_MM",
    "CIRCLES",
    "Fovea",
    "subfield_names",
    "subfield_fractions",
    "subfield_volumes_nl",
    "partial_subfields",
    "fluid_thickness_px",
    "inner_surface_rows",
    "find_fovea",
    "check_fovea",
]

RADII_MM = (0.5, 1.5, 3.0)  # the ETDRS circles: 1, 3 and 6 mm across
CIRCLES = ("circle_1mm", "circle_3mm", "circle_6mm")
_SIDES = ("superior", "right", "inferior", "left")  # quadrants by image side, as computed
_MAX_SUBSTEP_MM = 0.02  # footprint sub-sampling step: the circles' edges are placed to ~10 µm


@dataclass(frozen=True)
class Fovea:
    """Grid centre in (fractional) B-scan and column indices, and how it was found (given/hole/inner surface/centre)."""

    slice: float
    column: float
    source: str


def subfield_names(eye: str | None) -> tuple[str, ...]:
    """The 9 subfields in report order: central, inner S/N/I/T, outer S/N/I/T (left/right without the eye)."""
    sides = ("superior", "nasal", "inferior", "temporal") if eye else ("superior", "right", "inferior", "left")
    return ("central", *(f"{ring}_{q}" for ring in ("inner", "outer") for q in sides))


def _side_to_name(eye: str | None) -> dict[str, str]:
    if eye is None:
        return {s: s for s in _SIDES}
    nasal_right = eye == "OD"  # a right eye's nose is on the image right of a fundus view
    return {"superior": "superior", "inferior": "inferior",
            "right": "nasal" if nasal_right else "temporal", "left": "temporal" if nasal_right else "nasal"}


def _substeps(spacing_mm: float) -> np.ndarray:
    """Offsets in (-0.5, 0.5) of an A-scan's footprint, fine enough that each sub-step is <= 20 µm."""
    k = min(32, max(1, math.ceil(spacing_mm / _MAX_SUBSTEP_MM)))
    return (np.arange(k) + 0.5) / k - 0.5


def subfield_fractions(
    shape: tuple[int, int], fovea: Fovea, slice_mm: float, col_mm: float
) -> dict[str, np.ndarray]:
    """Share of each A-scan's footprint in each subfield, by image side: ``{"central": S x W, "inner_superior": ...}``.

    Points beyond 3 mm belong to no subfield. Summing a share map times ``slice_mm * col_mm`` gives the
    scanned area of that subfield.
    """
    s_count, w_count = shape
    rows = np.arange(s_count, dtype=np.float64)[:, None]
    cols = np.arange(w_count, dtype=np.float64)[None, :]
    names = ["central"] + [f"{ring}_{q}" for ring in ("inner", "outer") for q in _SIDES]
    fractions = {n: np.zeros(shape) for n in names}
    sub_s, sub_c = _substeps(slice_mm), _substeps(col_mm)
    for ds in sub_s:
        up = -(rows + ds - fovea.slice) * slice_mm  # superior is towards B-scan 0
        for dc in sub_c:
            x = (cols + dc - fovea.column) * col_mm
            r = np.hypot(x, up)
            quadrant = np.where(up >= np.abs(x), 0, np.where(-up >= np.abs(x), 2, np.where(x > 0, 1, 3)))
            fractions["central"] += r <= RADII_MM[0]
            for ring, (inner, outer) in (("inner", RADII_MM[:2]), ("outer", RADII_MM[1:])):
                in_ring = (r > inner) & (r <= outer)
                for q, side in enumerate(_SIDES):
                    fractions[f"{ring}_{side}"] += in_ring & (quadrant == q)
    n = len(sub_s) * len(sub_c)
    return {k: v / n for k, v in fractions.items()}


def subfield_volumes_nl(
    fluid_px: np.ndarray, fovea: Fovea, spacing: tuple[float, float, float], eye: str | None
) -> dict[str, float]:
    """Fluid volume in nL in the 9 subfields, the three circles and the whole stack.

    Args:
        fluid_px: ``S x W`` fluid pixels per A-scan (:func:`fluid_thickness_px`).
        fovea: grid centre.
        spacing: ``(slice_mm, row_mm, col_mm)``.
        eye: ``OD``, ``OS`` or None (quadrants named by image side).
    """
    slice_mm, row_mm, col_mm = spacing
    nl = fluid_px * (slice_mm * row_mm * col_mm) * 1000.0  # mm³ -> nL per A-scan footprint
    naming = _side_to_name(eye)
    out = {}
    for key, share in subfield_fractions(fluid_px.shape, fovea, slice_mm, col_mm).items():
        ring, _, side = key.partition("_")
        out[key if not side else f"{ring}_{naming[side]}"] = float((nl * share).sum())
    names = subfield_names(eye)
    ordered = {n: out[n] for n in names}
    ordered["circle_1mm"] = ordered["central"]
    ordered["circle_3mm"] = ordered["central"] + sum(ordered[n] for n in names[1:5])
    ordered["circle_6mm"] = ordered["circle_3mm"] + sum(ordered[n] for n in names[5:])
    ordered["total"] = float(nl.sum())
    return ordered


def partial_subfields(shape: tuple[int, int], fovea: Fovea, slice_mm: float, col_mm: float,
                      eye: str | None) -> list[str]:
    """Subfields not wholly inside the scanned rectangle (the union of the A-scans' footprints).

    A sector of a ring with outer radius R reaches R along its axis and R/sqrt(2) across it, so the superior
    sector is whole iff the scan reaches R above the fovea and R/sqrt(2) to both sides, and so on.
    """
    left = (fovea.column + 0.5) * col_mm  # mm scanned to each side of the fovea
    right = (shape[1] - 0.5 - fovea.column) * col_mm
    above = (fovea.slice + 0.5) * slice_mm
    below = (shape[0] - 0.5 - fovea.slice) * slice_mm
    reach = {"superior": (above, left, right), "inferior": (below, left, right),
             "right": (right, above, below), "left": (left, above, below)}
    naming, partial = _side_to_name(eye), []
    if min(left, right, above, below) < RADII_MM[0]:
        partial.append("central")
    for ring, radius in (("inner", RADII_MM[1]), ("outer", RADII_MM[2])):
        for side in _SIDES:
            along, across_a, across_b = reach[side]
            if along < radius or min(across_a, across_b) < radius / math.sqrt(2):
                partial.append(f"{ring}_{naming[side]}")
    order = subfield_names(eye)
    return sorted(partial, key=order.index)


def fluid_thickness_px(labels: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """``S x W`` pixels of the given classes under each A-scan of an ``S x H x W`` label stack."""
    return np.isin(labels, classes).sum(axis=1)


# ---------------------------------------------------------------- the fovea


def inner_surface_rows(images: np.ndarray) -> np.ndarray:
    """``S x W`` row of the inner retinal surface (ILM): the first row, from the top, brighter than halfway
    between the vitreous and the retina, after a 5-row running mean against speckle; -1 where none is.

    Halfway is taken between the 20th and the 95th percentile of the whole stack (vitreous and choroid fill
    the low end, the bright bands the high end).
    """
    stack = images.astype(np.float32)
    kernel = 5
    padded = np.pad(stack, ((0, 0), (kernel // 2, kernel // 2), (0, 0)), mode="edge")
    csum = np.cumsum(padded, axis=1, dtype=np.float64)
    csum = np.concatenate([np.zeros_like(csum[:, :1]), csum], axis=1)
    smooth = (csum[:, kernel:] - csum[:, :-kernel]) / kernel  # (S, H, W)
    low, high = np.percentile(stack, [20, 95])
    above = smooth > (low + high) / 2
    first = above.argmax(axis=1)
    return np.where(above.any(axis=1), first, -1)


def find_fovea(
    labels: np.ndarray,
    spacing: tuple[float, float, float] | None,
    hole_classes: tuple[int, ...] = (),
    images: np.ndarray | None = None,
) -> Fovea:
    """The grid centre of an ``S x H x W`` stack, by the first rule that applies:

    1. ``hole``: the centroid of the hole's en-face footprint (the hole sits at the foveal centre);
    2. ``inner surface``: the deepest point of the inner retinal surface (:func:`inner_surface_rows`) in the
       central half of the scan, after removing the surface's best-fit plane (tilt) and a 0.25 mm running mean;
    3. ``centre``: the middle of the scan (no images, or no surface found).
    Limits: edema that fills the pit, or a scan centred far from the fovea, misleads rule 2; give ``--fovea``.
    """
    s_count, _, w_count = labels.shape
    if hole_classes:
        footprint = np.isin(labels, hole_classes).any(axis=1)  # (S, W)
        if footprint.any():
            s_idx, c_idx = np.nonzero(footprint)
            return Fovea(float(s_idx.mean()), float(c_idx.mean()), "hole")
    if images is not None and spacing is not None:
        found = _deepest_surface_point(inner_surface_rows(images), spacing)
        if found is not None:
            return Fovea(*found, "inner surface")
    return Fovea((s_count - 1) / 2, (w_count - 1) / 2, "centre")


def _box_mean(a: np.ndarray, half: tuple[int, int]) -> np.ndarray:
    """Running mean over a (2*half+1) box, edges padded by replication."""
    hs, hc = half
    padded = np.pad(a, ((hs, hs), (hc, hc)), mode="edge")
    c = np.cumsum(np.cumsum(padded, 0), 1)
    c = np.pad(c, ((1, 0), (1, 0)))
    ks, kc = 2 * hs + 1, 2 * hc + 1
    return (c[ks:, kc:] - c[:-ks, kc:] - c[ks:, :-kc] + c[:-ks, :-kc]) / (ks * kc)


def _deepest_surface_point(surface: np.ndarray, spacing: tuple[float, float, float]) -> tuple[float, float] | None:
    slice_mm, row_mm, col_mm = spacing
    valid = surface >= 0
    if valid.mean() < 0.5:
        return None
    depth = np.where(valid, surface, np.median(surface[valid])).astype(np.float64) * row_mm
    s, c = np.mgrid[: surface.shape[0], : surface.shape[1]].astype(np.float64)
    design = np.stack([np.ones(valid.sum()), s[valid] * slice_mm, c[valid] * col_mm], axis=1)
    coef, *_ = np.linalg.lstsq(design, depth[valid], rcond=None)  # tilt of the scan: not the pit
    detrended = depth - (coef[0] + coef[1] * s * slice_mm + coef[2] * c * col_mm)
    half = (int(round(0.125 / slice_mm)), int(round(0.125 / col_mm)))
    smooth = _box_mean(detrended, half)
    s_count, w_count = surface.shape
    window = np.zeros_like(valid)
    window[s_count // 4: s_count - s_count // 4, w_count // 4: w_count - w_count // 4] = True  # central half
    smooth = np.where(window, smooth, -np.inf)
    si, ci = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    return float(si), float(ci)


def check_fovea(fovea: tuple[int, int], shape: tuple[int, int], name: str) -> Fovea:
    """A given ``--fovea SLICE COLUMN`` as a :class:`Fovea`; one-line :class:`DatasetError` when outside the stack."""
    s, c = fovea
    if not (0 <= s < shape[0] and 0 <= c < shape[1]):
        raise DatasetError(f"{name}: --fovea {s} {c} is outside the volume ({shape[0]} B-scans x {shape[1]} "
                           f"columns); give SLICE 0..{shape[0] - 1} and COLUMN 0..{shape[1] - 1}")
    return Fovea(float(s), float(c), "given")

