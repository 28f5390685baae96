"""A checkpoint's ``"schedule"`` (training/schedule.py ``ScheduleState``): the keys it has always been written under,
in their order, read back into a schedule that goes on where it stopped; a checkpoint from before step schedules,
or a run without a budget, still resumes."""

from __future__ import annotations

from gctxseg.training import schedule as schedule_module
from gctxseg.training.schedule import Deadline, ScheduleState, StepSchedule


def test_a_clocked_schedule_is_saved_under_its_keys_and_resumes_where_it_stopped(monkeypatch):
    monkeypatch.setattr(schedule_module, "now", lambda: 50.0)
    schedule = StepSchedule(30, 10, 0.0, 0.01, deadline=Deadline(budget_s=120.0, started=20.0))
    schedule.done = 12
    schedule.revise(40, 0)
    saved = schedule.state().to_json()
    assert list(saved.items()) == [("done", 12), ("total", 40), ("limit", None), ("revisions", [[0, 30], [13, 40]]),
                                   ("clock ended", False), ("budget s", 120.0), ("spent s", 30.0)]
    assert ScheduleState.spent_in({"schedule": saved}) == 30.0
    resumed = StepSchedule(25, 10, 0.0, 0.01, deadline=Deadline(budget_s=120.0, started=0.0))
    resumed.load_state(ScheduleState.saved_in({"schedule": saved}), steps_done=0)
    assert (resumed.done, resumed.total, resumed.revisions) == (12, 40, [[0, 30], [13, 40]])


def test_a_fixed_run_and_a_checkpoint_from_before_step_schedules_resume():
    fixed = StepSchedule(21, 7, 1.0, 0.01)
    fixed.done = 7
    saved = fixed.state().to_json()
    assert saved["budget s"] is None and saved["spent s"] is None  # a run without a budget does not follow the clock
    assert ScheduleState.spent_in({"schedule": saved}) == 0.0 and ScheduleState.spent_in(None) == 0.0
    assert ScheduleState.saved_in({"epoch": 0}) is None
    older = StepSchedule(21, 7, 1.0, 0.01)
    older.load_state(None, steps_done=14)  # no "schedule": its lr scheduler's steps are the steps taken
    assert (older.done, older.total, older.revisions, older.clock_ended) == (14, 21, [[0, 21]], False)
