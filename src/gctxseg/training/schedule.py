"""The learning-rate schedule (linear warm-up, cosine decay to ``lr * lrf``) and its re-fit to a time budget."""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from typing import Protocol

import torch
import torch.distributed as dist

from .planning import BUDGET_SHARE

__all__ = ["ScheduleSettings", "TimedSettings", "lr_at", "lr_lambda", "refit_to_budget"]


class ScheduleSettings(Protocol):
    """What a schedule reads from a run's settings (training's and pre-training's configurations both hold it)."""

    epochs: int
    warmup_epochs: float
    lrf: float
    grad_accum: int


class TimedSettings(ScheduleSettings, Protocol):
    """A schedule with a time budget in minutes (None = none): a dataclass, re-fitted with ``replace``."""

    time_budget: float | None


def lr_at(step: int, total_steps: int, warmup_steps: int, lrf: float) -> float:
    """Learning-rate factor at ``step``: linear warm-up to 1, then cosine decay to ``lrf``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return lrf + (1 - lrf) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_lambda(cfg: ScheduleSettings, batches_per_epoch: int):
    """The learning-rate factor per optimiser step of ``cfg``'s schedule (warm-up capped at 10% of it)."""
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)  # optimiser steps
    total_steps = cfg.epochs * steps_per_epoch
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total_steps // 10)
    return lambda s: lr_at(s, total_steps, warmup, cfg.lrf)


def refit_to_budget(cfg: TimedSettings, scheduler: torch.optim.lr_scheduler.LambdaLR, batches_per_epoch: int,
                    epochs_given: bool, started: float, epoch_s: float, device: torch.device) -> TimedSettings:
    """After the first epoch of a ``--time-budget`` run whose epochs were planned: fewer epochs if the measured
    epoch time says the planned ones would overrun the budget (the schedule is rebuilt, as ``--resume --epochs``
    does).

    The planner times a few steps on a model alone; a real epoch also loads, augments and samples its data on
    the same cores and checkpoints: on Duke DME (2-core EPYC) epochs ran 1.5x the planned time, so a
    63-minute ``gctxseg cv`` would have taken about 80. Only ever shortens: a planned run never outgrows its plan.
    """
    if not cfg.time_budget or epochs_given:
        return cfg
    remaining = cfg.time_budget * 60 * BUDGET_SHARE - (time.perf_counter() - started)
    fit = torch.tensor([max(1, 1 + int(remaining // max(epoch_s, 1e-6)))], device=device)
    if dist.is_initialized():  # every rank takes rank 0's count: equal schedules
        dist.broadcast(fit, 0)
    epochs = int(fit.item())
    if epochs >= cfg.epochs:
        return cfg
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"time budget: the first epoch took {epoch_s:.0f} s, so {epochs} of the planned {cfg.epochs} epochs "
              f"fit {cfg.time_budget:g} min; schedule re-fitted", flush=True)
    cfg = replace(cfg, epochs=epochs)
    scheduler.lr_lambdas = [lr_lambda(cfg, batches_per_epoch)] * len(scheduler.optimizer.param_groups)
    return cfg
