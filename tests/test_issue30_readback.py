"""Issue 30, section 3 (checkpoint and flag numbers) and section 8 (lines that mislead).

Every number that sizes a run is checked once, by one function, whether a flag or a file read back sets it:
refused with one line naming the file (and the key) or the flag, exit 2, before any image is processed or any
model is built. What gctxseg prints about a start, a rare class or a NaN is what the next run does.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config, write_pair

from gctxseg.cli import main
from gctxseg.data import DatasetError
from gctxseg.models import create_model

UNET = {"base_width": 4}


def _checkpoint(**changes) -> dict:
    """A serving checkpoint of a tiny unet (1 channel, classes 0/128/255 at 16x16), as train writes one."""
    torch.manual_seed(0)
    model = create_model("unet", 1, 3, **UNET)
    ckpt = {"model_name": "unet", "model_kwargs": dict(UNET), "model": model.state_dict(),
            "value_map": {"0": 0, "128": 1, "255": 2}, "fingerprint": {"channels": 1}, "base_size": [16, 16],
            "normalization": {"mean": [0.5], "std": [0.25]}}  # fmt: skip
    return {**ckpt, **changes}


def _with_weight(value: float) -> dict:
    state = dict(_checkpoint()["model"])
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


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------- section 3: numbers in checkpoints

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
    torch.save(_checkpoint(**changes), weights)
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(weights), "--source", str(scans), "--out", str(out), "--device",
                 "cpu"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(weights) in line and key in line
    assert not out.exists()  # nothing written: no image was processed


@pytest.mark.parametrize(("key", "changes"), BAD_NUMBERS[::3])
def test_evaluate_and_export_refuse_the_same_numbers(key, changes, tmp_path, make_split, capsys):
    weights = tmp_path / "best.pt"
    torch.save(_checkpoint(**changes), weights)
    data = make_split("val", n=2)
    assert main(["evaluate", "--weights", str(weights), "--data", str(data), "--img_f", ".png", "--out",
                 str(tmp_path / "eval"), "--device", "cpu"]) == 2
    assert key in _one_line(capsys.readouterr().err) and not (tmp_path / "eval").exists()
    assert main(["export", "--weights", str(weights), "--out", str(tmp_path / "m.onnx")]) == 2
    assert key in _one_line(capsys.readouterr().err) and not (tmp_path / "m.onnx").exists()


def test_a_40_gb_base_size_is_refused_when_the_checkpoint_is_read(tmp_path):
    from gctxseg.runs.checkpoint import load_checkpoint

    torch.save(_checkpoint(base_size=[100000, 100000]), tmp_path / "huge.pt")
    with pytest.raises(ValueError, match=r"huge\.pt: .*base_size \[100000, 100000\]: each side must be 8\.\.8192"):
        load_checkpoint(tmp_path / "huge.pt")  # read, checked; nothing of that size is ever allocated
    torch.save(_checkpoint(base_size=[8192, 8192]), tmp_path / "wide.pt")
    with pytest.raises(ValueError, match=r"wide\.pt: .*H x W = 67,108,864 px, more than 16,777,216"):
        load_checkpoint(tmp_path / "wide.pt")
    torch.save(_checkpoint(), tmp_path / "good.pt")
    assert load_checkpoint(tmp_path / "good.pt")["base_size"] == [16, 16]


def test_a_start_with_nan_weights_is_refused_naming_the_tensor(tmp_path):
    from gctxseg.runs.checkpoint import load_model_start

    torch.save(_checkpoint(model=_with_weight(math.nan)), tmp_path / "pretrained.pt")
    with pytest.raises(ValueError, match=r"--init-weights .*pretrained\.pt: .*model\['.*'\] holds NaN or inf"):
        load_model_start(tmp_path / "pretrained.pt")


# ---------------------------------------------------------------- section 3: the same bounds for the flags


@pytest.mark.parametrize("size", [["100000", "100000"], ["0", "0"], ["-5", "7"], ["8192", "8192"]])
def test_models_base_size_out_of_bounds_is_one_line_before_any_model_is_built(size, monkeypatch, capsys):
    import gctxseg.models as models

    def never(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(models, "create_model", never)
    assert main(["models", "--base-size", *size]) == 2
    line = _one_line(capsys.readouterr().err)
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
    assert "--base-size 100000 100000" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()
    assert TrainConfig(base_size=[4096, 4096]).base_size == (4096, 4096)


# ---------------------------------------------------------------- section 8: flags that were tracebacks or nonsense


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
        assert f"--time-budget {float(budget)}: must be minutes > 0" in _one_line(capsys.readouterr().err)
    for budget in (math.nan, math.inf, -1.0):
        with pytest.raises(ValueError, match="--time-budget"):
            TrainConfig(time_budget=budget)
        with pytest.raises(ValueError, match="--time-budget"):
            PretrainConfig(time_budget=budget)


def test_unknown_model_options_are_refused_listing_the_architectures_options(tmp_path, capsys):
    argv = ["train", "--model", "unet_plus_plus", "--model-option", "base_width=8", "--data-train",
            str(tmp_path / "none"), "--results", str(tmp_path / "runs")]
    assert main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert "['base_width'] are no options of unet_plus_plus" in line and "'width', 'widths'" in line
    assert main(["train", "--model", "unet", "--model-option", "base_width=1e9", "--data-train",
                 str(tmp_path / "none")]) == 2
    assert "--model-option base_width=1000000000.0: must be int" in _one_line(capsys.readouterr().err)
    assert main(["pretrain", "--model", "unet", "--model-option", "depth=3", "--out", str(tmp_path / "pt")]) == 2
    assert "['depth'] are no options of unet" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "pt").exists()


def test_export_opset_outside_what_torch_exports_is_one_line(tmp_path, capsys):
    pytest.importorskip("onnx")
    from gctxseg.inference.export import supported_opsets

    torch.save(_checkpoint(), tmp_path / "best.pt")
    for opset in ("1", "10", str(supported_opsets().stop)):
        out = tmp_path / f"m{opset}.onnx"
        assert main(["export", "--weights", str(tmp_path / "best.pt"), "--out", str(out), "--opset", opset]) == 2
        line = _one_line(capsys.readouterr().err)
        assert f"--opset {opset}: must be 11..{supported_opsets().stop - 1}" in line and not out.exists()


# ---------------------------------------------------------------- section 8: an installed start is used


def test_an_installed_start_of_any_architecture_is_what_the_next_run_starts_from(
        phantom_dir, tmp_path, monkeypatch, capsys, one_thread):
    from gctxseg.training import train
    from gctxseg.training.start import offline_start

    monkeypatch.setenv("GCTXSEG_CACHE", str(tmp_path / "cache"))
    assert main(["pretrain", "--model", "unet", "--model-option", "base_width=4", "--base-size", "32", "32",
                 "--epochs", "1", "--images-per-epoch", "4", "--batch-size", "2", "--workers", "0", "--amp", "off",
                 "--device", "cpu", "--out", str(tmp_path / "pt"), "--install"]) == 0
    installed = offline_start("unet")
    said = capsys.readouterr().out
    assert f"installed {installed}: gctxseg train and cv runs of unet with --model-option base_width=4 start" in said
    run = train(tiny_config(phantom_dir, tmp_path / "runs", epochs=1))  # unet, base_width 4: as said
    assert json.loads((run / "plan.json").read_text())["init weights"]["source"] == str(installed)
    assert f"init weights: the installed offline start {installed}" in capsys.readouterr().out
    run = train(tiny_config(phantom_dir, tmp_path / "runs", epochs=1, model_options={"base_width": 2}))
    assert json.loads((run / "plan.json").read_text())["init weights"] is None  # other options: said, not silent
    assert "unet starts from scratch: the installed start" in capsys.readouterr().out
    run = train(tiny_config(phantom_dir, tmp_path / "runs", epochs=1, init_weights="none"))
    assert json.loads((run / "plan.json").read_text())["init weights"] is None


# ---------------------------------------------------------------- section 8: a class one fold holds out whole


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
    line = _one_line(capsys.readouterr().err)
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


# ---------------------------------------------------------------- section 8: NaN from a start


def test_nan_from_the_start_names_the_start_not_a_good_checkpoint(phantom_dir, tmp_path, one_thread):
    from gctxseg.training import NonFiniteLossError, train

    model = create_model("unet", 1, 3, **UNET)
    # finite, so the start is read; large enough that the first forward overflows to inf, then NaN
    state = {k: torch.full_like(v, 3e38) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    start = tmp_path / "pretrained.pt"
    torch.save({"model_name": "unet", "model_kwargs": dict(UNET), "model": state}, start)
    with pytest.raises(NonFiniteLossError) as err:
        train(tiny_config(phantom_dir, tmp_path / "runs", init_weights=str(start), epochs=1))
    message = str(err.value)
    assert f"no epoch has finished, so {tmp_path / 'runs' / 'exp' / 'last.pt'} holds only the start {start}" in message
    assert "try a lower --lr, or another start" in message and "last good checkpoint" not in message


def test_nan_after_a_finished_epoch_still_names_last_pt():
    from gctxseg.training.loop import nonfinite_advice

    assert nonfinite_advice(False, Path("runs/exp/last.pt"), "p.pt") == "; the last good checkpoint is runs/exp/last.pt"
    assert "runs/exp/last.pt holds only the initial weights" in nonfinite_advice(True, Path("runs/exp/last.pt"), None)


def test_an_onnx_file_whose_metadata_sizes_are_out_of_bounds_is_refused(tmp_path, scans, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from gctxseg.inference.export import METADATA_KEY, export_onnx

    torch.save(_checkpoint(), tmp_path / "best.pt")
    path = export_onnx(tmp_path / "best.pt", tmp_path / "model.onnx").path
    proto = onnx.load(str(path))
    entry = next(p for p in proto.metadata_props if p.key == METADATA_KEY)
    entry.value = json.dumps({**json.loads(entry.value), "base_size": [0, 0]})  # failed per image before
    onnx.save(proto, str(path))
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(path), "--source", str(scans), "--out", str(out)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(path) in line and "base_size [0, 0]" in line and not out.exists()
