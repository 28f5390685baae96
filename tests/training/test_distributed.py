"""DDP on CPU: two gloo processes under torchrun give the validation metrics of one process on the saved weights."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader

from gctxseg.data import DatasetFingerprint, MaskValueMap, SegmentationDataset, expand_slices, find_pairs
from gctxseg.data.transforms import eval_transforms
from gctxseg.losses import DiceCELoss
from gctxseg.models import create_model
from gctxseg.training import evaluate, load_checkpoint

pytestmark = pytest.mark.slow  # every test here trains a model


def _torchrun_train(phantom_dir, results, cache, model: str, options: list[str]) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "gctxseg", "train",
        "--data-train", str(phantom_dir / "train" / "images"), "--data-val", str(phantom_dir / "val" / "images"),
        "--model", model, *(a for o in options for a in ("--model-option", o)),
        "--base-size", "32", "32", "--epochs", "1", "--batch-size", "2", "--grad-accum", "2", "--lr", "1e-5",
        "--workers", "0", "--amp", "off", "--device", "cpu", "--results", str(results), "--cache-dir", str(cache),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def _single_process_val(phantom_dir, weights) -> dict:
    """Validation metrics of ``weights`` computed in this (non-distributed) process, as the engine computes them."""
    ckpt = load_checkpoint(weights)
    fingerprint = DatasetFingerprint(**ckpt["fingerprint"])
    value_map = MaskValueMap.from_dict(ckpt["value_map"])
    cfg = ckpt["config"]
    val_set = SegmentationDataset(
        expand_slices(find_pairs(cfg["data_val"], cfg["img_f"], cfg["mask_f"])), value_map, tuple(cfg["base_size"]),
        fingerprint.channels, eval_transforms(fingerprint.mean, fingerprint.std),
        intensity=fingerprint.intensity_mapping,
    )  # fmt: skip
    model = create_model(ckpt["model_name"], fingerprint.channels, value_map.num_classes, **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["model"])
    model = model.to(memory_format=torch.channels_last)
    info, _ = evaluate(model, DataLoader(val_set, 1), DiceCELoss(), None, torch.device("cpu"), value_map.num_classes)
    return info


@pytest.mark.parametrize(
    ("model", "options"),
    [
        ("unet", ["base_width=4"]),
        ("gctx_unet", ["img_size=32", "embed_dim=8", "num_heads=[1,1,1,1]", "window_sizes=[4,2,1,1]"]),
    ],
)
def test_two_cpu_processes_validate_like_one_process(phantom_dir, tmp_path, model, options):
    # --grad-accum 2 over 3 batches per rank: a group with a no_sync backward, then a group of one; both ranks
    # decode into one --cache-dir, which the one-process evaluation below (in memory) does not use
    done = _torchrun_train(phantom_dir, tmp_path / "runs", tmp_path / "cache", model, options)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    run = tmp_path / "runs" / "exp"
    log = json.loads((run / "log.json").read_text())
    assert log["train parameters"]["world size"] == 2
    assert len(list((tmp_path / "cache").glob("*.image.npy"))) >= 6  # every validation case at least
    ddp_val = log["epoch:0"]["val log:"]["info"]
    one_val = _single_process_val(phantom_dir, run / "last.pt")
    assert ddp_val["mean dice"] > 0.01  # a tiny lr keeps the model near its random start: mixed classes, not all 0
    # counts are summed over ranks, so every confusion-matrix metric is exactly that of one process; the loss is a
    # mean of per-batch Dice-CE losses and depends on how images are batched, so it is left out
    for key in ("pixel accuracy", "Dice", "IoU", "Precision", "Recall", "mean dice", "mean iou"):
        assert ddp_val[key] == pytest.approx(one_val[key], abs=1e-9, nan_ok=True), key


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(args: list[str]) -> list[subprocess.Popen]:
    """Two gloo ranks of ``gctxseg ARGS`` started by hand (what torchrun does), so a test can signal one of them."""
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"}  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-m", "gctxseg", *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env))  # fmt: skip
    return procs


def _tiny_train_args(data, results, epochs: int) -> list[str]:
    return [
        "train", "--data-train", str(data / "train" / "images"), "--data-val", str(data / "val" / "images"),
        "--model", "unet", "--model-option", "base_width=4", "--base-size", "32", "32", "--epochs", str(epochs),
        "--batch-size", "2", "--workers", "0", "--amp", "off", "--device", "cpu", "--results", str(results),
    ]  # fmt: skip


def test_sigterm_to_one_rank_stops_both_together_and_resume_continues(phantom_dir, tmp_path):
    import signal
    import time

    run = tmp_path / "runs" / "exp"
    procs = _two_ranks(_tiny_train_args(phantom_dir, tmp_path / "runs", 50))
    deadline = time.time() + 240
    while not (run / "log.json").exists():  # the first epoch is on disk
        assert all(p.poll() is None for p in procs) and time.time() < deadline, [p.communicate() for p in procs]
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)  # the rank that does not write: rank 0 must notice too
    signalled = time.time()
    outputs = [p.communicate(timeout=120) for p in procs]  # without the agreement: gloo's 30-minute timeout
    assert time.time() - signalled < 60, "a rank waited for the other"
    assert [p.returncode for p in procs] == [130, 130], outputs
    assert outputs[0][1].count("resume with: gctxseg train --resume") == 1 and "resume with" not in outputs[1][1]
    stopped_at = load_checkpoint(run / "last.pt")["epoch"]
    assert 0 <= stopped_at < 49
    resumed = subprocess.run([sys.executable, "-m", "gctxseg", "train", "--resume", str(run / "last.pt"),
                              "--epochs", str(stopped_at + 2), "--workers", "0"],
                             capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = json.loads((run / "log.json").read_text())
    assert [k for k in log if k.startswith("epoch:")] == [f"epoch:{e}" for e in range(stopped_at + 2)]


def test_two_ranks_validate_a_single_image(phantom_dir, tmp_path):
    """Rank 1 gets an empty validation shard: validation runs the bare model, counts are still summed."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    for kind in ("images", "masks"):
        for extra in sorted((data / "val" / kind).iterdir())[1:]:
            extra.unlink()
    procs = _two_ranks(_tiny_train_args(data, tmp_path / "runs", 1))
    outputs = [p.communicate(timeout=600) for p in procs]  # minutes only on a loaded 2-core machine
    assert [p.returncode for p in procs] == [0, 0], outputs
    run = tmp_path / "runs" / "exp"
    ddp_val = json.loads((run / "log.json").read_text())["epoch:0"]["val log:"]["info"]
    one_val = _single_process_val(data, run / "last.pt")
    for key in ("pixel accuracy", "Dice", "IoU", "mean dice"):
        logged = ddp_val[key]
        logged = [math.nan if d is None else d for d in logged] if isinstance(logged, list) else logged  # JSON null
        assert logged == pytest.approx(one_val[key], abs=1e-9, nan_ok=True), key
