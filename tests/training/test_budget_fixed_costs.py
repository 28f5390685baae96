"""A budgeted run's fixed costs, the seconds that train nothing, kept small (docs/time-budget.md, rules 7 and 23): the
threads are chosen on the cheapest step, their two timings share one warmed-up model, and a run whose final
validation is its first keeps no time for the report to predict ``best.pt`` again."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from conftest import tiny_config

from gctxseg.core.runtime import cpu_threads
from gctxseg.inference.predictor import KeptPrediction
from gctxseg.training import planning, segmentation, train
from gctxseg.training.planning import MIN_BATCH, plan_training
from gctxseg.training.schedule import Deadline


def test_threads_are_chosen_on_the_smallest_batch_and_the_given_batch_is_timed_on_them(monkeypatch):
    timed: list[tuple[int, int]] = []

    def timed_step(model_name, options, channels, classes, size, batch, *rest) -> float:
        timed.append((torch.get_num_threads(), batch))
        return {2: 1.0, 1: 0.6}[torch.get_num_threads()] * batch  # a core busy with another program

    monkeypatch.setattr(planning, "_seconds_per_step", timed_step)
    with cpu_threads(2):
        plan = plan_training("unet", {"64x64": 400}, 400, 40, 1, 2, torch.device("cpu"), given={"batch_size": 8},
                             model_options={"base_width": 4}, time_budget_s=600.0)
    assert timed[:2] == [(2, MIN_BATCH), (1, MIN_BATCH)]  # not two steps of the given batch of 8 each way
    assert (1, 8) in timed[2:] and all(threads == 1 for threads, _ in timed[2:])  # the schedule's, on 1 thread
    assert plan.cpu_threads == 1 and plan.batch_size == 8
    assert f"per step of batch {MIN_BATCH} by threads 2: {MIN_BATCH * 1.0:.3f}, 1: {MIN_BATCH * 0.6:.3f}" in (
        plan.reasons["cpu_threads"])


def test_a_second_timing_of_one_model_size_and_batch_reuses_its_warm_model(monkeypatch, one_thread):
    built = []
    real_create = planning.create_model
    monkeypatch.setattr(planning, "create_model", lambda *a, **kw: built.append(a) or real_create(*a, **kw))
    kept: dict = {}
    args = ("unet", {"base_width": 4}, 1, 2, (32, 32))
    for threads in (2, 1):
        with cpu_threads(threads):
            assert planning._seconds_per_step(*args, 2, torch.device("cpu"), None, kept, 2) > 0
    assert len(built) == 1 and len(kept) == 1  # one model, built and warmed up once, timed at both thread counts
    planning._seconds_per_step(*args, 4, torch.device("cpu"), None, kept, 2)
    assert len(built) == 2 and len(kept) == 1  # another batch: a new model, and only the last one kept
    planning._seconds_per_step(*args, 4, torch.device("cpu"), None, None, 2)
    assert len(built) == 3  # no slot: nothing kept


def _deadline_estimate(report_predicts: bool) -> float:
    deadline = Deadline(budget_s=100.0, started=0.0, forward_s=1.0)
    cfg, data = SimpleNamespace(num_samples=4, batch_size=2), SimpleNamespace(val_set=[0] * 10)
    segmentation._estimate_after_last_step(deadline, cfg, data, 5, then_report=True, report_predicts=report_predicts)
    return deadline.reserve(0.0)


def test_the_reserve_keeps_the_reports_prediction_only_where_it_will_predict():
    # 5 validation batches of 1 s each: kept once for the final validation, once more for the report's prediction
    assert _deadline_estimate(report_predicts=True) - _deadline_estimate(report_predicts=False) == 5.0


def test_a_budgeted_run_whose_final_validation_is_predicted_keeps_no_time_for_the_report_to_predict_again(
        phantom_dir, tmp_path, monkeypatch, one_thread, fake_clock):
    monkeypatch.setattr(planning, "_seconds_per_step", lambda *args: 5.0)
    decided: list[bool] = []
    real_estimate = segmentation._estimate_after_last_step

    def estimate(*args, report_predicts: bool) -> None:
        decided.append(report_predicts)
        real_estimate(*args, report_predicts=report_predicts)

    monkeypatch.setattr(segmentation, "_estimate_after_last_step", estimate)
    for name, final in (("kept", KeptPrediction("cpu")), ("predicts", None)):
        train(tiny_config(phantom_dir, tmp_path, name=name, epochs=None, batch_size=2, time_budget=1, num_samples=0),
              then_report=True, final_prediction=final)
    # the first: its final validation, predicted as the report predicts, is its first, so best.pt holds its weights
    assert decided == [False, True]
