"""Every minute of a cv's time budget learns: each fold gets an equal share of what is left when it starts."""

from __future__ import annotations

import time

import numpy as np
import pytest

from gctxseg.core.files import atomic_write_json
from gctxseg.crossval import configurations
from gctxseg.training import TrainConfig


def _record_budgets(monkeypatch, seconds_per_fold: dict[int, float]) -> list[float]:
    """Replace fold training by a stand-in that records the minutes it was given and takes the given seconds."""
    given: list[float] = []

    def fold(cfg: TrainConfig, config_dir, k: int, final=None):
        given.append(cfg.time_budget)
        time.sleep(seconds_per_fold.get(k, 0.0))
        return config_dir / f"fold_{k}"

    monkeypatch.setattr(configurations, "train_fold", fold)
    monkeypatch.setattr(configurations, "MIN_UNIT_S", 0.01)
    return given


def test_a_fold_that_ends_early_gives_its_minutes_to_the_later_ones(tmp_path, monkeypatch):
    given = _record_budgets(monkeypatch, {})
    clock = configurations._CvClock(0.1)  # 5.7 s of training after the summary's share
    configurations._train_configuration(TrainConfig(model="unet", lr=1e-3), tmp_path, "unet", clock, None,
                                        range(3))
    seconds = [m * 60 for m in given]
    assert seconds[0] == pytest.approx(5.7 / 3, rel=0.05)
    assert seconds[0] < seconds[1] < seconds[2] == pytest.approx(5.7, rel=0.05)  # the unspent minutes move on


def test_a_fold_that_ran_over_takes_its_overrun_from_the_later_ones(tmp_path, monkeypatch):
    given = _record_budgets(monkeypatch, {0: 1.5})
    clock = configurations._CvClock(0.05)  # 2.85 s: fold 0 is given 0.95 s and takes 1.5
    configurations._train_configuration(TrainConfig(model="unet", lr=1e-3), tmp_path, "unet", clock, None,
                                        range(2), units_after=1)
    first, second = (m * 60 for m in given)
    assert first == pytest.approx(0.95, rel=0.05)
    assert second == pytest.approx((2.85 - 1.5) / 2, rel=0.1)  # what is left, shared with the unit to come


def test_a_cv_run_again_keeps_the_budget_it_was_given(tmp_path):
    for model in ("unet", "nnunet"):
        (tmp_path / model).mkdir()
    atomic_write_json(tmp_path / "unet" / "timing.json", {"0": {"wall s": 30.0, "cpu s": 55.0}})
    atomic_write_json(tmp_path / "nnunet" / "timing.json", {"lr probe": {"wall s": 6.0, "cpu s": 11.0}})
    spent = configurations._training_spent_s(tmp_path, ["unet", "nnunet"])
    assert spent == 36.0
    clock = configurations._CvClock(1.0, spent)
    assert clock.share(1) * 60 == pytest.approx(57.0 - 36.0, abs=0.5)


def test_the_cv_budget_counts_from_the_commands_start(tmp_path, monkeypatch):
    clock = configurations._CvClock(1.0, 0.0, started=time.perf_counter() - 20.0)  # 20 s of start-up before it
    assert clock.share(1) * 60 == pytest.approx(57.0 - 20.0, abs=0.5)

    from gctxseg import IMPORTED_AT, cli

    calls = []
    monkeypatch.setattr(configurations, "_run_cv", lambda *args: calls.append(args) or tmp_path)
    monkeypatch.setattr("sys.argv", ["gctxseg", "cv", str(tmp_path), "--folds", "2", "--time-budget", "1"])
    cli.main()
    assert calls[0][-1] == IMPORTED_AT  # the cv's clock starts where the command did


def test_no_budget_gives_no_share(tmp_path, monkeypatch):
    given = _record_budgets(monkeypatch, {})
    configurations._train_configuration(TrainConfig(model="unet", lr=1e-3, epochs=3), tmp_path, "unet",
                                        configurations._CvClock(None), None, range(2))
    assert given == [None, None]


def test_the_summary_keeps_what_its_measured_work_needs_not_a_flat_share(tmp_path, monkeypatch):
    clock = configurations._CvClock(10.0)
    assert clock.summary_s() == pytest.approx(30.0)  # SUMMARY_SHARE of 600 s until the summary's work is measured
    before = clock.ends_at
    rng = np.random.default_rng(0)
    target = (rng.random((4, 64, 64)) > 0.7).astype(np.int64)
    probs = np.stack([1 - target, target], axis=1).astype(np.uint8) * 255
    oof = {f"s{i}": {"probs": probs[i], "target": target[i]} for i in range(4)}
    read = []
    monkeypatch.setattr(configurations, "read_fold_oof", lambda config_dir, fold: read.append(fold) or oof)
    clock.scans, clock.configurations = 100, 1
    clock.measure_summary(tmp_path, 3, oof)
    assert read == [3]  # the fold's arrays were read back, as the summary reads them
    cost = clock.summary_cost
    assert min(cost.read_s, cost.surface_s, cost.choice_s) > 0
    one = cost.read_s + cost.surface_s + 2 * cost.choice_s  # its own summary, then ranked as the only candidate
    assert clock.summary_s() == pytest.approx(
        min(30.0, configurations.SUMMARY_SAFETY * 100 * one + configurations.SUMMARY_FIXED_S))
    assert clock.ends_at == pytest.approx(before + 30.0 - clock.summary_s(), abs=1e-6)  # the rest trains
    clock.measure_summary(tmp_path, 4, oof)
    assert read == [3] and clock.summary_cost is cost  # measured once
    # three configurations: three own summaries, then 7 candidates (3 alone, 4 ensembles) ranked
    three = 3 * (cost.read_s + cost.surface_s + cost.choice_s) + 7 * cost.choice_s
    assert cost.seconds(100, 3) == pytest.approx(100 * three)
    clock.configurations = 3
    assert clock.summary_s() == pytest.approx(
        min(30.0, configurations.SUMMARY_SAFETY * 100 * three + configurations.SUMMARY_FIXED_S))
    clock.summary_cost = configurations.SummaryCost(1.0, 1.0, 1.0)  # a slow summary: never more than the share
    assert clock.summary_s() == pytest.approx(30.0)


def test_before_a_race_every_configurations_fold_0_gets_the_same_share(tmp_path, monkeypatch):
    taken = _record_budgets(monkeypatch, {})
    spent = [0.0]  # each fold takes exactly the minutes it was given, on the clock the cv reads

    def fold(cfg: TrainConfig, config_dir, k: int, final=None):
        taken.append(cfg.time_budget)
        spent[0] += cfg.time_budget * 60
        return config_dir / f"fold_{k}"

    monkeypatch.setattr(configurations, "train_fold", fold)
    monkeypatch.setattr(configurations.time, "perf_counter", lambda: spent[0])
    clock = configurations._CvClock(15 / 0.95)  # 15 min of training: one for each of 3 x 5 folds
    models = ["gctx_unet", "unet", "nnunet"]
    configurations._train_first_folds(TrainConfig(model="unet", lr=1e-3, folds=5), tmp_path, models, clock,
                                      dict.fromkeys(models), range(1))
    assert taken == pytest.approx([1.0, 1.0, 1.0], rel=1e-6)  # before the fix: 1.0, 1.4 and 2.52 minutes
