"""CT windowing: map Hounsfield units (HU) to [0, 1] through a level/width window.

A window keeps the HU range ``[level - width / 2, level + width / 2]`` and clips everything outside it,
so the network sees the contrast a radiologist would look at (soft tissue, lung, bone ...). Windows come
from a preset (:data:`WINDOW_PRESETS`), from an explicit level/width, or are derived from the training
set: the 0.5th-99.5th percentiles of the HU values inside the masks' foreground, the range nnU-Net's
``CTNormalization`` clips to. Several windows can be stacked as input channels.

Example::

    hu = np.array([-1000.0, -100.0, 40.0, 700.0])
    window_ct(hu, WINDOW_PRESETS["abdomen"])  # [0., 0.15, 0.5, 1.]
    resolve_windows(windows=("lung", "mediastinum"))  # (CTWindow(-600, 1500), CTWindow(50, 350))
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["AUTO", "CTWindow", "WINDOW_PRESETS", "derive_window", "get_window", "resolve_windows", "window_ct"]

AUTO = "auto"  # placeholder for the window derived from the training set's foreground HU


@dataclass(frozen=True)
class CTWindow:
    """A CT display window in Hounsfield units.

    Args:
        level: window centre (HU).
        width: window width (HU), > 0.

    Raises:
        ValueError: ``width`` not positive or not finite.
    """

    level: float
    width: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.level) and np.isfinite(self.width)) or self.width <= 0:
            raise ValueError(f"a CT window needs a finite level and a width > 0, got level={self.level}, "
                             f"width={self.width}")

    @property
    def low(self) -> float:
        return self.level - self.width / 2

    @property
    def high(self) -> float:
        return self.level + self.width / 2

    @classmethod
    def from_range(cls, low: float, high: float) -> CTWindow:
        """The window spanning ``[low, high]`` (widened to 1 HU when ``high <= low``)."""
        width = max(float(high) - float(low), 1.0)
        return cls((float(low) + float(high)) / 2, width)

    def __str__(self) -> str:
        return f"L{self.level:g}/W{self.width:g}"


# Common radiology display windows (level, width in HU), as listed by Radiopaedia ("Windowing (CT)").
WINDOW_PRESETS: dict[str, CTWindow] = {
    "abdomen": CTWindow(40, 400),  # abdominal soft tissue
    "lung": CTWindow(-600, 1500),  # lung parenchyma and airways
    "bone": CTWindow(400, 1800),  # cortical and trabecular bone
    "brain": CTWindow(40, 80),  # grey/white matter
    "liver": CTWindow(30, 150),  # liver lesions against parenchyma
    "mediastinum": CTWindow(50, 350),  # heart, vessels, lymph nodes
}


def window_ct(hu: np.ndarray, window: CTWindow) -> np.ndarray:
    """Clip ``hu`` to ``window`` and scale it linearly to [0, 1] (MONAI ``ScaleIntensityRange``).

    Args:
        hu: array of Hounsfield units, any shape.
        window: the level/width window.

    Returns:
        float32 array of the same shape in [0, 1]: ``low`` and below -> 0, ``high`` and above -> 1.
    """
    from monai.transforms import ScaleIntensityRange  # lazy: MONAI's transforms take seconds to import
    from monai.utils import convert_to_numpy

    scale = ScaleIntensityRange(a_min=window.low, a_max=window.high, b_min=0.0, b_max=1.0, clip=True)
    return convert_to_numpy(scale(np.asarray(hu, dtype=np.float32)), dtype=np.float32)


def derive_window(foreground_low: float, foreground_high: float) -> CTWindow:
    """The window spanning the foreground HU range (the fingerprint's 0.5th and 99.5th percentiles)."""
    return CTWindow.from_range(foreground_low, foreground_high)


def get_window(name: str) -> CTWindow:
    """A window by preset name, or ``LEVEL/WIDTH`` in HU (e.g. ``-600/1500``).

    Raises:
        ValueError: unknown name, with the closest preset and the list of presets.
    """
    key = name.strip().lower()
    if key in WINDOW_PRESETS:
        return WINDOW_PRESETS[key]
    if re.fullmatch(r"-?\d+(\.\d+)?/\d+(\.\d+)?", key):
        level, width = key.split("/")
        return CTWindow(float(level), float(width))
    close = difflib.get_close_matches(key, WINDOW_PRESETS, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ValueError(f"unknown CT window {name!r}; {hint}available: {', '.join(WINDOW_PRESETS)} or LEVEL/WIDTH")


def resolve_windows(
    window: str | None = None,
    level: float | None = None,
    width: float | None = None,
    windows: Sequence[str] = (),
) -> tuple[CTWindow | str, ...]:
    """The CT windows of a run, one per input channel, from the ``--window*`` options.

    At most one way of choosing is allowed: a preset (``window``), an explicit ``level`` and ``width``,
    or a list of windows stacked as channels (``windows``, presets, ``LEVEL/WIDTH`` or ``auto``). With
    none of them the result is ``("auto",)``: one window derived from the training set.

    Returns:
        the windows, with :data:`AUTO` where the derived window goes.

    Raises:
        ValueError: conflicting options, only one of level/width, an unknown preset.
    """
    chosen = [name for name, given in (("--window", window), ("--window-level/--window-width",
              level is not None or width is not None), ("--windows", bool(windows))) if given]
    if len(chosen) > 1:
        raise ValueError(f"{' and '.join(chosen)} both choose the CT window; pass only one")
    if (level is None) != (width is None):
        raise ValueError(f"--window-level and --window-width go together, got level={level}, width={width}")
    if window:
        return (get_window(window),)
    if level is not None:
        return (CTWindow(float(level), float(width)),)
    if windows:
        return tuple(AUTO if w.strip().lower() == AUTO else get_window(w) for w in windows)
    return (AUTO,)
