"""The epoch driver (training/driver.py) that segmentation training and pre-training share: both end by a time
budget's deadline through it, and a run of fixed length never reads the clock (its steps and validations cannot
depend on the machine's speed). The clock is a tick clock (one second a reading): the same steps on any CPU."""

from __future__ import annotations

import json
from itertools import count

import pytest
from conftest import tiny_config

from gctxseg.training import driver, planning, segmentation, train
from gctxseg.training import pretrain as pretrain_module
from gctxseg.training import schedule as schedule_module
from gctxseg.training.pretrain import PretrainConfig, pretrain

TINY_PRETRAIN = {"model": "unet", "model_options": {"base_width": 4}, "base_size": (32, 32), "batch_size": 2,
                 "images_per_epoch": 4, "epochs": 1, "workers": 0, "amp": "off", "device": "cpu"}
CLOCK_MODULES = (schedule_module, driver, segmentation, pretrain_module)


@pytest.fixture
def driven(monkeypatch):
    """Which runs went through the shared driver: the kinds of run (``EpochRun.what``) it drove."""
    kinds, real = [], driver.drive_epochs

    def recording(run, **settings):
        kinds.append(run.what)
        return real(run, **settings)

    for module in (segmentation, pretrain_module):
        monkeypatch.setattr(module, "drive_epochs", recording)
    return kinds


def test_training_and_pretraining_end_by_their_deadline_in_the_one_driver(
        phantom_dir, tmp_path, monkeypatch, driven, one_thread):
    ticks = count()
    for module in CLOCK_MODULES:
        monkeypatch.setattr(module, "now", lambda: float(next(ticks)))
    monkeypatch.setattr(planning, "_seconds_per_step", lambda *args: 5.0)  # 1 epoch planned: the clock lengthens it
    run = train(tiny_config(phantom_dir, tmp_path, epochs=None, batch_size=2, time_budget=0.75, num_samples=0))
    pretrain(PretrainConfig(out=str(tmp_path / "pt"), seed=0, time_budget=0.75, **TINY_PRETRAIN))
    assert driven == ["epoch", "pretrain epoch"]
    for log_file, header_key in ((run / "log.json", "train parameters"),
                                 (tmp_path / "pt" / "log.json", "pretrain parameters")):
        header = json.loads(log_file.read_text())[header_key]
        budget = header["time budget"]
        # lengthened beyond the one planned epoch, and ended by the deadline (within the 45-second budget)
        assert header["steps"] > header["schedule"][0][1] and budget["budget s"] == 45.0
        assert budget["spent s"] <= budget["budget s"]
        assert 0 < budget["training s"] <= budget["spent s"]


def test_a_run_of_fixed_length_never_reads_the_clock(phantom_dir, tmp_path, monkeypatch, driven, one_thread):
    def no_clock():
        raise AssertionError("a fixed schedule read the clock")

    for module in (schedule_module, driver):
        monkeypatch.setattr(module, "now", no_clock)
    run = train(tiny_config(phantom_dir, tmp_path, epochs=2, val_every=1))
    log = json.loads((run / "log.json").read_text())
    assert [("val log:" in log[f"epoch:{e}"]) for e in range(2)] == [True, True]  # on its cadence, every epoch
    assert "time budget" not in log["train parameters"]
    weights = pretrain(PretrainConfig(out=str(tmp_path / "pt"), seed=0, **{**TINY_PRETRAIN, "epochs": 2}))
    assert weights.is_file() and json.loads((tmp_path / "pt" / "log.json").read_text())["pretrain parameters"][
        "steps"] == 4
    assert driven == ["epoch", "pretrain epoch"]
