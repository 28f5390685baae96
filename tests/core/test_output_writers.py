"""Issue 30, sections 4 and 5: no writer overwrites a file it did not write; outputs are replaced atomically, by
one writer at a time (gctxseg.core.outputs)."""

from __future__ import annotations

import errno
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_pair
from PIL import Image

import gctxseg.workflows.predict_folder
from gctxseg.cli import main
from gctxseg.data.convert import convert_duke_dme
from gctxseg.models import create_model
from gctxseg.training import TrainConfig

MARKER = ".gctxseg-output.json"  # gctxseg.core.outputs.MARKER (spelt out: these tests also run on the code before it)


def _digests(root: Path) -> dict[str, str]:
    """Every file under ``root`` (or ``root`` itself) -> its sha256: "untouched" means byte for byte."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _weights(path: Path) -> Path:
    """A tiny genuine checkpoint (unet of width 2, 16x16, classes 0/128/255): cheap to predict, export, evaluate."""
    torch.manual_seed(0)
    model = create_model("unet", 1, 3, base_width=2)
    torch.save({"model_name": "unet", "model_kwargs": {"base_width": 2}, "model": model.state_dict(),
                "value_map": {"0": 0, "128": 1, "255": 2}, "fingerprint": {"channels": 1}, "base_size": [16, 16],
                "normalization": {"mean": [0.5], "std": [0.25]}}, path)  # fmt: skip
    return path


def _labelled(root: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = np.zeros((16, 16), np.uint8)
        mask[2:8, 3:9], mask[10:14, 10:15] = 128, 255
        write_pair(root, f"scan_{i}", rng.integers(0, 255, (16, 16), dtype=np.uint8), mask)
    return root / "images"


def _png_copy(root: Path, n: int = 4) -> Path:
    """A Duke DME PNG copy of ``n`` scans (as test_outputs.py writes one)."""
    (root / "img_for_inference").mkdir(parents=True)
    (root / "annotation").mkdir()
    for i in range(n):
        Image.fromarray(np.full((12, 16), i, np.uint8)).save(root / "img_for_inference" / f"img_{i}.png")
        Image.fromarray(np.zeros((12, 16), np.uint8)).save(root / "annotation" / f"img_{i}.png")
    return root


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _hidden_leftovers(folder: Path) -> list[str]:
    """Staging folders, set-aside outputs and lock files a writer left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != MARKER)


# ---------------------------------------------------------------- 4. no writer overwrites a file it did not write


def test_export_refuses_its_own_weights_and_a_file_it_did_not_write(tmp_path, capsys):
    weights = _weights(tmp_path / "best.pt")
    notes = tmp_path / "notes" / "thesis.docx"
    notes.parent.mkdir()
    notes.write_bytes(b"three years of work")
    foreign_onnx = tmp_path / "other.onnx"
    foreign_onnx.write_bytes(b"someone else's model")
    before = {**_digests(weights), **_digests(notes), **_digests(foreign_onnx)}
    for out, problem in ((weights, "is an input of export"), (notes, "an existing .docx file"),
                         (foreign_onnx, "export did not write")):
        assert main(["export", "--weights", str(weights), "--out", str(out)]) == 2
        line = _one_error_line(capsys)
        assert line.startswith(f"error: --out {out}: ") and problem in line and "pass a new file" in line
    assert {**_digests(weights), **_digests(notes), **_digests(foreign_onnx)} == before
    # its own earlier export is replaced; --force replaces a foreign .onnx (never the weights)
    out = tmp_path / "model.onnx"
    assert main(["export", "--weights", str(weights), "--out", str(out)]) == 0
    assert main(["export", "--weights", str(weights), "--out", str(out)]) == 0
    assert main(["export", "--weights", str(weights), "--out", str(foreign_onnx), "--force"]) == 0
    assert main(["export", "--weights", str(weights), "--out", str(weights), "--force"]) == 2
    assert _digests(weights) == {str(weights): before[str(weights)]}
    assert _hidden_leftovers(tmp_path) == []


