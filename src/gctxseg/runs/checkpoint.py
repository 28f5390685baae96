"""Checkpoints: written atomically, read without running code, and turned back into the model they hold.

A gctxseg checkpoint is a dict of plain data only (tensors, numbers, strings, lists, tuples, dicts, None), so
it loads with ``torch.load(weights_only=True)``, which refuses anything that could run code while unpickling:
a ``best.pt`` received from someone else is safe to give to ``predict``, ``evaluate``, ``export``, ``report``,
``compare`` or ``--resume``. Checkpoints of early gctxseg 0.1 builds also held numpy's RNG state (a
pickled object); they are refused with a line naming :func:`convert_checkpoint`
(``gctxseg convert-checkpoint --trust OLD NEW``), which rewrites one the user trusts as plain data.

Keys every checkpoint has: ``model_name``, ``model_kwargs``, ``model`` (state dict), ``value_map``,
``base_size``, ``normalization``, ``intensity``, ``fingerprint``, ``config``; training checkpoints add the
optimiser, scheduler and scaler states, ``epoch``, ``best_dice``, ``log`` and ``rng`` (torch's state).

Safe unpickling is not enough: a received file's fields decide what is built. :func:`check_checkpoint` checks
them before anything is (the model is registered, its options are options of its class with sane sizes,
``value_map`` maps mask values to classes 0..K-1), and :func:`model_from_checkpoint` counts the weights the
options make, on no memory, before allocating them: ``{"base_width": 2**20}`` would ask for 39 TB.
"""

from __future__ import annotations

import contextlib
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..core.files import atomic_torch_save
from ..core.limits import input_size_problem
from ..core.remembered import Remembered
from ..data import MaskValueMap
from ..models import create_model, resolve_model_name
from ..models.registry import model_options

__all__ = [
    "remembered_checkpoints",
    "save_checkpoint",
    "load_checkpoint",
    "load_model_start",
    "checkpoint_channels",
    "check_checkpoint",
    "check_inference_fields",
    "model_options_problem",
    "model_from_checkpoint",
    "convert_checkpoint",
    "to_plain_data",
]

_PLAIN_LEAVES = (torch.Tensor, str, bytes, int, float, bool, type(None))
# Sizes in model_kwargs (widths, embed_dim, kernel and window sizes, channels): 64 x the largest any gctxseg
# model uses; nnU-Net's patch_size is in pixels. The weight count is checked as well (model_from_checkpoint).
_MAX_SIZE = 4096
_MAX_PATCH = 8192
_MAX_FACTOR = 64.0  # float options: width multipliers, ratios, rates
_MAX_CLASSES = 4096
_MAX_MASK_VALUE = 65535  # masks are written as uint8 or uint16


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


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """Load a gctxseg checkpoint without running any code from it (``torch.load(weights_only=True)``).

    ``mmap``: map the tensors from the file instead of reading them, for a caller that wants only the small fields
    (epoch, scheduler state) of a large checkpoint.

    Raises:
        ValueError: one line naming the file: missing, truncated, not a gctxseg checkpoint, fields that
            :func:`check_checkpoint` refuses, or holding Python objects (an old-format or a crafted file), with
            how to convert one that is trusted.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found; pass the run folder's best.pt or last.pt")
    known = _remembered_key(path, map_location) if mmap else None
    if known is not None and (ckpt := _CHECKPOINTS.get(known)) is not None:
        return ckpt
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:  # the weights-only unpickler met an object it will not build
        raise ValueError(
            f"{path}: refused: it holds Python objects, which could run code when loaded (an older gctxseg "
            f"checkpoint, or a crafted file); if you trust its source, convert it once with: {_convert_hint(path)}"
        ) from None
    except Exception as err:  # zip/pickle errors differ between torch versions; all mean "not readable"
        raise ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}); it may be truncated") from None
    _require_gctxseg(ckpt, path)
    check_checkpoint(ckpt, path)
    if known is not None:
        _CHECKPOINTS.keep(known, ckpt)
    return ckpt


# Checkpoints mapped for their small fields (``mmap=True``) inside ``remembered_checkpoints()``: the same file,
# unchanged (inode, size, modification time), gives what its first read gave, checked then. ``gctxseg cv`` reads
# each fold's ``last.pt`` for its epoch, settings, classes or steps several times (finished? plan kept, arrays,
# report, summary), and unpickling a checkpoint's hundreds of tensor records costs tens of ms each time.
_CHECKPOINTS = Remembered()
remembered_checkpoints = _CHECKPOINTS.block


def _remembered_key(path: Path, map_location) -> tuple | None:
    """What a mapped read is kept under; None outside ``remembered_checkpoints()`` or where the file cannot be
    stat'ed (the read then says why)."""
    if not _CHECKPOINTS.open:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    return str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, str(map_location)


