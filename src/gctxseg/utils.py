"""Small leaf helpers shared by training, predict and report: atomic writes, seeding, devices, run folders."""

from __future__ import annotations

import io
import json
import logging
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_csv",
    "csv_cell",
    "flag_name",
    "atomic_torch_save",
    "seed_everything",
    "resolve_device",
    "compile_model",
    "cxx_compiler",
    "next_run_dir",
    "progress",
]

T = TypeVar("T")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync and rename.

    A reader (or a crash) sees either the old file or the complete new one, never half of it.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_safe(obj: Any) -> Any:
    # NaN (a class absent from truth and prediction) is not valid JSON: store it as null
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, allow_nan=False))


# A cell a spreadsheet would run as a formula starts with one of these (OWASP "CSV injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A number written as text ("-3.5", "-1e-05", written by callers that format their own numbers) is no formula.
_NUMBER_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def csv_cell(value: Any) -> Any:
    """``value`` safe to open in a spreadsheet: text that could run as a formula gets a leading ``'``.

    Only ``str`` values change, and only those starting with ``= + - @``, a tab or a carriage return that are
    not a plain decimal number (``-3.5`` stays; ``-1+1`` and ``=HYPERLINK(...)`` become ``'-1+1`` ...).
    """
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS) and not _NUMBER_TEXT.fullmatch(value):
        return "'" + value
    return value


def _csv_field(value: Any) -> str:
    # quoted as csv's QUOTE_MINIMAL does, and also for a carriage return, which csv leaves bare when lines end
    # in "\n": a spreadsheet starts a new row there, and 'x\r=cmd()' would begin one with a formula
    text = "" if value is None else str(csv_cell(value))
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\r\n') else text


def atomic_write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[dict]) -> None:
    """``rows`` (dicts keyed by ``columns``; missing keys blank) as a CSV file with a header, written atomically.

    File names, group keys and class names reach these cells from outside: every header and cell goes
    through :func:`csv_cell`, so a file named ``=HYPERLINK("http:x")+1.jpg`` is shown as text by a
    spreadsheet, never run as a formula (OWASP's advice). Numbers (int, float, also negative) stay numbers.

    Raises:
        ValueError: a row with a key that is not one of ``columns``.
    """
    columns = list(columns)
    lines = [",".join(map(_csv_field, columns))]
    for row in rows:
        if not set(row) <= set(columns):
            raise ValueError(f"{path}: row keys {sorted(set(row) - set(columns))} are not columns {columns}")
        lines.append(",".join(_csv_field(row.get(c, "")) for c in columns))
    atomic_write_text(path, "\n".join(lines) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda if available, else mps, else cpu; anything else is passed to ``torch.device``."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu or auto")
    return dev


def cxx_compiler() -> str | None:
    """The C++ compiler torch.compile would build CPU kernels with (``$CXX``, g++, c++, clang++), or None."""
    candidates = (os.environ.get("CXX", ""), "g++", "c++", "clang++")
    return next((path for path in map(shutil.which, filter(None, candidates)) if path), None)


def compile_model(model: torch.nn.Module, device: torch.device, *, freeze: bool = False) -> torch.nn.Module:
    """``torch.compile(model)`` where it can work, else ``model`` itself and one line on stderr saying why.

    Graphs that fail to compile later (at the first call) run eagerly too: dynamo's ``suppress_errors`` logs the
    reason and falls back instead of stopping a training run.

    Args:
        model: the module to compile.
        device: where it runs (a CPU needs a C++ compiler).
        freeze: for processes that only infer with fixed weights (``gctxseg predict``): inductor's ``freezing``
            folds the weights into the inference graphs as constants, which lets it pre-pack them for oneDNN
            (the larger part of compile's CPU speed-up, docs/speed.md). Weights changed after the first call
            are not seen: never for a model that is still training.
    """
    if device.type == "cpu" and cxx_compiler() is None:
        print(
            "--compile: torch.compile needs a C++ compiler on CPU and none was found (install g++ or set CXX); "
            "running eagerly",
            file=sys.stderr,
        )
        return model
    try:
        import torch._dynamo

        torch._dynamo.config.suppress_errors = True
        if device.type == "cpu":  # inductor's C++ build probes for CUDA and logs that a CPU machine has none
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        if freeze:
            import torch._inductor.config

            torch._inductor.config.freezing = True  # process-wide; only graphs compiled without grad are frozen
        # fixed shapes: the training batch never changes, the last validation batch adds one more graph
        return torch.compile(model, dynamic=False)
    except Exception as err:  # e.g. an unsupported Python version: raised by torch.compile itself
        print(f"--compile: torch.compile is unavailable here ({err}); running eagerly", file=sys.stderr)
        return model


def next_run_dir(results: str | Path, name: str = "exp", exist_ok: bool = False) -> Path:
    """First free ``results/name``, ``results/name2``, ... (or ``results/name`` itself with ``exist_ok``)."""
    results = Path(results)
    candidate = results / name
    k = 2
    while candidate.exists() and not exist_ok:
        candidate = results / f"{name}{k}"
        k += 1
    return candidate


def progress(items: Iterable[T], desc: str, *, show: bool = True, every_percent: int = 10) -> Iterator[T]:
    """``items`` with progress: tqdm's bar on a terminal, a plain line every ``every_percent`` % elsewhere.

    tqdm with ``disable=None`` prints nothing when stderr is not a terminal, so an epoch under ``nohup`` or
    SLURM was silent for minutes; there a line ``  train  30% (18/60) 41s`` goes to stdout instead (the log).
    ``show=False`` (ranks other than 0) or ``TQDM_DISABLE=1`` in the environment print nothing.
    """
    if not show or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes"):
        yield from items
        return
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, leave=False)
        return
    total = len(items) if isinstance(items, Sized) else 0
    start, next_percent = time.perf_counter(), every_percent
    for done, item in enumerate(items, 1):
        yield item
        if total and done * 100 >= next_percent * total:
            percent = done * 100 // total
            print(f"  {desc} {percent:3d}% ({done}/{total}) {time.perf_counter() - start:.0f}s", flush=True)
            next_percent = (percent // every_percent + 1) * every_percent


# glibc serves large blocks (above a threshold of at most 32 MiB) with mmap and returns them to the kernel when freed,
# and trims the heap's top above 64 MiB: on a CPU each training step then faults its activations in page by page
# again (measured on Duke DME training in a 2-core EPYC VM: ~50,000 minor page faults per second, half the CPU time
# in the kernel). Serving every block from the heap and not trimming it lets the next step reuse the memory
# (benchmarks/allocator.py measures both ways).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)
HEAP_TRIM_BYTES = 2**31 - 1  # mallopt takes a C int: freed memory is kept up to 2 GiB above what is in use


def keep_freed_memory() -> bool:
    """Ask glibc to serve and keep tensor memory in its heap (Linux with glibc only; a no-op elsewhere or when
    ``GCTXSEG_KEEP_FREED_MEMORY=0``). Returns whether it was applied."""
    if os.environ.get("GCTXSEG_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_BYTES))
    except (OSError, AttributeError):  # not glibc (musl, macOS): its allocator is left as it is
        return False


def flag_name(name: str) -> str:
    """The command-line flag of a TrainConfig setting (``img_f`` -> ``--img_f``, ``base_size`` -> ``--base-size``)."""
    return "--img_f" if name == "img_f" else "--mask_f" if name == "mask_f" else "--" + name.replace("_", "-")
