"""Flags that size a run are checked with the same bounds as the files that carry them: one line, exit 2."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import one_line, write_pair
from helpers_checkpoints import serving_checkpoint

from gctxseg.cli import main


@pytest.mark.parametrize("size", [["100000", "100000"], ["0", "0"], ["-5", "7"], ["8192", "8192"]])
def test_models_base_size_out_of_bounds_is_one_line_before_any_model_is_built(size, monkeypatch, capsys):
    import gctxseg.models as models

    def never(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(models, "create_model", never)
    assert main(["models", "--base-size", *size]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: --base-size {' '.join(size)}: ")


def test_train_and_pretrain_base_size_share_the_bounds(tmp_path, capsys):
    from gctxseg.training import TrainConfig
    from gctxseg.training.pretrain import PretrainConfig

    with pytest.raises(ValueError, match=r"--base-size 100000 100000: each side must be 8\.\.8192"):
        TrainConfig(base_size=(100000, 100000))
    with pytest.raises(ValueError, match=r"--base-size \(9000, 9000\): each side must be 8\.\.8192"):
        PretrainConfig(base_size=(9000, 9000))
    assert main(["train", "--base-size", "100000", "100000", "--data-train", str(tmp_path / "none"),
                 "--results", str(tmp_path / "runs")]) == 2  # the flag, before the (missing) data is looked for
    assert "--base-size 100000 100000" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()
    assert TrainConfig(base_size=[4096, 4096]).base_size == (4096, 4096)


def test_plan_time_budget_must_be_positive_and_finite(tmp_path, capsys):
    from gctxseg.training import TrainConfig
    from gctxseg.training.pretrain import PretrainConfig

    data = tmp_path / "data"
    for i in range(2):
        mask = np.zeros((16, 16), np.uint8)
        mask[4:8, 4:8] = 255
        write_pair(data, f"c{i}", np.full((16, 16), 80, np.uint8), mask)
    for budget in ("-1", "0", "nan", "inf"):
        assert main(["plan", str(data / "images"), "--time-budget", budget, "--device", "cpu"]) == 2
        assert f"--time-budget {float(budget)}: must be minutes > 0" in one_line(capsys.readouterr().err)
    for budget in (math.nan, math.inf, -1.0):
        with pytest.raises(ValueError, match="--time-budget"):
            TrainConfig(time_budget=budget)
        with pytest.raises(ValueError, match="--time-budget"):
            PretrainConfig(time_budget=budget)


def test_unknown_model_options_are_refused_listing_the_architectures_options(tmp_path, capsys):
    argv = ["train", "--model", "unet_plus_plus", "--model-option", "base_width=8", "--data-train",
            str(tmp_path / "none"), "--results", str(tmp_path / "runs")]
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert "['base_width'] are no options of unet_plus_plus" in line and "'width', 'widths'" in line
    assert main(["train", "--model", "unet", "--model-option", "base_width=1e9", "--data-train",
                 str(tmp_path / "none")]) == 2
    assert "--model-option base_width=1000000000.0: must be int" in one_line(capsys.readouterr().err)
    assert main(["pretrain", "--model", "unet", "--model-option", "depth=3", "--out", str(tmp_path / "pt")]) == 2
    assert "['depth'] are no options of unet" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "pt").exists()


def test_export_opset_outside_what_torch_exports_is_one_line(tmp_path, capsys):
    pytest.importorskip("onnx")
    from gctxseg.inference.export import supported_opsets

    torch.save(serving_checkpoint(), tmp_path / "best.pt")
    for opset in ("1", "10", str(supported_opsets().stop)):
        out = tmp_path / f"m{opset}.onnx"
        assert main(["export", "--weights", str(tmp_path / "best.pt"), "--out", str(out), "--opset", opset]) == 2
        line = one_line(capsys.readouterr().err)
        assert f"--opset {opset}: must be 11..{supported_opsets().stop - 1}" in line and not out.exists()
