"""Reading images and masks from disk into numpy arrays, with one-line errors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DatasetError

__all__ = ["IMAGE_SUFFIXES", "read_image", "read_mask", "image_size"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found; check the path")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: empty file (0 bytes); re-export or remove it")
    try:
        img = Image.open(path)
        img.load()  # decode now so truncated files fail here, not inside a worker
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"{path}: unreadable or corrupt image ({err}); re-export or remove it") from None
    return img


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image, reading only its header."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (UnidentifiedImageError, OSError) as err:
        raise DatasetError(f"{path}: unreadable or corrupt image ({err}); re-export or remove it") from None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as ``H x W x C`` float32 in [0, 1] (C = 1 grayscale, 3 colour).

    8-bit and 16-bit images are scaled by their type's maximum; an alpha channel is dropped;
    palette images are converted to RGB.
    """
    path = Path(path)
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        scale = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return (np.clip(arr, 0, scale) / scale)[..., None]
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        return ((arr - lo) / max(hi - lo, 1e-12))[..., None]
    if img.mode in ("L", "LA", "1"):
        img = img.convert("L")
    elif img.mode != "RGB":
        img = img.convert("RGB")  # RGBA, P, CMYK, YCbCr ...: colour without alpha
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr


def read_mask(path: str | Path) -> np.ndarray:
    """Read a label mask as an ``H x W`` int64 array of raw values (e.g. 0/128/255).

    Colour masks whose three channels are equal are accepted as grayscale; other colour masks are
    rejected, since their colours cannot be ordered into classes unambiguously.
    """
    path = Path(path)
    img = _open(path)
    if img.mode == "P":
        return np.asarray(img, dtype=np.int64)  # palette index = class value
    arr = np.asarray(img)
    if arr.ndim == 3:
        rgb = arr[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise DatasetError(
                f"{path}: colour mask with differing channels; save masks as single-channel index images"
            )
        arr = rgb[..., 0]
    return arr.astype(np.int64)
