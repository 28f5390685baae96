"""gctxseg cv chooses a configuration: the same folds for each, the tie rule, the lr probe on fold 0, the race
under a budget."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from conftest import write_patients
from PIL import Image

from gctxseg.cli import main
from gctxseg.crossval.configurations import TIE_DICE, choose_configuration


@pytest.mark.slow
def test_cv_compares_configurations_on_the_same_folds_and_predict_uses_the_choice(tmp_path, capsys):
    images = write_patients(tmp_path / "data")
    code = main(["cv", str(images), "--folds", "2", "--group-regex", r"^(p\d+)_", "--img_f", ".png",
                 "--models", "unet", "nnunet", "--model-option", "base_width=4", "--base-size", "32", "64",
                 "--epochs", "1", "--batch-size", "2", "--lr", "0.01", "--workers", "0", "--amp", "off",
                 "--device", "cpu", "--results", str(tmp_path / "runs"), "--name", "cv"])
    assert code == 0
    cv = tmp_path / "runs" / "cv"
    summary = json.loads((cv / "cv_summary.json").read_text())
    names = [r["name"] for r in summary["ranking"]]
    assert sorted(names) == ["nnunet", "unet", "unet+nnunet"]  # each one and their ensemble
    dice = [r["mean dice"] for r in summary["ranking"]]
    assert dice == sorted(dice, reverse=True) and summary["ranking"][0]["margin to best"] == 0
    best = dice[0]
    tied = [r for r in summary["ranking"] if r["mean dice"] >= best - TIE_DICE]
    assert summary["chosen"]["name"] in [r["name"] for r in tied]
    for model in ("unet", "nnunet"):
        assert summary["configurations"][model]["steps per fold"] == [3, 3]  # 6 scans per fold, batch 2
        assert summary["configurations"][model]["cpu s"] > 0
    # the folds are written in nnU-Net's shape, and both configurations trained on them
    splits = json.loads((cv / "splits_final.json").read_text())
    assert len(splits) == 2 and all(not set(s["train"]) & set(s["val"]) for s in splits)
    plan = json.loads((cv / "nnunet" / "fold_0" / "plan.json").read_text())
    assert plan["model_options"]["patch_size"] == [32, 64]
    out = capsys.readouterr().out
    assert "chosen: " + summary["chosen"]["name"] in out and "margin" in out
    # predict --weights CV: the chosen configuration's folds and post-processing
    from gctxseg.inference.predictor import ensemble_members

    files, post = ensemble_members(cv)
    members = summary["chosen"]["members"]
    assert sorted({f.parent.parent.name for f in files}) == sorted(members) and len(files) == 2 * len(members)
    assert post == cv / "postprocessing.json"
    source = tmp_path / "new"
    source.mkdir()
    Image.fromarray(np.zeros((30, 60), np.uint8)).save(source / "a.png")
    assert main(["predict", "--weights", str(cv), "--source", str(source), "--out", str(tmp_path / "out"),
                 "--device", "cpu", "--amp", "off"]) == 0
    # the same choice is made again from the folder alone, and a forced tie goes to the cheaper candidate
    again = choose_configuration(cv, ["unet", "nnunet"])
    assert again.chosen.to_json() == summary["chosen"]


def test_the_tie_rule_takes_the_cheaper_candidate(tmp_path, monkeypatch):
    from gctxseg.crossval import configurations

    scores = {("a",): 0.700, ("b",): 0.703, ("a", "b"): 0.704}
    monkeypatch.setattr(configurations, "_score_candidate", lambda c, *_: configurations._Candidate(
        c, [scores[c]], [scores[c]], scores[c], configurations.choose_postprocessing([], [], 2)))
    costs = {"a": 100.0, "b": 50.0}
    monkeypatch.setattr(configurations, "_configuration_cost", lambda d: {
        "cpu_s": costs[d.name], "wall_s": 1.0, "steps_per_fold": [1], "epochs_per_fold": [1]})
    monkeypatch.setattr(configurations, "_load_oof", lambda d, names: [])
    for model in ("a", "b"):
        (tmp_path / model / "oof").mkdir(parents=True)
        (tmp_path / model / "cv_summary.json").write_text(json.dumps(
            {"folds": 2, "pooled out-of-fold": {}, "pooled out-of-fold post-processed": {}, "per fold": {},
             "fold mean": {}, "classes": {}, "postprocessing": {"evidence": {}}, "images": 0, "model": model}))
    monkeypatch.setattr(configurations, "format_cv_summary", lambda s: "")
    monkeypatch.setattr(configurations, "_targets", lambda cv_dir, model, names: (2, {"0": 0, "255": 1}, []))
    summary = configurations.choose_configuration(tmp_path, ["a", "b"])
    # all three are within TIE_DICE of the best (0.704): one member beats two, then the cheaper CPU time
    assert summary.chosen.name == "b"


@pytest.mark.slow
def test_cv_probes_the_lr_on_fold_0_and_trains_every_fold_at_the_chosen_one(tmp_path, monkeypatch, capsys):
    from gctxseg.crossval import lr_probe
    from gctxseg.runs.checkpoint import load_checkpoint

    # the U-Net family is not probed by default: given candidates here, it is probed as cheaply as a test allows
    monkeypatch.setitem(lr_probe.PROBE_CANDIDATES, "cnn", (1e-3, 3e-2))
    monkeypatch.setattr(lr_probe, "PROBE_IMAGES", 12)  # 2 epochs of the 6 training scans ...
    monkeypatch.setattr(lr_probe, "PROBE_MIN_IMAGES", 4)  # ... but --epochs 1 caps a candidate at one (3 steps)
    images = write_patients(tmp_path / "data")
    args = ["cv", str(images), "--folds", "2", "--group-regex", r"^(p\d+)_", "--img_f", ".png", "--models", "unet",
            "--model-option", "base_width=4", "--base-size", "32", "64", "--epochs", "1", "--batch-size", "2",
            "--workers", "0", "--amp", "off", "--device", "cpu", "--results", str(tmp_path / "runs"), "--name", "cv"]
    assert main(args) == 0
    config = tmp_path / "runs" / "cv" / "unet"
    record = json.loads((config / "lr_probe.json").read_text())
    # the planned 5e-4 is always a candidate; each trained 3 steps (the one epoch the user fixed, not the 2 the
    # probe would take) on fold 0 and was scored there
    assert set(record["held-out dice"]) == {"0.0005", "0.001", "0.03"}
    assert set(record["steps"].values()) == {3} and record["fold"] == 0
    scores = {float(lr): d for lr, d in record["held-out dice"].items()}
    for lr, dice in record["held-out dice"].items():  # the final validation's foreground Dice, from the run's log
        log = json.loads((config / "lr_probe" / f"lr_{lr}" / "log.json").read_text())
        assert dice == pytest.approx(log["epoch:0"]["val log:"]["info"]["Dice"][0])
    assert record["chosen"] == lr_probe._pick(scores, 5e-4)
    for fold in (0, 1):
        assert load_checkpoint(config / f"fold_{fold}" / "last.pt")["config"]["lr"] == record["chosen"]
        plan = json.loads((config / f"fold_{fold}" / "plan.json").read_text())  # the probe's lr, not the user's
        assert "lr" not in plan["given"] and plan["reasons"]["lr"].startswith("gctxseg cv's lr probe on fold 0")
    timing = json.loads((config / "timing.json").read_text())
    assert set(timing) == {"lr probe", "0", "1"} and timing["lr probe"]["cpu s"] > 0
    assert f"chosen lr {record['chosen']:g}" in capsys.readouterr().out
    summary = json.loads((tmp_path / "runs" / "cv" / "cv_summary.json").read_text())
    assert summary["configurations"]["unet"]["lr probe"] == record  # and the ranking names it
    # run again into the same folder: the probe's record is read, nothing is trained again
    stamp = (config / "lr_probe.json").stat().st_mtime_ns
    assert main(args + ["--exist-ok"]) == 0
    assert (config / "lr_probe.json").stat().st_mtime_ns == stamp and "lr probe: lr" not in capsys.readouterr().out
    # --lr given: no probe
    assert not lr_probe.needs_probe("unet", __import__("gctxseg.training", fromlist=["TrainConfig"]).TrainConfig(
        data_train=str(images), lr=0.01))


def test_the_probe_keeps_the_planned_lr_unless_another_clearly_beats_it(tmp_path):
    from gctxseg.crossval.lr_probe import PROBE_IMAGES, PROBE_TIE_DICE, _final_foreground_dice, _pick, probe_steps

    # a run's log lists foreground Dice per class: the last validation's mean is the candidate's score
    (tmp_path / "log.json").write_text(json.dumps({"epoch:0": {"val log:": {"info": {"Dice": [0.9, 0.9]}}},
                                                   "epoch:1": {"val log:": {"info": {"Dice": [0.4, 0.6]}}}}))
    assert _final_foreground_dice(tmp_path) == pytest.approx(0.5)

    assert _pick({1e-4: 0.50, 2e-3: 0.50 + PROBE_TIE_DICE / 2}, 1e-4) == 1e-4
    assert _pick({1e-4: 0.50, 2e-3: 0.60, 5e-4: 0.55}, 1e-4) == 2e-3
    assert _pick({1e-4: 0.0, 2e-3: 0.0}, 1e-4) == 1e-4  # nothing learnt: the planned one
    # no budget: PROBE_IMAGES worth of optimiser steps (batch 4)
    assert probe_steps(0.5, None, 3, 4) == -(-PROBE_IMAGES // 4)
    # 3 min over 3 candidates, 90% of it stepping, at 1.5x the planner's 0.2 s per step: 180 steps (not 8 epochs)
    assert probe_steps(0.2, 3.0, 3, 4) == 180


def test_a_probe_too_short_to_separate_the_rates_gives_its_share_back(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from gctxseg.crossval import configurations
    from gctxseg.crossval.lr_probe import PROBE_MIN_IMAGES, ProbePlan
    from gctxseg.training import TrainConfig

    plan = SimpleNamespace(lr=1e-4, base_size=(64, 64), batch_size=2)
    # a probe's images grow with its minutes: 100 per minute
    monkeypatch.setattr(configurations, "plan_probe", lambda cfg, model, minutes: ProbePlan(
        model, plan, [1e-4, 2e-3], 1, int(minutes * 100), minutes))
    models = ["gctx_unet", "unet"]  # the transformer is probed, the U-Net is not
    cfg = TrainConfig(data_train=str(tmp_path), folds=5, time_budget=80)
    fold_budget, probes = configurations._plan_probes(cfg, tmp_path / "kept", models)
    assert fold_budget == pytest.approx(80 * 0.95 / 11) and probes["gctx_unet"].images >= PROBE_MIN_IMAGES
    assert "unet" not in probes
    cfg = replace(cfg, time_budget=60)  # 5.2 min per share: 518 images, fewer than the floor
    fold_budget, probes = configurations._plan_probes(cfg, tmp_path / "skipped", models)
    assert fold_budget == pytest.approx(60 * 0.95 / 10)  # the share went back to the folds
    record = json.loads((tmp_path / "skipped" / "gctx_unet" / "lr_probe.json").read_text())
    assert record["chosen"] == 1e-4 and "fewer than" in record["skipped"]
    assert "probe was skipped" in configurations.probe_reason(probes["gctx_unet"])
    # resumed: the record decides, nothing is planned again
    monkeypatch.setattr(configurations, "plan_probe", lambda *a: pytest.fail("planned again"))
    assert configurations._plan_probes(cfg, tmp_path / "skipped", models)[0] == pytest.approx(60 * 0.95 / 10)
    assert configurations._plan_probes(replace(cfg, lr=1e-3), tmp_path / "other", models)[1] == {}  # --lr given


@pytest.mark.slow
def test_under_a_budget_a_configuration_far_behind_after_fold_0_stops_and_its_time_goes_to_the_others(
        tmp_path, monkeypatch, capsys):
    from gctxseg.crossval import configurations, race
    from gctxseg.runs.checkpoint import load_checkpoint

    scored = []
    fold_0 = {"unet": 0.50, "nnunet": 0.35}  # nnunet 0.15 behind: more than the margin

    def fold_dice(config_dir, fold, *args):
        scored.append((config_dir.name, fold))
        return fold_0[config_dir.name]

    monkeypatch.setattr(race, "fold_dice", fold_dice)
    images = write_patients(tmp_path / "data")
    args = ["cv", str(images), "--folds", "2", "--group-regex", r"^(p\d+)_", "--img_f", ".png",
            "--models", "unet", "nnunet", "--model-option", "base_width=4", "--base-size", "32", "64",
            "--epochs", "1", "--batch-size", "2", "--lr", "0.01", "--time-budget", "2", "--workers", "0",
            "--amp", "off", "--device", "cpu", "--results", str(tmp_path / "runs"), "--name", "cv"]
    assert main(args) == 0
    cv = tmp_path / "runs" / "cv"
    record = json.loads((cv / "race.json").read_text())
    assert scored == [("unet", 0), ("nnunet", 0)] and record["kept"] == ["unet"]
    assert set(record["dropped"]) == {"nnunet"} and "0.150 below unet's 0.500" in record["dropped"]["nnunet"]
    # nnunet trained fold 0 only; unet's fold 1 had the minutes left (nnunet's share too), fold 0 about an even share
    assert not (cv / "nnunet" / "fold_1").exists()
    share = load_checkpoint(cv / "unet" / "fold_0" / "last.pt")["config"]["time_budget"]
    later = load_checkpoint(cv / "unet" / "fold_1" / "last.pt")["config"]["time_budget"]
    assert share == pytest.approx(2 * 0.95 / 4, rel=0.1) and later > 1.5 * share
    summary = json.loads((cv / "cv_summary.json").read_text())
    assert [r["name"] for r in summary["ranking"]] == ["unet"] and summary["chosen"]["name"] == "unet"
    assert summary["race"] == record and "race after fold 0" in capsys.readouterr().out
    # resumed: the race on record holds, nothing is scored or trained again; --summary-only leaves nnunet out
    stamp = (cv / "unet" / "fold_1" / "last.pt").stat().st_mtime_ns
    assert main(args + ["--exist-ok"]) == 0
    assert len(scored) == 2 and (cv / "unet" / "fold_1" / "last.pt").stat().st_mtime_ns == stamp
    assert main(args + ["--summary-only"]) == 0
    assert [r["name"] for r in json.loads((cv / "cv_summary.json").read_text())["ranking"]] == ["unet"]
    # no race without a budget to share out, or with --no-race, or with one configuration
    cfg = configurations.TrainConfig(data_train=str(images), folds=2, time_budget=2)
    fresh = tmp_path / "fresh"
    assert configurations._races(cfg, fresh, ["unet", "nnunet"], race=True)
    assert not configurations._races(replace(cfg, time_budget=None), fresh, ["unet", "nnunet"], race=True)
    assert not configurations._races(cfg, fresh, ["unet", "nnunet"], race=False)
    assert not configurations._races(cfg, fresh, ["unet"], race=True)


@pytest.mark.slow
def test_the_race_scores_fold_0_on_its_held_out_scans_with_the_final_weights(tmp_path):
    from gctxseg.crossval.folds import fold_dice, summarize_cv

    images = write_patients(tmp_path / "data")
    assert main(["cv", str(images), "--folds", "2", "--group-regex", r"^(p\d+)_", "--img_f", ".png",
                 "--models", "unet", "--model-option", "base_width=4", "--base-size", "32", "64", "--epochs", "1",
                 "--batch-size", "2", "--lr", "0.01", "--workers", "0", "--amp", "off", "--device", "cpu",
                 "--results", str(tmp_path / "runs"), "--name", "cv"]) == 0
    config = tmp_path / "runs" / "cv" / "unet"
    per_fold = summarize_cv(config, device="cpu", amp="off").per_fold
    for fold in (0, 1):  # the figure the summary gives that fold, from that fold's weights alone
        assert fold_dice(config, fold, "cpu", "off") == pytest.approx(per_fold[str(fold)]["dice"][0])
