"""After ``gctxseg cv``'s race, the kept configurations' fold 0 is topped up to the share every later fold gets.

Fold 0 of every configuration trains before the race, at an equal share of a budget still split over all of
them; the later folds of the kept ones then share what the dropped ones did not spend, so fold 0 would be the
chosen configuration's shortest-trained and weakest fold. The top-up trains fold 0 once more, for the difference,
from the weights it ended the race with (a warm restart: a whole-model start, :mod:`gctxseg.training.start`, with
its own warm-up and cosine on the top-up's deadline). The run before the race moves to ``race_fold_0`` (the
race's figures and the start's weights stay on record), and ``fold_0`` is an ordinary fold run again: it resumes
as any fold does when the cv is stopped during it. docs/time-budget.md says why a top-up rather than a race on a
small share.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..runs.checkpoint import load_checkpoint
from ..training import TrainConfig

__all__ = ["KEPT_SETTINGS", "PRE_RACE_FOLD", "fold_steps", "kept_plan", "plan_top_ups", "prepare_top_up"]

PRE_RACE_FOLD = "race_fold_0"  # fold 0's run before the race, once topped up
# a top-up shorter than this share of fold 0's own training buys too few steps to be worth a restart's warm-up
MIN_TOP_UP_SHARE = 0.25


def plan_top_ups(spent_s: dict[str, float], left_s: float, later_units: int,
                 min_s: float) -> tuple[dict[str, float], dict[str, str]]:
    """(configuration -> top-up seconds, configuration -> why none): each fold 0 brought to the share every unit
    still to train gets of the minutes left with fold 0's training counted back in.

    Args:
        spent_s: each kept configuration's fold 0 training seconds (before the race).
        left_s: seconds of training left to the cv's deadline.
        later_units: the later folds still to train after the top-ups.
        min_s: the shortest unit worth training.
    """
    fair_s = (left_s + sum(spent_s.values())) / max(len(spent_s) + later_units, 1)
    minutes, why_not = {}, {}
    for model, spent in spent_s.items():
        top_up = fair_s - spent
        if top_up < max(min_s, MIN_TOP_UP_SHARE * spent):
            why_not[model] = (f"fold 0 trained {spent:.0f} s, the later folds get about {fair_s:.0f} s each: no "
                              "top-up worth a restart")
        else:
            minutes[model] = top_up
    return minutes, why_not


def prepare_top_up(cfg: TrainConfig, config_dir: Path, seconds: float) -> TrainConfig:
    """Move fold 0's run to ``race_fold_0`` and return the settings that train fold 0 again from its weights for
    ``seconds`` (the configuration's ``cfg``: its learning rate and seed; the raced run's input size and batch,
    which a replan on the shorter share would shrink under the weights)."""
    pre_race = config_dir / PRE_RACE_FOLD
    (config_dir / "fold_0").rename(pre_race)
    kept = kept_plan(cfg, pre_race, "the raced run's: the top-up trains on from its weights")
    return replace(cfg, time_budget=seconds / 60, init_weights=str((pre_race / "last.pt").resolve()), **kept)


# What a run that follows another keeps of its plan (a configuration's later folds, a top-up; docs/time-budget.md,
# rules 16 and 19).
KEPT_SETTINGS = ("base_size", "batch_size", "cpu_threads")


def kept_plan(cfg: TrainConfig, run_dir: Path, why: str) -> dict:
    """Those of ``KEPT_SETTINGS`` that ``cfg`` leaves open, at the values ``run_dir``'s ``last.pt`` trained with, as
    ``TrainConfig`` fields with ``why`` as their reason in ``plan.json`` (``plan_reasons``); empty where the run left
    no checkpoint (another rank's, a failed run) or nothing is kept."""
    last = run_dir / "last.pt"
    if not last.is_file():
        return {}
    trained = load_checkpoint(last, mmap=True)["config"]  # the settings are wanted: the weights stay on disk
    kept = {k: trained[k] for k in KEPT_SETTINGS if getattr(cfg, k) is None and trained.get(k) is not None}
    if "base_size" in kept:
        kept["base_size"] = tuple(kept["base_size"])
    return {**kept, "plan_reasons": {**cfg.plan_reasons, **dict.fromkeys(kept, why)}} if kept else {}


def fold_steps(run_dir: Path) -> tuple[int, int]:
    """(optimiser steps, epochs) a fold's ``last.pt`` trained."""
    ckpt = load_checkpoint(run_dir / "last.pt", mmap=True)  # two counters wanted: the weights stay on disk
    return int(ckpt["scheduler"]["last_epoch"]), int(ckpt["epoch"]) + 1
