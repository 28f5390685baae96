"""A class that only one patient holds is named before any fold trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import one_line, tiny_config, write_pair

from gctxseg.cli import main
from gctxseg.data import DatasetError


def _rare_class_patients(root: Path) -> Path:
    """4 patients of 2 scans, fluid (255) in all, a second class (128) in patient p03's scans only."""
    rng = np.random.default_rng(0)
    for p in range(4):
        for b in range(2):
            image = rng.integers(0, 120, (24, 32), dtype=np.uint8)
            mask = np.zeros((24, 32), np.uint8)
            mask[4:10, 4:12] = 255
            if p == 3:
                mask[14:20, 16:24] = 128
            write_pair(root, f"p{p:02d}_b{b:02d}", image, mask)
    return root / "images"


@pytest.mark.parametrize("fold", [0, 1])
def test_train_folds_says_a_class_of_one_patient_before_any_fold_trains(fold, phantom_dir, tmp_path):
    from gctxseg.training import train

    images = _rare_class_patients(tmp_path / "data")
    cfg = tiny_config(phantom_dir, tmp_path / "runs", data_train=str(images), img_f=".png", folds=2, fold=fold,
                      group_regex=r"^(p\d+)_", epochs=1)
    with pytest.raises(DatasetError) as err:
        train(cfg)
    message = str(err.value)
    assert "mask value 128 is in 2 scan(s), all held out by fold" in message and "p03_b0" in message
    assert "too rare to cross-validate" in message and "fix the mask" not in message
    assert not (tmp_path / "runs").exists()  # no fold trained, no run folder made


def test_cv_says_a_class_of_one_patient_before_fold_0_trains(tmp_path, capsys, one_thread):
    images = _rare_class_patients(tmp_path / "data")
    rc = main(["cv", str(images), "--folds", "3", "--group-regex", r"^(p\d+)_", "--models", "unet",
               "--model-option", "base_width=4", "--base-size", "16", "16", "--epochs", "1", "--batch-size", "2",
               "--lr", "0.01", "--img_f", ".png", "--workers", "0", "--device", "cpu", "--amp", "off",
               "--results", str(tmp_path / "runs"), "--no-race"])
    assert rc == 1
    line = one_line(capsys.readouterr().err)
    assert "try --folds 2 if it is in several patients' scans" in line and "too rare to cross-validate" in line
    assert not list((tmp_path / "runs").rglob("last.pt"))  # fold 0 did not train first


def test_folds_that_each_train_every_class_pass_the_check(tmp_path):
    from gctxseg.data.splits import check_fold_classes

    images = _rare_class_patients(tmp_path / "data")
    for b in range(2):  # patient p00 has the class too: with 2 folds by patient p00 and p03 ...
        mask = np.zeros((24, 32), np.uint8)
        mask[4:10, 4:12], mask[14:20, 16:24] = 255, 128
        write_pair(tmp_path / "data", f"p00_b{b:02d}", np.zeros((24, 32), np.uint8), mask)
    splits = tmp_path / "splits.json"  # ... sit in different folds here, so each fold trains on one of them
    halves = [["p00_b00", "p00_b01", "p01_b00", "p01_b01"], ["p02_b00", "p02_b01", "p03_b00", "p03_b01"]]
    splits.write_text(json.dumps([{"train": halves[1 - k], "val": halves[k]} for k in range(2)]))
    check_fold_classes(images, ".png", ".png", 2, splits_path=splits)
