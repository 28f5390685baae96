"""``gctxseg cv``'s learning-rate probe: a family whose best rate differs between real sets gets it from the data.

GCtx-UNet from scratch wants AdamW 1e-4 on Duke DME (2e-3 collapses to background) and 2e-3 on DRIVE's vessels
(docs/real-oct.md, "Learning rate, measured"), so one planned rate is not a rule for the transformer family.
Before its folds, ``gctxseg cv`` trains each candidate rate briefly on fold 0 (its training patients, at the size,
batch and start the folds will have, warm-up and cosine decay shortened to the probe) and scores fold 0's held-out
images; every fold then trains at the best rate. The planned rate wins unless a candidate beats it by more than
``PROBE_TIE_DICE``: a short run's Dice is noisy, and the planned rate is the measured default.

The probe uses fold 0's held-out images to choose, as ``gctxseg cv`` uses all folds' held-out images to choose
among configurations (nnU-Net's ``find_best_configuration`` does the same): the chosen configuration's pooled
out-of-fold Dice is the score of a choice made on it, slightly optimistic. Its record is ``CV/<model>/lr_probe.json``;
a cv run that is resumed reads it instead of probing again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.files import atomic_write_json
from ..core.records import JsonRecord, optional
from ..runs.runfiles import RunFile
from ..training import TrainConfig
from ..training.planning import BUDGET_SHARE, TrainingPlan, model_family
from ..training.segmentation import plan_run

__all__ = ["PROBE_CANDIDATES", "PROBE_IMAGES", "PROBE_MIN_IMAGES", "PROBE_TIE_DICE", "ProbePlan", "ProbeRecord",
           "ProbeResult", "needs_probe", "plan_probe", "probe_steps", "probe_learning_rate", "probe_reason",
           "read_record", "skip_probe"]

# Candidate peak AdamW rates per probed family: the grid of benchmarks/lr_probe.py. The U-Net families are not
# probed: their planned rates held on both real sets it was run on. The evidence for this and the image counts
# below is in docs/real-oct.md ("What the planner's rules rest on").
PROBE_CANDIDATES = {"transformer": (1e-4, 5e-4, 2e-3)}
# Images each candidate trains on (optimiser steps x batch). Without a time budget: PROBE_IMAGES (the full run is
# about 50,000 steps; this is cheap beside it). With one, the probe takes one fold's share, and is skipped (the
# planned rate kept, said, and the share given back to the folds) when that buys fewer than PROBE_MIN_IMAGES: below
# about that many images the transformer had learnt nothing at any rate yet, so the probe could not choose.
PROBE_IMAGES = 1000
PROBE_MIN_IMAGES = 600
PROBE_TIE_DICE = 0.02
# A real step (loading, augmenting and sampling data on the same cores; validation; checkpoints) against the
# planner's bare-model step, which it outlasts on a CPU. The probe's optimiser steps are fixed from this up front
# (``--steps``: every candidate trains the same steps, the last epoch partial where the share holds less than a
# whole one).
REAL_STEP_FACTOR = 1.5
PROBE_RECORD = "lr_probe.json"


@dataclass(frozen=True, kw_only=True)
class ProbeRecord(JsonRecord):
    """``lr_probe.json``: what the probe trained (fold 0, size, batch, steps and images per candidate, its share of
    the budget), each candidate's held-out Dice and steps, the rate chosen, or why the probe was skipped. A record
    of an older gctxseg may lack the descriptive keys (it is read back, and written again, without them)."""

    family: str | None = optional()
    planned_lr: float | None = optional()
    fold: int | None = optional()
    base_size: list[int] | None = optional()
    batch_size: int | None = optional()
    steps_per_candidate: int | None = optional()
    images_per_candidate: int | None = optional()
    minutes: float | None = None  # the probe's share of the budget; null without one
    held_out_dice: dict[str, float] | None = optional("held-out dice")  # candidate rate (as "%g") -> Dice
    steps: dict[str, int] | None = optional()
    chosen: float
    skipped: str | None = optional()  # why the probe did not train: the planned rate kept
    rule: str | None = optional()


@dataclass
class ProbeResult:
    lr: float
    record: ProbeRecord


@dataclass
class ProbePlan:
    """What a probe of one configuration would train: the folds' plan, the candidates, epochs and images each."""

    model: str
    plan: TrainingPlan
    candidates: list[float]
    steps: int  # optimiser steps per candidate
    images: int  # per candidate
    minutes: float | None  # the whole probe's share of the budget (None: no budget)
    fixed: str | None = None  # the schedule the user fixed (--epochs/--steps): no candidate trains longer

    @property
    def affordable(self) -> bool:
        return (self.minutes is None and self.fixed is None) or self.images >= PROBE_MIN_IMAGES


