"""Run folders written by earlier 0.1.0 builds stay usable: a run's ``eval/`` from before output markers is evaluated
into again (a cv folder from before ``cv_run.json``: tests/test_issue30_cvrun.py)."""

from __future__ import annotations

import json
import shutil

from gctxseg.core.outputs import MARKER, written_by


def test_a_run_eval_folder_written_before_markers_is_evaluated_into_again(tiny_run, tmp_path):
    from gctxseg.workflows.train_report import write_run_report

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "eval" / MARKER).unlink()  # as builds before output markers left it
    before = json.loads((run / "eval" / "summary.json").read_text())
    write_run_report(run, device="cpu", amp="off")
    after = json.loads((run / "eval" / "summary.json").read_text())
    assert written_by(run / "eval") == "evaluate"
    assert after["per class"] == before["per class"] and after["Dice"] == before["Dice"]
