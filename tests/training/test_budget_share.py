"""How a time budget's seconds are shared (training/driver.py): validations between epochs stay within
``VALIDATION_SHARE`` of a clocked run's seconds, none runs just before the last (partial) pass, the last step is
always validated, and the log's ``"time budget"`` record adds up the seconds spent in training passes."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_config

from gctxseg.runs.runlog import TimeBudget
from gctxseg.training import planning, segmentation, train
from gctxseg.training import schedule as schedule_module
from gctxseg.training.driver import VALIDATION_SHARE, BudgetShare, _validation_due, budget_record
from gctxseg.training.schedule import Deadline, StepSchedule

VALIDATION_S = 20.0  # what one validation costs on the fake clock


def test_a_phase_is_due_while_its_cost_stays_within_its_share():
    share = BudgetShare(0.05)
    assert share.due(0.0)  # nothing spent yet: the first one runs
    share.spent(2.0)
    assert not share.due(60.0)  # 2 s spent + 2 s more > 5% of 60 s
    assert share.due(80.0)  # 4 s <= 5% of 80 s
    share.spent(3.0)
    assert share.spent_s == 5.0 and not share.due(150.0) and share.due(160.0)  # 5 + 3 <= 8


def _clocked(total: int, done: int, budget_s: float = 100.0) -> StepSchedule:
    schedule = StepSchedule(total, 10, 0.0, 0.01, deadline=Deadline(budget_s, started=0.0))
    schedule.done = done
    return schedule


def test_a_clocked_run_validates_within_its_share_and_not_just_before_its_last_pass():
    plenty = BudgetShare(VALIDATION_SHARE)
    assert _validation_due(_clocked(total=50, done=20), 1, 1, plenty, at=50.0)
    assert not _validation_due(_clocked(total=25, done=20), 1, 1, plenty, at=50.0)  # the last pass is next
    assert not _validation_due(_clocked(total=50, done=20), 0, 2, plenty, at=50.0)  # off the cadence
    spent = BudgetShare(VALIDATION_SHARE)
    spent.spent(2.0)
    assert not _validation_due(_clocked(total=50, done=20), 1, 1, spent, at=50.0)  # 4 s > 3% of 50 s
    assert _validation_due(_clocked(total=20, done=20), 0, 7, spent, at=50.0)  # the last step: always
    fixed = StepSchedule(50, 10, 0.0, 0.01)
    fixed.done = 40
    assert _validation_due(fixed, 1, 1, spent, at=None)  # a fixed run: its cadence only, even before its last pass
    assert not _validation_due(_clocked(total=50, done=20), 1, None, plenty, at=50.0)  # a run that never validates


def test_a_clocked_cross_validation_fold_validates_after_its_last_step_only():
    plenty = BudgetShare(VALIDATION_SHARE)
    assert not _validation_due(_clocked(total=50, done=20), 1, 1, plenty, at=50.0, clocked_between=False)
    assert _validation_due(_clocked(total=20, done=20), 1, 1, plenty, at=50.0, clocked_between=False)
    fixed = StepSchedule(50, 10, 0.0, 0.01)
    fixed.done = 20
    assert _validation_due(fixed, 1, 1, plenty, at=None, clocked_between=False)  # a fixed run keeps its cadence


def test_the_time_budget_record_adds_the_seconds_of_each_training_pass(monkeypatch):
    monkeypatch.setattr(schedule_module, "now", lambda: 40.0)
    schedule = _clocked(total=50, done=20, budget_s=120.0)
    schedule.deadline.after_s = 1.5
    first = budget_record(schedule, None, 12.25)
    # the record is written under these keys, in this order (log.json; the benchmarks read it back)
    assert list(first.to_json().items()) == [("budget s", 120.0), ("spent s", 40.0), ("training s", 12.25),
                                             ("reserve s", 1.5)]
    assert TimeBudget.of({"time budget": first.to_json()}) == first and TimeBudget.of({}) is None
    assert budget_record(schedule, first, 7.5).training_s == 19.75


@pytest.mark.parametrize("minutes", [3, 30])
def test_expensive_validations_stay_within_their_share_of_a_budgeted_run(phantom_dir, tmp_path, monkeypatch,
                                                                         one_thread, fake_clock, minutes):
    real_evaluate = segmentation.evaluate

    def slow_evaluate(*args, **kwargs):
        fake_clock[0] += VALIDATION_S
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(segmentation, "evaluate", slow_evaluate)
    # the forward pass timed before the first step is as slow: the reserve's estimate is the validation's cost
    monkeypatch.setattr(segmentation._SegmentationEpochs, "_forward_s",
                        lambda self: VALIDATION_S / len(self.trainer.val_loader))
    monkeypatch.setattr(planning, "_seconds_per_step", lambda *args: 5.0)
    run = train(tiny_config(phantom_dir, tmp_path, epochs=None, batch_size=2, time_budget=minutes, num_samples=0,
                            val_every=1))
    log = json.loads((run / "log.json").read_text())
    epochs = [log[k] for k in log if k.startswith("epoch:")]
    validated = ["val log:" in e for e in epochs]
    budget = log["train parameters"]["time budget"]
    assert len(epochs) >= 4 and validated[-1]  # several epochs; the last step is always validated
    between = sum(validated[:-1])
    # each validation between epochs was due: the ones before it, it and the final one within the share of the
    # seconds; a short run validates after its last step only, a long one between epochs too
    assert (between + 1) * VALIDATION_S <= VALIDATION_SHARE * budget["spent s"] + VALIDATION_S
    assert (between > 0) == (minutes == 30)
    assert budget["spent s"] <= budget["budget s"] and budget["training s"] > 0


def test_the_first_validation_is_estimated_from_a_forward_pass_timed_before_the_first_step():
    deadline = Deadline(600.0, started=0.0, write_s=0.5, forward_batches=7, validation_batches=3, draws=3,
                        draw_s=0.25)
    assert deadline.reserve(step_s=3.0) == 2 * 0.5 + 7 * 1.0 + 3 * 0.25  # no forward timed: a third of a step
    assert deadline.validation_s(step_s=3.0) == 3 * 1.0 + 2 * 0.5 + 0.25
    deadline.forward_s = 0.2
    assert deadline.reserve(step_s=3.0) == 2 * 0.5 + 7 * 0.2 + 3 * 0.25
    deadline.after_s = 4.0
    assert deadline.reserve(step_s=3.0) == 4.0  # measured once a validation ran
    schedule = StepSchedule(500, 10, 0.0, 0.01, deadline=Deadline(600.0, started=0.0, write_s=0.5,
                                                                  validation_batches=10, forward_s=0.1))
    schedule.done = 20
    share = BudgetShare(VALIDATION_SHARE)  # one validation: 1 + 1 + 0 s, counted twice (it and the final one)
    assert not _validation_due(schedule, 1, 1, share, at=133.0) and _validation_due(schedule, 1, 1, share, at=134.0)


def test_a_budgeted_fold_of_a_cross_validation_is_validated_once_after_its_last_step(tmp_path, monkeypatch,
                                                                                      one_thread, fake_clock):
    from gctxseg.data.phantom import synthesize_dataset

    synthesize_dataset(tmp_path / "data", n=40, size=(32, 32), seed=0)  # each class in both folds
    monkeypatch.setattr(planning, "_seconds_per_step", lambda *args: 5.0)
    run = train(tiny_config(tmp_path / "data", tmp_path, epochs=None, batch_size=2, time_budget=3, num_samples=0,
                            folds=2, fold=0))  # its validation cadence planned
    log = json.loads((run / "log.json").read_text())
    validated = ["val log:" in log[k] for k in log if k.startswith("epoch:")]
    assert len(validated) >= 4 and validated[-1] and not any(validated[:-1])  # its final weights are scored
    assert (run / "best.pt").is_file() and (run / "curves.png").is_file()
    plan = json.loads((run / "plan.json").read_text())
    assert "after its last step only" in plan["reasons"]["val_every"]  # the plan says what the run does
