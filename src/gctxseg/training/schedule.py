"""The optimiser-step schedule of a run: how many steps it takes, the learning rate of each, and a time budget's
deadline.

A run given ``--epochs`` or ``--steps`` takes a fixed number of optimiser steps. A run given ``--time-budget``
whose schedule is planned follows the clock: its :class:`Deadline` is the start plus the budget minus a reserve
for what comes after the last step (the final validation and checkpoints: measured as they run), and its total
step count is re-estimated from the measured recent step time every ``REVISE_EVERY`` steps and at each epoch's
last step, longer or shorter. It ends when the total is reached, or after the step past which the next one would
miss the deadline; mid-epoch is as good as anywhere.

The learning rate of optimiser step ``s`` is ``lr_at(s, total, warmup, lrf)`` with the total current at ``s``.
Every change of the total is kept as ``[step, total]`` (from optimiser step ``step`` on, the schedule has ``total``
steps); with the steps taken they replay a budgeted run step for step (``--schedule-from``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from ..core.records import JsonRecord

__all__ = ["Deadline", "StepSchedule", "ScheduleState", "lr_at", "now", "replay_settings",
           "steps_per_epoch", "REVISE_EVERY", "REVISE_TOLERANCE", "RATE_WINDOW", "MIN_TAIL_SHARE"]

# The total is re-estimated every this many optimiser steps (sooner at the start: after 1, 2, 4, 8 steps; and at each
# epoch's last step): a one-epoch run adapts too, and a revision costs one clock reading.
REVISE_EVERY = 10
# A re-estimate within this share of the current total keeps it: the lr does not jitter with the clock's noise, and
# the record stays short. At most this share of a budget's training time is left unspent by it.
REVISE_TOLERANCE = 0.01
# The step time is measured over up to this many recent optimiser steps (wall time between them: data loading,
# validations and checkpoints in between count, as they will again).
RATE_WINDOW = 40
# At an epoch's last step, a clock schedule whose re-estimate leaves a last pass shorter than this share of an epoch
# (and than REVISE_TOLERANCE of its total) ends at this epoch instead: that pass's start, log and final validation
# would cost as much as its few steps, and score weights barely moved from this epoch's.
MIN_TAIL_SHARE = 0.25


def now() -> float:
    """The clock budgets are measured on (monotonic seconds); tests replace it to fake a slower machine."""
    return time.perf_counter()


def lr_at(step: int, total_steps: int, warmup_steps: int, lrf: float) -> float:
    """Learning-rate factor at ``step``: linear warm-up to 1, then cosine decay to ``lrf``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return lrf + (1 - lrf) * 0.5 * (1 + math.cos(math.pi * progress))


def steps_per_epoch(batches_per_epoch: int, grad_accum: int) -> int:
    """Optimiser steps of one pass over the loader (the last group of micro-batches may be shorter)."""
    return math.ceil(batches_per_epoch / grad_accum)


@dataclass
class Deadline:
    """When a budgeted run must have ended: ``started + budget_s``; its last step must leave the reserve.

    ``started`` is the clock time the budget began (a resumed run's earlier time is subtracted from it). The reserve
    is what runs after the last step: measured (``after_s``, the last validation with its log and checkpoints) once
    a validation ran, before that estimated from what the run timed before its first step: two checkpoint writes
    (``write_s``, the first ``last.pt``), ``forward_batches`` forward passes (``forward_s`` each, one validation
    batch's; where none was timed, a third of a training step: the planner's rule) and ``draws`` figure draws
    (``draw_s`` each, one curves draw)."""

    budget_s: float
    started: float
    write_s: float = 0.0
    forward_batches: int = 0
    after_s: float | None = None
    forward_s: float | None = None
    draws: int = 0
    draw_s: float = 0.0
    validation_batches: int = 0  # the forward passes of one validation (of the ``forward_batches``)

    def reserve(self, step_s: float) -> float:
        """Seconds the run needs after its last step."""
        if self.after_s is not None:
            return self.after_s
        return 2 * self.write_s + self.forward_batches * self._forward_s(step_s) + self.draws * self.draw_s

    def validation_s(self, step_s: float) -> float:
        """A validation with its log, checkpoints and curves, as estimated before one has run."""
        return self.validation_batches * self._forward_s(step_s) + 2 * self.write_s + self.draw_s

    def _forward_s(self, step_s: float) -> float:
        return self.forward_s if self.forward_s is not None else step_s / 3

    def left(self, step_s: float, at: float) -> float:
        """Seconds left at clock time ``at`` for optimiser steps, the reserve kept."""
        return self.started + self.budget_s - self.reserve(step_s) - at

    def spent(self) -> float:
        """Seconds of the budget spent so far."""
        return now() - self.started


