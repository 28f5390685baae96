"""Files written whole or not at all (JSON, CSV, checkpoints; a crash never leaves half a file), and a new run
folder's name."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_csv",
    "csv_cell",
    "atomic_torch_save",
    "next_run_dir",
    "is_temp_file",
    "remove_stale_temp_files",
]


@contextlib.contextmanager
def _atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A temp file in ``path``'s folder to write; on leaving, fsynced and renamed to ``path`` (removed on error)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync and rename.

    A reader (or a crash) sees either the old file or the complete new one, never half of it.
    """
    with _atomic_file(path) as f:
        f.write(data)


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
    """``torch.save`` of ``obj`` to ``path``, atomically as :func:`atomic_write_bytes`; straight into the temp file:
    a copy in memory first would fault in a buffer as large as the checkpoint on every save."""
    with _atomic_file(path) as f:
        torch.save(obj, f)


def next_run_dir(results: str | Path, name: str = "exp", exist_ok: bool = False) -> Path:
    """First free ``results/name``, ``results/name2``, ... (or ``results/name`` itself with ``exist_ok``)."""
    results = Path(results)
    candidate = results / name
    k = 2
    while candidate.exists() and not exist_ok:
        candidate = results / f"{name}{k}"
        k += 1
    return candidate


# the temp files of :func:`_atomic_file`: ".NAME." + mkstemp's 8 random characters + ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def is_temp_file(name: str) -> bool:
    """Whether a file name is one of this module's temp files (what a writer killed mid-write leaves)."""
    return bool(_TEMP_NAME.match(name))


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Remove the temp files a killed writer left in ``folder`` (a run folder this process now writes alone: a
    resume); returns them. A checkpoint's is as large as the checkpoint."""
    folder = Path(folder)
    stale = [p for p in folder.iterdir() if p.is_file() and is_temp_file(p.name)] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