@pytest.mark.slow
def test_compare_refuses_a_file_of_the_runs_and_a_picture_it_did_not_draw(tiny_run, tmp_path, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "exp")
    photo = tmp_path / "holiday.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(photo)
    before = {**_digests(run), **_digests(photo)}
    for out, problem in ((run / "best.pt", "is an input of compare"), (photo, "compare did not write")):
        assert main(["compare", str(run), str(run), "--out", str(out), "--device", "cpu",
                     "--timing-seconds", "0"]) == 2  # fmt: skip
        assert problem in _one_error_line(capsys)
    assert {**_digests(run), **_digests(photo)} == before
    plot = tmp_path / "compare.png"
    for _ in range(2):  # a plot compare drew is its own to replace
        assert main(["compare", str(run), "--out", str(plot), "--device", "cpu", "--timing-seconds", "0"]) == 0
    assert _hidden_leftovers(tmp_path) == []


def test_evaluate_refuses_a_folder_of_the_users_files_and_the_ground_truth(tmp_path, capsys):
    weights, images = _weights(tmp_path / "best.pt"), _labelled(tmp_path / "lab")
    mine = tmp_path / "analysis"
    mine.mkdir()
    (mine / "summary.json").write_text('{"my": "own results"}')
    (mine / "metrics_per_image.csv").write_text("file,dice\nmine,0.9\n")
    before = {**_digests(mine), **_digests(tmp_path / "lab")}
    for out, problem in ((mine, "named like evaluate's output but no"), (tmp_path / "lab" / "masks",
                         "inside the ground-truth masks folder"), (tmp_path / "lab", "holds the images folder")):
        assert main(["evaluate", "--weights", str(weights), "--data", str(images), "--img_f", ".png", "--out", str(out),
                     "--device", "cpu"]) == 2  # fmt: skip
        assert problem in _one_error_line(capsys)
    assert {**_digests(mine), **_digests(tmp_path / "lab")} == before
    out = tmp_path / "eval"
    for _ in range(2):  # an earlier evaluation is its own: replaced whole
        assert main(["evaluate", "--weights", str(weights), "--data", str(images), "--img_f", ".png", "--out", str(out),
                     "--device", "cpu"]) == 0  # fmt: skip
    assert (out / "summary.json").is_file() and (out / MARKER).is_file() and _hidden_leftovers(tmp_path) == []


def test_synth_refuses_a_folder_of_the_users_scans_and_replaces_its_own_phantom_whole(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "duke" / "images").mkdir(parents=True)
    (data / "duke" / "images" / "p01_b01.png").write_bytes(b"a patient's scan")
    (data / "spacing.json").write_text('{"row_mm": 0.0039, "col_mm": 0.0117}')
    before = _digests(data)
    assert main(["synth", "--out", str(data), "--n", "4", "--size", "32", "32"]) == 2
    line = _one_error_line(capsys)
    assert f"--out {data}: already holds 2 file(s) synth did not write" in line and "_phantom" in line
    assert _digests(data) == before
    phantom = tmp_path / "phantom"
    assert main(["synth", "--out", str(phantom), "--n", "6", "--size", "32", "32"]) == 0
    assert main(["synth", "--out", str(phantom), "--n", "3", "--size", "32", "32"]) == 0
    assert len(list(phantom.rglob("*.jpg"))) == 3  # the 6 of the first run replaced whole, none stale


