"""``gctxseg cv``'s race: under a time budget, configurations far behind after fold 0 stop, and their share of the
budget goes to the later folds of the ones still in it.

Successive halving (Jamieson & Talwalkar 2016; Hyperband) at one rung. Every configuration trains fold 0 at the
same share of ``--time-budget``; each is then scored on fold 0's held-out scans (its final weights, as the
out-of-fold scores are). One whose Dice trails the best by more than ``RACE_MARGIN`` is dropped: it trains no more
folds and is not a candidate of the ranking. The dropped configurations' unspent shares are split evenly over the
later folds of the kept ones, so on a short budget the configuration that will be chosen gets the steps.

Why 0.10 (the runs are in docs/real-oct.md, "The race"): on Duke DME's default cv the configurations that trailed by
more than that on fold 0 trailed on every fold, and the ensembles with a member that far behind scored below the
better member alone, so dropping it loses no candidate that could win. Configurations within 0.10 of each other
stay in: the race never decides what only the pooled ranking can. ``gctxseg cv --no-race`` trains them all.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.files import atomic_write_json
from ..core.records import JsonRecord, key, optional
from ..runs.runfiles import RunFile
from .folds import fold_dice

__all__ = ["RACE_MARGIN", "RACE_RECORD", "RaceRecord", "TopUp", "format_race", "race_after_first_fold", "read_race"]

RACE_MARGIN = 0.10
RACE_RECORD = "race.json"


@dataclass
class TopUp(JsonRecord):
    """What a kept configuration's fold 0 got after the race (:mod:`gctxseg.crossval.topup`): its minutes and
    optimiser steps before and after, or why it got none."""

    minutes: float | None = optional()
    skipped: str | None = optional()
    steps_before: int | None = optional()
    steps: int | None = optional()


@dataclass
class RaceRecord(JsonRecord):
    """``race.json``: fold 0's held-out Dice of each configuration, those kept and those dropped (with why), the
    minutes of a fold before and after, and, once planned, each kept configuration's :class:`TopUp`."""

    fold: int
    held_out_dice: dict[str, float] = key("held-out dice")
    margin: float
    kept: list[str]
    dropped: dict[str, str]
    minutes_per_fold: float | None
    minutes_per_later_fold: float | None
    folds: int
    rule: str | None = optional()
    top_up: dict[str, TopUp] | None = optional("top-up", TopUp, mapping=True)


def read_race(cv_dir: Path, configurations: Collection[str] | None = None,
              folds: int | None = None) -> RaceRecord | None:
    """The race of a cv folder already run (its decision holds when the cv resumes), or None.

    Checked before it decides anything: ``kept`` a non-empty list of configurations, every configuration either
    kept or dropped with its fold-0 Dice, each one of ``configurations`` (those of this cv) where given, and
    ``folds`` the cv's where given.

    Raises:
        ValueError: one line naming ``race.json`` and the key that is wrong.
    """
    path = cv_dir / RACE_RECORD
    if not path.is_file():
        return None
    file = RunFile(path, "run gctxseg cv --summary-only to rewrite it from the folds, or remove the file to race again")
    record = file.mapping(file.read())
    dice = file.mapping(file.item(record, "held-out dice"), "held-out dice")
    file.names(list(dice), "held-out dice", configurations, what="configuration")
    for model, value in dice.items():
        file.number(value, f"held-out dice.{model}", 0.0, 1.0)
    kept = file.names(file.item(record, "kept"), "kept", dice, what="configuration")
    dropped = file.mapping(file.item(record, "dropped"), "dropped")
    file.names(list(dropped), "dropped", set(dice) - set(kept), what="configuration not kept", empty=True)
    if set(kept) | set(dropped) != set(dice):
        left = sorted(set(dice) - set(kept) - set(dropped))
        raise file.refuse("dropped", f"leaves {', '.join(left)} neither kept nor dropped")
    file.number(file.item(record, "margin"), "margin", 0.0, 1.0)
    for name in ("minutes per fold", "minutes per later fold"):
        file.number(file.item(record, name), name, 0.0, optional=True)
    race_folds = file.number(file.item(record, "folds"), "folds", 2, integer=True)
    if folds is not None and race_folds != folds:
        raise file.refuse("folds", f"is {race_folds}, but this cv has {folds} folds")
    return RaceRecord.from_json({"fold": 0, **record})


def race_after_first_fold(cv_dir: Path, models: list[str], fold_minutes: float | None, folds: int,
                          device: str = "auto", amp: str = "auto") -> RaceRecord:
    """Score fold 0 of every configuration, keep those within ``RACE_MARGIN`` of the best, and give the later
    folds of the kept ones the dropped ones' shares; written to ``CV/race.json`` (read back when it exists)."""
    record = read_race(cv_dir, models, folds)
    if record is not None:
        return record
    dice = {m: fold_dice(cv_dir / m, 0, device, amp) for m in models}
    leader = max(models, key=lambda m: dice[m])
    kept = [m for m in models if dice[m] >= dice[leader] - RACE_MARGIN]
    dropped = {m: f"fold 0 held-out Dice {dice[m]:.3f}, {dice[leader] - dice[m]:.3f} below {leader}'s "
                  f"{dice[leader]:.3f}" for m in models if m not in kept}
    later = fold_minutes * len(models) / len(kept) if fold_minutes else None
    record = RaceRecord(
        fold=0, held_out_dice=dice, margin=RACE_MARGIN, kept=kept, dropped=dropped, minutes_per_fold=fold_minutes,
        minutes_per_later_fold=later, folds=folds,
        rule=f"a configuration more than {RACE_MARGIN} fold-0 Dice below the best trains no more folds; its shares "
             "go to the later folds of those kept")
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        atomic_write_json(cv_dir / RACE_RECORD, record.to_json())
    return record


def format_race(record: RaceRecord) -> str:
    """One line: fold 0's Dice of each configuration, what was dropped and what the kept ones' later folds get."""
    dice = ", ".join(f"{m} {d:.3f}" for m, d in record.held_out_dice.items())
    line = f"race after fold 0 (held-out Dice {dice}; margin {record.margin:g}): "
    if not record.dropped:
        return line + "every configuration is kept"
    line += "dropped " + "; ".join(f"{m} ({why})" for m, why in record.dropped.items())
    if record.minutes_per_later_fold:
        line += (f"; folds 1-{record.folds - 1} of {', '.join(record.kept)} get "
                 f"{record.minutes_per_later_fold:.2f} min each instead of {record.minutes_per_fold:.2f}")
    return line
