"""The training plan, patient-wise folds in training, `gctxseg cv`, fold ensembles and their one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import write_pair, write_patients
from PIL import Image

from gctxseg.cli import main
from gctxseg.training import TrainConfig, planning, train
from gctxseg.training.planning import plan_training, planned_size


def test_planned_size_keeps_the_aspect_within_the_budget_and_the_stride():
    assert planned_size((496, 1024), 32) == (256, 512)  # the wide AMD B-scans
    h, w = planned_size((496, 768), 16)  # Duke DME
    assert h % 16 == 0 and w % 16 == 0 and h * w <= 256 * 512 * 1.05
    assert abs(w / h - 768 / 496) < 0.05
    assert planned_size((64, 80), 16) == (64, 80)  # never enlarged


def test_given_settings_win_and_the_seed_flags_are_reproduced(monkeypatch):
    # the batch is planned against the machine's memory: fix it, so the test does not depend on the machine
    monkeypatch.setattr(planning, "_memory_budget", lambda device: 8 << 30)
    seed = {"base_size": (224, 224), "batch_size": 16, "lr": 0.002, "epochs": 300, "weight_decay": 1e-4,
            "warmup_epochs": 1.0}
    plan = plan_training("gctx_unet", {"496x768": 10}, 100, 20, 1, 3, torch.device("cpu"), given=seed)
    assert (plan.base_size, plan.batch_size, plan.lr, plan.epochs) == ((224, 224), 16, 0.002, 300)
    assert plan.weight_decay == 1e-4 and sorted(plan.given) == sorted(seed)
    open_plan = plan_training("gctx_unet", {"496x768": 10}, 100, 20, 1, 3, torch.device("cpu"), given={})
    cnn = plan_training("unet", {"496x768": 10}, 100, 20, 1, 3, torch.device("cpu"), given={})
    assert open_plan.lr < cnn.lr  # the transformer family takes a lower rate (lr probe, planning.py)
    assert open_plan.base_size != (224, 224) and 2 <= open_plan.batch_size <= 16
    assert cnn.model_options == {"base_width": 32}
    # augmentation per family (docs/real-oct.md), a given one wins
    assert (open_plan.augment, cnn.augment) == ("strong", "standard") and "augment" in open_plan.format()
    given = plan_training("gctx_unet", {"496x768": 10}, 100, 20, 1, 3, torch.device("cpu"),
                          given={"augment": "standard"})
    assert given.augment == "standard" and "augment" in given.given


def _fold_config(images, results, **overrides):
    base = dict(data_train=str(images), img_f=".png", mask_f=".png", folds=2, fold=0, group_regex=r"^(p\d+)_",
                model="unet", model_options={"base_width": 4}, epochs=1, batch_size=2, lr=0.01, workers=0,
                amp="off", device="cpu", results=str(results), num_samples=1)
    return TrainConfig(**{**base, **overrides})


def test_a_fold_trains_on_other_patients_at_an_aspect_true_planned_size(tmp_path):
    images = write_patients(tmp_path / "data")
    run = train(_fold_config(images, tmp_path / "runs", base_size=None))
    log = json.loads((run / "log.json").read_text())
    params = log["train parameters"]
    assert params["input size"] == [32, 64]  # 30x60 kept at its aspect, in multiples of 16; not 224x224
    assert "base_size" in params["planned"] and "lr" not in params["planned"]
    assert params["fold"]["folds"] == 2 and params["fold"]["splits"].startswith("--group-regex")
    plan = json.loads((run / "plan.json").read_text())
    assert plan["base_size"] == [32, 64] and plan["foreground_share"] == pytest.approx(1 / 3)
    from gctxseg.data.splits import fold_files

    train_pairs, val_pairs, _ = fold_files(images, ".png", ".png", 2, 0, r"^(p\d+)_")
    assert not {p.name[:3] for p in train_pairs} & {p.name[:3] for p in val_pairs}
    assert len(val_pairs) == 6 and log["epoch:0"]["val log:"]["info"]["Dice"]


def test_cv_writes_out_of_fold_summary_and_an_ensemble_predicts_at_the_original_size(tmp_path, capsys):
    images = write_patients(tmp_path / "data")
    code = main(["cv", str(images), "--folds", "2", "--group-regex", r"^(p\d+)_", "--img_f", ".png",
                 "--model", "unet", "--model-option", "base_width=4", "--base-size", "32", "64", "--epochs", "1",
                 "--batch-size", "2", "--lr", "0.01", "--workers", "0", "--amp", "off", "--device", "cpu",
                 "--results", str(tmp_path / "runs"), "--name", "cv"])
    assert code == 0
    cv = tmp_path / "runs" / "cv"
    assert json.loads((cv / "cv_summary.json").read_text())["chosen"]["members"] == ["unet"]  # --model: one
    config = cv / "unet"
    summary = json.loads((config / "cv_summary.json").read_text())
    assert summary["folds"] == 2 and summary["images"] == 12 and len(list((config / "oof").glob("*.npz"))) == 12
    assert set(summary["per fold"]) == {"0", "1"} and len(summary["pooled out-of-fold"]["dice"]) == 1
    assert len(summary["pooled out-of-fold"]["nsd"]) == 1 and len(summary["fold mean"]["nsd"]) == 1
    assert (config / "postprocessing.json").is_file() and (cv / "cv_report.html").is_file()
    assert "pooled out-of-fold" in capsys.readouterr().out
    # the CV folder is an ensemble for predict: masks come back at the images' own size
    source = tmp_path / "new"
    source.mkdir()
    Image.fromarray(np.zeros((30, 60), np.uint8)).save(source / "a.png")
    assert main(["predict", "--weights", str(cv), "--source", str(source), "--out", str(tmp_path / "out"),
                 "--device", "cpu", "--amp", "off"]) == 0
    masks = list((tmp_path / "out" / "masks").glob("a*.png"))
    assert len(masks) == 1 and np.asarray(Image.open(masks[0])).shape == (30, 60)
    from gctxseg.inference.predictor import EnsemblePredictor, load_predictor

    predictor = load_predictor(cv, "cpu", "off")
    assert isinstance(predictor, EnsemblePredictor) and len(predictor.members) == 2
    image = predictor.read(source / "a.png")
    mean = (predictor.members[0].predict_proba(image) + predictor.members[1].predict_proba(image)) / 2
    assert torch.allclose(predictor.predict_proba(image), mean)


def test_an_ensemble_of_different_class_maps_is_one_line(tmp_path, capsys):
    images = write_patients(tmp_path / "a")
    run_a = train(_fold_config(images, tmp_path / "runs", name="a"))
    other = tmp_path / "b"
    for i in range(4):
        mask = np.zeros((30, 60), np.uint8)
        mask[2:9, 2:9], mask[15:20, 30:40] = 128, 255  # three classes
        write_pair(other, f"p{i:02d}_b00", np.full((30, 60), 90, np.uint8), mask)
    run_b = train(_fold_config(other / "images", tmp_path / "runs", name="b"))
    source = tmp_path / "new"
    source.mkdir()
    Image.fromarray(np.zeros((30, 60), np.uint8)).save(source / "a.png")
    code = main(["predict", "--weights", str(run_a / "best.pt"), str(run_b / "best.pt"), "--source", str(source),
                 "--out", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "an ensemble needs checkpoints trained on the same classes" in err[0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--group-regex", r"^(q\d+)_"], "p00_b00.png: --group-regex"),
        (["--group-regex", r"^(p\d+)_", "--folds", "5"], "4 group(s)"),
    ],
)
def test_fold_input_errors_are_one_line(tmp_path, capsys, extra, message):
    images = write_patients(tmp_path / "data")
    args = ["train", "--data-train", str(images), "--img_f", ".png", "--folds", "2", "--model", "unet",
            "--results", str(tmp_path / "runs"), *extra]
    assert main(args) == 1  # the data (names, groups) is wrong: exit 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_splits_json_naming_missing_files_is_one_line(tmp_path, capsys):
    images = write_patients(tmp_path / "data")
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps([{"train": ["p00_b00", "p09_b09"], "val": ["p01_b00"]}] * 2))
    assert main(["train", "--data-train", str(images), "--img_f", ".png", "--folds", "2", "--splits", str(splits),
                 "--model", "unet", "--results", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "p09_b09" in err[0] and "splits.json" in err[0]


def test_cv_scores_pool_dice_and_average_surface_metrics_per_image():
    from gctxseg.metrics import score_predictions

    target = np.zeros((32, 32), np.int64)
    target[8:16, 8:16] = 1
    shifted = np.roll(target, 6, axis=1)  # 8 x 8 square moved 6 px: 2 of 8 columns overlap
    scores = score_predictions([target, shifted], [target, target], 2)
    assert scores["images"] == 2
    assert scores["dice"][0] == pytest.approx((2 * (64 + 16)) / (128 + 128))  # summed confusion, not a mean
    assert scores["hd95"][0] == pytest.approx(3.0)  # mean of 0 and 6 px
    assert 0.5 < scores["nsd"][0] < 1  # 1 for the perfect image, well under 1 for the shifted one


def test_plan_command_reads_class_presence_from_the_fingerprint(tmp_path, capsys):
    from gctxseg.data import find_pairs, fingerprint_dataset
    from gctxseg.training.planning import plan_for_folder

    images = write_patients(tmp_path / "data")  # 12 scans, fluid in 8
    fingerprint = fingerprint_dataset(find_pairs(images, ".png", ".png"))
    assert fingerprint.mask_value_images == {"0": 12, "255": 8}
    plan = plan_for_folder(images, model="unet", device="cpu")
    assert plan.foreground_share == pytest.approx(1 / 3) and "67%" in plan.reasons["foreground_share"]
    assert main(["plan", str(images), "--model", "unet", "--device", "cpu"]) == 0
    assert "67% of training images" in capsys.readouterr().out