def test_a_run_name_never_leads_out_of_results(tmp_path, capsys, phantom_dir):
    for name in ("../../x", "/tmp/x", "a/b", "..", ""):
        with pytest.raises(ValueError, match="not a plain folder name"):
            TrainConfig(data_train=str(phantom_dir / "train" / "images"), results=str(tmp_path / "runs"), name=name)
    code = main(["train", "--data-train", str(phantom_dir / "train" / "images"), "--results", str(tmp_path / "runs"),
                 "--name", "../../x", "--epochs", "1"])
    assert code == 2 and "--name '../../x': not a plain folder name" in _one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_convert_never_deletes_a_users_folder_named_like_its_staging_folder(tmp_path):
    src = _png_copy(tmp_path / "copy", n=22)
    lookalike = tmp_path / ".duke.converting"
    lookalike.mkdir()
    (lookalike / "keep.txt").write_text("mine")
    convert_duke_dme(src, tmp_path / "duke", folds=2)
    assert (lookalike / "keep.txt").read_text() == "mine"
    assert len(list((tmp_path / "duke" / "images").iterdir())) == 22
    assert _hidden_leftovers(tmp_path) == [".duke.converting"]


def test_predict_never_replaces_a_folder_that_only_looks_like_a_prediction(tmp_path, capsys):
    """A folder of ground-truth masks/ alone was taken for a previous prediction and deleted: now the marker decides."""
    weights, source = _weights(tmp_path / "best.pt"), _labelled(tmp_path / "lab")
    other = tmp_path / "other_set"
    _labelled(other)
    shutil.rmtree(other / "images")  # only masks/ left: named like predict's output
    before = _digests(other)
    assert main(["predict", "--weights", str(weights), "--source", str(source), "--out", str(other)]) == 2
    assert "named like predict's output but no .gctxseg-output.json" in _one_error_line(capsys)
    assert _digests(other) == before


# ---------------------------------------------------------------- 5. replace atomically; one writer at a time


def _predict(weights: Path, source: Path, out: Path) -> int:
    return main(["predict", "--weights", str(weights), "--source", str(source), "--out", str(out), "--device", "cpu"])


@pytest.mark.parametrize("where", ["masks", "measurements"])
def test_a_full_disk_keeps_the_previous_prediction_and_names_the_folder(tmp_path, capsys, monkeypatch, where):
    weights, source, out = _weights(tmp_path / "best.pt"), _labelled(tmp_path / "lab"), tmp_path / "pred"
    assert _predict(weights, source, out) == 0
    before = _digests(out)
    assert {"measurements.csv", "index.html", "masks"} <= {p.name for p in out.iterdir()}
    capsys.readouterr()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "masks":  # the second image's mask fails to write: not "one bad file", the whole disk
        real, calls = gctxseg.workflows.predict_folder._predict_file, []

        def predict_file(*args):
            calls.append(args)
            return disk_full() if len(calls) == 2 else real(*args)

        monkeypatch.setattr(gctxseg.workflows.predict_folder, "_predict_file", predict_file)
    else:
        monkeypatch.setattr(gctxseg.workflows.predict_folder, "write_folder_measurements", disk_full)
    assert _predict(weights, source, out) == 4
    err = capsys.readouterr().err
    assert f"error: {out}: No space left on device" in err
    assert _digests(out) == before and _hidden_leftovers(tmp_path) == []
    monkeypatch.undo()
    assert _predict(weights, source, out) == 0  # the lock was released on the error


def test_a_second_writer_is_refused_naming_the_process_that_holds_the_folder(tmp_path, capsys):
    weights, source, out = _weights(tmp_path / "best.pt"), _labelled(tmp_path / "lab"), tmp_path / "pred"
    assert _predict(weights, source, out) == 0
    before = _digests(out)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from gctxseg.core.outputs import output_lock\n"
         f"with output_lock({str(out)!r}, 'predict'):\n    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        capsys.readouterr()
        assert _predict(weights, source, out) == 2
        line = _one_error_line(capsys)
        assert line.startswith(f"error: {out}: being written by process {holder.pid} (gctxseg predict)"), line
        assert _digests(out) == before
    finally:
        holder.kill()
        holder.wait()
    assert _predict(weights, source, out) == 0  # the kernel released the dead holder's lock
    assert _hidden_leftovers(tmp_path) == []  # the killed holder left its lock file; the next writer removed it
