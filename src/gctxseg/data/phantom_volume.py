"""Phantom eyes: stacks of B-scans cut from one 3D macula, with the true ETDRS fluid volumes and hole diameters.

The single-B-scan phantom (:mod:`gctxseg.data.phantom`) draws each scan on its own; a volume needs one eye
that every B-scan cuts through, so that a measurement over the stack has a ground truth:

- the retina is a sheet over a flat RPE (a bowl beyond 1 mm from the fovea) with a foveal pit;
- fluid pockets are ellipsoids (random size, depth and rotation about the optical axis) that do not touch
  each other or the hole, each inside the retina, which swells over them;
- a full-thickness macular hole is a funnel of revolution about the foveal axis: its radius at height ``h``
  above the RPE (0 at the RPE, 1 at the edge tops) follows the flask profile of the 2D phantom.

Truth is computed from the geometry, not from the voxels: fluid per subfield by integrating each
ellipsoid's chord length ``2c sqrt(1 - rho^2)`` over a 10 µm en-face grid (total: ``4/3 pi a b c`` each),
hole diameters as ``2 min r(h)`` and ``2 r(0)`` (and the chords of B-scans off the axis). The B-scans are
``6 mm`` wide and ``2 mm`` deep as in the 2D phantom; the stack spans ``height_mm`` (default 6 mm), B-scan 0
superior; the fovea lies on a B-scan and a column, so ``--fovea`` can name it exactly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.outputs import staged_output
from .phantom import MASK_VALUES, SYNTH_ENTRIES, blur, smooth_noise_2d, speckle, synth_output_rules

__all__ = ["PhantomVolume", "render_oct_volume", "synthesize_volumes", "VOLUME_TRUTH_FILE"]

VOLUME_TRUTH_FILE = "truth.json"
_RPE_MM, _CHOROID_MM = 0.03, 0.25
# reflectivity (dB above the noise floor) of retinal bands by fraction of depth from the ILM to the RPE
_BANDS = ((0.10, 27.0), (0.25, 16.0), (0.35, 22.0), (0.50, 14.0), (0.57, 21.0), (0.85, 11.5), (0.90, 27.0),
          (1.00, 17.0))  # RNFL, GCL, IPL, INL, OPL, ONL, EZ, outer segments


@dataclass(frozen=True)
class _Blob:
    x: float  # centre, mm from the fovea (x to the image right, y towards higher B-scans)
    y: float
    z: float  # depth of the centre, mm from the top of the B-scan
    a: float  # semi-axes, mm (a, b en face, rotated by angle; c axial)
    b: float
    c: float
    angle: float

    def rho2(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Squared normalised en-face radius (1 on the rim) at points (x, y)."""
        dx, dy = x - self.x, y - self.y
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        return ((dx * cos + dy * sin) / self.a) ** 2 + ((-dx * sin + dy * cos) / self.b) ** 2


@dataclass(frozen=True)
class _Funnel:
    base: float  # radius at the RPE, mm
    narrow: float
    peak: float  # radius at the edge tops
    taper: float
    flare_from: float
    height: float  # RPE to edge tops, mm

    def radius(self, h: np.ndarray) -> np.ndarray:
        s = np.clip(h, 0.0, 1.0)
        flare = np.clip((s - self.flare_from) / (1.0 - self.flare_from), 0.0, 1.0)
        return self.narrow + (self.base - self.narrow) * (1 - s) ** self.taper + (self.peak - self.narrow) * (
            1 - np.sqrt(1 - flare * flare))


@dataclass
class PhantomVolume:
    """One phantom eye: ``S x H x W`` uint8 images and class masks, spacing, fovea and the true amounts."""

    images: np.ndarray
    masks: np.ndarray
    spacing: tuple[float, float, float]  # (slice_mm, row_mm, col_mm)
    fovea: tuple[int, int]  # (B-scan, column)
    truth: dict = field(default_factory=dict)


def _rpe_top(x: np.ndarray, y: np.ndarray, z_base: float, bowl: float) -> np.ndarray:
    return z_base - bowl * np.maximum(0.0, np.hypot(x, y) - 1.0) ** 2


