"""Issue 32: a time budget is a deadline (training/schedule.py). The clock is replaced by a tick clock (one second
per reading) where a test needs a machine of a known speed: the run then ends at the same step on any CPU."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace
from itertools import count

import pytest
import torch
from conftest import tiny_config

from gctxseg.runs.checkpoint import load_checkpoint
from gctxseg.training import TrainingInterrupted, driver, planning, segmentation, train
from gctxseg.training import pretrain as pretrain_module
from gctxseg.training import schedule as schedule_module
from gctxseg.training.schedule import Deadline, ScheduleState, StepSchedule

BUDGET_MIN = 0.75  # 45 ticks of the tick clock


@pytest.fixture
def tick_clock(monkeypatch):
    """Every clock reading is one second later than the one before: a step costs a few 'seconds'."""
    ticks = count()
    fake = lambda: float(next(ticks))  # noqa: E731
    for module in (schedule_module, driver, segmentation, pretrain_module):
        monkeypatch.setattr(module, "now", fake)


def _budgeted(phantom_dir, tmp_path, name="budget", **overrides):
    # epochs left open, so the planned schedule follows the clock; 14 training images, batch 2: 7 steps an epoch
    return tiny_config(phantom_dir, tmp_path, name=name, epochs=None, batch_size=2, time_budget=BUDGET_MIN,
                       num_samples=0, **overrides)


def _weights_equal(a, b) -> bool:
    wa, wb = (load_checkpoint(r / "last.pt")["model"] for r in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_a_pessimistic_plan_is_lengthened_and_the_run_ends_mid_epoch_by_its_deadline(
        phantom_dir, tmp_path, monkeypatch, tick_clock):
    monkeypatch.setattr(planning, "_seconds_per_step", lambda *args: 5.0)  # the planner fears slow steps: 1 epoch
    run = train(_budgeted(phantom_dir, tmp_path))
    assert json.loads((run / "plan.json").read_text())["epochs"] == 1
    log = json.loads((run / "log.json").read_text())
    header, ckpt = log["train parameters"], load_checkpoint(run / "last.pt")
    revisions, steps = header["schedule"], header["steps"]
    assert revisions[0] == [0, 7] and revisions[-1][1] > 7 and steps > 7  # lengthened beyond the planned epoch
    assert all(a[0] < b[0] for a, b in zip(revisions, revisions[1:]))
    # the deadline ended it: spent within the budget, inside an epoch, logged with its steps and validated
    assert header["time budget"]["spent s"] <= BUDGET_MIN * 60
    epochs = [k for k in log if k.startswith("epoch:")]
    last = log[epochs[-1]]
    assert steps % 7 != 0 and last["steps"] == steps % 7 and "val log:" in last
    assert ckpt["schedule"]["done"] == steps and ckpt["epoch"] + 1 == len(epochs) == ckpt["config"]["epochs"]
    assert ckpt["schedule"]["clock ended"] or steps == revisions[-1][1]
    assert (run / "best.pt").is_file() and load_checkpoint(run / "best.pt")["epoch"] <= ckpt["epoch"]


@pytest.mark.slow
def test_an_optimistic_plan_is_shortened_within_the_first_epoch(phantom_dir, tmp_path, monkeypatch, tick_clock):
    monkeypatch.setattr(planning, "_seconds_per_step", lambda *args: 1e-5)  # thousands of epochs planned
    run = train(_budgeted(phantom_dir, tmp_path))
    header = json.loads((run / "log.json").read_text())["train parameters"]
    assert header["schedule"][0][1] > 1000 and header["schedule"][-1][1] < 100
    assert header["steps"] <= header["schedule"][-1][1] and header["time budget"]["spent s"] <= BUDGET_MIN * 60


@pytest.mark.slow
def test_a_budgeted_run_is_replayed_exactly_from_its_record(phantom_dir, tmp_path, monkeypatch, tick_clock):
    monkeypatch.setattr(planning, "_seconds_per_step", lambda *args: 5.0)
    budgeted = train(_budgeted(phantom_dir, tmp_path))
    recorded = json.loads((budgeted / "log.json").read_text())["train parameters"]
    # the replay leaves the budget out: the steps, the revisions and the planned settings come from the record
    replay = train(tiny_config(phantom_dir, tmp_path, name="replay", epochs=None, batch_size=2, num_samples=0,
                               schedule_from=str(budgeted / "log.json")))
    replayed = json.loads((replay / "log.json").read_text())["train parameters"]
    assert replayed["steps"] == recorded["steps"] and replayed["schedule"] == recorded["schedule"]
    assert "time budget" not in replayed
    assert _weights_equal(budgeted, replay)


@pytest.mark.slow
def test_steps_train_exactly_that_many_with_a_partial_last_epoch(phantom_dir, tmp_path):
    run = train(tiny_config(phantom_dir, tmp_path, epochs=None, steps=10, batch_size=2, num_samples=0))
    log = json.loads((run / "log.json").read_text())
    ckpt = load_checkpoint(run / "last.pt")
    assert log["train parameters"]["steps"] == 10 and log["train parameters"]["schedule"] == [[0, 10]]
    assert ckpt["scheduler"]["last_epoch"] == 10 and ckpt["config"]["epochs"] == 2 == ckpt["epoch"] + 1
    assert "steps" not in log["epoch:0"] and log["epoch:1"]["steps"] == 3  # 7 + 3
    assert log["epoch:1"]["train log:"]["info"]["lr"] > 0 and "val log:" in log["epoch:1"]
    with pytest.raises(ValueError, match="give one"):
        train(tiny_config(phantom_dir, tmp_path, epochs=2, steps=10))


@pytest.mark.slow
def test_a_resumed_budgeted_run_has_what_its_budget_did_not_spend(phantom_dir, tmp_path, monkeypatch, tick_clock):
    monkeypatch.setattr(planning, "_seconds_per_step", lambda *args: 5.0)
    run = tmp_path / "budget"

    def interrupt_after_first_epoch():
        while not (run / "log.json").exists():
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_after_first_epoch, daemon=True).start()
    with pytest.raises(TrainingInterrupted):
        train(_budgeted(phantom_dir, tmp_path, workers=1))
    stopped = load_checkpoint(run / "last.pt")
    spent_before = stopped["schedule"]["spent s"]
    assert 0 < spent_before < BUDGET_MIN * 60
    resumed = train(tiny_config(phantom_dir, tmp_path, epochs=None, resume=str(run / "last.pt"), workers=0))
    header = json.loads((resumed / "log.json").read_text())["train parameters"]
    done = load_checkpoint(run / "last.pt")["schedule"]
    # the budget counts across the two runs: the resumed one ends by the first one's deadline
    assert spent_before < header["time budget"]["spent s"] <= BUDGET_MIN * 60
    assert done["done"] > stopped["schedule"]["done"] and header["schedule"][:1] == stopped["schedule"]["revisions"][:1]
    # unit: the deadline starts earlier by what was spent; --epochs on resume fixes the schedule (no clock)
    saved = ScheduleState(done=3, total=7, revisions=[[0, 7]], budget_s=30.0, spent_s=12.5)
    deadline = segmentation._deadline(replace(_budgeted(phantom_dir, tmp_path)), {"schedule": saved.to_json()},
                                      100.0, clocked=True)
    assert deadline.started == 87.5 and deadline.budget_s == BUDGET_MIN * 60
    fixed = StepSchedule(21, 7, 1.0, 0.01)
    fixed.load_state(ScheduleState.from_json(done), steps_done=0)
    assert fixed.total == 21 and fixed.revisions[-1] == [done["done"] + 1, 21] and not fixed.finished


def test_the_schedule_follows_the_clock_both_ways_and_replays(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(schedule_module, "now", lambda: clock[0])
    schedule = StepSchedule(100, 50, 0.0, 0.01, deadline=Deadline(budget_s=60.0, started=0.0))

    def step(seconds: float, epoch_end: bool = False) -> bool:
        total, end = schedule.propose(epoch_end)
        schedule.revise(total, end)
        clock[0] += seconds
        return schedule.step_taken()

    schedule.pass_started()
    for _ in range(10):
        step(0.1)  # fast: 600 steps fit
    step(0.1)
    assert schedule.total > 500
    while not step(1.0):  # then ten times slower: shortened, and the deadline ends it
        pass
    assert clock[0] <= 60.0 + 1.0 and schedule.done < 600
    replay = StepSchedule(100, 50, 0.0, 0.01, limit=schedule.done, revisions=schedule.revisions)
    factors = []
    while not replay.finished:
        replay.revise(*replay.propose(False))
        factors.append(replay.lr_factor(replay.done + 1))
        replay.step_taken()
    assert replay.revisions == schedule.revisions and replay.done == schedule.done


def test_warm_up_follows_the_first_total_not_early_re_estimates(monkeypatch):
    """The first steps pay for the loader's first batches and the kernels' set-up: a re-estimate after two slow
    steps may put the total at a fraction of the plan's. The warm-up keeps its planned length (capped at a tenth of
    the first total), so the learning rate rises step by step instead of jumping to its peak and back."""
    clock = [0.0]
    monkeypatch.setattr(schedule_module, "now", lambda: clock[0])
    schedule = StepSchedule(490, 35, 1.0, 0.01, deadline=Deadline(budget_s=360.0, started=0.0))
    schedule.pass_started()
    factors = []
    for seconds in [5.0, 5.0] + [0.7] * 40:  # two slow first steps, then the machine's pace
        schedule.revise(*schedule.propose(False))
        factors.append(schedule.lr_factor(schedule.done))
        clock[0] += seconds
        schedule.step_taken()
    assert min(t for _, t in schedule.revisions) < 100  # the clock's early estimate was far below the plan's
    assert factors[:35] == [(s + 1) / 35 for s in range(35)]  # rising, never at the peak before step 35
    assert schedule.warmup_steps == 35
    # a replay of the record warms up the same
    replay = StepSchedule(490, 35, 1.0, 0.01, limit=schedule.done, revisions=schedule.revisions)
    assert replay.warmup_steps == 35
    # a plan of few steps still caps its warm-up at a tenth of them
    assert StepSchedule(60, 35, 1.0, 0.01).warmup_steps == 6


def test_rank_0_decides_the_schedule_in_the_stop_agreement(tmp_path):
    import torch.distributed as dist

    from gctxseg.training.distributed import agree_across_ranks

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        stop = {"signal": None, "plan": (42, 1)}
        assert agree_across_ranks(stop, True, torch.device("cpu"))
        assert stop["plan"] == (42, 1) and stop["signal"] is None
        stop = {"signal": None}  # no schedule asked: nothing added
        assert agree_across_ranks(stop, True, torch.device("cpu")) and "plan" not in stop
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_budgeted_pretraining_follows_the_clock(tmp_path, tick_clock, one_thread):
    from gctxseg.training.pretrain import PretrainConfig, pretrain

    tiny = {"model": "unet", "model_options": {"base_width": 4}, "base_size": (32, 32), "batch_size": 2,
            "images_per_epoch": 4, "epochs": 1, "workers": 0, "amp": "off", "device": "cpu"}
    weights = pretrain(PretrainConfig(out=str(tmp_path / "pt"), seed=0, time_budget=0.25, **tiny))
    log = json.loads((tmp_path / "pt" / "log.json").read_text())
    header = log["pretrain parameters"]
    assert header["schedule"][0] == [0, 2] and header["schedule"][-1][1] > 2  # 1 epoch planned, more fit
    assert header["steps"] > 2 and load_checkpoint(weights)["pretraining"]["optimizer steps"] == header["steps"]


def test_the_lr_probe_never_trains_longer_than_the_schedule_the_user_fixed(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from gctxseg.crossval import lr_probe
    from gctxseg.training import TrainConfig

    plan = SimpleNamespace(lr=1e-4, base_size=(64, 64), batch_size=2, seconds_per_step=0.5)
    monkeypatch.setattr(lr_probe, "plan_run", lambda cfg: (plan, 16))  # 8 steps an epoch
    cfg = TrainConfig(data_train=str(tmp_path), folds=2, epochs=1, model="gctx_unet")
    probe = lr_probe.plan_probe(cfg, "gctx_unet", None)
    assert probe.steps == 8 and probe.fixed == "--epochs 1" and not probe.affordable  # not 125 epochs
    result = lr_probe.skip_probe(tmp_path / "gctx_unet", probe)
    assert result.lr == 1e-4 and "the schedule you fixed (--epochs 1)" in capsys.readouterr().out
    # a budget's share holding fewer steps than an epoch trains that many steps (3 candidates, 0.2 min)
    short = lr_probe.plan_probe(replace(cfg, epochs=None), "gctx_unet", 0.2)
    assert short.steps == int(0.2 * 60 * 0.9 / 3 / (0.5 * lr_probe.REAL_STEP_FACTOR)) < 8
