"""From values as read to the network's input channels in [0, 1]: the intensity mapping of a run.

Three modes, chosen once per training set (:func:`choose_intensity`) and stored in the fingerprint and
the checkpoint, so prediction maps new images exactly as training did:

- ``as_read``: pictures, already scaled to [0, 1] by :func:`~gctxseg.data.io.read_image`;
- ``window``: CT (``--ct``): Hounsfield units through one or more windows, one input channel each;
- ``range``: DICOM/NIfTI without ``--ct``: scanner values scaled linearly from the training set's
  0.5th-99.5th percentiles to [0, 1] and clipped (a percentile normalisation, never an HU window).

Mean/std normalisation (``transforms``) comes after this, with statistics of the mapped values.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .ct import AUTO, CTWindow, derive_window, window_ct
from .errors import DatasetError, DataWarning
from .io import is_picture_dicom, is_scan, read_image, read_info, read_picture_dicom

__all__ = ["INTENSITY_MODES", "IntensityMapping", "choose_intensity"]

INTENSITY_MODES = ("as_read", "window", "range")


@dataclass(frozen=True)
class IntensityMapping:
    """How read values become network input.

    Args:
        mode: ``as_read``, ``window`` or ``range`` (see the module docstring).
        windows: the CT windows (``window`` mode: one channel each; ``range`` mode: the one range).

    Raises:
        ValueError: unknown mode, or a mode without the windows it needs.
    """

    mode: str = "as_read"
    windows: tuple[CTWindow, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in INTENSITY_MODES:
            raise ValueError(f"intensity mode must be one of {', '.join(INTENSITY_MODES)}, got {self.mode!r}")
        need = {"as_read": 0, "range": 1}.get(self.mode)
        if (need is not None and len(self.windows) != need) or (self.mode == "window" and not self.windows):
            raise ValueError(f"intensity mode {self.mode!r} with {len(self.windows)} window(s) is inconsistent")

    def channels(self, read_channels: int) -> int:
        """Input channels of the network for images read with ``read_channels`` channels."""
        return len(self.windows) if self.mode == "window" else read_channels

    def check(self, path: str | Path) -> None:
        """Raise :class:`DatasetError` when ``path`` is not the kind of file this mapping was made for."""
        if self.mode == "as_read" and is_scan(path) and not is_picture_dicom(path):
            read_info(path)  # an unreadable file is named as such, not as a scan this model cannot take
            raise DatasetError(f"{path}: DICOM/NIfTI file but this model (training set) takes pictures; "
                               f"use weights trained on scans")
        if self.mode != "as_read" and not is_scan(path):
            what = "CT windows of DICOM/NIfTI HU" if self.mode == "window" else "DICOM/NIfTI scanner values"
            raise DatasetError(f"{path}: picture file but this model (training set) takes {what}; "
                               f"pass DICOM or NIfTI files")

    def read(self, path: str | Path, slice_index: int | None = None) -> np.ndarray:
        """The network's ``H x W x C`` [0, 1] input from a file, as in training (:meth:`check` first): an 8-bit OCT
        DICOM B-scan is a picture to a picture model (:func:`~gctxseg.data.io.is_picture_dicom`)."""
        self.check(path)
        if self.mode == "as_read" and is_picture_dicom(path):
            return read_picture_dicom(path)
        return self.apply(read_image(path, slice_index))

    def apply(self, image: np.ndarray) -> np.ndarray:
        """``H x W x C`` values as read -> ``H x W x C'`` float32 in [0, 1] (C' = number of windows)."""
        if self.mode == "as_read":
            return image
        if self.mode == "window":
            return np.concatenate([window_ct(image[..., :1], w) for w in self.windows], axis=-1)
        return window_ct(image, self.windows[0])

    def to_dict(self) -> dict:
        return {"mode": self.mode, "windows": [[w.level, w.width] for w in self.windows]}

    @classmethod
    def from_dict(cls, data: dict | None) -> IntensityMapping:
        """Inverse of :meth:`to_dict`; ``None`` (checkpoints from before CT support) gives ``as_read``."""
        if not data:
            return cls()
        return cls(data["mode"], tuple(CTWindow(float(lv), float(wd)) for lv, wd in data.get("windows", ())))

    def __str__(self) -> str:
        if self.mode == "window":
            return "CT window " + ", ".join(str(w) for w in self.windows)
        if self.mode == "range":
            return f"scaled from [{self.windows[0].low:g}, {self.windows[0].high:g}] to [0, 1]"
        return "as read ([0, 1])"


def choose_intensity(
    files: Sequence[Path],
    ct: bool,
    windows: Sequence[CTWindow | str],
    value_range: tuple[float, float],
    foreground_range: tuple[float, float] | None,
) -> IntensityMapping:
    """The mapping for a training set: pictures as read, CT windowed (``ct``), other scans range-scaled.

    Args:
        files: the training images (their suffix says picture or scan).
        ct: ``--ct`` was given.
        windows: from :func:`~gctxseg.data.ct.resolve_windows`; ``"auto"`` entries become the window
            derived from ``foreground_range``.
        value_range: 0.5th and 99.5th percentiles of all values (the ``range`` mode's range).
        foreground_range: the same inside the masks' foreground (None when the masks hold none).

    Raises:
        DatasetError: pictures mixed with DICOM/NIfTI; an auto window without any foreground.

    Warns:
        DataWarning: ``ct`` on pictures, whose 0-255 values are not HU: they are used as read.
    """
    pictures = [f for f in files if not is_scan(f)]
    if pictures and len(pictures) < len(files):
        scan = next(f for f in files if is_scan(f))
        raise DatasetError(f"{pictures[0]}: picture among DICOM/NIfTI files (e.g. {scan.name}); "
                           f"train on one kind of file")
    if pictures:
        if ct:
            warnings.warn(
                f"{pictures[0]}: --ct on picture files (0-255 values, not Hounsfield units): windowing them is "
                f"meaningless, so they are used as read; drop --ct or train on the DICOM/NIfTI files",
                DataWarning,
                stacklevel=3,
            )
        return IntensityMapping()
    if not ct:
        return IntensityMapping("range", (CTWindow.from_range(*value_range),))
    if AUTO in windows and foreground_range is None:
        raise DatasetError(f"{files[0].parent}: the masks hold no foreground to derive a CT window from; "
                           f"pass --window PRESET or --window-level/--window-width")
    derived = derive_window(*foreground_range) if foreground_range is not None else None
    return IntensityMapping("window", tuple(derived if w == AUTO else w for w in windows))
