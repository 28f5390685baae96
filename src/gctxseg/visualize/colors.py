"""Colouring masks and drawing overlays (numpy/PIL only): shared by training previews, samples and predict."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.files import atomic_write_bytes

__all__ = ["PALETTE", "colorize", "overlay", "to_uint8_rgb", "save_rows"]

# class 0 black; then red (edema in the OCT task), cyan (hole), and distinct colours beyond
PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 60, 60],
        [40, 200, 230],
        [250, 200, 40],
        [120, 220, 90],
        [200, 90, 220],
        [250, 140, 40],
        [60, 110, 250],
        [240, 240, 240],
        [150, 150, 60],
    ],
    dtype=np.uint8,
)


def colorize(mask: np.ndarray) -> np.ndarray:
    """``H x W`` class indices -> ``H x W x 3`` uint8 colours."""
    return PALETTE[np.asarray(mask) % len(PALETTE)]


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """``H x W``, ``H x W x C`` image (uint8, or float in [0, 1]) -> ``H x W x 3`` uint8.

    One channel is shown as gray, three or more as RGB (the first three); two (stacked CT windows) as
    the first in gray.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] >= 3:
        return image[..., :3]
    return np.repeat(image[..., :1], 3, axis=2)  # gray, or the first of stacked CT windows


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend the class colours of ``mask`` over ``image`` where the class is not background."""
    rgb = to_uint8_rgb(image).astype(np.float32)
    colours = colorize(mask).astype(np.float32)
    fg = (np.asarray(mask) > 0)[..., None]
    return np.where(fg, (1 - alpha) * rgb + alpha * colours, rgb).round().astype(np.uint8)


def save_rows(rows: Sequence[Sequence[np.ndarray]], path: str | Path, gap: int = 4) -> None:
    """Save a grid of ``H x W x 3`` uint8 tiles (one list per row, all tiles the same size) as PNG, written
    atomically (a run folder never holds half a figure)."""
    h, w = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            canvas[i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = tile
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
