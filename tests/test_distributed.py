"""DDP on CPU: two gloo processes under torchrun give the validation metrics of one process on the saved weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader

from gctxseg.data import DatasetFingerprint, MaskValueMap, SegmentationDataset, expand_slices, find_pairs
from gctxseg.data.transforms import eval_transforms
from gctxseg.engine import evaluate, load_checkpoint
from gctxseg.losses import DiceCELoss
from gctxseg.models import create_model


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