def needs_probe(model: str, cfg: TrainConfig) -> bool:
    """A probe for ``model`` when its family has candidates and the user gave no ``--lr``."""
    return cfg.lr is None and model_family(model) in PROBE_CANDIDATES


def read_record(config_dir: Path) -> ProbeRecord | None:
    """A configuration's probe record (``lr_probe.json``), or None when it was not probed; its chosen rate (every
    fold trains at it) a positive number, its scores numbers in 0..1."""
    path = config_dir / PROBE_RECORD
    if not path.is_file():
        return None
    file = RunFile(path, "correct it, or remove it (a cv with no fold begun probes again, else trains at the "
                         "planned rate)")
    record = file.mapping(file.read())
    file.number(file.item(record, "chosen"), "chosen", 0.0)
    if record["chosen"] <= 0:
        raise file.refuse("chosen", f"is {record['chosen']:g}, not a learning rate > 0")
    for lr, dice in file.mapping(record.get("held-out dice", {}), "held-out dice").items():
        file.number(dice, f"held-out dice.{lr}", 0.0, 1.0)
    return ProbeRecord.from_json(record)


def probe_steps(step_s: float | None, minutes: float | None, candidates: int, batch: int,
                fixed_steps: int | None = None) -> int:
    """Optimiser steps each candidate trains: ``PROBE_IMAGES`` worth, or what ``minutes`` (the whole probe) buys at
    the planner's step time ``step_s`` times ``REAL_STEP_FACTOR``; never more than ``fixed_steps`` (the schedule
    the user fixed for the folds)."""
    if not minutes or not step_s:
        steps = math.ceil(PROBE_IMAGES / batch)
    else:
        steps = int(minutes * 60 * BUDGET_SHARE / candidates / (step_s * REAL_STEP_FACTOR) + 1e-9)
    return max(1, min(steps, fixed_steps or steps))


