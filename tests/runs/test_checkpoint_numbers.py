"""Every number in a checkpoint or an ONNX file that sizes a run is checked once when the file is read: one line
naming the file and the key, exit 2, before any image is processed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_line
from helpers_checkpoints import serving_checkpoint

from gctxseg.cli import main


def _with_weight(value: float) -> dict:
    state = dict(serving_checkpoint()["model"])
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] = value
    return state


@pytest.fixture
def scans(tmp_path) -> Path:
    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(2):
        image = np.random.default_rng(i).integers(0, 255, (24, 32), dtype=np.uint8)
        from PIL import Image

        Image.fromarray(image).save(folder / f"s{i}.png")
    return folder


BAD_NUMBERS = [
    ("base_size", {"base_size": [0, 0]}),
    ("base_size", {"base_size": [-5, 7]}),
    ("base_size", {"base_size": [16.5, 16]}),
    ("std", {"normalization": {"mean": [0.5], "std": [0.0]}}),
    ("mean", {"normalization": {"mean": [math.nan], "std": [0.25]}}),
    ("mean", {"normalization": {"mean": [0.5, 0.5], "std": [0.25, 0.25]}}),  # 2 numbers for 1 input channel
    ("model[", {"model": _with_weight(math.nan)}),
    ("model[", {"model": _with_weight(math.inf)}),
]


@pytest.mark.parametrize(("key", "changes"), BAD_NUMBERS)
def test_predict_refuses_checkpoint_numbers_once_before_any_image(key, changes, scans, tmp_path, capsys):
    weights = tmp_path / "best.pt"
    torch.save(serving_checkpoint(**changes), weights)
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(weights), "--source", str(scans), "--out", str(out), "--device",
                 "cpu"]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(weights) in line and key in line
    assert not out.exists()  # nothing written: no image was processed


@pytest.mark.parametrize(("key", "changes"), BAD_NUMBERS[::3])
def test_evaluate_and_export_refuse_the_same_numbers(key, changes, tmp_path, make_split, capsys):
    weights = tmp_path / "best.pt"
    torch.save(serving_checkpoint(**changes), weights)
    data = make_split("val", n=2)
    assert main(["evaluate", "--weights", str(weights), "--data", str(data), "--img_f", ".png", "--out",
                 str(tmp_path / "eval"), "--device", "cpu"]) == 2
    assert key in one_line(capsys.readouterr().err) and not (tmp_path / "eval").exists()
    assert main(["export", "--weights", str(weights), "--out", str(tmp_path / "m.onnx")]) == 2
    assert key in one_line(capsys.readouterr().err) and not (tmp_path / "m.onnx").exists()


def test_a_40_gb_base_size_is_refused_when_the_checkpoint_is_read(tmp_path):
    from gctxseg.runs.checkpoint import load_checkpoint

    torch.save(serving_checkpoint(base_size=[100000, 100000]), tmp_path / "huge.pt")
    with pytest.raises(ValueError, match=r"huge\.pt: .*base_size \[100000, 100000\]: each side must be 8\.\.8192"):
        load_checkpoint(tmp_path / "huge.pt")  # read, checked; nothing of that size is ever allocated
    torch.save(serving_checkpoint(base_size=[8192, 8192]), tmp_path / "wide.pt")
    with pytest.raises(ValueError, match=r"wide\.pt: .*H x W = 67,108,864 px, more than 16,777,216"):
        load_checkpoint(tmp_path / "wide.pt")
    torch.save(serving_checkpoint(), tmp_path / "good.pt")
    assert load_checkpoint(tmp_path / "good.pt")["base_size"] == [16, 16]


def test_a_start_with_nan_weights_is_refused_naming_the_tensor(tmp_path):
    from gctxseg.runs.checkpoint import load_model_start

    torch.save(serving_checkpoint(model=_with_weight(math.nan)), tmp_path / "pretrained.pt")
    with pytest.raises(ValueError, match=r"--init-weights .*pretrained\.pt: .*model\['.*'\] holds NaN or inf"):
        load_model_start(tmp_path / "pretrained.pt")


def test_an_onnx_file_whose_metadata_sizes_are_out_of_bounds_is_refused(tmp_path, scans, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from gctxseg.inference.export import METADATA_KEY, export_onnx

    torch.save(serving_checkpoint(), tmp_path / "best.pt")
    path = export_onnx(tmp_path / "best.pt", tmp_path / "model.onnx").path
    proto = onnx.load(str(path))
    entry = next(p for p in proto.metadata_props if p.key == METADATA_KEY)
    entry.value = json.dumps({**json.loads(entry.value), "base_size": [0, 0]})  # failed per image before
    onnx.save(proto, str(path))
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(path), "--source", str(scans), "--out", str(out)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(path) in line and "base_size [0, 0]" in line and not out.exists()
