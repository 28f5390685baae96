"""A run's report scores the validation after its last step where best.pt holds those weights: the validation
images are predicted once, and the report is the one predicting best.pt again gives."""

from __future__ import annotations

import csv
import json

from conftest import tiny_config

from gctxseg.inference.predictor import KeptPrediction
from gctxseg.workflows import train_report


def _counted(monkeypatch) -> list:
    """The calls of evaluate_folder (best.pt predicted again) from now on, each still run."""
    evaluated, evaluate_folder = [], train_report.evaluate_folder

    def counted(*args, **kwargs):
        evaluated.append(args)
        return evaluate_folder(*args, **kwargs)

    monkeypatch.setattr(train_report, "evaluate_folder", counted)
    return evaluated


def _summary(run) -> dict:
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary.pop("seconds per image") > 0  # timed either way; the seconds differ
    return summary


def _rows(run):
    with open(run / "eval" / "metrics_per_image.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_the_report_scores_the_final_validation_instead_of_predicting_best_pt_again(phantom_dir, tmp_path,
                                                                                    monkeypatch, one_thread):
    evaluated = _counted(monkeypatch)
    run = train_report.train_and_report(tiny_config(phantom_dir, tmp_path, name="once", epochs=1, num_samples=0))
    assert evaluated == []  # one validation, so best.pt is the last weights: their prediction was scored
    assert (run / "report.html").is_file()
    scored, summary = _rows(run), _summary(run)
    assert len({row["file"] for row in scored}) == 6  # the phantom's validation images
    train_report.write_run_report(run, device="cpu", amp="off")  # best.pt predicted again, as `gctxseg report` does
    assert len(evaluated) == 1
    assert _rows(run) == scored
    assert _summary(run) == summary  # the same figures, the folder named, the device it was predicted on


def test_a_best_pt_of_other_weights_is_predicted_again(phantom_dir, tmp_path, monkeypatch, one_thread):
    evaluated = _counted(monkeypatch)
    monkeypatch.setattr(train_report, "_best_if_last", lambda run_dir: None)  # as after an earlier best epoch
    run = train_report.train_and_report(tiny_config(phantom_dir, tmp_path, name="other", epochs=1, num_samples=0))
    assert len(evaluated) == 1 and (run / "report.html").is_file()


def test_train_and_report_hands_train_the_final_prediction(phantom_dir, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(train_report, "train", lambda cfg, **kw: calls.append(kw) or tmp_path)
    monkeypatch.setattr(train_report, "write_report_or_warn", lambda *args: None)
    train_report.train_and_report(tiny_config(phantom_dir, tmp_path))
    assert calls[0]["then_report"] is True and isinstance(calls[0]["final_prediction"], KeptPrediction)
