"""After the race drops a configuration, the kept ones' fold 0 trains again for the share the dropped one freed."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import write_patients

from gctxseg.cli import main
from gctxseg.crossval import configurations, race, topup
from gctxseg.crossval.topup import plan_top_ups
from gctxseg.runs.checkpoint import load_checkpoint
from gctxseg.training import TrainConfig


def test_each_fold_0_is_brought_to_the_share_of_the_later_folds():
    seconds, skipped = plan_top_ups({"a": 60.0, "b": 30.0}, left_s=300.0, later_units=2, min_s=6.0)
    assert seconds == {"a": pytest.approx(37.5), "b": pytest.approx(67.5)}  # (300 + 90) / 4 = 97.5 s per unit
    assert skipped == {}
    seconds, skipped = plan_top_ups({"a": 90.0}, left_s=100.0, later_units=1, min_s=6.0)
    assert seconds == {} and "no top-up worth a restart" in skipped["a"]  # 5 s more on 90: not worth a warm-up


def test_a_raced_cv_tops_up_the_kept_fold_0_and_records_its_steps(tmp_path, monkeypatch, capsys):
    images = write_patients(tmp_path / "data", patients=4, scans=3, size=(48, 64))
    monkeypatch.setattr(race, "fold_dice", lambda config_dir, *_: {"unet": 0.8, "nnunet": 0.1}[config_dir.name])
    plan = configurations.plan_top_ups  # a clock that leaves 16 s to share, whatever this machine's speed
    monkeypatch.setattr(topup, "MIN_TOP_UP_SHARE", 0.0)  # 8 s is worth it here, however long fold 0 took
    monkeypatch.setattr(configurations, "MIN_FOLD_STEPS", 0)  # both race on this short budget
    monkeypatch.setattr(configurations, "plan_top_ups",
                        lambda spent, left, later, min_s: plan(spent, sum(spent.values()) + 16.0, later, min_s))
    assert main(["cv", str(images), "--folds", "2", "--group-regex", r"^(p\d+)_", "--img_f", ".png", "--models",
                 "unet", "nnunet", "--model-option", "base_width=4", "--base-size", "32", "32", "--batch-size", "4",
                 "--lr", "0.01", "--workers", "0", "--amp", "off", "--device", "cpu", "--time-budget", "0.4",
                 "--results", str(tmp_path / "runs"), "--name", "cv"]) == 0
    cv = tmp_path / "runs" / "cv"
    record = json.loads((cv / "race.json").read_text())
    assert record["kept"] == ["unet"] and list(record["top-up"]) == ["unet"]
    top_up = record["top-up"]["unet"]
    assert top_up["minutes"] == pytest.approx(8 / 60) and top_up["steps"] >= 1 and top_up["steps before"] >= 1
    assert "top-up after the race: unet fold 0 trains 0.13 min more" in capsys.readouterr().out
    fold_0 = load_checkpoint(cv / "unet" / "fold_0" / "last.pt", mmap=True)["config"]
    assert fold_0["init_weights"] == str((cv / "unet" / "race_fold_0" / "last.pt").resolve())
    assert fold_0["time_budget"] == pytest.approx(8 / 60)
    assert "0 top-up" in json.loads((cv / "unet" / "timing.json").read_text())
    summary = json.loads((cv / "cv_summary.json").read_text())
    assert summary["configurations"]["unet"]["steps per fold"][0] == top_up["steps"] + top_up["steps before"]
    assert summary["race"]["top-up"] == record["top-up"]
    # fold 0's arrays are the topped-up weights': the summary read them, none was predicted again
    assert json.loads((cv / "unet" / "cv_summary.json").read_text())["out-of-fold"]["predicted again"] == []
    # under a time budget a fold's report holds its scores, not its plots; the advice it gives draws them
    for fold in ("0", "1"):
        evaluation = cv / "unet" / f"fold_{fold}" / "eval"
        note = json.loads((evaluation / "summary.json").read_text())["figures not drawn"]
        assert note.endswith(f"gctxseg report {cv / 'unet' / f'fold_{fold}'} evaluates best.pt and draws them")
        assert (evaluation / "metrics_per_image.csv").is_file() and not list(evaluation.glob("*.png"))
        assert "Figures not drawn: a cv under a time budget" in (evaluation.parent / "report.html").read_text()
    assert main(["report", str(cv / "unet" / "fold_1"), "--device", "cpu", "--amp", "off"]) == 0
    assert (cv / "unet" / "fold_1" / "eval" / "worst_cases.png").is_file()


def test_a_top_up_keeps_the_raced_runs_input_size_and_batch(tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path / "unet" / "fold_0")
    raced = load_checkpoint(tiny_run / "last.pt", mmap=True)["config"]
    top_up = topup.prepare_top_up(TrainConfig(model="unet", lr=1e-3, folds=2), tmp_path / "unet", 30.0)
    # left open, a plan on the top-up's shorter share would shrink the input under the raced weights
    assert top_up.base_size == tuple(raced["base_size"]) and top_up.batch_size == raced["batch_size"]
    assert top_up.time_budget == pytest.approx(0.5) and not (tmp_path / "unet" / "fold_0").exists()
    assert top_up.init_weights == str((tmp_path / "unet" / "race_fold_0" / "last.pt").resolve())
