"""Synthetic retinal OCT B-scans with edema and macular-hole labels.

The phantom exists so that the whole toolkit (mask-value discovery, training, evaluation, prediction) can be
exercised without patient data. It is built to demand what a model trained on real scans has to learn: the
retina is a curved, tilted stack of alternating bright and dark layers with a foveal pit, a textured choroid
below, multiplicative speckle on a log scale, vessel shadows and depth roll-off (see the shared OCT anatomy
notes). Lesions are drawn as geometry first; the image is then rendered *from* that geometry, so every
labelled pixel is hypo-reflective (noise floor only) and every noise-only pixel inside the retina is labelled.

Classes: 0 background, 1 edema (intraretinal cysts and subretinal fluid), 2 full-thickness macular hole
(the empty lumen between the hole's edges, from the RPE up to the level of the edge tops).

Pixel spacing: a macular B-scan spans about 6 mm across and 2 mm of depth, so an ``H x W`` phantom image has
pixels of ``2/H`` mm (rows, axial) by ``6/W`` mm (columns, lateral): at 224 x 224, 8.9 x 26.8 µm.
:func:`synthesize_dataset` writes it to ``spacing.json`` in the dataset root, where ``gctxseg predict`` and
``evaluate`` find it for ``root/{train,val}/images``, so areas come out in mm².

Example::

    rng = np.random.default_rng(0)
    sample = render_oct_bscan(rng, (224, 224), hole=True)
    counts = synthesize_dataset("data/oct_phantom", n=400, seed=0)  # {"train": 280, "val": 120}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.outputs import staged_output

__all__ = [
    "BSCAN_DEPTH_MM",
    "BSCAN_WIDTH_MM",
    "CLASS_NAMES",
    "phantom_pixel_spacing",
    "MASK_VALUES",
    "PhantomSample",
    "render_oct_bscan",
    "synthesize_dataset",
]

CLASS_NAMES = ("background", "edema", "hole")
# Masks are saved with spread-out gray values (not 0/1/2) so that mask-value discovery has real work to do.
MASK_VALUES = (0, 128, 255)

# The field of view a phantom B-scan stands for: a macular OCT line scan about 6 mm wide, 2 mm deep.
BSCAN_WIDTH_MM = 6.0
BSCAN_DEPTH_MM = 2.0


def phantom_pixel_spacing(size: tuple[int, int]) -> tuple[float, float]:
    """(row, column) pixel spacing in mm of an ``H x W`` phantom B-scan (6 mm wide, 2 mm deep)."""
    return BSCAN_DEPTH_MM / size[0], BSCAN_WIDTH_MM / size[1]


# Pathology rates when not forced: independent draws give 30% neither, 30% edema only, 20% hole only, 20% both.
_EDEMA_RATE = 0.5
_HOLE_RATE = 0.4

# Retinal regions between consecutive boundaries, top to bottom. Region 0 is the vitreous above the ILM and
# region len(_LAYERS) + 1 everything below Bruch's membrane (choroid, sclera).
_LAYERS = ("rnfl", "gcl", "ipl", "inl", "opl", "onl", "elm", "myoid", "ez", "os", "iz", "srf", "rpe")
_REGION = {name: i + 1 for i, name in enumerate(_LAYERS)}
_CHOROID = len(_LAYERS) + 1
# Thickness as a fraction of the reference thickness away from the fovea (the RNFL is set per side).
_THICKNESS = {
    "gcl": 0.13, "ipl": 0.10, "inl": 0.10, "opl": 0.06, "onl": 0.22, "elm": 0.015,
    "myoid": 0.035, "ez": 0.025, "os": 0.035, "iz": 0.02, "srf": 0.0, "rpe": 0.05,
}  # fmt: skip
# Mean backscatter in dB above the noise floor; plexiform and fibre layers are bright, nuclear layers dark.
_REFLECTIVITY_DB = {
    "rnfl": 27.0, "gcl": 16.0, "ipl": 22.0, "inl": 14.0, "opl": 21.0, "onl": 11.5, "elm": 17.0,
    "myoid": 12.0, "ez": 27.0, "os": 17.0, "iz": 24.0, "srf": 0.0, "rpe": 31.0,
}  # fmt: skip


@dataclass(frozen=True)
class PhantomSample:
    """One rendered B-scan.

    Attributes:
        image: ``H x W`` uint8 grayscale B-scan (log intensity).
        mask: ``H x W`` uint8 class indices: 0 background, 1 edema, 2 macular hole.
    """

    image: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class _Cyst:
    """An intraretinal cyst before placement: lateral centre, host layer, radii (pixels), tilt (radians)."""

    cx: float
    host: str
    rx: float
    ry: float
    angle: float


@dataclass(frozen=True)
class _Hole:
    """Full-thickness macular hole: centre, base/minimum half-widths, lip offset of the edge tops, shape."""

    xc: float
    base: float
    narrow: float
    peak: float
    taper: float
    flare_from: float


# ---------------------------------------------------------------------------------------------------------
# Numeric helpers (numpy only: no scipy in the runtime dependencies)
# ---------------------------------------------------------------------------------------------------------


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(3.0 * sigma)))
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    return kernel / kernel.sum()


def _blur_axis(a: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """Gaussian blur along one axis by shift-and-add (kernels are a few taps, so this beats an FFT)."""
    if sigma < 0.2:
        return a
    kernel = _gaussian_kernel(sigma)
    radius = len(kernel) // 2
    pad = [(0, 0)] * a.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(a, pad, mode="reflect")
    n = a.shape[axis]
    window = [slice(None)] * a.ndim
    out = np.zeros_like(a)
    for i, weight in enumerate(kernel):
        window[axis] = slice(i, i + n)
        out += weight * padded[tuple(window)]
    return out


def blur(a: np.ndarray, sigma_y: float, sigma_x: float) -> np.ndarray:
    return _blur_axis(_blur_axis(a, sigma_y, 0), sigma_x, 1)


def _smooth_noise_1d(rng: np.random.Generator, n: int, cell: float) -> np.ndarray:
    """Zero-mean, roughly unit-variance noise varying over ``cell`` samples (smoothstep interpolation, no kinks)."""
    knots = rng.standard_normal(int(np.ceil(n / cell)) + 2).astype(np.float32)
    frac, index = np.modf(np.arange(n, dtype=np.float32) / cell)
    index = index.astype(np.intp)
    frac = frac * frac * (3 - 2 * frac)
    return knots[index] * (1 - frac) + knots[index + 1] * frac


def smooth_noise_2d(rng: np.random.Generator, shape: tuple[int, int], cell_y: float, cell_x: float) -> np.ndarray:
    """Value noise on a coarse grid, upsampled with smoothstep weights (no visible grid creases)."""
    h, w = shape
    grid = rng.standard_normal((int(np.ceil(h / cell_y)) + 2, int(np.ceil(w / cell_x)) + 2)).astype(np.float32)
    fy, iy = np.modf(np.arange(h, dtype=np.float32) / cell_y)
    fx, ix = np.modf(np.arange(w, dtype=np.float32) / cell_x)
    iy, ix = iy.astype(np.intp), ix.astype(np.intp)
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    rows = grid[iy] * (1 - fy)[:, None] + grid[iy + 1] * fy[:, None]  # (H, Wc)
    field = rows[:, ix] * (1 - fx) + rows[:, ix + 1] * fx  # (H, W)
    return field * 1.6  # undo most of the variance lost to interpolation


def speckle(rng: np.random.Generator, shape: tuple[int, int], sigma_y: float, sigma_x: float) -> np.ndarray:
    """Fully developed speckle: |complex Gaussian field|^2, so exponential with mean 1, grain set by sigmas.

    Blurring the complex field (not the intensity) keeps the exponential statistics while giving the grain
    its size; a wider lateral sigma elongates it sideways as in real B-scans.
    """
    field = rng.standard_normal((2, *shape), dtype=np.float32)  # (real/imag, H, W)
    field = _blur_axis(_blur_axis(field, sigma_y, 1), sigma_x, 2)
    # Expected |field|^2 after blurring two unit-variance parts: 2 * sum(k_y^2) * sum(k_x^2).
    gain = 2.0
    for sigma in (sigma_y, sigma_x):
        if sigma >= 0.2:
            gain *= float((_gaussian_kernel(sigma) ** 2).sum())
    return (field[0] ** 2 + field[1] ** 2) / gain


def _ellipse(
    shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float, angle: float = 0.0
) -> tuple[tuple[slice, slice], np.ndarray]:
    """Normalised radius (1 on the rim) of an ellipse over its bounding box, with the box's slices."""
    h, w = shape
    reach = max(rx, ry) + 2
    y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 2)
    x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 2)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
    cos, sin = np.cos(angle), np.sin(angle)
    radius = np.sqrt(((dx * cos + dy * sin) / rx) ** 2 + ((-dx * sin + dy * cos) / ry) ** 2)
    return (slice(y0, y1), slice(x0, x1)), radius