@dataclass(frozen=True, kw_only=True)
class ScheduleState(JsonRecord):
    """A checkpoint's ``"schedule"`` (:meth:`StepSchedule.state`): the optimiser steps taken, the total and its
    ``[step, total]`` revisions, a ``--steps`` or replay limit, whether the deadline ended the run, and a clocked
    run's budget and the seconds of it spent (None in a run without one: a resumed run follows the clock again
    only where its budget is recorded)."""

    done: int
    total: int
    limit: int | None = None
    revisions: list
    clock_ended: bool = False
    budget_s: float | None = None
    spent_s: float | None = None

    @classmethod
    def saved_in(cls, ckpt: Mapping | None) -> ScheduleState | None:
        """The schedule ``ckpt`` saved; None without a checkpoint, or in one from before step schedules."""
        saved = (ckpt or {}).get("schedule")
        return cls.from_json(saved) if saved else None

    @classmethod
    def spent_in(cls, ckpt: Mapping | None) -> float:
        """Seconds of its time budget the run of ``ckpt`` spent (0: no checkpoint, or a run without a budget)."""
        saved = cls.saved_in(ckpt)
        return float(saved.spent_s or 0.0) if saved is not None else 0.0


class StepSchedule:
    """How many optimiser steps a run takes and the learning-rate factor of each (see the module).

    Args:
        total: the steps planned (a clock schedule's first estimate).
        per_epoch: optimiser steps per pass over the loader.
        warmup_epochs, lrf: the warm-up (capped at a tenth of the first total) and the final lr factor.
        limit: at most this many steps (``--steps``, a replay): the run ends there even if the total is larger.
        revisions: ``[step, total]`` pairs to follow (a replay); the first is ``[0, total]``.
        deadline: a clock schedule's deadline (None: fixed or replayed).
    """

    def __init__(self, total: int, per_epoch: int, warmup_epochs: float, lrf: float, *, limit: int | None = None,
                 revisions: list | tuple = (), deadline: Deadline | None = None) -> None:
        self.per_epoch, self.warmup_epochs, self.lrf = max(1, per_epoch), warmup_epochs, lrf
        self.limit, self.deadline = limit, deadline
        self.followed = {int(s): int(t) for s, t in revisions}  # step -> total, replayed
        self.total = self.followed.get(0, max(1, int(total)))
        self.revisions = [[0, self.total]]
        self.done = 0  # optimiser steps taken
        self.clock_ended = False  # the deadline ended the run before its total
        self._marks: deque = deque(maxlen=RATE_WINDOW + 1)  # (steps done, clock) after recent steps
        self._revised_at = 0
        self._end_after_step = False

    # ---------------------------------------------------------------- what the loop asks

    def lr_factor(self, step: int) -> float:
        """The learning-rate factor of optimiser step ``step`` on the current total (``LambdaLR``'s function)."""
        return lr_at(step, self.total, self.warmup_steps, self.lrf)

    @property
    def warmup_steps(self) -> int:
        """The warm-up, capped at a tenth of the first total (the record's step 0: the plan's estimate), not of the
        current one: the clock's first re-estimates come from a step or two that pay for the loader's first batches
        and the kernels' set-up, and capping on them cut the warm-up short and back (docs/time-budget.md, rule 4)."""
        return min(int(self.warmup_epochs * self.per_epoch), self.revisions[0][1] // 10)

    @property
    def clocked(self) -> bool:
        return self.deadline is not None

    @property
    def finished(self) -> bool:
        return self.clock_ended or self.done >= self.total or (self.limit is not None and self.done >= self.limit)

    @property
    def epochs(self) -> int:
        """Passes over the loader the schedule takes (the last may be partial)."""
        end = self.done if self.clock_ended else min(self.total, self.limit or self.total)
        return max(1, math.ceil(end / self.per_epoch))

    def propose(self, epoch_end: bool) -> tuple[int, int]:
        """Before optimiser step ``done``: ``(total, end now)`` as this process sees it (under DDP rank 0's view is
        the one every rank takes: :func:`~gctxseg.training.distributed.agree_across_ranks`)."""
        if not self.clocked:
            return self.followed.get(self.done + 1, self.total), 0
        at = now()
        step_s = self.step_seconds(at)
        if step_s is None:  # no step measured yet
            return self.total, 0
        fit = self.done + max(1, int(self.deadline.left(step_s, at) / step_s))  # this step counts among them
        if epoch_end and fit - (self.done + 1) <= self._shortest_tail():  # no last pass of a few steps
            fit = self.done + 1
        total = self.total
        # after 1, 2, 4, 8 steps, then every REVISE_EVERY: a run of a few steps adapts too
        due = epoch_end or self.done - self._revised_at >= min(REVISE_EVERY, max(1, self._revised_at))
        if due and abs(fit - total) > REVISE_TOLERANCE * total:
            total = fit
        if due:
            self._revised_at = self.done
        return total, int(fit <= self.done + 1)

    def _shortest_tail(self) -> int:
        """Steps a last pass must hold to be worth its start, log and validation (``MIN_TAIL_SHARE``)."""
        return int(min(MIN_TAIL_SHARE * self.per_epoch, REVISE_TOLERANCE * self.total))

    def revise(self, total: int, end: int) -> None:
        """Take the agreed ``(total, end)``; from step ``done + 1`` on the lr follows ``total``."""
        if total and total != self.total:
            self.total = int(total)
            self.revisions.append([self.done + 1, self.total])
        self._end_after_step = bool(end)

    def step_taken(self) -> bool:
        """Count an optimiser step; True when the run ends after it."""
        self.done += 1
        if self.clocked:  # a fixed schedule never reads the clock: its steps cannot depend on the machine
            self._marks.append((self.done, now()))
        if self._end_after_step and self.done < self.total:
            self.clock_ended = True
        self._end_after_step = False
        return self.finished

    def pass_started(self) -> None:
        """A pass over the loader begins: the first one's first step is timed from here (later passes are timed
        from the step before them, so the validation and checkpoints between passes count in the step time)."""
        if self.clocked and not self._marks:
            self._marks.append((self.done, now()))

    def step_seconds(self, at: float | None = None) -> float | None:
        """Measured seconds per optimiser step over the recent ones (None before the first)."""
        if len(self._marks) < 2:
            return None
        (first_done, first_at), (last_done, last_at) = self._marks[0], self._marks[-1]
        return max((last_at - first_at) / (last_done - first_done), 1e-6)

    # ---------------------------------------------------------------- the record

    def state(self) -> ScheduleState:
        """What a checkpoint keeps (its ``"schedule"``: ``state().to_json()``): steps, totals, the budget spent."""
        deadline = self.deadline
        return ScheduleState(done=self.done, total=self.total, limit=self.limit, revisions=self.revisions,
                             clock_ended=self.clock_ended, budget_s=deadline.budget_s if deadline else None,
                             spent_s=deadline.spent() if deadline else None)

    def continue_epochs(self, epochs_left: int) -> None:
        """A fixed epoch schedule resumed: ``epochs_left`` whole epochs after the steps done, at this process's
        steps per epoch, so a run resumed with another world size (2 ranks, then one process) counts epochs as
        it was asked to, not the other world's steps. The same world gives the same total as before."""
        if self.clocked or self.followed or self.limit is not None:
            return
        total = self.done + max(0, epochs_left) * self.per_epoch
        if total != self.total:
            self.total = total
            self.revisions.append([self.done + 1, total])

    def load_state(self, saved: ScheduleState | None, steps_done: int) -> None:
        """Continue a checkpoint's schedule (a clock schedule keeps its own, new deadline); ``saved`` None: a
        checkpoint from before step schedules, whose lr scheduler counted ``steps_done`` (its complete epochs')."""
        if saved is None:
            saved = ScheduleState(done=steps_done, total=self.total, revisions=[[0, self.total]])
        self.done, self.revisions = int(saved.done), [list(r) for r in saved.revisions]
        if self.followed:  # a replay follows its record
            self.total = [t for s, t in sorted(self.followed.items()) if s <= self.done][-1]
        elif self.clocked:  # a fixed one keeps its (possibly new: --resume --epochs) total
            self.total = int(saved.total)
        if self.total != self.revisions[-1][1]:  # the lr of the next step on follows it
            self.revisions.append([self.done + 1, self.total])
        self.clock_ended = self.clocked and bool(saved.clock_ended)
        self._revised_at = self.done


def replay_settings(source: str) -> dict:
    """What ``--schedule-from`` replays of a run (its folder, or its ``log.json``): ``steps`` and ``schedule`` from
    ``log.json``'s ``"train parameters"``, the ``planned`` settings and ``model_options`` from ``plan.json``.

    Raises:
        ValueError: a file missing or unreadable, or a log without a recorded schedule (one line naming it).
    """
    import json
    from pathlib import Path

    from .config import PLANNED_SETTINGS

    run = Path(source)
    run = run.parent if run.name == "log.json" else run
    records = {}
    for name in ("log.json", "plan.json"):
        try:
            records[name] = json.loads((run / name).read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{run / name}: cannot read it ({err}); --schedule-from takes a gctxseg train run "
                             "folder") from None
    header = records["log.json"].get("train parameters", {})
    if "steps" not in header or "schedule" not in header:
        raise ValueError(f"{run / 'log.json'}: key 'train parameters' holds no 'steps'/'schedule' (a run of an "
                         "older gctxseg, or one not begun); replay it with --epochs and its planned settings")
    plan = records["plan.json"]
    return {"steps": int(header["steps"]), "schedule": [list(r) for r in header["schedule"]],
            "planned": {k: plan[k] for k in PLANNED_SETTINGS if k != "epochs" and plan.get(k) is not None},
            "model_options": dict(plan.get("model_options") or {})}
