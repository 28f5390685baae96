"""What the planner derives for one configuration: the nnU-Net topology, the CPU batch, the resolution of thin
structures, a time budget refitted to the first epoch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import write_pair

from gctxseg.models import create_model, list_models
from gctxseg.models.nnunet import plan_stages
from gctxseg.training import planning


def test_nnunet_topology_is_planned_from_the_size_as_nnunet_plans_it():
    kernels, strides = plan_stages((32, 64))
    # each axis halved while its map is >= 8 px: H 32-16-8-4, W 64-32-16-8-4
    assert strides == [(1, 1), (2, 2), (2, 2), (2, 2), (1, 2)] and kernels == [(3, 3)] * 5
    assert len(plan_stages((512, 512))[1]) == 7  # capped at MAX_STAGES
    assert "nnunet" in list_models()
    model = create_model("nnunet", 1, 3, patch_size=(32, 64), base_width=4)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert norms and all(n.affine for n in norms)
    model.train()
    outputs = model(torch.randn(2, 1, 30, 60))  # not a multiple of the strides: padded and cropped back
    assert isinstance(outputs, tuple) and len(outputs) == 1 + model.num_heads
    assert all(o.shape == (2, 3, 30, 60) for o in outputs)
    assert sum(model.deep_supervision_weights) == pytest.approx(1.0)
    assert model.deep_supervision_weights[0] > model.deep_supervision_weights[-1]
    model.eval()
    assert model(torch.randn(1, 1, 30, 60)).shape == (1, 3, 30, 60)


def test_on_a_cpu_the_batch_is_the_smallest_that_costs_as_much_per_image(monkeypatch):
    # a CPU where an image costs the same in any batch: batch 2 (more steps); one where batch 8 halves the cost
    flat = planning._cpu_batch(lambda b: 0.5 * b, 16)
    assert flat[0] == 2 and "2: 0.500" in flat[2]
    gpu_like = planning._cpu_batch(lambda b: {2: 1.0, 4: 1.0, 8: 1.1, 16: 2.2}[b], 16)
    assert gpu_like[0] == 8
    assert planning._cpu_batch(lambda b: 0.5 * b, 1)[0] == 1  # memory allows one image only
    every, why = planning.planned_val_every(step_s=1.0, batch=2, steps_per_epoch=10, n_val=300, epochs=40)
    # 50 s of validation against 10 s of training per epoch: every 50 epochs would do, but 4 validations are kept
    assert every == 10 and "10%" in why
    assert planning.planned_val_every(1.0, 2, 10, 300, 8)[0] == 2  # at least 4 validations
    assert planning.planned_val_every(1.0, 2, 100, 6, 40)[0] == 1


@pytest.mark.slow
def test_a_time_budget_is_refitted_to_the_measured_first_epoch(phantom_dir, monkeypatch, tmp_path):
    from gctxseg.runs.checkpoint import load_checkpoint
    from gctxseg.training import TrainConfig, train

    # a planner that believes steps are free plans thousands of epochs; the first real epoch corrects it
    monkeypatch.setattr(planning, "_seconds_per_step", lambda *args: 1e-5)
    run = train(TrainConfig(
        data_train=str(phantom_dir / "train" / "images"), data_val=str(phantom_dir / "val" / "images"),
        model="unet", model_options={"base_width": 4}, base_size=(32, 32), batch_size=2, time_budget=0.1,
        workers=0, amp="off", device="cpu", results=str(tmp_path), num_samples=0))
    planned = json.loads((run / "plan.json").read_text())["epochs"]
    log = json.loads((run / "log.json").read_text())
    logged = [k for k in log if k.startswith("epoch:")]
    ckpt = load_checkpoint(run / "last.pt")
    assert planned > 1000 and 1 <= len(logged) < planned
    assert log["train parameters"]["epochs"] == ckpt["config"]["epochs"] == len(logged) == ckpt["epoch"] + 1
    assert "val log:" in log[logged[-1]]  # the last epoch of the re-fitted schedule is validated


def test_thin_structures_keep_their_resolution(monkeypatch):
    monkeypatch.setattr(planning, "_memory_budget", lambda device: 8 << 30)
    given = {"batch_size": 2, "epochs": 10}
    vessels = planning.plan_training("unet", {"584x565": 20}, 20, 0, 3, 2, torch.device("cpu"), given=given,
                                     structure_width=2.0)
    blobs = planning.plan_training("unet", {"584x565": 20}, 20, 0, 3, 2, torch.device("cpu"), given=given,
                                   structure_width=30.0)
    assert vessels.base_size == (576, 560) and "2 px wide" in vessels.reasons["base_size"]
    assert blobs.base_size[0] * blobs.base_size[1] <= 256 * 512 * 1.05  # the pixel budget as before
    # a time budget does not shrink them either: a step time that fits only a few steps leaves the size
    monkeypatch.setattr(planning, "_seconds_per_step", lambda *args: 10.0)
    timed = planning.plan_training("unet", {"584x565": 20}, 20, 0, 3, 2, torch.device("cpu"),
                                   given={"batch_size": 2}, time_budget_s=60, structure_width=2.0)
    assert timed.base_size == (576, 560)


def test_the_fingerprint_measures_structure_width(tmp_path):
    from gctxseg.data import find_pairs, fingerprint_dataset

    mask = np.zeros((40, 40), np.uint8)
    mask[:, 10:13] = 255  # a 3-pixel vessel
    write_pair(tmp_path, "a", np.full((40, 40), 50, np.uint8), mask)
    fingerprint = fingerprint_dataset(find_pairs(tmp_path / "images", ".png", ".png"))
    assert fingerprint.structure_width == pytest.approx(2.0)
