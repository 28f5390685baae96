"""Issue 30, sections 1, 3 (a cv folder's files) and 8 (cv --init-weights): a rerun continues the run it names,
nothing is made before every check has passed, and every file of a cv folder read back is checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import write_patients
from PIL import Image

from gctxseg.cli import main

FAST = ["--folds", "2", "--group-regex", r"^(p\d+)_", "--img_f", ".png", "--models", "unet", "--model-option",
        "base_width=4", "--base-size", "32", "64", "--epochs", "1", "--batch-size", "2", "--lr", "0.01",
        "--workers", "0", "--amp", "off", "--device", "cpu"]


def cv_args(images: Path, results: Path, *extra: str) -> list[str]:
    return ["cv", str(images), *FAST, "--results", str(results), *extra]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(images, CV folder): a finished 2-fold cv of one tiny unet on 4 patients; tests copy it before changing it."""
    root = tmp_path_factory.mktemp("cvrun")
    images = write_patients(root / "data")
    assert main(cv_args(images, root / "runs")) == 0
    return images, root / "runs" / "cv"


@pytest.fixture
def cv_copy(trained, tmp_path) -> tuple[Path, Path]:
    images, cv = trained
    copy = tmp_path / "runs" / "cv"
    shutil.copytree(cv, copy)
    return images, copy


# ---------------------------------------------------------------- 1. a rerun continues the run it names


@pytest.mark.slow
def test_a_rerun_after_a_kill_continues_the_same_folder_keeps_fold_0_and_resumes_fold_1(tmp_path, monkeypatch,
                                                                                         capsys):
    from gctxseg.training import segmentation

    images = write_patients(tmp_path / "data")
    real_epoch, calls = segmentation.train_one_epoch, []

    def killed_in_fold_1(*args, **kwargs):  # fold 0's one epoch, then fold 1 dies in its first (kill -9)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(segmentation, "train_one_epoch", killed_in_fold_1)
    runs = tmp_path / "runs"
    assert main(cv_args(images, runs)) == 130
    cv = runs / "cv"
    fold_0 = cv / "unet" / "fold_0" / "best.pt"
    assert fold_0.is_file() and (cv / "unet" / "fold_1" / "last.pt").is_file()
    assert not (cv / "unet" / "fold_1" / "best.pt").exists()
    kept = (fold_0.read_bytes(), fold_0.stat().st_mtime_ns)
    report = (cv / "unet" / "fold_0" / "report.html").stat().st_mtime_ns
    capsys.readouterr()
    monkeypatch.setattr(segmentation, "train_one_epoch", real_epoch)
    assert main(cv_args(images, runs)) == 0  # the same command again
    out = capsys.readouterr().out
    assert sorted(p.name for p in runs.iterdir()) == ["cv"]  # no cv2
    assert (fold_0.read_bytes(), fold_0.stat().st_mtime_ns) == kept and "fold 0: finished" in out
    assert (cv / "unet" / "fold_0" / "report.html").stat().st_mtime_ns == report  # a kept fold keeps its report
    assert f"resuming {cv / 'unet' / 'fold_1'} at epoch 0/1" in out
    assert (cv / "unet" / "fold_1" / "best.pt").is_file() and (cv / "cv_summary.json").is_file()
    assert json.loads((cv / "cv_run.json").read_text())["models"] == ["unet"]


@pytest.mark.slow
def test_a_named_cv_folder_of_the_same_run_is_continued_not_renamed(trained, tmp_path):
    from gctxseg.runs.cvfolder import choose_cv_folder, cv_identity
    from gctxseg.training import TrainConfig

    images, cv = trained
    shutil.copytree(cv, tmp_path / "X")
    held = json.loads((cv / "cv_run.json").read_text())
    cfg = TrainConfig(**{**held["settings"], "results": str(tmp_path), "name": "X"})
    assert choose_cv_folder(cfg, cv_identity(cfg, held["models"], held["race"])) == tmp_path / "X"