def _steps_per_epoch(n_train: int, batch: int) -> int:
    return max(1, n_train // batch)  # as the planner counts an epoch (planning.plan_training)


def _fixed_schedule(cfg: TrainConfig, steps_per_epoch: int) -> tuple[int | None, str | None]:
    """(steps, how the user said it) of a schedule the user fixed for the folds (--steps or --epochs), else
    (None, None)."""
    if cfg.steps is not None:
        return cfg.steps, f"--steps {cfg.steps}"
    if cfg.epochs is not None:
        return cfg.epochs * steps_per_epoch, f"--epochs {cfg.epochs}"
    return None, None


def plan_probe(cfg: TrainConfig, model: str, minutes: float | None) -> ProbePlan:
    """The probe of ``model`` on ``cfg``'s folds (``cfg.time_budget`` is a fold's: the candidates train at the
    size and batch the folds are planned with) in ``minutes`` for all its candidates, each no longer than the
    folds' schedule where the user fixed it."""
    plan, n_train = plan_run(replace(cfg, model=model, fold=0))
    candidates = sorted({*PROBE_CANDIDATES[model_family(model)], plan.lr})  # the planned rate is always one
    fixed_steps, fixed = _fixed_schedule(cfg, _steps_per_epoch(n_train, plan.batch_size))
    steps = probe_steps(plan.seconds_per_step, minutes, len(candidates), plan.batch_size, fixed_steps)
    return ProbePlan(model, plan, candidates, steps, steps * plan.batch_size, minutes, fixed)


def _final_foreground_dice(run_dir: Path) -> float:
    """Mean foreground Dice of the run's last validation (its final weights, as cv scores its folds); the log's
    "Dice" lists the foreground classes only."""
    log = json.loads((run_dir / "log.json").read_text())
    last = [v["val log:"]["info"] for k, v in log.items() if k.startswith("epoch:") and "val log:" in v][-1]
    fg = [d for d in last["Dice"] if d is not None and math.isfinite(d)]
    return sum(fg) / len(fg) if fg else 0.0


def _pick(scores: dict[float, float], planned: float) -> float:
    best = max(scores, key=scores.get)
    return best if scores[best] > scores[planned] + PROBE_TIE_DICE else planned


def _record(probe: ProbePlan, **outcome) -> ProbeRecord:
    """The record of ``probe``: what it trains, and its ``outcome`` (the rate chosen, and the scores or why not)."""
    plan = probe.plan
    return ProbeRecord(family=model_family(probe.model), planned_lr=plan.lr, fold=0, base_size=list(plan.base_size),
                       batch_size=plan.batch_size, steps_per_candidate=probe.steps, images_per_candidate=probe.images,
                       minutes=probe.minutes, **outcome)


def skip_probe(config_dir: Path, probe: ProbePlan) -> ProbeResult:
    """Record (and say) that ``probe`` is too short to separate the rates: the planned lr is kept."""
    within = (f"the schedule you fixed ({probe.fixed})" if probe.fixed and probe.minutes is None else
              f"one fold's share ({probe.minutes:.1f} min)" + (f" and {probe.fixed}" if probe.fixed else ""))
    record = _record(probe, chosen=probe.plan.lr, skipped=(
        f"{probe.images} images ({probe.steps} steps) per candidate fit {within}, fewer than {PROBE_MIN_IMAGES}: "
        f"the planned lr {probe.plan.lr:g} is kept" + (" and the share goes to the folds" if probe.minutes else "")))
    print(f"{probe.model} lr probe: {record.skipped}")
    config_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(config_dir / PROBE_RECORD, record.to_json())
    return ProbeResult(probe.plan.lr, record)


def probe_learning_rate(cfg: TrainConfig, config_dir: Path, probe: ProbePlan) -> ProbeResult:
    """Train ``probe``'s candidates on fold 0 (see the module), choose, write ``config_dir/lr_probe.json``."""
    scores, trained = {}, {}
    for lr in probe.candidates:
        run = _train_candidate(cfg, probe, lr, config_dir)
        scores[lr], trained[lr] = _final_foreground_dice(run), _steps_trained(run)
        print(f"{probe.model} lr probe: lr {lr:g}, {trained[lr]} steps, fold 0 held-out foreground Dice "
              f"{scores[lr]:.4f}", flush=True)
    chosen = _pick(scores, probe.plan.lr)
    nothing = " (nothing learnt at any rate: the planned one)" if max(scores.values()) == 0 else ""
    record = _record(probe, held_out_dice={f"{lr:g}": d for lr, d in scores.items()},
                     steps={f"{lr:g}": n for lr, n in trained.items()}, chosen=chosen,
                     rule=f"the planned lr unless another beats it by more than {PROBE_TIE_DICE} Dice")
    atomic_write_json(config_dir / PROBE_RECORD, record.to_json())
    print(f"{probe.model} lr probe: chosen lr {chosen:g} for every fold{nothing}")
    return ProbeResult(chosen, record)


def probe_reason(probe: ProbeResult) -> str:
    """The lr's reason in each fold's plan.json: chosen by the probe, or planned with the probe skipped."""
    record = probe.record
    if record.skipped is not None:
        return f"{record.family} family, planned; gctxseg cv's lr probe was skipped (lr_probe.json)"
    dice = ", ".join(f"{lr} {d:.3f}" for lr, d in (record.held_out_dice or {}).items())
    return f"gctxseg cv's lr probe on fold 0 (lr_probe.json): held-out Dice {dice}"


def _steps_trained(run_dir: Path) -> int:
    from ..runs.checkpoint import load_checkpoint

    return int(load_checkpoint(run_dir / "last.pt", mmap=True)["scheduler"]["last_epoch"])


def _train_candidate(cfg: TrainConfig, probe: ProbePlan, lr: float, config_dir: Path) -> Path:
    from ..training import train
    from .folds import fold_finished

    run_dir = config_dir / "lr_probe" / f"lr_{lr:g}"
    if fold_finished(run_dir):
        return run_dir
    # the schedule's warm-up is capped at a tenth of its steps (schedule.StepSchedule): a probe reaches its peak
    return train(replace(
        cfg, model=probe.model, fold=0, lr=lr, base_size=probe.plan.base_size, batch_size=probe.plan.batch_size,
        epochs=None, steps=probe.steps, time_budget=None, results=str(run_dir.parent), name=run_dir.name, exist_ok=True,
        num_samples=0,
    ))
