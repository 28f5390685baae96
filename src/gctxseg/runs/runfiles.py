"""The JSON files of a run folder, read back and checked as checkpoints are (``check_checkpoint``).

A run or cv folder holds small JSON records (``race.json``, ``postprocessing.json``, ``cv_run.json`` ...) that
later commands act on. A hand-edited or damaged one must not steer a command into a wrong answer (a
configuration that trained one fold chosen, a class erased by a rule of 10^12 pixels): every reader goes through
a :class:`RunFile`, which checks types, ranges and agreement with what is on disk, and refuses with one line
naming the file, the key and what to do (``ValueError``: exit 2, as for any file a flag names).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunFile"]

_SHOWN = 40  # characters of a bad value quoted in a message


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


@dataclass(frozen=True)
class RunFile:
    """One JSON file of a run folder and what to do when it is wrong (``fix``, e.g. "run gctxseg cv again")."""

    path: Path
    fix: str

    def refuse(self, key: str, problem: str) -> ValueError:
        """The one-line error for ``key`` (a dotted path such as ``rules.1.min_size``; "" for the whole file)."""
        where = f"{self.path}: {key!r} " if key else f"{self.path}: "
        return ValueError(f"{where}{problem}; {self.fix}")

    def read(self) -> Any:
        """The file's JSON (NaN and Infinity refused: gctxseg writes null)."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8"), parse_constant=self._no_constant)
        except json.JSONDecodeError as err:
            raise self.refuse("", f"not JSON ({err.msg} at line {err.lineno})") from None
        except UnicodeDecodeError:
            raise self.refuse("", "not JSON (not UTF-8 text)") from None

    def _no_constant(self, name: str) -> None:
        raise self.refuse("", f"holds {name}, which is not JSON")

    def mapping(self, data: Any, key: str = "") -> dict:
        if not isinstance(data, dict):
            raise self.refuse(key, f"is {_shown(data)}, not an object")
        return data

    def item(self, data: dict, key: str, parent: str = "") -> Any:
        """``data[key]``, refused when it is missing."""
        if key not in data:
            raise self.refuse(self._join(parent, key), "is missing")
        return data[key]

    def number(self, value: Any, key: str, low: float, high: float | None = None, *, integer: bool = False,
               optional: bool = False) -> float | int | None:
        """A finite number (an ``integer`` where asked) in ``low..high``; None allowed where ``optional``."""
        if value is None and optional:
            return None
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            raise self.refuse(key, f"is {_shown(value)}, not {'an integer' if integer else 'a number'}")
        if value < low or (high is not None and value > high):
            bounds = f"{low:g}..{high:g}" if high is not None else f">= {low:g}"
            raise self.refuse(key, f"is {value:g}, outside {bounds}")
        return value

    def names(self, value: Any, key: str, known: Collection[str] | None = None, *, what: str = "name",
              empty: bool = False) -> list[str]:
        """A list of distinct plain names (no path separators); each one of ``known`` where it is given."""
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.refuse(key, f"is {_shown(value)}, not a list of {what}s")
        if not value and not empty:
            raise self.refuse(key, f"names no {what}")
        if len(set(value)) != len(value):
            raise self.refuse(key, f"names a {what} twice ({_shown(value)})")
        for name in value:
            if Path(name).name != name or name in (".", ".."):
                raise self.refuse(key, f"{_shown(name)} is not a {what}")
            if known is not None and name not in known:
                raise self.refuse(key, f"names {name!r}, not one of {', '.join(sorted(known)) or 'none'}")
        return value

    @staticmethod
    def _join(parent: str, key: str) -> str:
        return f"{parent}.{key}" if parent else key