def load_model_start(path: str | Path) -> dict:
    """A model start (``gctxseg pretrain``'s ``pretrained.pt`` or a run's ``best.pt``), read without running code.

    Only what builds the network is required and checked (``model_name``, ``model_kwargs``, ``model``); a start
    needs no ``value_map``: its head may have other classes than the run it starts.

    Raises:
        ValueError: one line naming the file, as :func:`load_checkpoint`.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--init-weights {path}: file not found; pass the pretrained.pt of gctxseg pretrain "
                         "or a run's best.pt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a crafted pickle or a truncated file: never built, whatever torch raises
        raise ValueError(f"--init-weights {path}: not a readable weights-only file ({type(err).__name__}); it may "
                         "hold Python objects, which are never loaded, or be truncated") from None
    _require_gctxseg(ckpt, path)
    _check_model(ckpt, path)
    state = ckpt["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _not_usable(path, "its model is not a state dict (names -> tensors)")
    _check_finite_weights(state, f"--init-weights {path}")
    return ckpt


def _require_gctxseg(ckpt: Any, path: Path) -> None:
    if not isinstance(ckpt, dict) or "model_name" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: not a gctxseg checkpoint (no model_name/model); use a best.pt or last.pt")


def checkpoint_channels(ckpt: dict) -> int:
    """Input channels of the checkpoint's network (ONNX metadata states them; checkpoints keep the fingerprint)."""
    return int(ckpt["channels"] if "channels" in ckpt else ckpt["fingerprint"]["channels"])


def _not_usable(source: str | Path, what: str) -> ValueError:
    return ValueError(
        f"{source}: not a usable gctxseg checkpoint: {what}; use a best.pt or last.pt that gctxseg train wrote"
    )


def _option_problem(key: str, value: Any) -> str | None:
    """Why one model option cannot be built with, or None: sizes are ints in 1.._MAX_SIZE (patch sizes in
    pixels up to _MAX_PATCH), factors finite floats in 0.._MAX_FACTOR, lists flat and short."""
    if value is None or isinstance(value, bool) or (isinstance(value, str) and len(value) <= 64):
        return None
    if isinstance(value, int):
        top = _MAX_PATCH if key == "patch_size" else _MAX_SIZE
        return None if 1 <= value <= top else f"a size must be 1..{top}"
    if isinstance(value, float):
        return None if math.isfinite(value) and 0 <= value <= _MAX_FACTOR else f"must be within 0..{_MAX_FACTOR:g}"
    if isinstance(value, (list, tuple)) and len(value) <= 16:
        flat = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        return next(filter(None, (_option_problem(key, v) for v in value)), None) if flat else "a flat list of numbers"
    return "not a number, flag, name or short list of numbers"


# The options' plain annotations (strings under ``from __future__ import annotations``) -> the types they take.
_PLAIN_TYPES = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}


