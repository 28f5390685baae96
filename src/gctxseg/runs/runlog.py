"""The records of a run folder's ``log.json``: the pooled metric block, an epoch's scores, the model's size, a
budgeted run's seconds.

``log.json`` keeps the seed project's format: a ``"train parameters"`` object, a ``"model"`` object
(:class:`ModelSize`) and one ``"epoch:N"`` entry per epoch whose ``"train log:"`` and ``"val log:"`` hold an
``"info"`` block (:class:`EpochScores`). :class:`PooledScores` is the block
:func:`gctxseg.metrics.scores_from_confusion` computes, which ``gctxseg evaluate``'s ``summary.json`` holds too.
``"train parameters"`` stays a plain dict: it is free-form (the run's settings and what the run adds as it goes),
and the report shows every key it holds in the file's order; code reads the one record inside it that it needs,
a budgeted run's ``"time budget"`` (:class:`TimeBudget`, also under pre-training's ``"pretrain parameters"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core.records import JsonRecord, inline, key, optional

__all__ = ["PooledScores", "EpochScores", "ModelSize", "TimeBudget", "RunLog", "epoch_rows", "read_log_json",
           "read_run_log"]


@dataclass(frozen=True)
class PooledScores(JsonRecord):
    """Scores from pixel counts summed over a split: per foreground class lists and their NaN-skipping means."""

    pixel_accuracy: float
    precision: list[float] = key("Precision")
    recall: list[float] = key("Recall")
    f1_score: list[float] = key("F1 score")
    dice: list[float] = key("Dice")
    iou: list[float] = key("IoU")
    mean_precision: float = key("mean precision")
    mean_recall: float = key("mean recall")
    mean_f1_score: float = key("mean f1 score")
    mean_dice: float = key("mean dice")
    mean_iou: float = key("mean iou")


@dataclass(frozen=True)
class EpochScores(JsonRecord):
    """One epoch's ``info`` block of training or validation: the pooled scores, the loss and the learning rate."""

    scores: PooledScores = inline(PooledScores)
    loss: float = key("loss")
    amp_skipped_steps: int | None = optional()  # fp16 runs only: steps the grad scaler skipped
    lr: float | None = optional()

    @property
    def mean_dice(self) -> float:
        return self.scores.mean_dice


@dataclass(frozen=True)
class ModelSize(JsonRecord):
    """``log.json``'s ``"model"``: parameters and multiply-adds at the input size."""

    total_parameters: int
    flops: int | None = None
    flops_note: str = ""


@dataclass(frozen=True)
class TimeBudget(JsonRecord):
    """A budgeted run's ``"time budget"`` among its log's parameters, rewritten after every pass: the budget, the
    seconds spent, those spent in training passes and the reserve kept for what runs after the last step
    (``training_s / budget_s``: the share of the budget that trained)."""

    budget_s: float
    spent_s: float
    training_s: float
    reserve_s: float

    @classmethod
    def of(cls, parameters: Mapping) -> TimeBudget | None:
        """The record among a log's ``parameters`` (its ``"train parameters"`` or ``"pretrain parameters"``); None
        for a run without a time budget."""
        record = parameters.get("time budget")
        return None if record is None else cls.from_json(record)


@dataclass(frozen=True)
class RunLog:
    """A run's ``log.json`` as read back: the parameters as written (every key, for the report's table), the
    model's size and every logged epoch's training and validation scores (``None``: not validated that epoch)."""

    train_parameters: dict
    model: ModelSize
    epochs: list[tuple[int, EpochScores, EpochScores | None]]

    @classmethod
    def from_json(cls, log: dict) -> RunLog:
        return cls(log.get("train parameters", {}), ModelSize.from_json(log.get("model", {"total parameters": None})),
                   epoch_rows(log))

    def best_epoch(self) -> tuple[int, EpochScores, EpochScores | None]:
        """The epoch with the highest validation mean Dice (the first such; an unvalidated epoch counts as -1)."""
        return max(self.epochs, key=lambda r: -1.0 if r[2] is None or r[2].mean_dice is None else r[2].mean_dice)


def epoch_rows(log: dict) -> list[tuple[int, EpochScores, EpochScores | None]]:
    """``(epoch, train scores, val scores)`` of every ``"epoch:N"`` entry of a ``log.json`` (also of one still being
    written), by epoch; val scores None on an epoch that was not validated (a planned ``val_every`` > 1)."""
    rows = []
    for name, entry in log.items():
        if name.startswith("epoch:"):
            val = entry.get("val log:", {}).get("info")
            rows.append((int(name.split(":")[1]), EpochScores.from_json(entry["train log:"]["info"]),
                         EpochScores.from_json(val) if val else None))
    return sorted(rows, key=lambda r: r[0])


def read_log_json(run_dir: str | Path) -> dict:
    """``run_dir/log.json`` checked: JSON, an object, its epochs readable as scores.

    Raises:
        ValueError: one line naming the file (a truncated or hand-edited log).
    """
    from .runfiles import RunFile

    file = RunFile(Path(run_dir) / "log.json", "restore it from a copy, or train the run again")
    log = file.mapping(file.read())
    for name in ("train parameters", "model"):  # absent in a log still being written; an object where present
        if name in log:
            file.mapping(log[name], name)
    try:
        RunLog.from_json(log)
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        what = f"no {err.args[0]!r}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
        raise file.refuse("", f"not a gctxseg training log ({what})") from None
    return log


def read_run_log(run_dir: str | Path) -> RunLog:
    """``run_dir/log.json`` as a :class:`RunLog` (checked: :func:`read_log_json`)."""
    return RunLog.from_json(read_log_json(run_dir))
