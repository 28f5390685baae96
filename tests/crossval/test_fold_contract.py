"""Issue 30, section 2: folds are a contract, written once (``CV/splits_final.json``) and read back everywhere.

A cv folder trained once (module scope) on 4 patients x 3 scans; then a fifth patient's scans are added to the data
folder, as a user adding new scans would. Every reader must keep to the folds the cv wrote."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_pair, write_patients

from gctxseg.cli import main
from gctxseg.data import DatasetError, find_pairs
from gctxseg.data.splits import fold_files, resolve_splits

GROUP = r"^(p\d+)_"
TINY = ["--model-option", "base_width=4", "--base-size", "32", "64", "--epochs", "1", "--batch-size", "2",
        "--lr", "0.01", "--workers", "0", "--amp", "off", "--device", "cpu"]


def _cv_command(images: Path, results: Path, *extra: str) -> list[str]:
    return ["cv", str(images), "--folds", "2", "--img_f", ".png", "--models", "unet", *TINY,
            "--results", str(results), "--name", "cv", *extra]


FOLDS: list[dict] = []  # the folds the module's cv was trained on


@pytest.fixture(scope="module")
def grown_cv(tmp_path_factory) -> tuple[Path, Path]:
    """(images folder, cv folder): a 2-fold cv of 4 patients, then patient p04's three scans added to the data.
    The folds it was trained on are kept as ``FOLDS`` (tests compare with them, not with the file they read)."""
    root = tmp_path_factory.mktemp("folds")
    images = write_patients(root / "data")
    assert main(_cv_command(images, root / "runs", "--group-regex", GROUP)) == 0
    FOLDS[:] = json.loads((root / "runs" / "cv" / "splits_final.json").read_text())
    rng = np.random.default_rng(7)
    for b in range(3):
        write_pair(root / "data", f"p04_b{b:02d}", rng.integers(0, 120, (30, 60), dtype=np.uint8),
                   np.zeros((30, 60), np.uint8))
    return images, root / "runs" / "cv"


# ---------------------------------------------------------------- readers of a cv folder keep to its folds


@pytest.mark.slow
def test_summary_only_scores_each_fold_on_the_scans_it_held_out_when_new_scans_were_added(grown_cv, capsys):
    images, cv = grown_cv
    assert main(["cv", str(images), "--summary-only", "--results", str(cv.parent), "--name", "cv",
                 "--device", "cpu", "--amp", "off"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "in no fold" in line]
    assert len(err) == 1 and "splits_final.json: 3 scan(s)" in err[0] and "p04_b00" in err[0]  # once, not per fold
    splits = FOLDS
    summary = json.loads((cv / "unet" / "cv_summary.json").read_text())
    assert {fold: s["images"] for fold, s in summary["per fold"].items()} == {"0": len(splits[0]["val"]),
                                                                          "1": len(splits[1]["val"])}
    assert summary["images"] == 12
    scored = sorted(p.stem for p in (cv / "unet" / "oof").glob("*.npz"))
    assert scored == sorted(n for s in splits for n in s["val"])  # p04 was trained on by no fold: not scored


@pytest.mark.slow
def test_resuming_a_cv_with_scans_in_no_fold_is_refused_and_its_folds_are_kept(grown_cv, capsys):
    images, cv = grown_cv
    before = (cv / "splits_final.json").read_bytes()
    assert main(_cv_command(images, cv.parent, "--group-regex", GROUP, "--exist-ok")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "splits_final.json: 3 scan(s)" in err[0] and "p04_b00" in err[0]
    assert "--summary-only" in err[0] and "--name" in err[0]
    assert (cv / "splits_final.json").read_bytes() == before


@pytest.mark.slow
def test_ensembles_are_scored_on_exactly_the_held_out_scans(grown_cv):
    from gctxseg.crossval.configurations import choose_configuration

    images, cv = grown_cv
    stale = cv / "unet" / "oof" / "p04_b00.npz"  # left by an earlier summary: in no fold of this cv
    stale.write_bytes(next((cv / "unet" / "oof").glob("p00_*.npz")).read_bytes())
    try:
        summary = choose_configuration(cv, ["unet"])
    finally:
        stale.unlink()
    assert summary.images == 12


@pytest.mark.slow
def test_a_fold_report_is_evaluated_on_the_scans_the_cv_held_out(grown_cv):
    from gctxseg.workflows.train_report import write_run_report

    _, cv = grown_cv
    write_run_report(cv / "unet" / "fold_0", device="cpu", amp="off")
    with open(cv / "unet" / "fold_0" / "eval" / "metrics_per_image.csv", newline="") as f:
        evaluated = sorted({Path(row["file"]).stem for row in csv.DictReader(f)})
    assert evaluated == sorted(FOLDS[0]["val"])


def test_continuing_a_cv_with_other_folds_or_missing_scans_is_refused(tmp_path):
    from gctxseg.data.splits import cv_folds

    images = write_patients(tmp_path / "data")
    pairs = find_pairs(images, ".png", ".png")
    cv = tmp_path / "cv"
    splits, written = cv_folds(pairs, 2, images, cv, GROUP)
    assert not written
    cv.mkdir()
    (cv / "splits_final.json").write_text(json.dumps(splits))
    assert cv_folds(pairs, 2, images, cv, GROUP) == (splits, True)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(splits[::-1]))
    with pytest.raises(ValueError, match=r"--splits .*other.json: not the folds .*splits_final.json was begun on"):
        cv_folds(pairs, 2, images, cv, splits_path=other)
    with pytest.raises(ValueError, match=r"splits_final.json: holds 2 folds, not --folds 3"):
        cv_folds(pairs, 3, images, cv)
    gone = splits[0]["val"][0]
    (images / f"{gone}.png").unlink()
    with pytest.raises(DatasetError, match=rf"splits_final.json: fold 0 names 1 file\(s\) not in the data .*{gone}"):
        cv_folds(find_pairs(images, ".png", ".png"), 2, images, cv)


# ---------------------------------------------------------------- a split file is checked against the patient rule


def _two_folds(train0: list[str], val0: list[str]) -> list[dict]:
    return [{"train": train0, "val": val0}, {"train": val0, "val": train0}]


def _mixed_patient_split(path: Path) -> Path:
    """Two folds over p00..p03 x 3 scans where p00's scans sit on both sides."""
    names = [f"p{p:02d}_b{b:02d}" for p in range(4) for b in range(3)]
    val = ["p00_b00", *[n for n in names if n.startswith(("p01", "p02"))][:5]]
    path.write_text(json.dumps(_two_folds([n for n in names if n not in val], val)))
    return path