@pytest.mark.slow
def test_a_rerun_with_other_settings_or_data_is_refused_naming_what_differs(cv_copy, tmp_path, capsys):
    images, cv = cv_copy
    before = snapshot(cv)
    assert main(cv_args(images, cv.parent, "--epochs", "2")) == 2
    err = one_line_error(capsys)
    assert str(cv) in err and '--epochs 1 there, 2 here' in err and "--name NEW" in err
    assert main(cv_args(images, cv.parent, "--epochs", "2", "--exist-ok")) == 2  # --exist-ok mixes no runs
    capsys.readouterr()
    other = write_patients(tmp_path / "other", seed=1)
    assert main(cv_args(other, cv.parent)) == 2
    assert "DATA" in one_line_error(capsys)
    assert snapshot(cv) == before and sorted(p.name for p in cv.parent.iterdir()) == ["cv"]


@pytest.mark.slow
def test_a_folder_without_a_run_record_is_refused_unless_exist_ok_continues_an_older_cv(cv_copy, tmp_path, capsys):
    images, cv = cv_copy
    (cv / "cv_run.json").unlink()  # a cv folder an older gctxseg wrote
    before = snapshot(cv)
    assert main(cv_args(images, cv.parent)) == 2
    assert "--exist-ok continues it" in one_line_error(capsys) and snapshot(cv) == before
    train_run = tmp_path / "runs" / "exp"
    shutil.copytree(cv / "unet" / "fold_0", train_run)
    assert main(cv_args(images, train_run.parent, "--name", "exp", "--exist-ok")) == 2
    assert "another kind of run" in one_line_error(capsys)
    assert main(cv_args(images, cv.parent, "--exist-ok")) == 0  # continued: every fold kept
    assert "fold 1: finished" in capsys.readouterr().out and (cv / "cv_run.json").is_file()


@pytest.mark.parametrize("flags, splits", [(["--folds", "1"], None), (["--folds", "10"], None),
                                           (["--folds", "2"], 3)])
