"""``gctxseg evaluate --predictions DIR``: a folder of predicted masks scored against the truth without a model,
through the same scoring as ``--weights``; every problem of the folders found first, then one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_pair
from PIL import Image

from gctxseg.cli import main
from gctxseg.data import DatasetError
from gctxseg.evaluation.evaluate import score_prediction_folder
from gctxseg.workflows.predict_folder import predict_folder

MODEL_KEYS = {"weights", "predictions", "infer mode", "tta", "seconds per image", "device"}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one thread (see conftest.one_thread)."""


def test_predicted_masks_score_as_the_model_that_wrote_them(tiny_run, phantom_dir, tmp_path):
    val = phantom_dir / "val" / "images"
    weights, masks = tmp_path / "by_model", tmp_path / "predicted"
    flags = ["--data", str(val), "--worst-k", "2"]
    assert main(["evaluate", "--weights", str(tiny_run / "best.pt"), "--out", str(weights), "--device", "cpu",
                 "--amp", "off", *flags]) == 0  # fmt: skip
    predict_folder(tiny_run / "best.pt", val, masks, "cpu", "off")  # masks/NAME.png with the values 0/128/255
    assert main(["evaluate", "--predictions", str(masks), *flags]) == 0  # read from the predict folder's masks/
    by_model = json.loads((weights / "summary.json").read_text())
    by_folder = json.loads((tmp_path / "predicted_eval_val" / "summary.json").read_text())  # the default --out
    assert by_folder["predictions"] == str(masks) and "weights" not in by_folder
    assert {k: v for k, v in by_model.items() if k not in MODEL_KEYS} == \
        {k: v for k, v in by_folder.items() if k not in MODEL_KEYS}  # fmt: skip
    assert by_model["mean dice"] > 0 and by_model["per class"][1]["images with truth"] > 0
    for name in ("metrics_per_image.csv", "amounts_per_image.csv"):
        assert (weights / name).read_text() == (tmp_path / "predicted_eval_val" / name).read_text(), name
    assert (tmp_path / "predicted_eval_val" / "worst_cases.png").is_file()


def _truth_and_predictions(root, cases=4, size=(24, 32)):
    """``cases`` truth masks 0/255 with one blob, and a predictions folder holding the truth itself."""
    rng = np.random.default_rng(0)
    (root / "pred").mkdir(parents=True)
    for i in range(cases):
        mask = np.zeros(size, np.uint8)
        mask[4 + i:12 + i, 5:15] = 255
        write_pair(root / "split", f"case_{i}", rng.integers(0, 200, size, dtype=np.uint8), mask)
        Image.fromarray(mask).save(root / "pred" / f"case_{i}.png")
    return root / "split" / "images", root / "pred"


def test_perfect_predictions_score_one_and_class_count_comes_from_the_masks(tmp_path):
    images, pred = _truth_and_predictions(tmp_path)
    result = score_prediction_folder(pred, images, img_f=".png", worst_k=0)
    assert result.summary["mask values"] == {"0": 0, "255": 1}
    assert result.summary["Dice"] == [1.0] and result.summary["per class"][0]["hd95 mean"] == 0.0
    assert result.out is None and len(result.rows) == 4


def test_every_problem_is_found_before_one_line_names_the_first(tmp_path):
    images, pred = _truth_and_predictions(tmp_path)
    (pred / "case_0.png").unlink()  # a truth case without a prediction
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(pred / "stray.png")  # a prediction without truth
    Image.fromarray(np.zeros((20, 32), np.uint8)).save(pred / "case_1.png")  # the wrong size
    Image.fromarray(np.full((24, 32), 7, np.uint8)).save(pred / "case_2.png")  # a value no class has
    (pred / "notes.json").write_text("{}")  # not a mask: not looked at
    with pytest.raises(DatasetError) as info:
        score_prediction_folder(pred, images, img_f=".png")
    message = str(info.value)
    assert message.startswith(f"{pred}: no prediction for 1 of 4 truth case(s) (case_0);")
    assert message.endswith("(and 3 more)") and "\n" not in message


@pytest.mark.parametrize("damage, expected", [
    (lambda pred: Image.fromarray(np.zeros((24, 32), np.uint8)).save(pred / "extra_a.png"),
     "1 prediction(s) without a truth mask (extra_a)"),
    (lambda pred: Image.fromarray(np.zeros((20, 30), np.uint8)).save(pred / "case_3.png"),
     "case_3.png: 20x30 but its truth mask"),
    (lambda pred: Image.fromarray(np.full((24, 32), 128, np.uint8)).save(pred / "case_3.png"),
     "case_3.png: value(s) [128] not among the classes' mask values [0, 255]"),
])  # fmt: skip
def test_each_problem_is_one_line_with_exit_code_1(tmp_path, capsys, damage, expected):
    images, pred = _truth_and_predictions(tmp_path)
    damage(pred)
    code = main(["evaluate", "--predictions", str(pred), "--data", str(images), "--img_f", ".png"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and expected in err and "\n" not in err
    if "20x30" in expected:
        assert err.split(": 20x30")[1].startswith(" but its truth mask") and "is 24x32" in err


def test_a_stray_truth_value_beyond_the_named_classes_is_refused_not_scored_as_a_class(tmp_path, capsys):
    images, pred = _truth_and_predictions(tmp_path)
    masks = images.parent / "masks"
    for case in masks.glob("*.png"):  # class numbers 0/1 (as --class-names reads them), predictions alike
        as_class = (np.asarray(Image.open(case)) > 0).astype(np.uint8)
        Image.fromarray(as_class).save(case)
        Image.fromarray(as_class).save(pred / case.name)
    painted = np.asarray(Image.open(masks / "case_2.png")).copy()
    painted[0, 0] = 5  # one wrong pixel: a class of its own at Dice 0 would pull the mean from 1.0 to 0.5
    Image.fromarray(painted).save(masks / "case_2.png")
    flags = ["evaluate", "--predictions", str(pred), "--data", str(images), "--img_f", ".png"]
    code = main([*flags, "--class-names", "fluid"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and err.startswith(f"error: {masks / 'case_2.png'}: the truth masks hold 2 "
                                                             "foreground values [1, 5] but --class-names names 1")


def test_weights_and_predictions_are_mutually_exclusive(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--weights", "w.pt", "--predictions", str(tmp_path), "--data", str(tmp_path)])
    assert info.value.code == 2


def test_class_names_add_classes_the_truth_masks_do_not_hold(tmp_path):
    """Masks of class numbers 0/1 with --class-names naming two classes: class 2, predicted but in no truth mask,
    is a class of its own (false alarms), not a value out of range."""
    size = (24, 32)
    truth = np.zeros(size, np.uint8)
    truth[4:12, 5:15] = 1
    pred = truth.copy()
    pred[16:20, 20:28] = 2
    write_pair(tmp_path / "split", "a", np.full(size, 90, np.uint8), truth)
    (tmp_path / "pred").mkdir()
    Image.fromarray(pred).save(tmp_path / "pred" / "a.png")
    from gctxseg.clinical.measurements import MeasurementOptions

    result = score_prediction_folder(tmp_path / "pred", tmp_path / "split" / "images", img_f=".png", worst_k=0,
                                     measure=MeasurementOptions(class_names=("edema", "hole")))
    assert result.summary["mask values"] == {"0": 0, "1": 1, "2": 2}
    assert result.summary["Dice"][0] == 1.0 and result.summary["per class"][1]["false alarms"] == 1