def _place_blobs(rng, n: int, extent: tuple[float, float, float, float], keep_out: float, z_base: float,
                 bowl: float) -> list[_Blob]:
    x0, x1, y0, y1 = extent
    blobs: list[_Blob] = []
    for _ in range(40 * n):
        if len(blobs) >= n:
            break
        a, b, c = rng.uniform(0.15, 0.45), rng.uniform(0.15, 0.45), rng.uniform(0.04, 0.10)
        reach = max(a, b)
        x, y = rng.normal(0.0, 0.7, 2)
        if not (x0 + reach + 0.1 < x < x1 - reach - 0.1 and y0 + reach + 0.1 < y < y1 - reach - 0.1):
            continue
        if keep_out and math.hypot(x, y) < keep_out + reach + 0.05:
            continue
        floor = float(_rpe_top(np.array(math.hypot(x, y) + reach), np.array(0.0), z_base, bowl))
        z = floor - 0.02 - c - rng.uniform(0.0, 0.08)
        clear = all(math.hypot(x - o.x, y - o.y) > reach + max(o.a, o.b) or abs(z - o.z) > c + o.c + 0.01
                    for o in blobs)
        if clear:
            blobs.append(_Blob(x, y, z, a, b, c, rng.uniform(0, math.pi)))
    return blobs


def _thickness(x, y, blobs, funnel, z_base, bowl, t0, pit) -> np.ndarray:
    """Retinal thickness (mm) at en-face points: pit, swelling over each pocket, raised edges of a hole."""
    r = np.hypot(x, y)
    t = t0 * (1 - pit * np.exp(-((r / 0.45) ** 2.2)))
    for blob in blobs:
        ceiling = float(_rpe_top(np.array(max(0.0, math.hypot(blob.x, blob.y) - max(blob.a, blob.b))),
                                 np.array(0.0), z_base, bowl))
        needed = ceiling - (blob.z - blob.c) + 0.03  # top of the pocket 30 µm under the ILM
        rho = np.sqrt(blob.rho2(x, y))
        t = np.maximum(t, needed * np.where(rho <= 1, 1.0, np.exp(-(((rho - 1) / 0.6) ** 2))))
    if funnel is not None:
        shoulder = funnel.peak + 0.1
        t = np.maximum(t, funnel.height * np.where(r <= shoulder, 1.0, np.exp(-(((r - shoulder) / 0.25) ** 2))))
    return t


def _truth_fluid(blobs: list[_Blob], extent: tuple[float, float, float, float]) -> dict[str, float]:
    """nL per ETDRS subfield (image sides) by integrating the chords on a 10 µm en-face grid, and the exact total."""
    step = 0.01
    x0, x1, y0, y1 = extent
    x = np.arange(x0 + step / 2, x1, step)[None, :]
    y = np.arange(y0 + step / 2, y1, step)[:, None]
    chord = np.zeros((y.size, x.size))
    for blob in blobs:
        chord += 2 * blob.c * np.sqrt(np.clip(1 - blob.rho2(x, y), 0, None))
    up = -y  # B-scan 0 is superior
    r = np.hypot(x, up)
    quadrant = np.where(up >= np.abs(x), "superior", np.where(-up >= np.abs(x), "inferior",
                                                                np.where(x > 0, "right", "left")))
    nl = chord * step * step * 1000.0
    out = {"central": float(nl[r <= 0.5].sum())}
    for ring, lo, hi in (("inner", 0.5, 1.5), ("outer", 1.5, 3.0)):
        for side in ("superior", "right", "inferior", "left"):
            out[f"{ring}_{side}"] = float(nl[(r > lo) & (r <= hi) & (quadrant == side)].sum())
    out["total"] = float(sum(4 / 3 * math.pi * b.a * b.b * b.c for b in blobs) * 1000.0)
    return out


def _truth_hole(funnel: _Funnel, dys: np.ndarray) -> dict:
    h = np.linspace(0, 1, 20001)
    r_min, r_base = float(funnel.radius(h).min()), float(funnel.radius(np.array(0.0)))
    per_bscan = {}
    for s, dy in enumerate(dys):
        if abs(dy) < r_min:  # the B-scan crosses the neck: its MLD and base are chords of the two circles
            per_bscan[str(s)] = {"mld_um": 2000 * math.sqrt(r_min**2 - dy**2),
                                 "base_um": 2000 * math.sqrt(r_base**2 - dy**2), "offset_mm": float(dy)}
    return {"mld_um": 2000 * r_min, "base_um": 2000 * r_base, "per_bscan": per_bscan}


