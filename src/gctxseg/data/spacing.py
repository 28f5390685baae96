"""Pixel spacing: the one check every source of it passes, and the sidecar of a folder of pictures.

PNG/JPEG B-scans carry no spacing, so a folder of them may hold ``spacing.json``; DICOM states it in
``PixelSpacing`` and the command line in ``--pixel-spacing``. All three go through :func:`validate_spacing`.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.files import atomic_write_text
from .errors import DatasetError

__all__ = [
    "SPACING_FILE",
    "MAX_SPACING_MM",
    "MIN_SPACING_MM",
    "SpacingError",
    "validate_spacing",
    "validate_slice_spacing",
    "find_spacing_file",
    "read_spacing_file",
    "write_spacing_file",
]

SPACING_FILE = "spacing.json"
# Beyond these a value is a unit or typing mistake, not a scanner: OCT is ~0.004 mm, CT ~0.5 mm per pixel,
# and above 10 mm or below 1 nm the areas over- or underflow long before any real grid is reached.
MAX_SPACING_MM = 10.0
MIN_SPACING_MM = 1e-6


class SpacingError(DatasetError):
    """A pixel spacing that must not be measured with (one line: source, what is wrong, the fix).

    A :class:`DatasetError` (a ``ValueError``), so callers that skip unreadable files can still let this
    one through: a wrong ruler is refused, not silently left out.
    """


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)  # True is an int, not a spacing


def _shown(values: Any) -> str:
    if isinstance(values, Sequence) and not isinstance(values, (str, bytes)):
        return " ".join(str(v) if _is_number(v) else repr(v) for v in values)
    return repr(values)


def _problem(values: Any) -> str | None:
    if not isinstance(values, Sequence) or isinstance(values, (str, bytes)) or len(values) != 2:
        return "must be 2 numbers (mm between rows, between columns)"
    if not all(_is_number(v) for v in values):
        return "numbers only (no text, true/false or lists)"
    if not all(math.isfinite(v) and v > 0 for v in values):
        return "both values must be finite and > 0"
    return next(filter(None, (_implausible(v, "pixel") for v in values)), None)


def _implausible(value: float, step: str) -> str | None:
    """The bounds every spacing passes, a pixel's or the distance between slices."""
    if value > MAX_SPACING_MM:
        return f"implausible, above {MAX_SPACING_MM:g} mm per {step} (a unit mistake?)"
    if value < MIN_SPACING_MM:
        return f"implausible, below {MIN_SPACING_MM:g} mm per {step} (a unit mistake?)"
    return None


def validate_spacing(values: Any, source: str, fix: str) -> tuple[float, float]:
    """``values`` as (row, column) floats in mm, checked the same way wherever a pixel spacing comes from.

    Args:
        values: the spacing as given (a list from JSON, a DICOM MultiValue, the flag's numbers).
        source: where it came from, starting the error line (``--pixel-spacing``, ``FILE: PixelSpacing``).
        fix: what the user should do, ending the error line.

    Raises:
        SpacingError: not 2 numbers (text, booleans and nested lists are refused, never converted),
            not finite, not > 0, or implausible (above :data:`MAX_SPACING_MM` or below :data:`MIN_SPACING_MM`).
    """
    problem = _problem(values)
    if problem is not None:
        raise SpacingError(f"{source} {_shown(values)}: {problem}; {fix}")
    return float(values[0]), float(values[1])


def validate_slice_spacing(value: Any, source: str, fix: str) -> float:
    """``value`` as the mm between slices (B-scans), checked with the bounds of :func:`validate_spacing`: a
    slice spacing of 1e300 would turn every volume into inf mm³.

    Raises:
        SpacingError: not a number, not finite, not > 0, or implausible.
    """
    if not _is_number(value):
        problem = "must be a number (mm between slices)"
    elif not (math.isfinite(value) and value > 0):
        problem = "must be finite and > 0"
    else:
        problem = _implausible(value, "slice")
    if problem is not None:
        raise SpacingError(f"{source} {_shown(value) if not _is_number(value) else value}: {problem}; {fix}")
    return float(value)


def write_spacing_file(folder: str | Path, row_mm: float, col_mm: float, note: str = "") -> Path:
    """Write ``folder/spacing.json``: the pixel spacing of the pictures in that folder."""
    path = Path(folder) / SPACING_FILE
    atomic_write_text(path, json.dumps({"pixel_spacing_mm": [row_mm, col_mm], "note": note}, indent=2) + "\n")
    return path


# a folder holding one of these is a dataset's root (a converter's output): the spacing search stops there, so a
# spacing.json above it (another dataset's, e.g. the phantom's data/spacing.json) never measures its scans
DATASET_ROOT_FILES = ("splits.json", "groups.json")


def find_spacing_file(images: str | Path) -> Path | None:
    """``spacing.json`` of an images folder: in it, its parent or grandparent (``data/`` for ``data/val/images``),
    never above a dataset root (a folder with ``splits.json`` or ``groups.json``, as the converters write)."""
    folder = Path(images).resolve()
    for candidate in (folder, folder.parent, folder.parent.parent):
        if (candidate / SPACING_FILE).is_file():
            return candidate / SPACING_FILE
        if any((candidate / name).is_file() for name in DATASET_ROOT_FILES):
            return None
    return None


def read_spacing_file(folder: str | Path) -> tuple[float, float] | None:
    """(row, column) mm from the ``spacing.json`` of an images folder (see :func:`find_spacing_file`), or None.

    Raises:
        ValueError: the file is there but is not JSON with ``pixel_spacing_mm``.
        SpacingError: ``pixel_spacing_mm`` is not two plausible numbers (:func:`validate_spacing`).
    """
    path = find_spacing_file(folder)
    if path is None:
        return None
    try:
        values = json.loads(path.read_text())["pixel_spacing_mm"]
    except (ValueError, KeyError, TypeError) as err:  # bad JSON or bytes (UnicodeDecodeError), no such key
        raise ValueError(f"{path}: unreadable ({type(err).__name__}); write "
                         '{"pixel_spacing_mm": [ROW_MM, COL_MM]} or delete it') from None
    fix = 'write {"pixel_spacing_mm": [ROW_MM, COL_MM]} or delete the file'
    return validate_spacing(values, f"{path}: pixel_spacing_mm", fix)
