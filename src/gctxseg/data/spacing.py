"""The pixel-spacing sidecar of a folder of pictures (``spacing.json``): PNG/JPEG B-scans carry no spacing."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..utils import atomic_write_text

__all__ = ["SPACING_FILE", "find_spacing_file", "read_spacing_file", "write_spacing_file"]

SPACING_FILE = "spacing.json"


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def write_spacing_file(folder: str | Path, row_mm: float, col_mm: float, note: str = "") -> Path:
    """Write ``folder/spacing.json``: the pixel spacing of the pictures in that folder."""
    path = Path(folder) / SPACING_FILE
    atomic_write_text(path, json.dumps({"pixel_spacing_mm": [row_mm, col_mm], "note": note}, indent=2) + "\n")
    return path


def find_spacing_file(images: str | Path) -> Path | None:
    """``spacing.json`` of an images folder: in it, its parent or grandparent (``data/`` for ``data/val/images``)."""
    folder = Path(images).resolve()
    for candidate in (folder, folder.parent, folder.parent.parent):
        if (candidate / SPACING_FILE).is_file():
            return candidate / SPACING_FILE
    return None


def read_spacing_file(folder: str | Path) -> tuple[float, float] | None:
    """(row, column) mm from the ``spacing.json`` of an images folder (see :func:`find_spacing_file`), or None.

    Raises:
        ValueError: the file is there but does not hold two positive numbers.
    """
    path = find_spacing_file(folder)
    if path is None:
        return None
    try:
        row, col = (float(v) for v in json.loads(path.read_text())["pixel_spacing_mm"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: unreadable ({type(err).__name__}); write "
                         '{"pixel_spacing_mm": [ROW_MM, COL_MM]} or delete it') from None
    if not (_positive(row) and _positive(col)):
        raise ValueError(f"{path}: pixel_spacing_mm {row}, {col} must be > 0; fix or delete the file")
    return row, col
