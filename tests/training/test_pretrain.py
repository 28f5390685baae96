"""Pre-training (training/pretrain.py) and whole-model starts (training/start.py, ``--init-weights``): a few steps
each, checking that weights change, are saved, resume exactly, repeat with a seed and load into a training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from gctxseg.cli import main
from gctxseg.models import create_model
from gctxseg.runs.checkpoint import load_checkpoint
from gctxseg.training import TrainingInterrupted
from gctxseg.training import pretrain as pretrain_module
from gctxseg.training.pretrain import MaskedImages, PretrainConfig, _masked_l1, pretrain, pretrain_sequence
from gctxseg.training.start import load_start, start_architecture

pytestmark = pytest.mark.slow  # every test here trains a model

TINY_UNET = {"model": "unet", "model_options": {"base_width": 4}, "base_size": (32, 32), "batch_size": 2,
             "images_per_epoch": 4, "epochs": 2, "workers": 0, "amp": "off", "device": "cpu"}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_phantom_pretraining_changes_weights_and_records_itself(tmp_path, one_thread):
    torch.manual_seed(0)
    initial = create_model("unet", in_channels=1, num_classes=3, base_width=4).state_dict()
    weights = pretrain(PretrainConfig(out=str(tmp_path / "pt"), seed=0, **TINY_UNET))
    saved = load_checkpoint(weights)
    trained = saved["model"]
    assert any(not torch.equal(initial[k], trained[k]) for k in initial if initial[k].is_floating_point())
    record = saved["pretraining"]
    assert record["task"] == "phantom" and record["epochs"] == 2
    assert record["optimizer steps"] == 4 and record["images seen"] == 8  # 2 epochs x 4 scans, batch 2
    log = json.loads((tmp_path / "pt" / "log.json").read_text())
    assert [k for k in log if k.startswith("epoch:")] == ["epoch:0", "epoch:1"]
    assert (tmp_path / "pt" / "pretrain.json").is_file() and (tmp_path / "pt" / "env.json").is_file()


def test_a_seed_gives_the_same_weights(tmp_path, one_thread):
    first = pretrain(PretrainConfig(out=str(tmp_path / "a"), seed=3, **TINY_UNET))
    second = pretrain(PretrainConfig(out=str(tmp_path / "b"), seed=3, **TINY_UNET))
    other = pretrain(PretrainConfig(out=str(tmp_path / "c"), seed=4, **TINY_UNET))
    assert _same(_weights(first), _weights(second))
    assert not _same(_weights(first), _weights(other))


def test_a_stopped_pretraining_resumes_to_the_same_weights(tmp_path, monkeypatch, one_thread):
    straight = pretrain(PretrainConfig(out=str(tmp_path / "straight"), seed=1, **TINY_UNET))
    real_run_steps, calls = pretrain_module.run_steps, []

    def stop_in_the_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            args[9]["signal"] = 2  # the stop flag, as SIGINT sets it: honoured after this epoch's first step
        return real_run_steps(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "run_steps", stop_in_the_second_epoch)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        pretrain(PretrainConfig(out=str(tmp_path / "stopped"), seed=1, **TINY_UNET))
    assert load_checkpoint(tmp_path / "stopped" / "last.pt")["epoch"] == 0  # the partial epoch is not kept
    monkeypatch.setattr(pretrain_module, "run_steps", real_run_steps)
    resumed = pretrain(PretrainConfig(resume=str(tmp_path / "stopped" / "last.pt"), device="cpu", workers=0))
    assert resumed == tmp_path / "stopped" / "pretrained.pt"
    assert _same(_weights(straight), _weights(resumed))


def test_masked_image_modelling_rebuilds_only_the_blanked_pixels(phantom_dir, tmp_path, one_thread):
    cfg = PretrainConfig(task="mim", images=(str(phantom_dir / "train" / "images"),), out=str(tmp_path / "mim"),
                         **{**TINY_UNET, "epochs": 1})
    data = MaskedImages(cfg)
    blanked, target, _ = data[0]
    hidden = target[-1]
    assert abs(hidden.mean().item() - cfg.mask_ratio) < 0.1  # 4 x 4 patches of 8 px... at the asked ratio
    assert torch.all(blanked[:, hidden > 0] == 0)
    rebuilt = target[None, :-1].clone()
    rebuilt[..., hidden == 0] += 5.0  # errors on the visible pixels do not count
    assert _masked_l1(rebuilt, target[None]).item() == pytest.approx(0.0)
    weights = pretrain(cfg)
    assert load_checkpoint(weights)["pretraining"]["scans"] == len(data)


def test_a_start_loads_into_gctx_unet_with_its_head_of_other_classes_fresh(tmp_path, one_thread):
    settings = {**TINY_UNET, "model": "gctx_unet", "model_options": {}, "epochs": 1}
    weights = pretrain(PretrainConfig(out=str(tmp_path / "pt"), **settings))
    trained = _weights(weights)
    assert start_architecture(weights) == "gctx_unet"
    model = create_model("gctx_unet", in_channels=3, num_classes=2)  # a colour set of 2 classes
    report = load_start(model, "gctx_unet", weights)
    state = model.state_dict()
    assert report.left == [k for k in state if k.startswith("head")] and report.loaded == len(state) - len(report.left)
    assert len(report.adapted) == 1 and state[report.adapted[0]].shape[1] == 3  # the stem, adapted to colour
    same = [k for k in state if k not in report.left + report.adapted]
    assert all(torch.equal(state[k], trained[k]) for k in same)
    grey = torch.rand(1, 1, 32, 32)
    stem = trained[report.adapted[0]]
    assert torch.allclose(torch.nn.functional.conv2d(grey.repeat(1, 3, 1, 1), state[report.adapted[0]]),
                          torch.nn.functional.conv2d(grey, stem), atol=1e-5)  # grey as colour: same response
    with pytest.raises(ValueError, match="holds a gctx_unet, not a unet"):
        load_start(create_model("unet", 1, 2, base_width=4), "unet", weights)


def test_train_init_weights_is_recorded_in_plan_and_log(phantom_dir, tmp_path, one_thread):
    from gctxseg.training import train

    weights = pretrain_sequence(PretrainConfig(out=str(tmp_path / "pt"), **{**TINY_UNET, "epochs": 1}), ["phantom"])
    run = train(tiny_config(phantom_dir, tmp_path / "runs", epochs=1, init_weights=str(weights)))
    plan = json.loads((run / "plan.json").read_text())
    log = json.loads((run / "log.json").read_text())
    for record in (plan["init weights"], log["train parameters"]["init weights"]):
        assert record["source"] == str(weights) and record["pretraining"]["task"] == "phantom"
        assert record["left"] == []  # the phantom's 3 classes are the tiny set's 3: the head is kept too
    with pytest.raises(ValueError, match="give one"):
        tiny_config(phantom_dir, tmp_path / "runs", init_weights=str(weights), encoder_weights="imagenet")


def test_cli_pretrain_and_its_one_line_errors(phantom_dir, tmp_path, capsys, one_thread):
    out = tmp_path / "cli"
    code = main(["pretrain", "--task", "phantom", "--model", "unet", "--model-option", "base_width=4",
                 "--base-size", "32", "32", "--epochs", "1", "--images-per-epoch", "4", "--batch-size", "2",
                 "--workers", "0", "--amp", "off", "--device", "cpu", "--out", str(out)])
    assert code == 0 and (out / "phantom" / "pretrained.pt").is_file()
    assert "--init-weights" in capsys.readouterr().out
    assert main(["pretrain", "--task", "mim", "--out", str(tmp_path / "m")]) == 2
    assert "give --images DIR" in capsys.readouterr().err
    assert main(["pretrain", "--task", "mim", "--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "n"),
                 "--device", "cpu", "--workers", "0"]) == 1  # the data is missing: exit 1
    assert "folder not found" in capsys.readouterr().err
    assert main(["pretrain", "--out", str(out), "--device", "cpu"]) == 2  # not empty: never mixed
    assert "not empty" in capsys.readouterr().err


def test_an_installed_start_is_planned_for_gctx_unet_and_none_starts_from_scratch(
        phantom_dir, tmp_path, monkeypatch, capsys, one_thread):
    from gctxseg.training import train
    from gctxseg.training.start import offline_start

    monkeypatch.setenv("GCTXSEG_CACHE", str(tmp_path / "cache"))
    gctx = {"model": "gctx_unet", "model_options": {}, "epochs": 1, "batch_size": 4}
    run = train(tiny_config(phantom_dir, tmp_path / "runs", **gctx))
    assert "gctx_unet starts from scratch: no offline start in" in capsys.readouterr().out
    assert json.loads((run / "log.json").read_text())["train parameters"]["init weights"] is None
    assert main(["pretrain", "--base-size", "32", "32", "--epochs", "1", "--images-per-epoch", "4", "--batch-size",
                 "2", "--workers", "0", "--amp", "off", "--device", "cpu", "--out", str(tmp_path / "pt"),
                 "--install"]) == 0
    installed = offline_start("gctx_unet")
    assert installed.is_file() and "installed" in capsys.readouterr().out
    run = train(tiny_config(phantom_dir, tmp_path / "runs", **gctx))
    assert json.loads((run / "plan.json").read_text())["init weights"]["source"] == str(installed)
    run = train(tiny_config(phantom_dir, tmp_path / "runs", init_weights="none", **gctx))
    assert json.loads((run / "plan.json").read_text())["init weights"] is None
    run = train(tiny_config(phantom_dir, tmp_path / "runs", model="unet"))  # not measured with a start: none
    assert json.loads((run / "plan.json").read_text())["init weights"] is None
