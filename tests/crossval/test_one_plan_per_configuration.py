"""A configuration's folds train on one plan: the first fold trained plans its size, batch and threads, the later
ones keep them (and say so in plan.json) instead of timing steps again."""

from __future__ import annotations

import json

import pytest
from conftest import write_patients

from gctxseg.crossval import configurations
from gctxseg.training import TrainConfig


def _cv_config(images, results, **settings) -> TrainConfig:
    return TrainConfig(data_train=str(images), img_f=".png", folds=3, group_regex=r"^(p\d+)_", model="unet",
                       model_options={"base_width": 4}, epochs=1, lr=1e-3, workers=0, amp="off", device="cpu",
                       results=str(results), **settings)


@pytest.mark.slow
def test_later_folds_keep_the_first_folds_size_batch_and_threads(tmp_path, monkeypatch):
    images = write_patients(tmp_path / "data", patients=6)
    seen: list[TrainConfig] = []
    train_fold = configurations.train_fold

    def recorded(cfg, config_dir, fold, final=None):
        seen.append(cfg)
        return train_fold(cfg, config_dir, fold, final)

    monkeypatch.setattr(configurations, "train_fold", recorded)
    cfg = _cv_config(images, tmp_path / "cv", cpu_threads=None)
    configurations._train_configuration(cfg, tmp_path / "cv", "unet", configurations._CvClock(None), None, range(3))
    plans = [json.loads((tmp_path / "cv" / "unet" / f"fold_{k}" / "plan.json").read_text()) for k in range(3)]
    assert seen[0].base_size is None and seen[0].batch_size is None  # the first fold plans
    for later in plans[1:]:
        assert later["base_size"] == plans[0]["base_size"] and later["batch_size"] == plans[0]["batch_size"]
        assert later["reasons"]["base_size"].startswith("fold 0's plan") and "base_size" not in later["given"]
    assert "fold 0's plan" not in plans[0]["reasons"]["base_size"]


@pytest.mark.slow
def test_settings_the_user_gave_stay_given(tmp_path):
    images = write_patients(tmp_path / "data", patients=6)
    cfg = _cv_config(images, tmp_path / "cv", base_size=(32, 64))
    config_dir = tmp_path / "cv" / "unet"
    configurations._train_configuration(cfg, tmp_path / "cv", "unet", configurations._CvClock(None), None, range(1))
    kept = configurations._kept_plan(cfg, config_dir, 0)
    assert "base_size" not in kept and kept["batch_size"] >= 1  # the user's size is theirs, the planned batch kept
    assert set(kept["plan_reasons"]) == {"batch_size"}
    assert configurations._kept_plan(cfg, config_dir, 1) == {}  # a fold with no checkpoint gives nothing


@pytest.mark.slow
def test_the_summary_runs_on_the_threads_the_last_fold_trained_on(tmp_path, monkeypatch):
    """Beside a busy core a second thread slows the summary down: it takes the threads the folds were planned (here
    given) with, not the machine's."""
    import torch

    images = write_patients(tmp_path / "data", patients=6)
    threads_seen = []
    summarize = configurations._summarize

    def recorded(*args, **kwargs):
        threads_seen.append(torch.get_num_threads())
        return summarize(*args, **kwargs)

    monkeypatch.setattr(configurations, "_summarize", recorded)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = _cv_config(images, tmp_path / "cv", cpu_threads=1)
        configurations.run_cv(cfg, models=["unet"], race=False)
        assert threads_seen == [1] and torch.get_num_threads() == 2  # and given back after it
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_after_a_race_that_dropped_none_the_later_folds_keep_fold_0s_plan(tmp_path):
    """The race split the budget over every configuration's folds, so where it dropped none the later folds' shares
    are fold 0's: they keep its plan rather than time steps for a plan of their own (plan_of=0). Where it dropped
    one (plan_of None), fold 1 plans on its larger share and folds 2-4 keep fold 1's."""
    images = write_patients(tmp_path / "data", patients=6)
    for plan_of, planner in ((0, 0), (None, 1)):
        cv_dir = tmp_path / f"cv_{plan_of}"
        cfg = _cv_config(images, cv_dir, cpu_threads=None)
        clock = configurations._CvClock(None)
        configurations._train_configuration(cfg, cv_dir, "unet", clock, None, range(1))  # fold 0, the race's
        configurations._train_configuration(cfg, cv_dir, "unet", clock, None, range(1, 3), plan_of=plan_of)
        plans = [json.loads((cv_dir / "unet" / f"fold_{k}" / "plan.json").read_text()) for k in range(3)]
        assert "'s plan" not in plans[planner]["reasons"]["base_size"]  # the one that planned
        for k in set(range(3)) - {0, planner}:
            assert plans[k]["reasons"]["base_size"].startswith(f"fold {planner}'s plan")
            assert plans[k]["base_size"] == plans[planner]["base_size"]