def test_a_cv_stopped_by_a_flag_or_data_error_creates_nothing(tmp_path, capsys, flags, splits):
    images = write_patients(tmp_path / "data")
    args = cv_args(images, tmp_path / "runs")
    if splits:  # a converter's splits.json of 3 folds beside the images (no --group-regex), --folds 2
        args.remove("--group-regex")
        args.remove(r"^(p\d+)_")
        stems = sorted(p.stem for p in images.glob("*.png"))
        folds = [{"train": [s for j, s in enumerate(stems) if j % splits != k],
                  "val": [s for j, s in enumerate(stems) if j % splits == k]} for k in range(splits)]
        (images.parent / "splits.json").write_text(json.dumps(folds))
    at = args.index("--folds")
    args[at:at + 2] = flags
    assert main(args) == 1
    one_line_error(capsys)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_cv_refused_by_its_data_after_naming_its_folder_runs_once_the_data_is_fixed(tmp_path, capsys):
    images = write_patients(tmp_path / "data")
    scan = sorted(images.glob("*.png"))[3]
    good = scan.read_bytes()
    scan.write_bytes(good[: len(good) // 3])  # a truncated export: found by fold 0's check of every file
    args = cv_args(images, tmp_path / "runs")
    assert main(args) == 1
    assert str(scan) in one_line_error(capsys)
    scan.write_bytes(good)
    assert main([*args, "--lr", "0.02"]) == 0  # other settings too: the refused run trained nothing to keep
    assert "holds a cv run that trained nothing yet; this run starts it afresh" in capsys.readouterr().err


@pytest.mark.slow
def test_summary_only_of_a_missing_folder_or_a_train_run_says_so_and_writes_nothing(trained, tmp_path, capsys):
    images, cv = trained
    assert main(cv_args(images, tmp_path / "runs", "--summary-only", "--name", "nonexist")) == 2
    err = one_line_error(capsys)
    assert "no cv run" in err and "free space" not in err and not (tmp_path / "runs").exists()
    run = tmp_path / "runs" / "exp"
    shutil.copytree(cv / "unet" / "fold_0", run)  # a train run folder: best.pt, last.pt, log.json
    before = snapshot(run)
    assert main(cv_args(images, run.parent, "--summary-only", "--name", "exp")) == 2
    assert "holds no cv run" in one_line_error(capsys)
    assert snapshot(run) == before and not (run / "oof").exists()


# ---------------------------------------------------------------- 3. a cv folder's files are checked on read


def _add_one_fold_configuration(cv: Path, name: str = "unet_b") -> None:
    """A second configuration that trained fold 0 only (as one the race dropped)."""
    (cv / name).mkdir()
    shutil.copytree(cv / "unet" / "fold_0", cv / name / "fold_0")


def _race(kept, dropped: dict) -> dict:
    return {"fold": 0, "held-out dice": {"unet": 0.8, "unet_b": 0.03}, "margin": 0.1, "kept": kept,
            "dropped": dropped, "minutes per fold": 1.0, "minutes per later fold": 2.0, "folds": 2, "rule": "r"}


@pytest.mark.parametrize("race, wrong", [
    (_race(["unet_b"], {"unet": "far behind"}), "'kept' names unet_b, which trained 1 of 2 folds"),
    (_race([], {"unet": "x", "unet_b": "y"}), "'kept' names no configuration"),
    (_race("unet", {"unet_b": "y"}), "'kept' is 'unet', not a list"),
    (_race(["unet", "unet_b", "nnunet"], {}), "'kept' names 'nnunet', not one of unet, unet_b"),
    ("{not json", "not JSON"),
])
@pytest.mark.slow
def test_summary_only_refuses_a_race_json_that_would_choose_an_incomplete_or_unknown_configuration(
        cv_copy, capsys, race, wrong):
    images, cv = cv_copy
    _add_one_fold_configuration(cv)
    (cv / "race.json").write_text(race if isinstance(race, str) else json.dumps(race))
    before = snapshot(cv)
    assert main(cv_args(images, cv.parent, "--summary-only")) == 2
    err = one_line_error(capsys)
    assert str(cv / "race.json") in err and wrong in err
    assert snapshot(cv) == before


@pytest.mark.slow
def test_a_cv_folder_missing_a_fold_is_refused_by_predict_and_summary_only(cv_copy, tmp_path, capsys):
    images, cv = cv_copy
    shutil.rmtree(cv / "unet" / "fold_1")
    source = tmp_path / "new"
    source.mkdir()
    Image.new("L", (60, 30)).save(source / "a.png")
    for command in (["predict", "--weights", str(cv), "--source", str(source), "--out", str(tmp_path / "out"),
                     "--device", "cpu", "--amp", "off"],
                    cv_args(images, cv.parent, "--summary-only"),
                    ["predict", "--weights", str(cv / "unet"), "--source", str(source), "--out",
                     str(tmp_path / "out"), "--device", "cpu", "--amp", "off"]):
        assert main(command) == 2
        err = one_line_error(capsys)
        assert f"{cv / 'unet'}: " in err and "1 of 2 folds" in err and "fold_1/last.pt" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_predict_refuses_a_summary_whose_fold_count_disagrees_with_the_folds_on_disk(cv_copy, tmp_path):
    from gctxseg.inference.predictor import ensemble_members

    _, cv = cv_copy
    summary = json.loads((cv / "cv_summary.json").read_text())
    (cv / "cv_summary.json").write_text(json.dumps({**summary, "folds": 3}))
    with pytest.raises(ValueError, match=r"cv_summary.json: 'folds' is 3, but unet has 2 folds"):
        ensemble_members(cv)


@pytest.mark.slow
def test_predict_serves_the_folds_of_the_split_the_cv_recorded(cv_copy):
    from gctxseg.inference.predictor import ensemble_members

    _, cv = cv_copy
    splits = json.loads((cv / "splits_final.json").read_text())
    (cv / "splits_final.json").write_text(json.dumps(splits + [splits[0]]))  # a third fold no model trained
    with pytest.raises(ValueError, match=r"splits_final.json: holds 3 folds, but unet has 2"):
        ensemble_members(cv)


@pytest.mark.slow
@pytest.mark.parametrize("rule, key", [({"kind": "min_size", "min_size": 1e12}, "rules.1.min_size"),
                                       ({"kind": "min_size", "min_size": 10**12}, "rules.1.min_size"),
                                       ({"kind": "min_size", "min_size": -5}, "rules.1.min_size"),
                                       ({"kind": "min_size", "min_size": "big"}, "rules.1.min_size"),
                                       ({"kind": "min_size", "min_size": True}, "rules.1.min_size"),
                                       ({"kind": "erase"}, "rules.1.kind"),
                                       ({"kind": "min_size", "min_size": 3, "max": 1}, "rules.1")])
def test_predict_refuses_a_post_processing_rule_out_of_bounds_naming_file_and_key(cv_copy, tmp_path, capsys,
                                                                                  rule, key):
    _, cv = cv_copy
    (cv / "postprocessing.json").write_text(json.dumps({"rules": {"1": rule}, "evidence": {}}))
    source = tmp_path / "new"
    source.mkdir()
    Image.new("L", (60, 30)).save(source / "a.png")
    assert main(["predict", "--weights", str(cv), "--source", str(source), "--out", str(tmp_path / "out"),
                 "--device", "cpu", "--amp", "off"]) == 2
    err = one_line_error(capsys)
    assert f"{cv / 'postprocessing.json'}: '{key}'" in err and "gctxseg cv --summary-only" in err


def test_a_post_processing_rule_is_bounded_by_the_classes_and_the_largest_training_image(tmp_path):
    from gctxseg.inference.postprocess import PostProcessing

    path = tmp_path / "postprocessing.json"
    path.write_text(json.dumps({"rules": {"2": {"kind": "largest", "min_size": 0}}}))
    with pytest.raises(ValueError, match=r"'rules.2' is not a foreground class \(1..1\)"):
        PostProcessing.load(path, num_classes=2)
    path.write_text(json.dumps({"rules": {"1": {"kind": "min_size", "min_size": 1801}}}))
    with pytest.raises(ValueError, match=r"'rules.1.min_size' is 1801, outside 0..1800"):
        PostProcessing.load(path, num_classes=2, max_pixels=30 * 60)
    assert PostProcessing.load(path, num_classes=2).rules[1].min_size == 1801  # no bound known: types only


@pytest.mark.parametrize("record, wrong", [({"chosen": -1e-3}, "'chosen' is -0.001, outside >= 0"),
                                           ({"chosen": 0}, "'chosen' is 0, not a learning rate > 0"),
                                           ({"chosen": "1e-3"}, "'chosen' is '1e-3', not a number"),
                                           ({"chosen": 1e-3, "held-out dice": {"1e-3": 7}},
                                            "'held-out dice.1e-3' is 7, outside 0..1"),
                                           ('{"chosen": NaN}', "holds NaN, which is not JSON")])
def test_an_lr_probe_record_that_would_train_every_fold_at_a_wrong_rate_is_refused(tmp_path, record, wrong):
    from gctxseg.crossval.lr_probe import read_record

    path = tmp_path / "lr_probe.json"
    path.write_text(record if isinstance(record, str) else json.dumps(record))
    with pytest.raises(ValueError, match=f"^{path}: ") as err:
        read_record(tmp_path)
    assert wrong in str(err.value)


def test_a_timing_record_with_a_negative_or_missing_time_is_refused(tmp_path):
    from gctxseg.crossval.configurations import _read_timing

    path = tmp_path / "timing.json"
    path.write_text(json.dumps({"0": {"wall s": 3.0, "cpu s": -1.0}}))
    with pytest.raises(ValueError, match=r"timing.json: '0.cpu s' is -1, outside >= 0"):
        _read_timing(tmp_path)
    path.write_text(json.dumps({"0": {"wall s": 3.0}}))
    with pytest.raises(ValueError, match=r"timing.json: '0.cpu s' is missing"):
        _read_timing(tmp_path)


# ---------------------------------------------------------------- 8. cv --init-weights of another architecture


@pytest.mark.slow
def test_cv_refuses_an_init_weights_start_of_another_architecture_as_train_does(trained, tmp_path, capsys):
    images, cv = trained
    start = cv / "unet" / "fold_0" / "best.pt"  # holds a unet
    args = cv_args(images, tmp_path / "runs", "--init-weights", str(start))
    args[args.index("--models") + 1] = "nnunet"
    assert main(args) == 2
    err = one_line_error(capsys)
    assert f"--init-weights {start}: holds a unet, not a nnunet; pre-train with --model nnunet" in err
    assert not (tmp_path / "runs").exists()


def test_summary_only_never_follows_a_name_out_of_results(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "splits_final.json").write_text("[]")  # a folder outside --results that looks like a cv
    code = main(["cv", str(tmp_path / "data"), "--summary-only", "--name", "../x",
                 "--results", str(tmp_path / "runs")])
    assert code == 2 and "not a plain folder name" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["splits_final.json"]