def _type_problem(annotation: Any, value: Any) -> str | None:
    wanted = _PLAIN_TYPES.get(annotation if isinstance(annotation, str) else getattr(annotation, "__name__", ""))
    if wanted is None or (isinstance(value, wanted) and (bool in wanted or not isinstance(value, bool))):
        return None  # a bool is an int to Python, not a size to a model
    return f"must be {annotation if isinstance(annotation, str) else annotation.__name__}"


def _check_model(ckpt: dict, source: str | Path) -> None:
    name, kwargs = ckpt.get("model_name"), ckpt.get("model_kwargs")
    if not isinstance(name, str):
        raise _not_usable(source, f"model_name {str(name)[:40]} is not a model's name")
    try:
        canonical = resolve_model_name(name)
    except ValueError as err:
        raise _not_usable(source, f"model_name: {err}") from None
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise _not_usable(source, f"model_kwargs {type(kwargs).__name__}, not a dict of option names")
    problem = model_options_problem(canonical, kwargs)
    if problem:
        raise _not_usable(source, problem)


def model_options_problem(model: str, options: dict[str, Any], label: str = "model_kwargs") -> str | None:
    """Why ``options`` cannot build the registered ``model``, or None: an option its class does not take (all
    named, with the ones it takes), a value of another type, or a size out of bounds. ``label`` names where the
    options come from (a checkpoint's ``model_kwargs``, the ``--model-option`` flags): one check for both."""
    name = resolve_model_name(model)
    known = model_options(name)
    unknown = sorted(set(options) - set(known)) if known is not None else []
    if unknown:
        return f"{label} {unknown} are no options of {name} (it takes {sorted(known)})"
    for key, value in options.items():
        problem = _type_problem(known[key].annotation, value) if known is not None else None
        problem = problem or _option_problem(key, value)
        if problem:
            where = f"{label} {key}=" if label.startswith("--") else f"{label}[{key!r}] = "  # as it was written
            return f"{where}{str(value)[:40]}: {problem}"
    return None


def _check_value_map(value_map: Any, source: str | Path) -> None:
    """``{"raw mask value": class index}`` with indices 0..K-1 in the order of the values, as written."""
    keys_ok = isinstance(value_map, dict) and all(isinstance(k, str) and k.isdigit() for k in value_map)
    if not keys_ok or not 1 <= len(value_map) <= _MAX_CLASSES:
        raise _not_usable(source, f"value_map {str(value_map)[:40]} is not a map of mask values to classes")
    values = sorted(value_map, key=int)
    if int(values[-1]) > _MAX_MASK_VALUE or [value_map[v] for v in values] != list(range(len(values))):
        what = f"mask values 0..{_MAX_MASK_VALUE} must map to classes 0, 1, ... in order"
        raise _not_usable(source, f"value_map {str(value_map)[:40]}: {what}")


def check_checkpoint(ckpt: dict, source: str | Path = "checkpoint") -> None:
    """Refuse a checkpoint whose fields cannot build its model safely, before anything is built.

    Raises:
        ValueError: one line naming ``source``: an unregistered ``model_name``; ``model_kwargs`` not a dict,
            with an option the model's class does not take, or a size out of bounds; ``value_map`` missing or
            not ``{"value": class}``; no input channels in 1..4096; ``model`` not a state dict; a ``base_size``
            or ``normalization`` that is there but out of bounds (:func:`check_inference_fields`).
    """
    _check_model(ckpt, source)
    _check_value_map(ckpt.get("value_map"), source)
    channels = _channels(ckpt, source)
    state = ckpt.get("model")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _not_usable(source, "its model is not a state dict (names -> tensors)")
    # a pre-training last.pt has no base_size: what a file holds is checked, what serving needs is required there
    _check_inference_numbers(ckpt, source, channels, required=False)


