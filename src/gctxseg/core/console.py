"""What a command prints: progress lines and the command-line spelling of a setting."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

__all__ = ["T", "progress", "flag_name"]


T = TypeVar("T")



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



# the TrainConfig settings whose flag is not "--" + the name with dashes: the seed project's suffix flags, a short one,
# and the repeatable flag that adds one entry to model_options
_FLAG_SPELLINGS = {"img_f": "--img_f", "mask_f": "--mask_f", "foreground_share": "--fg-share",
                   "model_options": "--model-option"}


def flag_name(name: str) -> str:
    """The command-line flag of a TrainConfig setting (``img_f`` -> ``--img_f``, ``base_size`` -> ``--base-size``).

    ``gctxseg train`` names its flags with it, and messages about settings (a resumed run's ignored flags, a cv
    folder's differing settings) spell them as a user types them.
    """
    return _FLAG_SPELLINGS.get(name) or "--" + name.replace("_", "-")
