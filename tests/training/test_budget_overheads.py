"""What a budgeted run spends besides training stays small (training/driver.py, schedule.py, planning.py): the log
and checkpoints of unvalidated epochs within ``WRITE_SHARE``, the report after ``train()`` inside the deadline, no
last pass of a few steps, and the planner's step timings within ``TIMING_SHARE`` of the budget. The clock is a tick
clock (or a fake one) where the rule depends on it: the same steps on any CPU."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import tiny_config

from gctxseg.training import planning, segmentation, train
from gctxseg.training import schedule as schedule_module
from gctxseg.training.driver import WRITE_SHARE
from gctxseg.training.planning import TIMING_SHARE, plan_training
from gctxseg.training.schedule import Deadline, StepSchedule
from gctxseg.workflows import train_report

WRITE_S = 4.0  # what one checkpoint write costs on the tick clock


def test_unvalidated_epochs_are_written_within_their_share_and_every_epoch_is_logged(phantom_dir, tmp_path,
                                                                                    monkeypatch, one_thread,
                                                                                    fake_clock):
    monkeypatch.setattr(planning, "_seconds_per_step", lambda *args: 5.0)  # 1 epoch planned: the clock lengthens it
    written, real_save = [], segmentation.save_checkpoint

    def slow_save(state: dict, path) -> None:
        written.append((Path(path).name, state["epoch"]))
        fake_clock[0] += WRITE_S
        real_save(state, path)

    monkeypatch.setattr(segmentation, "save_checkpoint", slow_save)
    run = train(tiny_config(phantom_dir, tmp_path, epochs=None, batch_size=2, time_budget=3, num_samples=0,
                            val_every=1))
    log = json.loads((run / "log.json").read_text())
    epochs = sorted(int(k.split(":")[1]) for k in log if k.startswith("epoch:"))
    validated = {e for e in epochs if "val log:" in log[f"epoch:{e}"]}
    last = [e for name, e in written if name == "last.pt" and e >= 0]
    unvalidated = [e for e in last if e not in validated]
    assert epochs == list(range(len(epochs))) and len(epochs) >= 6  # every epoch in the log, written or not
    assert len(last) < len(epochs) and last[-1] == epochs[-1]  # some not written; the last always
    spent = log["train parameters"]["time budget"]["spent s"]
    assert len(unvalidated) * WRITE_S <= WRITE_SHARE * spent + WRITE_S  # within the share, plus the one that was due


def _stepped(monkeypatch, budget_s: float, per_epoch: int = 20) -> StepSchedule:
    """A clock schedule of 1-second steps run until it ends."""
    clock = [0.0]
    monkeypatch.setattr(schedule_module, "now", lambda: clock[0])
    schedule = StepSchedule(100, per_epoch, 0.0, 0.01, deadline=Deadline(budget_s=budget_s, started=0.0))
    schedule.pass_started()
    while True:
        schedule.revise(*schedule.propose(epoch_end=(schedule.done + 1) % per_epoch == 0))
        clock[0] += 1.0
        if schedule.step_taken():
            return schedule


def test_a_last_pass_of_a_few_steps_is_not_started(monkeypatch):
    # at step 1000, an epoch's last, 3 more steps fit: fewer than MIN_TAIL_SHARE of the epoch's 20
    few = _stepped(monkeypatch, 1003.5)
    assert few.done == 1000 and few.epochs == 50
    enough = _stepped(monkeypatch, 1008.5)  # 8 more fit: a last pass of 8 steps
    assert enough.done == 1008 and enough.epochs == 51


def test_a_budgeted_run_followed_by_its_report_keeps_time_for_it(phantom_dir, tmp_path, monkeypatch, one_thread,
                                                                 fake_clock):
    monkeypatch.setattr(planning, "_seconds_per_step", lambda *args: 5.0)  # 1 epoch planned: the clock lengthens it
    warmed = []
    monkeypatch.setattr(segmentation, "warm_up_figures", lambda: warmed.append(1))
    reserves = {}
    for then_report in (False, True):
        run = train(tiny_config(phantom_dir, tmp_path, name=f"report_{then_report}", epochs=None, batch_size=2,
                                time_budget=1, num_samples=0), then_report=then_report)
        reserves[then_report] = json.loads((run / "log.json").read_text())["train parameters"]["time budget"]
    # the report's estimate (a validation and REPORT_DRAWS curve draws, in wall seconds) adds to the reserve
    assert reserves[True]["reserve s"] > reserves[False]["reserve s"] > 0
    assert warmed == [1, 1]  # each clocked run warmed the figures once, before its clock measured anything
    train(tiny_config(phantom_dir, tmp_path, name="fixed", epochs=1, batch_size=2, num_samples=0))
    assert warmed == [1, 1]  # a run of fixed length does not

    calls = []
    monkeypatch.setattr(train_report, "train", lambda cfg, **kw: calls.append(kw) or tmp_path)
    monkeypatch.setattr(train_report, "write_report_or_warn", lambda *args: None)
    train_report.train_and_report(tiny_config(phantom_dir, tmp_path))
    assert [(c["given"], c["then_report"]) for c in calls] == [(None, True)]


def test_the_planners_step_timings_stop_at_their_share_of_a_time_budget(monkeypatch, one_thread):
    def timed_step(*args) -> float:  # a GPU-like cost: doubling the batch always halves the cost per image
        time.sleep(0.05)
        return 1.0

    monkeypatch.setattr(planning, "_seconds_per_step", timed_step)

    def plan(budget_s: float):
        return plan_training("unet", {"64x64": 400}, 400, 40, 1, 2, planning.torch.device("cpu"), given={},
                             model_options={"base_width": 4}, time_budget_s=budget_s)

    short = plan(1.0)  # its timings may cost 20 ms: the first one spends it
    assert short.batch_size == 2 and f"timing stopped at {TIMING_SHARE:.0%}" in short.reasons["batch_size"]
    long = plan(600.0)
    assert long.batch_size == 16 and "timing stopped" not in long.reasons["batch_size"]


def test_a_spent_timing_share_still_shrinks_the_input_by_the_pixels(monkeypatch, one_thread):
    def timed_step(model_name, options, channels, classes, size, batch, *rest) -> float:
        time.sleep(0.01)
        return 0.1 * size[0] * size[1] * batch / (256 * 512 * 2)  # a step's cost in proportion to its pixels

    monkeypatch.setattr(planning, "_seconds_per_step", timed_step)

    def plan(timing_share: float):
        monkeypatch.setattr(planning, "TIMING_SHARE", timing_share)
        return plan_training("unet", {"256x512": 400}, 400, 40, 1, 2, planning.torch.device("cpu"),
                             given={"batch_size": 2}, model_options={"base_width": 4}, time_budget_s=60.0)

    timed, untimed = plan(1.0), plan(1e-6)  # every size timed / only the first, the rest estimated
    assert timed.base_size == untimed.base_size
    assert timed.base_size[0] * timed.base_size[1] < 256 * 512 // 2  # shrunk twice or more to fit the images
    assert "(measured)" in timed.reasons["epochs"]
    assert "estimated by pixels from the step measured at 256x512" in untimed.reasons["epochs"]


def test_smaller_inputs_estimated_well_short_are_not_timed_and_the_plan_is_the_same(monkeypatch, one_thread):
    """A time budget shrinks the input until the schedule shows enough images. Sizes whose step, estimated by its
    pixels from a larger one's, falls well short are passed over untimed: with a step that has a fixed cost besides
    its pixels (as a real one), the plan is the one timing every size gives, from fewer timings, and the size
    chosen is timed."""
    timed: list[tuple[int, int]] = []

    def timed_step(model_name, options, channels, classes, size, batch, *rest) -> float:
        timed.append(tuple(size))
        return 0.02 + 0.1 * size[0] * size[1] * batch / (256 * 512 * 2)

    monkeypatch.setattr(planning, "_seconds_per_step", timed_step)

    def plan(shortfall: float):
        monkeypatch.setattr(planning, "UNTIMED_SHORTFALL", shortfall)
        timed.clear()
        planned = plan_training("unet", {"256x512": 400}, 400, 40, 1, 2, planning.torch.device("cpu"),
                                given={"batch_size": 2}, model_options={"base_width": 4}, time_budget_s=30.0)
        return planned, list(timed)

    shortfall = planning.UNTIMED_SHORTFALL
    (every, every_timed), (passed_over, few_timed) = plan(0.0), plan(shortfall)  # 0: every size timed
    assert passed_over.base_size == every.base_size and passed_over.epochs == every.epochs
    assert len(few_timed) < len(every_timed) and set(few_timed) < set(every_timed)
    assert few_timed[-1] == tuple(passed_over.base_size) and "(measured)" in passed_over.reasons["epochs"]


def test_the_budget_counts_from_the_commands_start(phantom_dir, tmp_path, monkeypatch, one_thread, fake_clock):
    """``gctxseg train`` passes its process's start: the imports before ``train()`` are inside the budget."""
    monkeypatch.setattr(planning, "_seconds_per_step", lambda *args: 5.0)
    logged = {}
    for start_up_s in (0.0, 40.0):
        run = train(tiny_config(phantom_dir, tmp_path, name=f"start_up_{start_up_s:g}", epochs=None, batch_size=2,
                                time_budget=2, num_samples=0), started=fake_clock[0] - start_up_s)
        logged[start_up_s] = json.loads((run / "log.json").read_text())["train parameters"]
    fresh, late = logged[0.0], logged[40.0]
    for run in (fresh, late):  # both end by the deadline, within a step
        assert run["time budget"]["spent s"] <= 120 + 5
    assert late["time budget"]["spent s"] >= 40  # the start-up is counted
    assert late["steps"] < 0.8 * fresh["steps"]  # and came out of its training

    from gctxseg import IMPORTED_AT, cli

    calls = []
    monkeypatch.setattr(train_report, "train", lambda cfg, **kw: calls.append(kw) or tmp_path)
    monkeypatch.setattr(train_report, "write_report_or_warn", lambda *args: None)
    flags = ["train", "--data-train", str(phantom_dir / "train" / "images"), "--time-budget", "1"]
    monkeypatch.setattr("sys.argv", ["gctxseg", *flags])
    called = time.perf_counter()
    cli.main()  # the command line: its clock started with the process
    cli.main(flags)  # called from Python: at the call
    assert calls[0]["started"] == IMPORTED_AT < called < calls[1]["started"] < time.perf_counter()