# ---------------------------------------------------------------------------------------------------------
# Geometry: lesions are decided first, then the layer stack is built around them
# ---------------------------------------------------------------------------------------------------------


def _sample_cysts(
    rng: np.random.Generator, width: int, xc: float, sy: float, sx: float, clearance: float
) -> list[_Cyst]:
    """Cysts clustered around the fovea; with a hole (``clearance`` > 0) they sit in its edges instead."""
    target = int(rng.integers(3, 11))
    cysts: list[_Cyst] = []
    for attempt in range(80):
        if len(cysts) >= target:
            break
        host = "inl" if rng.random() < 0.45 else "onl"
        ry = max(1.5, rng.uniform(3.5, 9.0 if host == "onl" else 6.5) * sy)
        rx = max(1.5, ry * rng.uniform(0.8, 1.7) * sx / sy)
        if clearance > 0:
            offset = clearance + rx + 2.5 * sx + min(abs(rng.normal(0.0, 0.05 * width)), 0.12 * width)
            cx = xc + offset * rng.choice((-1.0, 1.0))
        else:
            cx = xc + float(np.clip(rng.normal(0.0, 0.09 * width), -0.22 * width, 0.22 * width))
        inside = rx + 2 <= cx <= width - rx - 2
        apart = all(c.host != host or abs(c.cx - cx) > 0.9 * (c.rx + rx) + 2 * sx for c in cysts)
        # Guarantee at least one cyst: after many misses the spacing rule is waived.
        if inside and (apart or (not cysts and attempt > 40)):
            cysts.append(_Cyst(cx=cx, host=host, rx=rx, ry=ry, angle=rng.uniform(-0.35, 0.35)))
    if not cysts:  # tiny images: fall back to one small cyst beside the fovea
        cx = float(np.clip(xc + clearance + 3 * sx, 3, width - 3))
        cysts.append(_Cyst(cx=cx, host="onl", rx=1.5, ry=1.5, angle=0.0))
    return cysts


