"""Checkpoints: written atomically, read without running code, and turned back into the model they hold.

A gctxseg checkpoint is a dict of plain data only (tensors, numbers, strings, lists, tuples, dicts, None), so
it loads with ``torch.load(weights_only=True)``, which refuses anything that could run code while unpickling:
a ``best.pt`` received from someone else is safe to give to ``predict``, ``evaluate``, ``export``, ``report``,
``compare`` or ``--resume``. Checkpoints of gctxseg 0.1 before this change also held numpy's RNG state (a
pickled object); they are refused with a line naming :func:`convert_checkpoint`
(``gctxseg convert-checkpoint --trust OLD NEW``), which rewrites one the user trusts as plain data.

Keys every checkpoint has: ``model_name``, ``model_kwargs``, ``model`` (state dict), ``value_map``,
``base_size``, ``normalization``, ``intensity``, ``fingerprint``, ``config``; training checkpoints add the
optimiser, scheduler and scaler states, ``epoch``, ``best_dice``, ``log`` and ``rng`` (torch's state).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import MaskValueMap
from .models import create_model
from .utils import atomic_torch_save

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_channels",
    "model_from_checkpoint",
    "convert_checkpoint",
    "to_plain_data",
]

_PLAIN_LEAVES = (torch.Tensor, str, bytes, int, float, bool, type(None))


def _convert_hint(path: Path) -> str:
    return f"gctxseg convert-checkpoint --trust {path} {path.with_name(path.stem + '_v2' + path.suffix)}"


def to_plain_data(obj: Any) -> Any:
    """``obj`` with numpy arrays as tensors and numpy scalars as Python numbers (how old checkpoints are mended).

    Raises:
        TypeError: anything else that is not plain data (it would not load with ``weights_only``).
    """
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        converted = type(obj)((k, to_plain_data(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a state dict's module versions, read by load_state_dict
            converted._metadata = obj._metadata
        return converted
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain_data(v) for v in obj)
    _check_plain(obj)
    return obj


def _check_plain(obj: Any, where: str = "checkpoint") -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN_LEAVES):
        raise TypeError(f"{where} is a {type(obj).__name__}; checkpoints hold plain data only")


def save_checkpoint(ckpt: dict, path: str | Path) -> None:
    """Write ``ckpt`` to ``path`` atomically (a reader sees the old or the new file, never half of one).

    Raises:
        TypeError: ``ckpt`` holds something other than plain data (it would not load with ``weights_only``).
    """
    _check_plain(ckpt)
    atomic_torch_save(ckpt, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a gctxseg checkpoint without running any code from it (``torch.load(weights_only=True)``).

    Raises:
        ValueError: one line naming the file: missing, truncated, not a gctxseg checkpoint, or holding Python
            objects (an old-format or a crafted file), with how to convert one that is trusted.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found; pass the run folder's best.pt or last.pt")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # the weights-only unpickler met an object it will not build
        raise ValueError(
            f"{path}: refused: it holds Python objects, which could run code when loaded (an older gctxseg "
            f"checkpoint, or a crafted file); if you trust its source, convert it once with: {_convert_hint(path)}"
        ) from None
    except Exception as err:  # zip/pickle errors differ between torch versions; all mean "not readable"
        raise ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}); it may be truncated") from None
    _require_gctxseg(ckpt, path)
    return ckpt


def _require_gctxseg(ckpt: Any, path: Path) -> None:
    if not isinstance(ckpt, dict) or "model_name" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: not a gctxseg checkpoint (no model_name/model); use a best.pt or last.pt")


def checkpoint_channels(ckpt: dict) -> int:
    """Input channels of the checkpoint's network (ONNX metadata states them; checkpoints keep the fingerprint)."""
    return int(ckpt["channels"] if "channels" in ckpt else ckpt["fingerprint"]["channels"])


def model_from_checkpoint(ckpt: dict, source: str | Path = "checkpoint") -> nn.Module:
    """The checkpoint's architecture with its weights loaded, on the CPU, in eval mode.

    Raises:
        ValueError: the weights do not fit the architecture (one line naming ``source``).
    """
    num_classes = MaskValueMap.from_dict(ckpt["value_map"]).num_classes
    model = create_model(ckpt["model_name"], checkpoint_channels(ckpt), num_classes, **ckpt["model_kwargs"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ValueError(f"{source}: weights do not fit {ckpt['model_name']} ({first})") from None
    return model.eval()


def convert_checkpoint(old: str | Path, new: str | Path, *, trust: bool = False) -> Path:
    """Rewrite an old-format checkpoint as plain data that :func:`load_checkpoint` reads safely.

    Reading ``old`` unpickles it, which runs whatever code the file holds: only for files from a trusted
    source, hence ``trust`` must be True. The pickled RNG states of older versions (numpy's, Python's) are
    dropped: resume reseeds every epoch from ``(seed, epoch)`` and does not need them.

    Raises:
        ValueError: ``trust`` not given, ``old`` unreadable or not a gctxseg checkpoint, ``new`` = ``old``.
    """
    old, new = Path(old), Path(new)
    if not trust:
        raise ValueError(
            f"{old}: converting unpickles the file, which runs any code it holds; pass --trust only for a file "
            "from a source you trust"
        )
    if new.resolve() == old.resolve():
        raise ValueError(f"{new}: write the converted checkpoint to a new file, not over {old}")
    if not old.is_file():
        raise ValueError(f"{old}: checkpoint not found")
    try:
        ckpt = torch.load(old, map_location="cpu", weights_only=False)
    except Exception as err:  # any unpickling problem means the file is not a readable checkpoint
        raise ValueError(f"{old}: not a readable checkpoint ({type(err).__name__}); it may be truncated") from None
    _require_gctxseg(ckpt, old)
    rng = ckpt.get("rng")
    if isinstance(rng, dict):
        ckpt["rng"] = {k: v for k, v in rng.items() if k == "torch"}
    try:
        save_checkpoint(to_plain_data(ckpt), new)
    except TypeError as err:
        raise ValueError(f"{old}: cannot be converted: {err}") from None
    load_checkpoint(new)  # the converted file reads back with weights_only
    return new
