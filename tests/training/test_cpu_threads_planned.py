"""Beside another busy program a CPU step can be faster on fewer threads: a budgeted run measures and plans them."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config

from gctxseg.core.runtime import cpu_threads
from gctxseg.training import planning, train
from gctxseg.training.planning import plan_training
from gctxseg.workflows import train_report


def _steps_by_threads(monkeypatch, seconds: dict[int, float]) -> list[int]:
    """Step timings that depend on torch's threads at the moment of timing; returns the threads of each timing."""
    timed: list[int] = []

    def timed_step(*args) -> float:
        timed.append(torch.get_num_threads())
        steps.append(args[-1])
        return seconds[torch.get_num_threads()]

    steps: list[int] = []
    timed_step.steps = steps

    monkeypatch.setattr(planning, "_seconds_per_step", timed_step)
    return timed


def _plan(time_budget_s: float | None, **given):
    return plan_training("unet", {"64x64": 400}, 400, 40, 1, 2, torch.device("cpu"), given=given,
                         model_options={"base_width": 4}, time_budget_s=time_budget_s)


def test_a_budgeted_plan_takes_fewer_threads_only_where_a_step_measures_faster(monkeypatch):
    with cpu_threads(2):
        timed = _steps_by_threads(monkeypatch, {2: 1.0, 1: 0.6})  # a core busy with another program
        busy = _plan(600.0)
        assert torch.get_num_threads() == 2  # planning leaves the process as it found it
        # one step each where they are far apart
        assert planning._seconds_per_step.steps[:2] == [1, 1]
        assert busy.cpu_threads == 1
        assert "by threads 2: 1.000, 1: 0.600 (one step each, 1.3x apart or more, measured)" in busy.reasons[
            "cpu_threads"]
        assert set(timed[2:]) == {1}  # the batch and the size are timed on the threads the run will use
        assert "cpu_threads" in busy.format()
        _steps_by_threads(monkeypatch, {2: 1.0, 1: 1.8})  # alone: half the threads, nearly twice the time
        assert _plan(600.0).cpu_threads == 2
        # a close call: the rest of each thread count's steps are timed, their medians compared (one step's time
        # varies beside a busy core)
        _steps_by_threads(monkeypatch, {2: 1.0, 1: 0.85})
        close = _plan(600.0)
        assert planning._seconds_per_step.steps[:6] == [1, 1, 1, 1, 1, 1] and close.cpu_threads == 1
        assert f"median of {planning.THREADS_TIMED_STEPS} steps: one each was within 1.3x" in close.reasons[
            "cpu_threads"]
        _steps_by_threads(monkeypatch, {2: 1.0, 1: 0.95})  # within THREADS_GAIN: the machine's threads kept
        assert _plan(600.0).cpu_threads == 2
        assert _plan(None).cpu_threads is None  # a run without a budget keeps torch's threads, unmeasured
        assert _plan(600.0, cpu_threads=1).cpu_threads == 1
        _steps_by_threads(monkeypatch, {2: 1.0, 1: 0.6})
        monkeypatch.setattr(planning, "TIMING_SHARE", 0.0)  # a share the first timing already spends
        assert _plan(600.0).cpu_threads == 1  # half the threads still timed: a choice needs both


@pytest.mark.slow
def test_a_budgeted_run_trains_and_reports_on_its_planned_threads_and_its_replay_too(phantom_dir, tmp_path,
                                                                                    monkeypatch, fake_clock):
    _steps_by_threads(monkeypatch, {2: 5.0, 1: 3.0})
    with cpu_threads(2):
        run = train(tiny_config(phantom_dir, tmp_path, name="budget", epochs=None, batch_size=2, time_budget=0.5,
                                num_samples=0))
        assert torch.get_num_threads() == 2
    assert json.loads((run / "plan.json").read_text())["cpu_threads"] == 1
    assert json.loads((run / "log.json").read_text())["train parameters"]["cpu threads"] == 1
    reported_on: list[int] = []
    monkeypatch.setattr(train_report, "write_report_or_warn", lambda *a: reported_on.append(torch.get_num_threads()))
    with cpu_threads(2):
        replay = train_report.train_and_report(tiny_config(
            phantom_dir, tmp_path, name="replay", epochs=None, batch_size=2, num_samples=0,
            schedule_from=str(run / "log.json")))
        assert torch.get_num_threads() == 2
    assert json.loads((replay / "log.json").read_text())["train parameters"]["cpu threads"] == 1
    assert reported_on == [1]  # its report predicts on the threads it trained with