def _sample_hole(rng: np.random.Generator, xc: float, sx: float) -> _Hole:
    base = max(2.5, rng.uniform(10.0, 22.0) * sx)
    narrow = max(1.5, base * rng.uniform(0.45, 0.7))
    return _Hole(
        xc=xc,
        base=base,
        narrow=narrow,
        peak=narrow + max(1.5, rng.uniform(3.0, 7.0) * sx),
        taper=rng.uniform(1.2, 2.5),
        flare_from=rng.uniform(0.6, 0.8),
    )


def _hole_wall(hole: _Hole, height: np.ndarray) -> np.ndarray:
    """Half-width of the flask-shaped lumen at normalised height (0 at the RPE, 1 at the edge tops).

    Wide at the base, narrowest a little below the top, then flaring out to the lips along a quarter
    circle, so the wall turns horizontal where it meets the edge top and the lips come out rounded.
    """
    s = np.clip(height, 0.0, 1.0)
    flare = np.clip((s - hole.flare_from) / (1.0 - hole.flare_from), 0.0, 1.0)
    flare = 1 - np.sqrt(1 - flare * flare)
    return hole.narrow + (hole.base - hole.narrow) * (1 - s) ** hole.taper + (hole.peak - hole.narrow) * flare


def _swelling(rng: np.random.Generator, w: int, u: np.ndarray, reference: float, cysts: list[_Cyst],
              hole: _Hole | None) -> dict[str, np.ndarray]:
    """Extra thickness of the inner and outer nuclear layers per column: around cysts, the macula, a hole's edges.

    Each cyst pushes its host layer open by about its own height; overlapping swellings take the max, not the sum,
    so a cluster of cysts does not balloon the retina."""
    x = np.arange(w, dtype=np.float32)
    swelling = {"inl": np.zeros(w, np.float32), "onl": np.zeros(w, np.float32)}
    for cyst in cysts:
        lateral = np.exp(-0.5 * ((x - cyst.cx) / (1.6 * cyst.rx + 4.0 * w / 224)) ** 2)
        gain = 2.0 * cyst.ry + 2.0 if cyst.host == "inl" else 2.0 * cyst.ry * rng.uniform(0.8, 1.1)
        swelling[cyst.host] = np.maximum(swelling[cyst.host], gain * lateral)
    if cysts:  # diffuse thickening of the macula around the cystoid spaces
        diffuse = reference * rng.uniform(0.03, 0.15) * np.exp(-((u / 0.12) ** 2))
        swelling["onl"] += diffuse
        swelling["inl"] += 0.5 * diffuse
    if hole is not None:  # elevated, thickened edges, flat over the lumen (which is cut out later)
        distance = np.abs(x - hole.xc)
        rise = reference * rng.uniform(0.25, 0.5)
        spread = w * rng.uniform(0.035, 0.07)
        shoulder = hole.peak + rng.uniform(2.0, 6.0) * w / 224  # flat top beyond the lip: rounded, not a horn
        edge = rise * np.where(distance <= shoulder, 1.0, np.exp(-0.5 * ((distance - shoulder) / spread) ** 2))
        swelling["inl"] += 0.35 * edge
        swelling["onl"] += 0.65 * edge
    return swelling