def _channels(ckpt: dict, source: str | Path) -> int:
    try:
        channels = ckpt["channels"] if "channels" in ckpt else ckpt["fingerprint"]["channels"]
    except (KeyError, TypeError):
        raise _not_usable(source, "no input channels (fingerprint.channels)") from None
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= _MAX_SIZE:
        raise _not_usable(source, f"input channels {str(channels)[:40]}, not a count in 1..{_MAX_SIZE}")
    return channels


def check_inference_fields(ckpt: dict, source: str | Path = "checkpoint") -> None:
    """Refuse a checkpoint (or an ONNX file's metadata) whose numbers would make inference allocate without
    bound, fail on every image, or answer 0 everywhere: checked once, before any image is read.

    ``base_size``: the input size the bounds of :mod:`gctxseg.core.limits` allow (the same as for ``--base-size``);
    ``normalization``: ``mean`` and ``std`` one finite number per input channel, ``std`` at least 1e-6 (the
    smallest the fingerprint writes: a smaller one turns every input into inf).

    Raises:
        ValueError: one line naming ``source`` and the key.
    """
    _check_inference_numbers(ckpt, source, _channels(ckpt, source), required=True)


_MIN_STD = 1e-6  # the fingerprint floors the variance at 1e-12 (data/fingerprint.py)


