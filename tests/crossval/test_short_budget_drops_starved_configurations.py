"""A short ``gctxseg cv`` budget (crossval/configurations.py: ``MIN_FOLD_STEPS``): a configuration whose fold share
holds fewer optimiser steps than the floor, at its planned step time, is not trained, with one line saying so and
why; the others' shares grow with each one dropped. The step times are fakes: no model is timed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from conftest import tiny_config

from gctxseg.crossval import configurations
from gctxseg.crossval.configurations import MIN_FOLD_STEPS, _affordable_configurations

STEP_S = {"unet": 0.1, "gctx_unet": 1.0, "nnunet": 5.0}  # fake seconds per optimiser step


def _fake_plans(monkeypatch) -> list[str]:
    planned = []

    def plan_run(cfg):
        planned.append(cfg.model)
        return SimpleNamespace(seconds_per_step=STEP_S[cfg.model]), 40

    monkeypatch.setattr(configurations, "plan_run", plan_run)
    return planned


def _cv(tmp_path: Path, **overrides):
    return tiny_config(tmp_path, tmp_path / "runs", **{"folds": 5, "epochs": None, "model_options": {}, **overrides})


def test_configurations_below_the_steps_floor_are_dropped_fewest_steps_first_with_a_line(tmp_path, monkeypatch,
                                                                                        capsys):
    planned = _fake_plans(monkeypatch)
    # 10 min, 5 folds of 3 configurations: 34 s a fold (95% of the budget, 90% of a share training): unet 342
    # steps, gctx_unet 34, nnunet 6. nnunet goes first; then 51 s a fold: gctx_unet 51 steps, still short
    kept = _affordable_configurations(_cv(tmp_path, time_budget=10), tmp_path / "CV", ["gctx_unet", "unet", "nnunet"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert kept == ["unet"] and sorted(planned) == ["gctx_unet", "nnunet", "unet"]
    assert len(lines) == 2 and lines[0].startswith("nnunet: not trained") and lines[1].startswith("gctx_unet: not")
    assert "about 6 optimiser steps" in lines[0] and "about 51 optimiser steps" in lines[1]
    assert all(f"fewer than {MIN_FOLD_STEPS}" in line for line in lines) and lines[1].endswith("go to unet")


def test_a_budget_that_holds_the_floor_a_fixed_schedule_or_no_budget_drop_nothing(tmp_path, monkeypatch, capsys):
    _fake_plans(monkeypatch)
    models = ["gctx_unet", "unet", "nnunet"]
    long_min = 5 * 3 * MIN_FOLD_STEPS * 5.0 / 0.9 / 0.95 / 60  # minutes at which nnunet's folds hold the floor
    assert _affordable_configurations(_cv(tmp_path, time_budget=long_min * 1.01), tmp_path, models) == models
    assert _affordable_configurations(_cv(tmp_path, time_budget=10, epochs=1), tmp_path, models) == models
    assert _affordable_configurations(_cv(tmp_path, time_budget=10, steps=20), tmp_path, models) == models
    assert _affordable_configurations(_cv(tmp_path, time_budget=None), tmp_path, models) == models
    assert capsys.readouterr().out == ""


def test_the_last_configuration_and_one_with_a_fold_begun_are_kept_with_a_line(tmp_path, monkeypatch, capsys):
    _fake_plans(monkeypatch)
    (tmp_path / "CV" / "nnunet" / "fold_0").mkdir(parents=True)  # a cv run again: its begun folds go on
    kept = _affordable_configurations(_cv(tmp_path, time_budget=1), tmp_path / "CV", ["gctx_unet", "nnunet"])
    out = capsys.readouterr().out
    assert kept == ["nnunet"] and "gctx_unet: not trained" in out
    assert "nnunet: trained although a fold's share holds only about 2 steps" in out
