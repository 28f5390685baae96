"""A training process that is stopped, diverges or meets bad data or an unwritable results folder: it resumes
exactly, or stops with one line and loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gctxseg.cli import main
from gctxseg.training import load_checkpoint

TRAIN_ARGS = [
    "train", "--model", "unet", "--model-option", "base_width=4", "--base-size", "32", "32",
    "--batch-size", "4", "--lr", "0.01", "--workers", "0", "--amp", "off", "--img_f", ".jpg",
]  # fmt: skip


def _train_args(phantom_dir: Path, results: Path, epochs: int) -> list[str]:
    return [
        *TRAIN_ARGS, "--epochs", str(epochs), "--results", str(results),
        "--data-train", str(phantom_dir / "train" / "images"), "--data-val", str(phantom_dir / "val" / "images"),
    ]  # fmt: skip


def _gctxseg(*args: str, **popen) -> subprocess.Popen:
    # one thread in every process: float sums then run in the same order in the stopped, the resumed and
    # the uninterrupted run (bit-for-bit equality holds for a fixed machine and thread count)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "gctxseg", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **popen)  # fmt: skip


@pytest.mark.slow
def test_sigterm_to_a_real_training_process_then_resume_matches_uninterrupted(phantom_dir, tmp_path):
    epochs = 4
    full = _gctxseg(*_train_args(phantom_dir, tmp_path / "full", epochs))
    run = tmp_path / "part" / "exp"
    # like Ctrl-C in a terminal or a scheduler's stop: the signal reaches the whole process group, loader
    # worker included; the worker must not die first and abort the run
    proc = _gctxseg(*_train_args(phantom_dir, tmp_path / "part", epochs), "--workers", "1", start_new_session=True)
    deadline = time.time() + 120
    while not (run / "log.json").exists():  # stop it once the first epoch is on disk
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"--resume {run / 'last.pt'}" in err
    stopped_at = load_checkpoint(run / "last.pt")["epoch"]
    assert stopped_at < epochs - 1
    resumed = _gctxseg("train", "--resume", str(run / "last.pt"), "--workers", "0")
    assert resumed.wait(timeout=300) == 0, resumed.communicate()
    assert full.wait(timeout=300) == 0, full.communicate()
    logs = [json.loads((r / "log.json").read_text()) for r in (tmp_path / "full" / "exp", run)]
    assert logs[0] == logs[1]
    wf, wp = (load_checkpoint(r / "last.pt")["model"] for r in (tmp_path / "full" / "exp", run))
    assert all(torch.equal(wf[k], wp[k]) for k in wf)


def test_bad_training_data_stops_before_training_with_one_line(phantom_dir, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    mask = next((data / "train" / "masks").iterdir())
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(mask)
    code = main(_train_args(data, tmp_path / "runs", 1))
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err  # the data is wrong: exit 1
    assert f"{mask}: 10x12 but its image is 64x64" in err
    assert not (tmp_path / "runs").exists()  # nothing half-made


@pytest.mark.slow
def test_unicode_and_spaces_in_paths(phantom_dir, tmp_path):
    import shutil

    data = tmp_path / "données OCT" / "jeu 1"
    shutil.copytree(phantom_dir, data)
    assert main(_train_args(data, tmp_path / "résultats à", 1)) == 0
    assert (tmp_path / "résultats à" / "exp" / "best.pt").is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_results_folder(phantom_dir, tmp_path, capsys):
    results = tmp_path / "ro"
    results.mkdir()
    results.chmod(0o500)
    try:
        assert main(_train_args(phantom_dir, results, 1)) == 4
        assert "Permission denied" in capsys.readouterr().err
    finally:
        results.chmod(0o700)


@pytest.mark.slow
def test_non_finite_loss_stops_with_epoch_files_and_advice(phantom_dir, tmp_path, capsys):
    code = main([*_train_args(phantom_dir, tmp_path / "runs", 2)[:-0 or None], "--lr", "1e30"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "epoch 1:" in err and "oct_" in err and "lower --lr" in err and "last.pt" in err
    assert (tmp_path / "runs" / "exp" / "last.pt").is_file()


def test_results_path_that_cannot_be_a_folder(phantom_dir, tmp_path, capsys):
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the results folder should go")
    assert main(_train_args(phantom_dir, blocker, 1)) == 4
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {blocker}: a file, where a folder is needed for {blocker / 'exp'}")
    assert "\n" not in err