def render_oct_volume(
    rng: np.random.Generator,
    shape: tuple[int, int, int] = (64, 96, 128),
    *,
    edema: bool = True,
    hole: bool = False,
    height_mm: float = 6.0,
) -> PhantomVolume:
    """Render one phantom eye as ``S`` B-scans of ``H x W``, 6 mm wide, 2 mm deep, over ``height_mm``.

    Raises:
        ValueError: fewer than 8 B-scans or B-scans smaller than 32 x 32.
    """
    s_count, h_count, w_count = (int(v) for v in shape)
    if s_count < 8 or h_count < 32 or w_count < 32:
        raise ValueError(f"shape must be (B-scans >= 8, H >= 32, W >= 32), got {shape!r}")
    slice_mm, row_mm, col_mm = height_mm / s_count, 2.0 / h_count, 6.0 / w_count
    fovea = (s_count // 2 + int(rng.integers(-(s_count // 16), s_count // 16 + 1)),
             w_count // 2 + int(rng.integers(-(w_count // 16), w_count // 16 + 1)))
    xs = (np.arange(w_count) - fovea[1]) * col_mm  # A-scan centres
    ys = (np.arange(s_count) - fovea[0]) * slice_mm
    extent = (xs[0] - col_mm / 2, xs[-1] + col_mm / 2, ys[0] - slice_mm / 2, ys[-1] + slice_mm / 2)
    z_base = round(0.62 * h_count) * row_mm  # a row boundary: the hole's base row is whole
    bowl, t0, pit = rng.uniform(0.0, 0.025), rng.uniform(0.25, 0.30), rng.uniform(0.35, 0.5)
    funnel = None
    if hole:
        base = rng.uniform(0.15, 0.35)
        narrow = base * rng.uniform(0.45, 0.7)
        funnel = _Funnel(base, narrow, narrow + rng.uniform(0.05, 0.12), rng.uniform(1.2, 2.5),
                         rng.uniform(0.6, 0.8), t0 + rng.uniform(0.08, 0.15))
    keep_out = max(funnel.base, funnel.peak) if funnel else 0.0
    blobs = _place_blobs(rng, int(rng.integers(4, 10)), extent, keep_out, z_base, bowl) if edema else []

    y2, x2 = np.meshgrid(ys, xs, indexing="ij")  # (S, W)
    rpe = _rpe_top(x2, y2, z_base, bowl)
    ilm = rpe - _thickness(x2, y2, blobs, funnel, z_base, bowl, t0, pit)
    z = (np.arange(h_count) + 0.5) * row_mm  # row centres
    masks = np.zeros((s_count, h_count, w_count), np.uint8)
    for blob in blobs:
        inside = (blob.rho2(x2, y2)[:, None, :] + ((z[None, :, None] - blob.z) / blob.c) ** 2) <= 1
        masks[inside] = 1
    if funnel is not None:
        h = (z_base - z)[None, :, None] / funnel.height
        lumen = (h > 0) & (h <= 1) & (np.hypot(x2, y2)[:, None, :] < funnel.radius(h))
        masks[lumen] = 2
    images = np.stack([_render_bscan(rng, masks[s], ilm[s], rpe[s], z) for s in range(s_count)])
    truth = {"fovea": {"slice": fovea[0], "column": fovea[1]},
             "spacing_mm": {"slice": slice_mm, "row": row_mm, "column": col_mm},
             "eye": "OD", "quadrants": "by image side: right = nasal of this OD eye",
             "fluid_nl": _truth_fluid(blobs, extent), "pockets": len(blobs)}
    if funnel is not None:
        truth["hole"] = _truth_hole(funnel, ys)
    return PhantomVolume(images, masks, (slice_mm, row_mm, col_mm), fovea, truth)


def _render_bscan(rng, mask: np.ndarray, ilm: np.ndarray, rpe: np.ndarray, z: np.ndarray) -> np.ndarray:
    """One B-scan's image from its surfaces and labels: layered retina, RPE, choroid, speckle, log scale."""
    depth = z[:, None]
    t = (depth - ilm[None]) / np.maximum(rpe - ilm, 1e-3)[None]  # 0 at the ILM, 1 at the RPE
    level = np.zeros(mask.shape, np.float32)
    for top, db in reversed(_BANDS):
        level = np.where((t >= 0) & (t < top), db, level)
    below = depth - rpe[None]
    level = np.where((below >= 0) & (below < _RPE_MM), 31.0, level)
    choroid = (below >= _RPE_MM) & (below < _RPE_MM + _CHOROID_MM)
    level = np.where(choroid, 21.0 - 20.0 * (below - _RPE_MM), level)
    level = np.where(below >= _RPE_MM + _CHOROID_MM, 10.0, level)
    level = level + 1.3 * smooth_noise_2d(rng, mask.shape, 3.0, 8.0)
    signal = np.power(10.0, level / 10.0, dtype=np.float32)
    signal[(t < 0) | (mask > 0)] = 0.0  # vitreous, fluid and the hole's lumen: noise floor only
    intensity = signal * speckle(rng, mask.shape, 0.6, 0.9) + speckle(rng, mask.shape, 0.6, 0.9)
    log_image = blur(10 * np.log10(intensity + 1e-3), 0.45, 0.6)
    return np.round(255 * np.clip((log_image + 2.0) / 36.0, 0, 1)).astype(np.uint8)


def synthesize_volumes(
    out: str | Path, n: int = 4, shape: tuple[int, int, int] = (64, 96, 128), seed: int = 0,
    hole_rate: float = 0.5,
) -> dict:
    """Write ``n`` phantom eyes as ``out/images/eyeK_bSSS.jpg`` and ``out/masks/eyeK_bSSS.png``, with
    ``out/spacing.json`` (pixel spacing) and ``out/truth.json`` (per eye: fovea, spacing, true fluid nL per
    subfield, hole diameters). Eye ``k`` is rendered from ``default_rng([seed, k])``; even eyes have edema,
    and a hole with probability ``hole_rate``. Measure with ``--group-regex '(eye\\d+)_b\\d+' --slice-spacing``
    the slice spacing in ``truth.json``.

    ``out`` is new, empty or a previous phantom (replaced whole once complete); other files are refused.

    Raises:
        ValueError: ``n`` < 1 or a bad shape, or ``out`` holding other files (:mod:`gctxseg.core.outputs`).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    with staged_output(out, "synth", SYNTH_ENTRIES, **synth_output_rules(out)) as root:
        slice_mm, row_mm, col_mm = _write_eyes(root, n, shape, seed, hole_rate)
    return {"volumes": n, "bscans": n * shape[0], "slice_mm": slice_mm, "row_mm": row_mm, "col_mm": col_mm}


def _write_eyes(root: Path, n: int, shape: tuple[int, int, int], seed: int, hole_rate: float) -> tuple:
    """The eyes' B-scans, masks, ``spacing.json`` and ``truth.json`` into ``root``; their (slice, row, column) mm."""
    from .spacing import write_spacing_file

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    lookup = np.asarray(MASK_VALUES, np.uint8)
    truth = {}
    for k in range(n):
        rng = np.random.default_rng([seed, k])
        eye = render_oct_volume(rng, shape, edema=k % 2 == 0 or rng.random() < 0.5, hole=rng.random() < hole_rate)
        name = f"eye{k:03d}"
        for s in range(shape[0]):
            Image.fromarray(eye.images[s], mode="L").save(root / "images" / f"{name}_b{s:03d}.jpg", quality=95)
            Image.fromarray(lookup[eye.masks[s]], mode="L").save(root / "masks" / f"{name}_b{s:03d}.png")
        truth[name] = eye.truth
    slice_mm, row_mm, col_mm = eye.spacing
    write_spacing_file(root, row_mm, col_mm, note=f"phantom eyes: B-scans {slice_mm:g} mm apart (--slice-spacing)")
    (root / VOLUME_TRUTH_FILE).write_text(json.dumps(truth, indent=2) + "\n")
    return slice_mm, row_mm, col_mm
