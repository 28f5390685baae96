"""The training plan: the planned size, given settings win, old runs resume, a fold trains at the planned size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import fold_config, write_patients
from PIL import Image

from gctxseg.cli import main
from gctxseg.training import planning, train
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


@pytest.mark.slow
def test_a_fold_trains_on_other_patients_at_an_aspect_true_planned_size(tmp_path):
    images = write_patients(tmp_path / "data")
    run = train(fold_config(images, tmp_path / "runs", base_size=None))
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


def test_plan_command_reads_class_presence_from_the_fingerprint(tmp_path, capsys):
    from gctxseg.data import find_pairs, fingerprint_dataset
    from gctxseg.training.planning import plan_for_folder

    images = write_patients(tmp_path / "data")  # 12 scans, fluid in 8
    fingerprint = fingerprint_dataset(find_pairs(images, ".png", ".png"))
    assert fingerprint.mask_value_images == {"0": 12, "255": 8}
    plan = plan_for_folder(images, model="unet", device="cpu").plan
    assert plan.foreground_share == pytest.approx(1 / 3) and "67%" in plan.reasons["foreground_share"]
    assert main(["plan", str(images), "--model", "unet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "67% of training images" in out
    assert "classes: value 0: background; value 255: class 1 in 8 images" in out  # what was found, first


def test_plan_refuses_masks_of_one_value_as_train_does(tmp_path, capsys):
    images = write_patients(tmp_path / "data")
    for mask in (images.parent / "masks").glob("*.png"):
        Image.fromarray(np.zeros_like(np.asarray(Image.open(mask)))).save(mask)
    for command in (["plan", str(images)], ["train", "--data-train", str(images), "--data-val", str(images),
                                            "--img_f", ".png", "--results", str(tmp_path / "runs")]):
        assert main(command) == 1, command
        err = capsys.readouterr().err.strip().splitlines()[-1]  # train notes first that it validates on its data
        assert err == f"error: {images}: masks hold only the value [0]; need background and a class: check that " \
                      "the masks are the labelled ones (--mask_f)"
    assert not (tmp_path / "runs").exists()
    val = write_patients(tmp_path / "val")  # validation masks with the class: the training masks are still named
    assert main(["train", "--data-train", str(images), "--data-val", str(val), "--img_f", ".png", "--results",
                 str(tmp_path / "runs")]) == 1
    assert f"error: {images}: masks hold only the value [0]" in capsys.readouterr().err
