"""What a ``gctxseg cv`` folder is: the run it holds, named by its data and settings, and its complete folds.

nnU-Net names a training by dataset, configuration and fold, and continues it when asked to train it again. A cv
run here is named by what decides its results: the data folder, the configurations compared, the folds (count,
``--group-regex``, ``--splits``), whether they race, and every training setting except those that only say how
or where it runs (device, precision, loader workers, cache, compile, the output folder): ``cv_run.json`` holds
it, written once when the folder is made, after every check of flags and data has passed. The same command run
again continues that folder (finished folds kept, a stopped one resumed from its ``last.pt``); a folder holding a
run of other data or settings is refused, with what differs.

A configuration's folds are complete when ``fold_0 .. fold_{K-1}`` each hold a ``last.pt`` of that fold, K the
fold count its checkpoints were trained with: a summary, a choice or an ensemble is made of complete ones only.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ..core.console import flag_name
from ..core.files import atomic_write_json
from .checkpoint import load_checkpoint
from .runfiles import RunFile

# a training.TrainConfig; not imported, not even for type checking: predict reads folds through this module, and
# the house's rule (tests/test_structure.py) keeps predict from reaching training
TrainConfig = Any

__all__ = ["CV_RECORD", "choose_cv_folder", "cv_identity", "fold_weights", "missing_folds", "start_cv_folder"]

CV_RECORD = "cv_run.json"
# settings that say how or where a cv runs, not what it trains: a rerun may change them (a resumed fold keeps its
# own, as `train --resume` does)
RUN_SETTINGS = ("device", "amp", "workers", "cache_dir", "compile", "results", "name", "exist_ok", "resume",
                "data_val", "fold", "lr_reason", "num_samples")
_PATH_SETTINGS = ("data_train", "splits", "init_weights", "encoder_weights")
_NOT_PATHS = (None, "none", "imagenet")  # planned, from scratch (training.config.NO_START), timm's download


def cv_identity(cfg: TrainConfig, models: list[str], race: bool) -> dict:
    """What names a cv run (JSON-ready): its data and settings, the configurations and whether they race."""
    settings = {k: v for k, v in vars(cfg).items() if k not in RUN_SETTINGS}
    for key in _PATH_SETTINGS:  # the same folder named from another working directory is the same run
        if settings.get(key) not in _NOT_PATHS:
            settings[key] = os.path.abspath(settings[key])
    return json.loads(json.dumps({"models": sorted(models), "race": race, "settings": settings}))


def _differences(held: dict, wanted: dict) -> list[str]:
    diffs = [f"--models {' '.join(held.get('models', []))} there, {' '.join(wanted['models'])} here"] \
        if held.get("models") != wanted["models"] else []
    if held.get("race") != wanted["race"]:
        diffs.append("--no-race " + ("here, not there" if held.get("race") else "there, not here"))
    theirs, ours = held.get("settings", {}), wanted["settings"]
    for key in sorted(set(theirs) | set(ours)):
        if theirs.get(key) != ours.get(key):
            name = "DATA" if key == "data_train" else flag_name(key)
            diffs.append(f"{name} {json.dumps(theirs.get(key))} there, {json.dumps(ours.get(key))} here")
    return diffs


def _read_identity(cv_dir: Path) -> dict:
    file = RunFile(cv_dir / CV_RECORD, f"remove {cv_dir} or pass --name NEW for a new cv run")
    record = file.mapping(file.read())
    file.names(file.item(record, "models"), "models", what="configuration")
    file.mapping(file.item(record, "settings"), "settings")
    return record


def choose_cv_folder(cfg: TrainConfig, identity: dict) -> Path:
    """``results/name`` when it is new, empty, or holds this very run (then it continues), or a cv run that trained
    nothing (its records are removed: :func:`_forget_untrained_run`); nothing else is written.

    A folder with a ``splits_final.json`` but no ``cv_run.json`` is a cv run of a gctxseg 0.1.0 build from before
    cv folders recorded their run (their folds, out-of-fold arrays and summaries are those of today's layout,
    ``CV/<model>/fold_k``): it is refused with that said, and ``--exist-ok`` continues it as this run, so that days
    of trained folds stay usable; the record is written then and the folder is an ordinary one from there on.

    Raises:
        ValueError: the folder holds a cv run of other data or settings (what differs is named), or files but
            no ``cv_run.json`` (a train run, or a cv of an older gctxseg: ``--exist-ok`` continues that one).
    """
    cv_dir = Path(cfg.results) / cfg.name
    if int(os.environ.get("RANK", "0")) != 0 or not cv_dir.exists():
        return cv_dir  # under torchrun rank 0 checks and makes the folder: the others follow it
    if not cv_dir.is_dir():
        raise ValueError(f"{cv_dir}: is a file, not a cv folder; pass --name NEW (or --results DIR)")
    if (cv_dir / CV_RECORD).is_file() and not any(cv_dir.rglob("last.pt")):
        _forget_untrained_run(cv_dir)
        return cv_dir
    if (cv_dir / CV_RECORD).is_file():
        diffs = _differences(_read_identity(cv_dir), identity)
        if diffs:
            raise ValueError(f"{cv_dir}: holds a cv run of other data or settings ({'; '.join(diffs[:3])}"
                             f"{f'; {len(diffs) - 3} more' if len(diffs) > 3 else ''}); run it with its own "
                             f"settings to continue it, or pass --name NEW for a new run (or remove {cv_dir})")
        return cv_dir
    if any(cv_dir.iterdir()) and not (cfg.exist_ok and (cv_dir / "splits_final.json").is_file()):
        older = (cv_dir / "splits_final.json").is_file()
        what = "a cv run of an older gctxseg; --exist-ok continues it as this one" if older else \
            "files of another kind of run (no splits_final.json)"
        raise ValueError(f"{cv_dir}: holds no {CV_RECORD} but {what}; pass --name NEW for a new cv run")
    return cv_dir


def _forget_untrained_run(cv_dir: Path) -> None:
    """A cv run that trained nothing (refused by a data check after it named its folder, or stopped before its
    first step) has nothing to keep: its records go, so that the run the user starts after fixing the data (or
    with other settings) is not refused for differing from it."""
    print(f"{cv_dir}: holds a cv run that trained nothing yet; this run starts it afresh", file=sys.stderr)
    for name in (CV_RECORD, "splits_final.json"):
        (cv_dir / name).unlink(missing_ok=True)


def start_cv_folder(cv_dir: Path, identity: dict) -> None:
    """Make the folder chosen by :func:`choose_cv_folder` and name its run (rank 0 only writes the record)."""
    cv_dir.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) == 0 and not (cv_dir / CV_RECORD).is_file():
        atomic_write_json(cv_dir / CV_RECORD, identity)


def _fold_index(path: Path) -> int | None:
    suffix = path.parent.name.removeprefix("fold_")
    return int(suffix) if suffix.isdigit() else None


def missing_folds(config_dir: Path) -> tuple[list[int], int]:
    """(folds with no ``last.pt``, K) of one configuration; K from its checkpoints, which must agree on it.

    Raises:
        ValueError: a ``fold_k/last.pt`` trained as another fold, or folds trained with different K.
    """
    counts = {}
    for last in config_dir.glob("fold_*/last.pt"):
        index = _fold_index(last)
        if index is None:
            continue
        config = load_checkpoint(last, mmap=True).get("config") or {}
        if config.get("fold", index) != index:
            raise ValueError(f"{last}: holds fold {config['fold']}, not fold {index}; move it to "
                             f"fold_{config['fold']} or train fold {index} again with gctxseg cv")
        counts[index] = config.get("folds")
    ks = {k for k in counts.values() if isinstance(k, int) and not isinstance(k, bool)}
    if len(ks) > 1:
        raise ValueError(f"{config_dir}: its folds were trained as parts of {' and '.join(map(str, sorted(ks)))}-fold "
                         "cross-validations; keep the folds of one")
    k = ks.pop() if ks else max(counts, default=-1) + 1
    return [f for f in range(k) if f not in counts], k


def fold_weights(config_dir: Path) -> list[Path]:
    """Every fold's ``last.pt`` of one configuration, in fold order; refused when a fold is missing.

    Raises:
        ValueError: one line naming the configuration folder and the missing fold, with how to finish it.
    """
    missing, k = missing_folds(config_dir)
    if missing:
        raise ValueError(f"{config_dir}: {k - len(missing)} of {k} folds trained (no fold_{missing[0]}/last.pt); "
                         "run the same gctxseg cv command again to finish it")
    return [config_dir / f"fold_{f}" / "last.pt" for f in range(k)]