def _layer_boundaries(
    rng: np.random.Generator,
    shape: tuple[int, int],
    cysts: list[_Cyst],
    hole: _Hole | None,
    srf_height: np.ndarray,
    xc: float,
) -> np.ndarray:
    """Boundary depths, ``(len(_LAYERS) + 1, W)`` float: ILM first, Bruch's membrane last.

    Thicknesses are built per layer (pit, RNFL asymmetry, swelling around lesions), stacked upwards from a
    curved, tilted Bruch's membrane, and the whole stack is then shifted to fit inside the image.
    """
    h, w = shape
    x = np.arange(w, dtype=np.float32)
    u = (x - xc) / w  # lateral position relative to the fovea, in image widths
    reference = h * rng.uniform(0.27, 0.37)

    pit_halfwidth = rng.uniform(0.08, 0.12)
    inner_factor = 1 - rng.uniform(0.88, 1.0) * np.exp(-((np.abs(u) / pit_halfwidth) ** 2.2))
    nerve_side = rng.choice((-1.0, 1.0))
    rnfl_fraction = 0.03 + 0.10 / (1 + np.exp(-nerve_side * u / 0.08))
    thickness = {
        name: reference * fraction * (1 + 0.07 * _smooth_noise_1d(rng, w, 0.15 * w))
        for name, fraction in _THICKNESS.items()
    }
    thickness["rnfl"] = reference * rnfl_fraction * (1 - np.exp(-((u / (1.5 * pit_halfwidth)) ** 2)))
    for name in ("gcl", "ipl", "inl", "opl"):
        thickness[name] = thickness[name] * inner_factor
    # The outer nuclear layer and the cone outer segments are thickest under the foveal centre.
    thickness["onl"] = thickness["onl"] * (1 + rng.uniform(0.3, 0.6) * np.exp(-((u / (1.3 * pit_halfwidth)) ** 2)))
    thickness["os"] = thickness["os"] * (1 + 0.5 * np.exp(-((u / (0.6 * pit_halfwidth)) ** 2)))

    swelling = _swelling(rng, w, u, reference, cysts, hole)
    thickness["inl"] = thickness["inl"] + swelling["inl"]
    thickness["onl"] = thickness["onl"] + swelling["onl"]
    thickness["srf"] = srf_height

    # Bruch's membrane: a parabola (concave up or down) plus a tilt, then the layers stacked upwards.
    centred = (x - w / 2) / w
    bruch = -rng.uniform(-0.05, 0.13) * h * 4 * centred**2 + rng.uniform(-0.08, 0.08) * (x - w / 2)
    stacked = np.cumsum([thickness[name] for name in reversed(_LAYERS)], axis=0)  # rpe up to rnfl
    boundaries = np.concatenate([bruch[None] - stacked[::-1], bruch[None]], axis=0)

    # Leave room for the vitreous (and a possible operculum) above and the choroid below.
    lowest_start, highest_start = 0.13 * h - boundaries[0].min(), 0.8 * h - bruch.max()
    start = rng.uniform(lowest_start, highest_start) if highest_start > lowest_start else lowest_start
    return (boundaries + start).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------


