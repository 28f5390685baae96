"""Resuming a run: the flags it ignores are named, and an explicit --epochs wins."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from conftest import TINY_TRAIN_FLAGS, tiny_config

from gctxseg.cli import _given_train_settings, main
from gctxseg.training import TrainConfig
from gctxseg.training.config import resume_config

pytestmark = pytest.mark.slow  # every test here trains a model


def test_resume_names_the_ignored_flags_and_an_explicit_epochs_wins(phantom_dir, tmp_path, capsys):
    args = ["train", *TINY_TRAIN_FLAGS, "--epochs", "1", "--results", str(tmp_path / "runs"),
            "--data-train", str(phantom_dir / "train" / "images"), "--data-val", str(phantom_dir / "val" / "images")]
    assert main(args) == 0
    last = tmp_path / "runs" / "exp" / "last.pt"
    first_lr = json.loads((last.parent / "log.json").read_text())["train parameters"]["lr"]  # planned: not given
    capsys.readouterr()
    assert main(["train", "--resume", str(last), "--epochs", "2", "--lr", "0.5", "--batch-size", "2"]) == 0
    err = capsys.readouterr().err
    ignored = [line for line in err.splitlines() if line.startswith("--resume: ignoring")]
    assert ignored == [ignored[0]] and "--batch-size, --lr" in ignored[0]
    log = json.loads((last.parent / "log.json").read_text())
    assert [k for k in log if k.startswith("epoch:")] == ["epoch:0", "epoch:1"]
    assert log["train parameters"]["lr"] == first_lr != 0.5 and log["train parameters"]["batch size"] == 4
    # an explicit --epochs equal to the default still counts (a 400-epoch run shortened to 300)
    assert {"epochs", "resume"} <= _given_train_settings(["train", "--resume", "x.pt", "--epochs", "300"])
    saved = {"config": asdict(tiny_config(phantom_dir, tmp_path, epochs=400))}
    assert resume_config(TrainConfig(resume="x.pt", epochs=300), saved, {"epochs", "resume"}).epochs == 300
    assert resume_config(TrainConfig(resume="x.pt"), saved, {"resume"}).epochs == 400


def test_resume_refuses_data_other_than_the_run_trained_on_and_best_pt_is_written_before_last_pt(
        phantom_dir, tmp_path, capsys, monkeypatch):
    import shutil

    from gctxseg.training import segmentation

    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    saved = []
    real_save = segmentation.save_checkpoint
    monkeypatch.setattr(segmentation, "save_checkpoint", lambda ckpt, path: (saved.append(path.name),
                                                                            real_save(ckpt, path)))
    args = ["train", *TINY_TRAIN_FLAGS, "--epochs", "1", "--results", str(tmp_path / "runs"),
            "--data-train", str(data / "train" / "images"), "--data-val", str(data / "val" / "images")]
    assert main(args) == 0
    # a stop between the two writes must not leave last.pt ahead of a stale best.pt
    assert saved[:3] == ["last.pt", "best.pt", "last.pt"]  # the start, then epoch 0: best before last
    last = tmp_path / "runs" / "exp" / "last.pt"
    removed = sorted((data / "train" / "images").glob("*.jpg"))[0]
    removed.unlink()
    (data / "train" / "masks" / (removed.stem + ".png")).unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(last), "--epochs", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {data / 'train' / 'images'}: not the train files {last} was trained on (14 images then, "
                   "13 now); resume on the same data, or start a new run")


def test_exist_ok_replaces_the_previous_runs_files_and_keeps_every_other_file(phantom_dir, tmp_path, capsys):
    args = ["train", *TINY_TRAIN_FLAGS, "--epochs", "1", "--results", str(tmp_path / "runs"),
            "--data-train", str(phantom_dir / "train" / "images"), "--data-val", str(phantom_dir / "val" / "images")]
    assert main(args) == 0
    run = tmp_path / "runs" / "exp"
    stale = run / ".last.pt.k3j9x0qa.tmp"  # what a writer killed mid-save leaves
    stale.write_bytes(b"half a checkpoint")
    capsys.readouterr()
    assert main(["train", "--resume", str(run / "last.pt"), "--epochs", "2"]) == 0
    assert not stale.exists()  # removed by the resume, not left beside the run
    (run / "report.html").write_text("the previous run's report")
    assert main([*args, "--exist-ok", "--seed", "3"]) == 0
    err = capsys.readouterr().err
    assert f"{run}: the previous run's files (" in err and "are replaced by this run (--exist-ok)" in err
    assert json.loads((run / "log.json").read_text())["train parameters"]["seed"] == 3
    assert "the previous run's report" not in (run / "report.html").read_text()
    (run / "notes.txt").write_text("a user's notes")
    assert main([*args, "--exist-ok"]) == 0
    assert f"{run}: kept as they are: notes.txt" in capsys.readouterr().err
    assert (run / "notes.txt").read_text() == "a user's notes" and (run / "best.pt").is_file()
