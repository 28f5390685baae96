"""What gctxseg prints about a start or a NaN is what the next run does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from helpers_checkpoints import UNET

from gctxseg.cli import main
from gctxseg.models import create_model


@pytest.mark.slow
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


def test_a_stop_is_said_once_and_a_cv_fold_is_told_to_rerun_cv(tmp_path, capsys):
    from gctxseg.training import TrainingInterrupted, segmentation
    from gctxseg.training.distributed import Distributed

    for cv_fold, how in ((False, f"resume with: gctxseg train --resume {tmp_path / 'last.pt'}"),
                         (True, "run the same gctxseg cv command again: it resumes this fold")):
        with pytest.raises(TrainingInterrupted) as err:
            segmentation._leave_stopped(15, Distributed(), tmp_path, cv_fold=cv_fold)
        assert str(err.value) == f"training stopped by signal 15; {how}" and err.value.said_by
    assert capsys.readouterr().err == ""  # said once, by the command line, not also here
    assert not TrainingInterrupted("x", said_by=False).said_by  # a torchrun rank other than 0 leaves quietly