def _choroid_db(
    rng: np.random.Generator, shape: tuple[int, int], depth: np.ndarray, bruch: np.ndarray, scale: tuple[float, float]
) -> np.ndarray:
    """Backscatter (dB) below Bruch's membrane: mottled choroid with dark vessel lumens, then fading sclera."""
    h, w = shape
    sy, sx = scale
    thickness = h * rng.uniform(0.13, 0.2) * (1 + 0.15 * _smooth_noise_1d(rng, w, 0.2 * w))
    t = depth / thickness  # 0 at Bruch's membrane, 1 at the choroid-sclera junction
    mottle = smooth_noise_2d(rng, shape, 2.5 * sy, 4.0 * sx)
    top = rng.uniform(20.0, 24.0)
    choroid = top - 6.0 * t + 2.5 * mottle
    sclera = top - 12.0 - 10.0 * (t - 1) + 1.5 * mottle
    blend = 0.5 + 0.5 * np.tanh((t - 1) / 0.12)  # smooth choroid-sclera junction
    level = (1 - blend) * choroid + blend * sclera

    # Vessel lumens: small near the choriocapillaris (Sattler), large and oval deeper (Haller).
    for _ in range(int(rng.uniform(8, 16) * w / 224)):
        rel = rng.uniform(0.12, 0.85)
        cx = rng.uniform(0, w)
        ry = (1.2 + 5.0 * rel) * sy * rng.uniform(0.8, 1.2)
        rx = ry * rng.uniform(1.2, 2.2) * sx / sy
        col = int(np.clip(cx, 0, w - 1))
        cy = bruch[col] + rel * thickness[col]
        box, radius = _ellipse(shape, cy, cx, ry, rx, rng.uniform(-0.3, 0.3))
        # Lumens are dark but not empty (flowing blood scatters), unlike fluid, which is pure noise floor.
        level[box] = np.minimum(level[box], top - 12.0 + 6.0 * rel + 25.0 * (radius - 1.0))
    return level


def render_oct_bscan(
    rng: np.random.Generator,
    size: tuple[int, int] = (224, 224),
    *,
    edema: bool | None = None,
    hole: bool | None = None,
) -> PhantomSample:
    """Render one synthetic macular OCT B-scan and its label mask.

    Args:
        rng: Source of all randomness; the same generator state gives the same sample.
        size: ``(height, width)`` in pixels, each at least 32. Lesion and texture sizes scale with it.
        edema: Draw intraretinal cysts (and sometimes subretinal fluid), label 1. ``None`` draws it at random
            (50%).
        hole: Draw a full-thickness macular hole at the fovea, label 2. ``None`` draws it at random (40%).

    Returns:
        A :class:`PhantomSample` with an ``H x W`` uint8 image and an ``H x W`` uint8 class-index mask.

    Raises:
        ValueError: If ``size`` is not two integers >= 32.
    """
    if len(size) != 2 or any(not isinstance(v, (int, np.integer)) or v < 32 for v in size):
        raise ValueError(f"size must be (height, width) with both >= 32, got {size!r}")
    h, w = int(size[0]), int(size[1])
    shape = (h, w)
    if edema is None:
        edema = bool(rng.random() < _EDEMA_RATE)
    if hole is None:
        hole = bool(rng.random() < _HOLE_RATE)

    xc, macular_hole, cysts, srf_height = _sample_lesions(rng, shape, edema, hole)
    boundaries = _layer_boundaries(rng, shape, cysts, macular_hole, srf_height, xc)
    rows = np.arange(h, dtype=np.float32)[:, None]
    region = (rows[None] >= boundaries[:, None, :]).sum(axis=0, dtype=np.uint8)  # (H, W), 0 = vitreous
    mask, removed, top_line = _label_mask(rng, shape, boundaries, region, cysts, macular_hole)
    level = _backscatter_db(rng, shape, boundaries, region, macular_hole, xc)
    signal = np.power(10.0, level / 10.0, dtype=np.float32)
    signal[(region == 0) | removed] = 0.0
    _add_vitreous(rng, signal, boundaries[0], macular_hole, top_line)
    signal[mask > 0] = 0.0  # last, so nothing drawn above leaks into a lesion: labelled means signal-free
    return PhantomSample(image=_acquire(rng, signal), mask=mask)


def _sample_lesions(rng: np.random.Generator, shape: tuple[int, int], edema: bool, hole: bool) -> tuple:
    """(foveal centre column, the hole or None, the cysts, the subretinal fluid's height per column)."""
    h, w = shape
    sy, sx = h / 224, w / 224
    xc = w * (0.5 + rng.uniform(-0.08, 0.08))
    x = np.arange(w, dtype=np.float32)
    macular_hole = _sample_hole(rng, xc, sx) if hole else None
    cysts = _sample_cysts(rng, w, xc, sy, sx, _clearance(macular_hole)) if edema else []
    srf_height = np.zeros(w, np.float32)
    if edema and not hole and rng.random() < 0.35:  # subretinal fluid dome; never mixed with a hole's base
        centre, half = xc + rng.normal(0, 0.04 * w), rng.uniform(15.0, 40.0) * sx
        dome = np.clip(1 - ((x - centre) / half) ** 2, 0, 1) ** 0.6
        srf_height = (rng.uniform(5.0, 14.0) * sy * dome).astype(np.float32)
    return xc, macular_hole, cysts, srf_height


