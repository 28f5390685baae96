"""The en-face fluid map: fluid thickness (µm) under each A-scan seen from the front, with the ETDRS grid."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .etdrs import RADII_MM, Fovea

__all__ = ["LocalizerView", "plot_enface_map", "plot_enface_on_localizer"]


def plot_enface_map(thickness_um: np.ndarray, fovea: Fovea, slice_mm: float, col_mm: float, eye: str | None,
                    path: str | Path, title: str = "") -> Path:
    """Write a PNG of an ``S x W`` thickness map in mm around the fovea (B-scan 0 at the top, superior).

    Drawn: the map (colour bar in µm), the 1/3/6 mm circles and the 45-degree sector lines, the fovea (+),
    a tick per B-scan on the left edge, and the orientation (N/T with the eye, else left/right).
    """
    from ..visualize.plots import plt  # local: matplotlib only when drawing; the backend is chosen there

    s_count, w_count = thickness_um.shape
    extent = (-(fovea.column + 0.5) * col_mm, (w_count - 0.5 - fovea.column) * col_mm,
              -(s_count - 0.5 - fovea.slice) * slice_mm, (fovea.slice + 0.5) * slice_mm)  # up = superior
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    shown = ax.imshow(thickness_um, extent=extent, origin="upper", cmap="magma", interpolation="nearest",
                      vmin=0, vmax=max(1.0, float(thickness_um.max())))
    fig.colorbar(shown, ax=ax, label="fluid thickness (µm)")
    angles = np.linspace(0, 2 * math.pi, 361)
    for r in RADII_MM:
        ax.plot(r * np.cos(angles), r * np.sin(angles), color="cyan", linewidth=0.8)
    for a in (45, 135, 225, 315):  # sector borders between the 1 mm and 6 mm circles
        c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
        ax.plot([RADII_MM[0] * c, RADII_MM[2] * c], [RADII_MM[0] * s, RADII_MM[2] * s], color="cyan", linewidth=0.8)
    ax.plot(0, 0, "+", color="white", markersize=10)
    ys = (fovea.slice - np.arange(s_count)) * slice_mm
    ax.plot(np.full(s_count, extent[0]), ys, "_", color="lime", markersize=6)  # where the B-scans are
    left, right = ("T", "N") if eye == "OD" else ("N", "T") if eye == "OS" else ("left", "right")
    ax.set_xlabel(f"mm from the fovea ({left} <-> {right}{', ' + eye if eye else ', eye not given'})")
    ax.set_ylabel("mm from the fovea (inferior <-> superior)")
    ax.set_title(title or f"fluid thickness, {s_count} B-scans", fontsize=9)
    ax.set_xlim(min(extent[0], -RADII_MM[2]), max(extent[1], RADII_MM[2]))
    ax.set_ylim(min(extent[2], -RADII_MM[2]), max(extent[3], RADII_MM[2]))
    return _save_map(fig, ax, path)


@dataclass(frozen=True)
class LocalizerView:
    """Where a volume's en-face map lies on its localizer (the infrared fundus picture), in localizer mm (x to the
    right, y down): the map's first column at ``left_mm``, its first (superior) B-scan at ``top_mm``, columns
    ``col_mm`` and B-scans ``slice_mm`` apart, from the B-scans' start/end positions in the file."""

    picture: np.ndarray  # H x W uint8
    pixel_mm: tuple[float, float]  # (row, column) mm per localizer pixel
    left_mm: float
    top_mm: float
    col_mm: float
    slice_mm: float

    def at(self, slice_index: float, column: float) -> tuple[float, float]:
        """Localizer (x, y) in mm of a (superior-first B-scan, left-to-right column) point of the map."""
        return self.left_mm + column * self.col_mm, self.top_mm + slice_index * self.slice_mm

    def pixel(self, slice_index: float, column: float) -> tuple[float, float]:
        """The same point in localizer pixels (column, row)."""
        x, y = self.at(slice_index, column)
        return x / self.pixel_mm[1], y / self.pixel_mm[0]


def plot_enface_on_localizer(thickness_um: np.ndarray, fovea: Fovea, view: LocalizerView, eye: str | None,
                             path: str | Path, title: str = "") -> Path:
    """Write a PNG of the ``S x W`` fluid thickness map (superior-first, left to right) drawn over the localizer
    where the B-scans lie, with the ETDRS circles and sectors at the fovea, as a clinician sees the fundus
    (nasal towards the optic disc: right of the picture for OD)."""
    from ..visualize.plots import plt  # local: matplotlib only when drawing; the backend is chosen there

    s_count, w_count = thickness_um.shape
    rows, cols = view.picture.shape
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    ax.imshow(view.picture, cmap="gray", extent=(0, cols * view.pixel_mm[1], rows * view.pixel_mm[0], 0),
              interpolation="bilinear", vmin=0, vmax=255)
    (x0, y0), (x1, y1) = view.at(-0.5, -0.5), view.at(s_count - 0.5, w_count - 0.5)
    fluid = np.ma.masked_less_equal(thickness_um, 0)  # the fundus shows through where there is no fluid
    shown = ax.imshow(fluid, extent=(x0, x1, y1, y0), cmap="magma", alpha=0.85, interpolation="nearest",
                      vmin=0, vmax=max(1.0, float(thickness_um.max())))
    fig.colorbar(shown, ax=ax, label="fluid thickness (µm)")
    ax.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], color="lime", linewidth=0.6)  # the scanned area
    cx, cy = view.at(fovea.slice, fovea.column)
    angles = np.linspace(0, 2 * math.pi, 361)
    for r in RADII_MM:
        ax.plot(cx + r * np.cos(angles), cy + r * np.sin(angles), color="cyan", linewidth=0.8)
    for a in (45, 135, 225, 315):
        c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
        ax.plot([cx + RADII_MM[0] * c, cx + RADII_MM[2] * c], [cy + RADII_MM[0] * s, cy + RADII_MM[2] * s],
                color="cyan", linewidth=0.8)
    ax.plot(cx, cy, "+", color="white", markersize=10)
    left, right = ("T", "N") if eye == "OD" else ("N", "T") if eye == "OS" else ("left", "right")
    ax.set_xlabel(f"localizer mm ({left} <-> {right}{', ' + eye if eye else ', eye not in the file'})")
    ax.set_ylabel("localizer mm (superior at the top)")
    ax.set_title(title or f"fluid thickness on the localizer, {s_count} B-scans", fontsize=9)
    ax.set_xlim(min(0.0, x0, cx - RADII_MM[2]), max(cols * view.pixel_mm[1], x1, cx + RADII_MM[2]))
    ax.set_ylim(max(rows * view.pixel_mm[0], y1, cy + RADII_MM[2]), min(0.0, y0, cy - RADII_MM[2]))
    return _save_map(fig, ax, path)


def _save_map(fig, ax, path: str | Path) -> Path:
    """Square axes, the figure written to ``path`` (its folder made) and closed; returns the path."""
    import matplotlib.pyplot as plt

    ax.set_aspect("equal")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