def test_train_with_a_split_file_that_puts_a_patient_on_both_sides_is_refused(tmp_path, capsys):
    images = write_patients(tmp_path / "data")
    splits = _mixed_patient_split(tmp_path / "S.json")
    code = main(["train", "--data-train", str(images), "--folds", "2", "--fold", "0", "--splits", str(splits),
                 "--group-regex", GROUP, "--img_f", ".png", "--model", "unet", *TINY,
                 "--results", str(tmp_path / "runs")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "S.json: patient 'p00'" in err[0] and "fold 0" in err[0]
    assert "'p00_b00'" in err[0] and '"val"' in err[0] and '"train"' in err[0]
    assert not list((tmp_path / "runs").glob("*/last.pt"))


def test_a_converters_groups_json_is_the_patient_rule_when_no_regex_is_given(tmp_path):
    images = write_patients(tmp_path / "data")
    pairs = find_pairs(images, ".png", ".png")
    (tmp_path / "data" / "groups.json").write_text(json.dumps({p.name: p.name[:3] for p in pairs}))
    splits = _mixed_patient_split(tmp_path / "S.json")
    with pytest.raises(DatasetError, match=r"S.json: patient 'p00' \(.*groups.json\) has scan 'p00_b00' in fold 0"):
        resolve_splits(pairs, 2, images, splits_path=splits)
    (tmp_path / "data" / "splits.json").write_text(splits.read_text())  # the converter's own file, edited
    with pytest.raises(DatasetError, match=r"data/splits.json: patient 'p00'"):
        resolve_splits(pairs, 2, images)


# ---------------------------------------------------------------- every scan held out exactly once


def test_cv_splits_holding_out_the_same_half_twice_is_refused_before_any_folder(tmp_path, capsys):
    images = write_patients(tmp_path / "data")
    names = sorted(p.name for p in find_pairs(images, ".png", ".png"))
    half = tmp_path / "S.json"
    half.write_text(json.dumps([{"train": names[6:], "val": names[:6]}] * 2))
    assert main(_cv_command(images, tmp_path / "runs", "--splits", str(half))) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "S.json: scan 'p00_b00' is held out in folds 0 and 1" in err[0]
    assert not (tmp_path / "runs" / "cv").exists()


@pytest.mark.parametrize(("splits", "message"), [
    (_two_folds(["a", "b"], ["b", "c"]), r"scan 'b' is in both \"train\" and \"val\" of fold 0"),
    ([{"train": ["a", "b"], "val": ["c"]}, {"train": ["c"], "val": ["a"]}], r"fold 1 leaves out scan 'b'"),
    ([{"train": ["a", "b"], "val": ["c"]}, {"train": ["c", "b"], "val": ["a"]}], r"scan 'b' is held out in no fold"),
    (_two_folds(["a", "a"], ["c"]), r"scan 'a' is listed twice in fold 0 \"train\""),
])
def test_each_broken_fold_rule_is_one_line_naming_the_file_the_scan_and_the_fold(splits, message):
    from gctxseg.data.splits import check_splits

    with pytest.raises(DatasetError, match=r"^S.json: " + message):
        check_splits(splits, "S.json")
    check_splits([{"train": ["a", "b"], "val": ["c"]}], "one fold: a plain train/val split")


def test_scans_a_split_file_leaves_out_are_named_not_folded_in(tmp_path, capsys):
    images = write_patients(tmp_path / "data", patients=5)
    names = [f"p{p:02d}_b{b:02d}" for p in range(4) for b in range(3)]
    splits = tmp_path / "S.json"
    splits.write_text(json.dumps(_two_folds(names[:6], names[6:])))
    train, val, _ = fold_files(images, ".png", ".png", 2, 0, GROUP, splits)
    assert sorted(p.name for p in train + val) == sorted(names)
    err = capsys.readouterr().err
    assert "S.json: 3 scan(s)" in err and "p04_b00" in err and "neither trained on nor scored" in err