def _clearance(macular_hole: _Hole | None) -> float:
    """Half-width around the fovea that the hole takes (0 without one)."""
    return max(macular_hole.base, macular_hole.peak) if macular_hole else 0.0


def _label_mask(rng: np.random.Generator, shape: tuple[int, int], boundaries: np.ndarray, region: np.ndarray,
                cysts: list[_Cyst], macular_hole: _Hole | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(class-index mask, tissue cut away by the hole, the line joining the hole's edge tops or None)."""
    h, w = shape
    x = np.arange(w, dtype=np.float32)
    rows = np.arange(h, dtype=np.float32)[:, None]
    ilm, elm, rpe_top = (boundaries[i] for i in (0, _REGION["onl"], _REGION["rpe"] - 1))
    mask = np.zeros(shape, np.uint8)
    neural = (region >= 1) & (region < _REGION["srf"])  # ILM down to the photoreceptor tips
    for cyst in cysts:
        col = int(np.clip(cyst.cx, 0, w - 1))
        top, bottom = boundaries[_REGION[cyst.host] - 1, col], boundaries[_REGION[cyst.host], col]
        # Cysts in the ONL sit high, in Henle's fibre layer, as in diabetic macular edema.
        cy = (top + bottom) / 2 if cyst.host == "inl" else top + (bottom - top) * rng.uniform(0.35, 0.55)
        cy = float(np.clip(cy, ilm[col] + cyst.ry + 1, elm[col] - cyst.ry - 1))
        box, radius = _ellipse(shape, cy, cyst.cx, cyst.ry, cyst.rx, cyst.angle)
        mask[box][(radius <= 1.0) & neural[box]] = 1
    mask[region == _REGION["srf"]] = 1
    removed = np.zeros(shape, bool)  # tissue cut away by the hole (lumen and above it)
    if macular_hole is None:
        return mask, removed, None
    left, right = macular_hole.xc - macular_hole.peak, macular_hole.xc + macular_hole.peak
    cols = np.clip(np.array([left, right]), 0, w - 1)
    edge_tops = np.interp(cols, x, ilm)
    top_line = np.interp(x, cols, edge_tops)  # straight line joining the two edge tops
    height = (rpe_top - rows) / np.maximum(rpe_top - top_line, 1.0)  # (H, W), 1 at the edge tops
    off_centre = np.abs(x - macular_hole.xc)
    between = off_centre < macular_hole.peak
    lumen = (height > 0) & (height <= 1) & (off_centre < _hole_wall(macular_hole, height))
    removed = lumen | ((height > 1) & between)
    empty_inside = (height > 0) & (height <= 1) & between & ((region == 0) | removed)
    mask[empty_inside] = 2
    # Keep a septum of tissue between the lumen and edge cysts so the two classes never touch.
    near_lumen = (height > 0) & (height <= 1) & (off_centre < _hole_wall(macular_hole, height) + 2)
    mask[(mask == 1) & near_lumen] = 0
    return mask, removed, top_line


def _backscatter_db(rng: np.random.Generator, shape: tuple[int, int], boundaries: np.ndarray, region: np.ndarray,
                    macular_hole: _Hole | None, xc: float) -> np.ndarray:
    """Backscatter in dB above the noise floor: layers, texture, choroid, superficial vessels, depth roll-off."""
    h, w = shape
    sy, sx = h / 224, w / 224
    x = np.arange(w, dtype=np.float32)
    rows = np.arange(h, dtype=np.float32)[:, None]
    bruch = boundaries[-1]
    layer_db = np.array([0.0, *(_REFLECTIVITY_DB[n] + rng.normal(0, 1.0) for n in _LAYERS), 0.0], np.float32)
    level = layer_db[region]
    texture = smooth_noise_2d(rng, shape, 2.5 * sy, 10.0 * sx)
    level += 1.3 * texture
    below = region == _CHOROID
    level[below] = _choroid_db(rng, shape, rows - bruch[None, :], bruch, (sy, sx))[below]
    if macular_hole is not None:  # more light reaches the choroid where no retina sits above it
        level += (below * 3.0 * np.exp(-(((x - macular_hole.xc) / macular_hole.base) ** 4))).astype(np.float32)
    _add_superficial_vessels(rng, level, boundaries, xc, _clearance(macular_hole))
    # Depth roll-off and, sometimes, a vignetted scan edge.
    level -= rng.uniform(2.0, 8.0) * rows / h
    if rng.random() < 0.3:
        ramp = np.clip(1 - x / (0.12 * w), 0, 1) ** 1.5
        level -= rng.uniform(6.0, 14.0) * (ramp if rng.random() < 0.5 else ramp[::-1])[None, :]
    return level


def _add_superficial_vessels(rng: np.random.Generator, level: np.ndarray, boundaries: np.ndarray, xc: float,
                             clearance: float) -> None:
    """Bright dots in the inner retina of ``level`` (dB), each casting a shadow straight down; none at the fovea."""
    h, w = level.shape
    sy, sx = h / 224, w / 224
    x = np.arange(w, dtype=np.float32)
    rows = np.arange(h, dtype=np.float32)[:, None]
    fovea_free = 1.3 * 0.1 * w + clearance
    for _ in range(int(rng.integers(2, 6) * max(1.0, sx) ** 0.5)):
        vx = rng.uniform(0, w)
        if abs(vx - xc) < fovea_free:  # foveal avascular zone
            continue
        col = int(vx)
        radius_v = max(1.0, rng.uniform(1.2, 2.6) * (sy * sx) ** 0.5)
        vy = boundaries[0, col] + rng.uniform(0.3, 0.9) * (boundaries[2, col] - boundaries[0, col])
        shadow_db = rng.uniform(3.0, 7.0)
        lateral = np.exp(-0.5 * ((x - vx) / (0.9 * radius_v)) ** 2)
        level -= shadow_db * (rows > vy + radius_v) * lateral[None, :]
        box, radius = _ellipse(level.shape, vy, vx, radius_v, radius_v)
        level[box] = np.where(radius <= 1.0, np.maximum(level[box], 25.0), level[box])


def _add_vitreous(rng: np.random.Generator, signal: np.ndarray, ilm: np.ndarray, macular_hole: _Hole | None,
                  top_line: np.ndarray | None) -> None:
    """A faint posterior hyaloid in the vitreous, and sometimes an operculum floating over a hole."""
    h, w = signal.shape
    sy = h / 224
    rows = np.arange(h, dtype=np.float32)[:, None]
    if rng.random() < 0.4:
        gap = h * (0.06 + 0.02 * _smooth_noise_1d(rng, w, 0.4 * w)).clip(0.03, None)
        presence = np.clip(_smooth_noise_1d(rng, w, 0.2 * w), 0, 1)
        line = np.exp(-0.5 * ((rows - (ilm - gap)[None, :]) / (0.6 * sy)) ** 2) * presence[None, :]
        signal += (rng.uniform(4.0, 10.0) * line * (rows < ilm - 2)).astype(np.float32)
    if macular_hole is not None and rng.random() < 0.4:
        col = int(np.clip(macular_hole.xc, 0, w - 1))
        ry = max(1.0, rng.uniform(1.5, 3.5) * sy)
        cy = top_line[col] - ry - rng.uniform(4.0, 12.0) * sy
        box, radius = _ellipse(signal.shape, cy, macular_hole.xc, ry, macular_hole.peak * rng.uniform(0.6, 1.1))
        signal[box] = np.where(radius <= 1.0, 10 ** (rng.uniform(16.0, 20.0) / 10), signal[box])


def _acquire(rng: np.random.Generator, signal: np.ndarray) -> np.ndarray:
    """The scanner's side: speckle, noise floor, log compression, blur and display window -> uint8 image."""
    h, w = signal.shape
    sy, sx = h / 224, w / 224
    grain = (0.9 * sx**0.5, 0.5 * sy**0.5)
    intensity = signal * speckle(rng, signal.shape, grain[1], grain[0]) + speckle(rng, signal.shape, grain[1], grain[0])
    log_image = 10 * np.log10(intensity + 1e-3)
    log_image = blur(log_image, 0.45 * sy**0.5, 0.6 * sx**0.5)
    low, high = rng.uniform(-4.0, 1.0), rng.uniform(31.0, 37.0)
    display = np.clip((log_image - low) / (high - low), 0, 1) ** rng.uniform(0.85, 1.2)
    return np.round(255 * display).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------
# Dataset and preview
# ---------------------------------------------------------------------------------------------------------


def synthesize_dataset(
    out: str | Path,
    n: int = 400,
    size: tuple[int, int] = (224, 224),
    seed: int = 0,
    val_fraction: float = 0.3,
    image_suffix: str = ".jpg",
    mask_suffix: str = ".png",
) -> dict[str, int]:
    """Write a phantom dataset as ``out/{train,val}/{images,masks}/oct_NNNN<suffix>``.

    Image ``i`` is rendered from ``np.random.default_rng([seed, i])``, so each file depends only on the seed
    and its index. The first ``n - round(n * val_fraction)`` indices go to ``train``, the rest to ``val``.
    Images are 8-bit grayscale (JPEG at quality 95 by default); masks are 8-bit grayscale with the values in
    :data:`MASK_VALUES` (class 0 -> 0, 1 -> 128, 2 -> 255). ``out`` is new, empty or a previous
    phantom (replaced whole once the new one is complete); a folder of other files is refused
    (:mod:`gctxseg.core.outputs`).
    The pixel spacing (:func:`phantom_pixel_spacing`) goes to ``out/spacing.json``.

    Args:
        out: Dataset root folder (created if missing).
        n: Number of images, at least 1.
        size: ``(height, width)`` of every image.
        seed: Dataset seed.
        val_fraction: Share of images in ``val``, in ``[0, 1)``.
        image_suffix: Image file extension, e.g. ``".jpg"`` or ``".png"``.
        mask_suffix: Mask file extension; must be lossless (``".png"``, ``".bmp"``, ``".tif"``).

    Returns:
        Image counts, ``{"train": ..., "val": ...}``.

    Raises:
        ValueError: If ``n``, ``val_fraction`` or a suffix is out of range, or ``out`` holds other files.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if mask_suffix.lower() in (".jpg", ".jpeg", ".webp"):
        raise ValueError(f"mask_suffix must be a lossless format such as '.png', got {mask_suffix!r}")
    for suffix in (image_suffix, mask_suffix):
        if not suffix.startswith("."):
            raise ValueError(f"suffixes must start with '.', got {suffix!r}")

    n_val = int(round(n * val_fraction))
    with staged_output(out, "synth", SYNTH_ENTRIES, **synth_output_rules(out)) as root:
        _write_bscans(root, n, n - n_val, size, seed, image_suffix, mask_suffix)
    return {"train": n - n_val, "val": n_val}


# What `synth` writes into --out (B-scans or eyes): a new or empty folder, or a previous phantom (gctxseg.core.outputs)
SYNTH_ENTRIES = frozenset({"train", "val", "images", "masks", "spacing.json", "truth.json"})


def synth_output_rules(out: str | Path) -> dict:
    """How ``synth`` refuses an ``out`` holding anything but a previous phantom (:mod:`gctxseg.core.outputs`)."""
    out = Path(out)
    return dict(noun="phantom files", fix=f"pass a new folder, e.g. --out {out.parent / (out.name + '_phantom')}")


def _write_bscans(root: Path, n: int, n_train: int, size: tuple[int, int], seed: int, image_suffix: str,
                  mask_suffix: str) -> None:
    digits = max(4, len(str(n - 1)))
    lookup = np.asarray(MASK_VALUES, np.uint8)
    for split in ("train", "val"):
        for kind in ("images", "masks"):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sample = render_oct_bscan(np.random.default_rng([seed, i]), size)
        split = "train" if i < n_train else "val"
        stem = f"oct_{i:0{digits}d}"
        image = Image.fromarray(sample.image, mode="L")
        if image_suffix.lower() in (".jpg", ".jpeg"):
            image.save(root / split / "images" / f"{stem}{image_suffix}", quality=95)
        else:
            image.save(root / split / "images" / f"{stem}{image_suffix}")
        Image.fromarray(lookup[sample.mask], mode="L").save(root / split / "masks" / f"{stem}{mask_suffix}")
    from .spacing import write_spacing_file

    note = f"synthetic macular B-scan {BSCAN_WIDTH_MM:g} mm wide, {BSCAN_DEPTH_MM:g} mm deep, {size[0]}x{size[1]} px"
    write_spacing_file(root, *phantom_pixel_spacing(size), note=note)  # found from root/{train,val}/images too

