"""A cv's out-of-fold summary and its ensemble: how folds are scored, what an ensemble predicts, fold input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import fold_config, write_pair, write_patients
from PIL import Image

from gctxseg.cli import main
from gctxseg.training import train


@pytest.mark.slow
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
    # each fold's report scores the weights the cv scores (last.pt), from the arrays: its figures are the summary's
    for fold in ("0", "1"):
        evaluation = json.loads((config / f"fold_{fold}" / "eval" / "summary.json").read_text())
        assert evaluation["weights"].endswith("last.pt") and evaluation["images"] == summary["per fold"][fold]["images"]
        dice = [c["dice"] for c in evaluation["per class"]]
        assert dice == pytest.approx(summary["per fold"][fold]["dice"])
        assert "<h2>Evaluation of last.pt</h2>" in (config / f"fold_{fold}" / "report.html").read_text()
        assert (config / f"fold_{fold}" / "eval" / "worst_cases.png").is_file()
        assert not (config / f"fold_{fold}" / "samples").exists()  # the report's cases show what samples would
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


@pytest.mark.slow
def test_an_ensemble_of_different_class_maps_is_one_line(tmp_path, capsys):
    images = write_patients(tmp_path / "a")
    run_a = train(fold_config(images, tmp_path / "runs", name="a"))
    other = tmp_path / "b"
    for i in range(4):
        mask = np.zeros((30, 60), np.uint8)
        mask[2:9, 2:9], mask[15:20, 30:40] = 128, 255  # three classes
        write_pair(other, f"p{i:02d}_b00", np.full((30, 60), 90, np.uint8), mask)
    run_b = train(fold_config(other / "images", tmp_path / "runs", name="b"))
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
