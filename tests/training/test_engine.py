"""Training end to end on a tiny phantom: run folder contents, seed-format log, resume, determinism, predict."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image

from gctxseg.training import TrainConfig, TrainingInterrupted, load_checkpoint, lr_at, train
from gctxseg.workflows.predict_folder import predict_folder

INFO_KEYS = {
    "pixel accuracy", "Precision", "Recall", "F1 score", "Dice", "IoU", "mean precision", "mean recall",
    "mean f1 score", "mean dice", "mean iou", "loss", "lr",
}  # fmt: skip


def _config(phantom_dir, tmp_path, **overrides) -> TrainConfig:
    return tiny_config(phantom_dir, tmp_path / "runs", **overrides)


@pytest.mark.slow
def test_two_epochs_write_every_file_with_seed_log_format(phantom_dir, tmp_path):
    run = train(_config(phantom_dir, tmp_path))
    assert run.name == "exp"
    for name in ("log.json", "curves.png", "best.pt", "last.pt", "preview.png", "dataset_fingerprint.json",
                 "env.json", "samples/val_predictions.png"):  # fmt: skip
        assert (run / name).is_file(), name
    log = json.loads((run / "log.json").read_text())
    assert set(log) == {"train parameters", "model", "epoch:0", "epoch:1"}
    params = log["train parameters"]
    assert {"model", "input size", "batch size", "lr", "lrf", "ct", "epochs", "num classes"} <= set(params)
    assert params["num classes"] == 3 and params["ct"] is False and params["input size"] == [32, 32]
    assert log["model"]["total parameters"] > 0 and log["model"]["flops"] > 0
    for epoch in ("epoch:0", "epoch:1"):
        assert set(log[epoch]) == {"train log:", "val log:"}
        for split in ("train log:", "val log:"):
            info = log[epoch][split]["info"]
            assert set(info) == INFO_KEYS
            assert len(info["Dice"]) == 2  # foreground classes: edema, hole
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["value_map"] == {"0": 0, "128": 1, "255": 2}
    assert {"model", "optimizer", "scheduler", "config", "normalization", "rng"} <= set(ckpt)
    # a second run never overwrites the first
    assert train(_config(phantom_dir, tmp_path, epochs=1)).name == "exp2"


@pytest.mark.slow
def test_same_seed_gives_the_same_run_on_cpu(phantom_dir, tmp_path):
    a = train(_config(phantom_dir, tmp_path / "a", epochs=1))
    b = train(_config(phantom_dir, tmp_path / "b", epochs=1))
    log_a, log_b = (json.loads((r / "log.json").read_text()) for r in (a, b))
    assert log_a["epoch:0"] == log_b["epoch:0"]
    wa, wb = (load_checkpoint(r / "last.pt")["model"] for r in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_disk_cache_run_in_a_loader_worker_equals_the_in_memory_run(phantom_dir, tmp_path):
    cache = tmp_path / "cache"
    a = train(_config(phantom_dir, tmp_path / "a", epochs=1))
    b = train(_config(phantom_dir, tmp_path / "b", epochs=1, cache_dir=str(cache), workers=1))
    log_a, log_b = (json.loads((r / "log.json").read_text()) for r in (a, b))
    assert log_a["epoch:0"] == log_b["epoch:0"] and log_b["train parameters"]["sample cache"] == str(cache)
    # an image and a mask file per case read: all 6 validation and the 12 training cases of the epoch's full
    # batches (drop_last) at least, the preview's cases besides
    entries = len(list(cache.glob("*.npy")))
    assert entries % 2 == 0 and 2 * (12 + 6) <= entries <= 2 * 20
    wa, wb = (load_checkpoint(r / "last.pt")["model"] for r in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_resume_continues_the_epoch_count_exactly(phantom_dir, tmp_path):
    full = train(_config(phantom_dir, tmp_path / "full", epochs=3))
    part = tmp_path / "part" / "runs" / "exp"

    def interrupt_after_first_epoch():  # what Ctrl-C does, delivered once epoch 0 is logged
        while not (part / "log.json").exists():
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_after_first_epoch, daemon=True).start()
    with pytest.raises(TrainingInterrupted):
        train(_config(phantom_dir, tmp_path / "part", epochs=3, workers=1))
    assert load_checkpoint(part / "last.pt")["epoch"] < 2
    resumed = train(TrainConfig(resume=str(part / "last.pt"), workers=0))
    assert resumed == part
    log_full, log_part = (json.loads((r / "log.json").read_text()) for r in (full, part))
    assert [k for k in log_part if k.startswith("epoch:")] == ["epoch:0", "epoch:1", "epoch:2"]
    # same weights and same log as the uninterrupted run (loader worker count does not matter)
    assert log_part == log_full
    wf, wp = (load_checkpoint(r / "last.pt")["model"] for r in (full, part))
    assert all(torch.equal(wf[k], wp[k]) for k in wf)


@pytest.mark.slow
def test_predict_writes_masks_at_original_size_with_original_values(phantom_dir, tmp_path):
    run = train(_config(phantom_dir, tmp_path, epochs=1))
    source = tmp_path / "inference" / "img"
    source.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8)).save(source / "wide.png")
    Image.open(next((phantom_dir / "val" / "images").iterdir())).save(source / "oct.jpg")
    (source / "broken.png").write_bytes(b"garbage")
    summary = predict_folder(run / "best.pt", source, tmp_path / "out", device="cpu", amp="off")
    assert sorted(p.name for p in summary.written) == ["oct.png", "wide.png"]
    assert len(summary.failed) == 1 and "broken.png" in summary.failed[0]
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "wide.png"))
    assert mask.shape == (50, 70) and set(np.unique(mask).tolist()) <= {0, 128, 255}
    assert (tmp_path / "out" / "overlays" / "wide.png").is_file()


def test_lr_schedule_warms_up_then_decays_to_lr_times_lrf():
    total, warm, lrf = 100, 10, 0.01
    factors = [lr_at(s, total, warm, lrf) for s in range(total + 1)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[-1] == pytest.approx(lrf)


def test_grad_accum_averages_the_gradients_of_its_batches():
    """--grad-accum 2 over two batches: one optimiser step along the mean of the two batches' gradients."""
    from gctxseg.losses import DiceCELoss
    from gctxseg.training import train_one_epoch

    torch.manual_seed(0)
    images, masks = torch.randn(4, 1, 16, 16), torch.randint(0, 3, (4, 16, 16))
    halves = [(images[:2], masks[:2], torch.arange(2)), (images[2:], masks[2:], torch.arange(2, 4))]
    loss_fn = DiceCELoss()

    def fresh_model():
        torch.manual_seed(1)
        return torch.nn.Conv2d(1, 3, 3, padding=1)

    def run(grad_accum):
        model = fresh_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # step = -gradient, so the test sees it
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        info = train_one_epoch(
            model, halves, loss_fn, optimizer, scheduler, scaler, None, torch.device("cpu"), 3, 0.0,
            {"signal": None}, ["x"] * 4, grad_accum,
        )  # fmt: skip
        return model, scheduler.last_epoch, info

    reference = fresh_model()
    losses = [loss_fn(reference(x), y) for x, y, _ in halves]
    grads = torch.autograd.grad(torch.stack(losses).mean(), list(reference.parameters()))
    accumulated, steps, info = run(grad_accum=2)
    assert steps == 1 and run(grad_accum=1)[1] == 2
    for before, after, grad in zip(reference.parameters(), accumulated.parameters(), grads):
        assert torch.allclose(after, before - grad, atol=1e-6)
    assert info["loss"] == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)


def test_compile_falls_back_to_eager_without_a_compiler(monkeypatch, capsys):
    import gctxseg.core.runtime as runtime

    monkeypatch.setattr(runtime.shutil, "which", lambda _name: None)
    model = torch.nn.Conv2d(1, 1, 1)
    assert runtime.compile_model(model, torch.device("cpu")) is model
    assert "needs a C++ compiler" in capsys.readouterr().err


@pytest.mark.slow
def test_best_pt_holds_the_weights_without_the_optimiser_and_is_not_resumed(tiny_run):
    best, last = load_checkpoint(tiny_run / "best.pt"), load_checkpoint(tiny_run / "last.pt")
    assert best["optimizer"] is None and best["scaler"] is None and last["optimizer"] is not None
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])  # one epoch: the same weights
    assert (tiny_run / "best.pt").stat().st_size < 0.6 * (tiny_run / "last.pt").stat().st_size
    with pytest.raises(ValueError, match="resume from the run's last.pt"):
        train(TrainConfig(resume=str(tiny_run / "best.pt"), device="cpu"))
