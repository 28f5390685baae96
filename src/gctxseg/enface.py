"""The en-face fluid map: fluid thickness (µm) under each A-scan seen from the front, with the ETDRS grid."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .etdrs import RADII_MM, Fovea

__all__ = ["plot_enface_map"]


def plot_enface_map(thickness_um: np.ndarray, fovea: Fovea, slice_mm: float, col_mm: float, eye: str | None,
                    path: str | Path, title: str = "") -> Path:
    """Write a PNG of an ``S x W`` thickness map in mm around the fovea (B-scan 0 at the top, superior).

    Drawn: the map (colour bar in µm), the 1/3/6 mm circles and the 45-degree sector lines, the fovea (+),
    a tick per B-scan on the left edge, and the orientation (N/T with the eye, else left/right).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    ax.set_aspect("equal")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
