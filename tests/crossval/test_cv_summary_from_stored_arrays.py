"""A cv's summary is scored from the out-of-fold arrays each fold wrote as it ended, never by predicting again."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import write_patients

from gctxseg.cli import main
from gctxseg.crossval import oof


def _cv(images, results, *extra):
    return ["cv", str(images), "--folds", "2", "--group-regex", r"^(p\d+)_", "--img_f", ".png", "--models", "unet",
            "--model-option", "base_width=4", "--base-size", "32", "32", "--epochs", "1", "--batch-size",
            "4", "--lr", "0.01", "--workers", "0", "--amp", "off", "--device", "cpu", "--seed", "0", "--results",
            str(results), "--name", "cv", *extra]


@pytest.fixture(scope="module")
def trained_cv(tmp_path_factory):
    root = tmp_path_factory.mktemp("stored_oof")
    images = write_patients(root / "data", patients=4, scans=3, size=(48, 64))
    assert main(_cv(images, root / "runs")) == 0
    return images, root / "runs" / "cv"


def _copy(trained_cv, tmp_path):
    images, cv = trained_cv
    shutil.copytree(cv, tmp_path / "runs" / "cv")
    return images, tmp_path / "runs" / "cv"


def _figures(cv):
    """Every score of the cv's summaries (what was read or predicted left out)."""
    top = json.loads((cv / "cv_summary.json").read_text())
    config = json.loads((cv / "unet" / "cv_summary.json").read_text())
    config.pop("out-of-fold")
    return top["ranking"], top["chosen"], config


def _arrays(cv):
    arrays = {}
    for path in (cv / "unet" / "oof").glob("*.npz"):
        with np.load(path) as stored:
            arrays[path.name] = stored["probabilities"]
    return arrays


def test_each_fold_writes_its_held_out_scans_arrays_and_the_summary_reads_them(trained_cv):
    _, cv = trained_cv
    splits = json.loads((cv / "splits_final.json").read_text())
    for model in ("unet",):
        for fold, split in enumerate(splits):
            for name in split["val"]:
                with np.load(cv / model / "oof" / f"{name}.npz") as stored:
                    assert int(stored["fold"]) == fold and stored["probabilities"].dtype == np.uint8
                    assert stored["probabilities"].shape == (2, 48, 64)
        summary = json.loads((cv / model / "cv_summary.json").read_text())
        assert summary["out-of-fold"] == {"from arrays": [0, 1], "predicted again": []}


def test_the_summary_from_arrays_equals_the_one_from_predicting_again(trained_cv, tmp_path, capsys):
    images, cv = _copy(trained_cv, tmp_path)
    before = _figures(cv)
    stored = _arrays(cv)
    shutil.rmtree(cv / "unet" / "oof")
    assert main(["cv", str(images), "--summary-only", "--results", str(cv.parent), "--name", "cv", "--device", "cpu",
                 "--amp", "off"]) == 0
    out = capsys.readouterr().out
    assert out.count("is missing); predicting them again") == 2  # each fold, once
    assert "summary: " in out and "(2 fold(s) predicted again, the others from arrays;" in out
    assert _figures(cv) == before  # the same figures, every one: Dice, HD95, NSD, post-processing, ranking
    again = _arrays(cv)
    assert again.keys() == stored.keys() and len(stored) == 12
    assert all(np.array_equal(again[n], stored[n]) for n in stored)  # what the folds stored is what predicting gives
    assert any(0 < a.max() and a.min() < 255 for a in stored.values())  # probabilities, not a constant


def test_a_resumed_cv_does_not_predict_again(trained_cv, tmp_path, monkeypatch, capsys):
    images, cv = _copy(trained_cv, tmp_path)
    before = _figures(cv)

    def refuse(*args, **kwargs):
        raise AssertionError("predicted again")

    monkeypatch.setattr(oof, "predict_fold_oof", refuse)
    assert main(_cv(images, tmp_path / "runs", "--exist-ok")) == 0
    out = capsys.readouterr().out
    assert out.count("finished in") == 2 and "summary: " in out and "(out-of-fold from arrays;" in out
    assert _figures(cv) == before


def test_a_corrupt_array_is_named_and_its_fold_predicted_again(trained_cv, tmp_path, capsys):
    images, cv = _copy(trained_cv, tmp_path)
    before = _figures(cv)
    name = json.loads((cv / "splits_final.json").read_text())[1]["val"][0]
    (cv / "unet" / "oof" / f"{name}.npz").write_bytes(b"not an array")
    assert main(["cv", str(images), "--summary-only", "--results", str(cv.parent), "--name", "cv", "--device", "cpu",
                 "--amp", "off"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "predicting them again" in line]
    assert len(lines) == 1 and lines[0].startswith(f"{cv / 'unet' / 'oof'}: fold 1's out-of-fold arrays cannot be "
                                                   f"used ({name}.npz is unreadable (")
    assert _figures(cv) == before
    with np.load(cv / "unet" / "oof" / f"{name}.npz") as stored:
        assert stored["probabilities"].shape == (2, 48, 64)


def test_a_fold_predicts_its_held_out_scans_once_in_its_final_validation(tmp_path, monkeypatch):
    from gctxseg.crossval import configurations

    def refuse(*args, **kwargs):
        raise AssertionError("a fold's held-out scans were predicted again after its final validation")

    monkeypatch.setattr(configurations, "predict_fold_oof", refuse)
    images = write_patients(tmp_path / "data", patients=4, scans=3, size=(48, 64))
    assert main(_cv(images, tmp_path / "runs")) == 0
    cv = tmp_path / "runs" / "cv"
    summary = json.loads((cv / "unet" / "cv_summary.json").read_text())
    assert summary["out-of-fold"] == {"from arrays": [0, 1], "predicted again": []}  # last.pt's, checked
    for fold in (0, 1):
        log = json.loads((cv / "unet" / f"fold_{fold}" / "log.json").read_text())
        last = log[[k for k in log if k.startswith("epoch:")][-1]]
        assert "val log:" in last  # the final validation is what was predicted
