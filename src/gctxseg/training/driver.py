"""The epoch driver segmentation training and pre-training share: one loop, its phases named, the deadline once.

::

    while the schedule has steps left:
        step            one pass over the loader, or the steps of it the schedule has left (training/loop.py)
        end of epoch    a stop signal, agreed across ranks, ends the run here: the partial pass is not logged
        validate        on the run's cadence, and after the last step
        checkpoint      the run's log and checkpoints (its figures where they are due)
        deadline check  the reserve re-measured: what ran after the pass is what the last step will need

What a kind of run computes and writes is its own (:class:`EpochRun`); when to validate, how the seconds of a
time budget are spent and measured, and how a run stops are the driver's.

A run whose schedule follows the clock (a time budget: training/schedule.py) keeps what is not training within a
small share of its budget: a validation between epochs is skipped when the ones so far, it and the one after the
last step would cost more than ``VALIDATION_SHARE`` of the seconds run (before any has run, their cost is estimated
from a validation batch's forward pass timed before the first step), or when the next pass is the last one (its own
validation follows it), or
always where the run says so (a cross-validation fold: its final weights are what is scored), and
its figures are redrawn only after a validation, and the log and checkpoints of an epoch that was not validated are
written only while such writes have cost at most ``WRITE_SHARE`` of the seconds run (every epoch's entry is in the
log written next; a stop resumes from the last ``last.pt`` written). A run of fixed length (``--epochs``,
``--steps``, a replay, no budget) never reads the clock here: it validates on its cadence, writes and draws after
every epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.distributed as dist

from ..core.runtime import seed_everything
from ..runs.runlog import TimeBudget
from .config import NonFiniteLossError
from .data import EpochTaggedSampler, sample_seed
from .distributed import agree_across_ranks
from .loop import install_stop_handlers, restore_handlers
from .schedule import StepSchedule, now

__all__ = ["EpochEnd", "EpochRun", "BudgetShare", "drive_epochs", "budget_record", "VALIDATION_SHARE", "WRITE_SHARE"]

# At most this share of a clocked run's seconds goes to its validations (with the log, checkpoints and curves written
# after them): those between epochs run only while they and the one after the last step, which always runs, fit.
VALIDATION_SHARE = 0.03
# At most this share of a clocked run's seconds goes to writing the log and ``last.pt`` after epochs that were not
# validated: with epochs of a second or less, writing both after each would cost more than the validations.
WRITE_SHARE = 0.02


@dataclass
class EpochEnd:
    """What one pass left for the run to record."""

    epoch: int
    lr: float  # the learning rate the pass began with
    trained: object  # what :meth:`EpochRun.train_pass` returned
    steps: int  # optimiser steps of the pass (fewer than an epoch's where the schedule ended inside it)
    pass_s: float  # wall seconds of the training pass (a budget's training share adds them up)
    started: float  # ``time.perf_counter()`` when the pass began (the seconds an epoch line shows)
    trained_at: float | None = None  # a clocked run's clock reading when the pass ended
    validated: object | None = None  # what :meth:`EpochRun.validate` returned, None where none ran
    draw: bool = True  # redraw the run's figures (a clocked run draws only after a validation)
    write: bool = True  # write the log and checkpoints (a clocked run: after a validation, or within WRITE_SHARE)


class EpochRun(Protocol):
    """What a kind of run (segmentation training, pre-training) gives :func:`drive_epochs`."""

    schedule: StepSchedule
    sampler: EpochTaggedSampler
    scheduler: torch.optim.lr_scheduler.LRScheduler
    what: str  # how its messages name an epoch ("epoch", "pretrain epoch")

    def save_start(self) -> None:
        """Write the first ``last.pt`` (rank 0), so a stop during the first epoch can be resumed."""

    def warm_up(self) -> None:
        """Pay, before the first step of a clocked run, a one-time cost the first validated epoch's end would
        otherwise carry into the reserve (a figure library's first draw)."""

    def reserve_s(self, after_s: float) -> float:
        """Seconds the run needs after its last step, where a validated epoch's end (validation, log, checkpoints,
        figures) took ``after_s`` (the run's own work after the last step scales it)."""

    def train_pass(self, stop: dict) -> object:
        """One pass of optimiser steps (:func:`~gctxseg.training.loop.run_steps`); returns its totals."""

    def validate(self) -> object | None:
        """Score the current weights (every rank), or None for a run that never validates."""

    def record(self, end: EpochEnd) -> None:
        """Log the epoch and write the checkpoints (rank 0 writes)."""

    def nonfinite_advice(self, first_epoch: bool) -> str:
        """The end of a non-finite loss's message: which checkpoint is left to go back to."""

    def close(self) -> None:
        """Shut the loaders' workers down."""


class BudgetShare:
    """Keeps an optional phase within ``share`` of a clocked run's seconds: the phase is due when what it has cost
    so far, plus what it cost last time, stays within that share of the seconds since the budget began."""

    def __init__(self, share: float) -> None:
        self.share, self.spent_s, self.last_s = share, 0.0, 0.0

    def due(self, elapsed_s: float, next_s: float | None = None, kept_s: float = 0.0) -> bool:
        """``next_s``: what the phase will cost (default: what it cost last time); ``kept_s``: what the run will
        spend on it later whatever is decided now (a clocked run's validation after its last step)."""
        cost = self.last_s if next_s is None else next_s
        return self.spent_s + cost + kept_s <= self.share * elapsed_s

    def spent(self, seconds: float) -> None:
        self.spent_s, self.last_s = self.spent_s + seconds, seconds


def drive_epochs(run: EpochRun, *, first_epoch: int, seed: int, rank: int, device: torch.device, is_main: bool,
                 fresh: bool, val_every: int | None = None, clocked_between: bool = True) -> int | None:
    """Train ``run`` epoch by epoch until its schedule ends (its steps taken, or its deadline reached: then
    mid-epoch); returns the stop signal the ranks agreed on, None when the schedule ended.

    Args:
        first_epoch: the epoch to start at (a resumed run's next one).
        seed, rank: every random choice of an epoch is a function of ``(seed, epoch, rank)``: resumable exactly.
        fresh: a new run (rank 0 writes the first ``last.pt``, timed for the deadline's reserve).
        val_every, clocked_between: validate every ``val_every`` epochs (None: never) and after the last step; a
            clocked run validates between epochs only where ``clocked_between`` (see the module).
    """
    schedule = run.schedule
    if fresh and is_main:
        _save_start(run, schedule)
    validation, writes = BudgetShare(VALIDATION_SHARE), BudgetShare(WRITE_SHARE)
    stop, previous_handlers = install_stop_handlers()
    epoch = first_epoch
    try:
        while not schedule.finished:
            # ---- step: one pass over the loader, or the steps of it the schedule has left
            started, done = time.perf_counter(), schedule.done
            seed_everything(sample_seed(seed, epoch, rank))
            run.sampler.set_epoch(epoch)
            end = EpochEnd(epoch, run.scheduler.get_last_lr()[0], None, 0, 0.0, started)
            try:
                end.trained = run.train_pass(stop)
                # ---- end of epoch: a signal after the pass's last step, on one rank, stops every rank here
                agree_across_ranks(stop, True, device)
                if stop["signal"] is not None:
                    break  # a partial epoch is not logged: last.pt holds the last complete one
                end.steps, end.pass_s = schedule.done - done, time.perf_counter() - started
                # ---- validate: on the cadence (within its share of a clocked run), and after the last step
                end.trained_at = trained_at = now() if schedule.clocked else None
                due = _validation_due(schedule, epoch, val_every, validation, trained_at, clocked_between)
                due = _rank_0_decides(due, device) if schedule.clocked else due
                if due:
                    end.validated = run.validate()
            except NonFiniteLossError as err:
                raise NonFiniteLossError(f"{run.what} {epoch + 1}: {err}{run.nonfinite_advice(epoch == 0)}") from None
            # ---- checkpoint: the log, last.pt/best.pt; a clocked run redraws its figures only after a validation
            # and writes an unvalidated epoch's only within its share
            end.draw = not schedule.clocked or end.validated is not None
            end.write = end.draw or schedule.finished or writes.due(trained_at - schedule.deadline.started)
            written = now() if trained_at is not None and end.write and not end.draw else None
            run.record(end)
            if written is not None:
                writes.spent(now() - written)
            # ---- deadline check: what ran after this pass is what the last step needs (the reserve)
            if trained_at is not None and end.validated is not None:
                after_s = now() - trained_at
                validation.spent(after_s)
                schedule.deadline.after_s = run.reserve_s(after_s)
            epoch += 1
        else:
            agree_across_ranks(stop, True, device)  # every rank ends the same way, stopped or done
    finally:
        run.close()
        restore_handlers(previous_handlers)
    return stop["signal"]


def budget_record(schedule: StepSchedule, before: TimeBudget | None, training_s: float,
                  at: float | None = None) -> TimeBudget:
    """A clocked run's ``"time budget"`` record after a pass of ``training_s`` seconds: the budget, what is spent
    (by clock time ``at``; None: now), the seconds spent in training passes (``before``'s, the record so far, plus
    this pass's) and the reserve kept for the last step."""
    deadline = schedule.deadline
    spent = deadline.spent() if at is None else at - deadline.started
    training = (before.training_s if before is not None else 0.0) + training_s
    return TimeBudget(budget_s=deadline.budget_s, spent_s=round(spent, 2), training_s=round(training, 2),
                      reserve_s=round(deadline.reserve(schedule.step_seconds() or 0.0), 2))


def _rank_0_decides(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank: a decision read off each rank's own clock must be one (a validation's
    counts are all-reduced, so a rank that skipped it would leave the others waiting)."""
    if not dist.is_initialized():
        return flag
    box = torch.tensor([int(flag)], device=device)
    dist.broadcast(box, src=0)
    return bool(box.item())


def _save_start(run: EpochRun, schedule: StepSchedule) -> None:
    """The first ``last.pt``; a clocked run warms up first, then times it: the reserve's first measure, before any
    validation."""
    if not schedule.clocked:
        run.save_start()
        return
    run.warm_up()
    written = now()
    run.save_start()
    schedule.deadline.write_s = now() - written


def _validation_due(schedule: StepSchedule, epoch: int, val_every: int | None, share: BudgetShare,
                    at: float | None, clocked_between: bool = True) -> bool:
    """Whether the epoch that just ended is validated: always after the last step; between epochs on the
    cadence, and in a clocked run only where it validates between epochs, within its share and not just before
    the last (partial) pass."""
    if val_every is None:
        return False
    if schedule.finished:
        return True
    if (epoch + 1) % val_every != 0:
        return False
    if not schedule.clocked:
        return True
    if not clocked_between:
        return False
    last_pass_next = schedule.total - schedule.done <= schedule.per_epoch
    # one validation's cost: the last one's, or before any its estimate; the one after the last step counts too
    cost = share.last_s or schedule.deadline.validation_s(schedule.step_seconds() or 0.0)
    return not last_pass_next and share.due(at - schedule.deadline.started, next_s=cost, kept_s=cost)