def _check_inference_numbers(ckpt: dict, source: str | Path, channels: int, *, required: bool) -> None:
    if "base_size" in ckpt or required:
        problem = input_size_problem(ckpt.get("base_size"))
        if problem:
            raise _not_usable(source, f"base_size {str(ckpt.get('base_size'))[:40]}: {problem}")
    if "normalization" not in ckpt and not required:
        return
    norm = ckpt.get("normalization")
    if not isinstance(norm, dict):
        raise _not_usable(source, f"normalization {str(norm)[:40]} is not {{'mean': [...], 'std': [...]}}")
    for key, low in (("mean", -math.inf), ("std", _MIN_STD)):
        values = norm.get(key)
        numbers = isinstance(values, (list, tuple)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if not numbers or len(values) != channels or not all(math.isfinite(v) and v >= low for v in values):
            floor = f", each >= {low:g}" if key == "std" else ""
            what = f"{channels} finite number(s), one per input channel{floor}"
            raise _not_usable(source, f"normalization[{key!r}] = {str(values)[:40]}: must be {what}")


def _check_finite_weights(state: dict, source: str | Path) -> None:
    """NaN or inf in a weight makes every output NaN, which argmax reads as class 0: 0 mm2 in every image."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise _not_usable(source, f"model[{key!r}] holds NaN or inf")


class _LargeTensorsOnMeta(TorchFunctionMode):
    """Tensor factories asked for more than 4096 elements make meta tensors (shape only, no memory).

    Under it a model is built only to read its state dict's shapes; small tensors stay real, since models
    read some while being built (GCtx-UNet's drop-path rates with ``.tolist()``).
    """

    _FACTORIES = frozenset({torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self._FACTORIES:
            size = kwargs.get("size", args[0] if args and isinstance(args[0], (tuple, list, torch.Size)) else args)
            if all(isinstance(n, int) for n in size) and math.prod(size) > 4096:
                kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _build(ckpt: dict, source: str | Path, num_classes: int, *, on_meta: bool = False) -> nn.Module | None:
    """The checkpoint's model; ``on_meta``: its large tensors on meta, or None where building reads one."""
    try:
        with _LargeTensorsOnMeta() if on_meta else contextlib.nullcontext():
            return create_model(ckpt["model_name"], checkpoint_channels(ckpt), num_classes, **ckpt["model_kwargs"])
    except NotImplementedError:  # what a meta tensor raises when its data is read: not the file's fault
        if on_meta:
            return None
        raise
    except (TypeError, ValueError, RuntimeError, AssertionError) as err:  # options that do not go together
        first = (str(err).splitlines() or [""])[0][:200]
        raise _not_usable(
            source, f"{ckpt['model_name']} cannot be built from its model_kwargs ({type(err).__name__}: {first})"
        ) from None


def _check_fit(ckpt: dict, source: str | Path, num_classes: int) -> None:
    """The options must make no more weights than the file holds, counted on meta tensors before any is
    allocated: more would fail ``load_state_dict`` anyway, after allocating them (39 TB for base_width 2**20).
    As many cost as much memory again as the loaded file already takes."""
    with torch.random.fork_rng(devices=[]):  # small tensors are initialised for real: keep the caller's draws
        model = _build(ckpt, source, num_classes, on_meta=True)
    if model is None:
        return  # a model that reads a large tensor while being built: the size bounds are the guard
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    held = {k: tuple(v.shape) for k, v in ckpt["model"].items()}
    made, kept = (sum(math.prod(s) for s in d.values()) for d in (shapes, held))
    if made > kept:  # fewer: load_state_dict below names the missing keys
        misfit = next(k for k in shapes if held.get(k) != shapes[k])  # there is one, or made <= kept
        what = f"{held.get(misfit, 'absent')} in the file, {shapes[misfit]} built"
        raise _not_usable(
            source,
            f"its model_kwargs make {made:,} weights for {ckpt['model_name']}, the file holds {kept:,} "
            f"(first misfit {misfit}: {what})",
        )


def model_from_checkpoint(ckpt: dict, source: str | Path = "checkpoint") -> nn.Module:
    """The checkpoint's architecture with its weights loaded, on the CPU, in eval mode.

    Its fields are checked first (:func:`check_checkpoint`) and the weights its options make are counted on
    meta tensors, so a crafted ``model_kwargs`` is refused before any memory is allocated for it.

    Raises:
        ValueError: fields :func:`check_checkpoint` refuses, options that build no model or more weights
            than the file holds, or weights that do not fit the architecture (one line naming ``source``).
    """
    check_checkpoint(ckpt, source)
    _check_finite_weights(ckpt["model"], source)
    num_classes = MaskValueMap.from_dict(ckpt["value_map"]).num_classes
    _check_fit(ckpt, source, num_classes)
    model = _build(ckpt, source, num_classes)
    problem = state_dict_mismatch(model.state_dict(), ckpt["model"])
    if problem:
        raise ValueError(f"{source}: weights do not fit {ckpt['model_name']}: {problem}; use the file gctxseg "
                         "train wrote, unchanged")
    model.load_state_dict(ckpt["model"])
    return model.eval()


def state_dict_mismatch(expected: dict, given: dict) -> str:
    """What keeps ``given`` from loading where ``expected`` is (counts, and the first key with its shapes); ''."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [k for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
    parts = []
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} of another shape (e.g. {k}: {tuple(given[k].shape)} in the file, "
                     f"{tuple(expected[k].shape)} in the model)")
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    return ", ".join(parts)


def convert_checkpoint(old: str | Path, new: str | Path, *, trust: bool = False, force: bool = False) -> Path:
    """Rewrite an old-format checkpoint as plain data that :func:`load_checkpoint` reads safely.

    Reading ``old`` unpickles it, which runs whatever code the file holds: only for files from a trusted
    source, hence ``trust`` must be True. The pickled RNG states of older versions (numpy's, Python's) are
    dropped: resume reseeds every epoch from ``(seed, epoch)`` and does not need them.

    Raises:
        ValueError: ``trust`` not given, ``old`` unreadable or not a gctxseg checkpoint, ``new`` = ``old``, ``new``
            already there without ``force``.
    """
    old, new = Path(old), Path(new)
    if not trust:
        raise ValueError(
            f"{old}: converting unpickles the file, which runs any code it holds; pass --trust only for a file "
            "from a source you trust"
        )
    if new.resolve() == old.resolve():
        raise ValueError(f"{new}: write the converted checkpoint to a new file, not over {old}")
    if new.exists() and not force:
        raise ValueError(f"{new}: already exists; write the converted checkpoint to a new file, or pass --force "
                         "to replace it")
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
