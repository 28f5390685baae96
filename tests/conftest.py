"""Shared fixtures: tiny phantom datasets and a helper to write image/mask pairs by hand."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# tests share 2 CPU cores; more threads than that only add contention
torch.set_num_threads(min(2, os.cpu_count() or 1))
# an offline start installed on this machine (gctxseg pretrain --install) must not change what tests train;
# tests that install one point GCTXSEG_CACHE at their own folder (child processes inherit the variable)
os.environ["GCTXSEG_CACHE"] = tempfile.mkdtemp(prefix="gctxseg-test-cache-")


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """A small OCT phantom dataset (64x64, 20 images -> 14 train / 6 val), masks valued 0/128/255."""
    from gctxseg.data.phantom import synthesize_dataset

    out = tmp_path_factory.mktemp("phantom")
    synthesize_dataset(out, n=20, size=(64, 64), seed=0)
    return out


def write_pair(root: Path, name: str, image: np.ndarray, mask: np.ndarray, img_suffix=".png", mask_suffix=".png"):
    """Write ``root/images/name`` and ``root/masks/name`` (creating the folders)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "images" / f"{name}{img_suffix}")
    Image.fromarray(mask).save(root / "masks" / f"{name}{mask_suffix}")


def write_duke_png_copy(root: Path, count: int = 22, size=(12, 16)) -> None:
    """A Duke DME PNG copy as ``gctxseg convert duke-dme`` reads it: ``img_for_inference/img_N.png`` scans and
    ``annotation/img_N.png`` masks (no fluid)."""
    for sub in ("img_for_inference", "annotation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full(size, 40, np.uint8)).save(root / "img_for_inference" / f"img_{i}.png")
        Image.fromarray(np.zeros(size, np.uint8)).save(root / "annotation" / f"img_{i}.png")


def write_patients(root: Path, patients: int = 4, scans: int = 3, size=(30, 60), seed: int = 0) -> Path:
    """B-scans named pPP_bSS with a fluid blob in two of three scans (values 0/255); returns the images folder."""
    rng = np.random.default_rng(seed)
    for p in range(patients):
        for b in range(scans):
            image = rng.integers(0, 120, size, dtype=np.uint8)
            mask = np.zeros(size, np.uint8)
            if b % 3:
                mask[8:16, 10 + 5 * b:24 + 5 * b] = 255
                image[mask > 0] = 230
            write_pair(root, f"p{p:02d}_b{b:02d}", image, mask)
    return root / "images"


@pytest.fixture
def make_split(tmp_path):
    """Build a split of random images with rectangle masks valued 0/128/255; returns its images folder."""

    def make(name: str = "train", n: int = 4, size=(32, 40), values=(0, 128, 255), seed=0) -> Path:
        rng = np.random.default_rng(seed)
        root = tmp_path / name
        for i in range(n):
            mask = np.full(size, values[0], np.uint8)
            mask[2:10, 3:12] = values[1]
            mask[15:20, 20:30] = values[-1]
            image = rng.integers(0, 255, size, dtype=np.uint8)
            write_pair(root, f"case_{i}", image, mask)
        return root / "images"

    return make


def tiny_config(phantom_dir: Path, results: Path, **overrides):
    """A training config small enough for tests: unet of width 4 at 32x32 on the phantom, CPU, fp32."""
    from gctxseg.training import TrainConfig

    base = dict(
        data_train=str(phantom_dir / "train" / "images"),
        data_val=str(phantom_dir / "val" / "images"),
        model="unet",
        model_options={"base_width": 4},
        base_size=(32, 32),
        epochs=2,
        batch_size=4,
        lr=0.01,
        workers=0,
        amp="off",
        device="cpu",
        results=str(results),
        num_samples=2,
    )
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="session")
def tiny_run(phantom_dir, tmp_path_factory) -> Path:
    """One tiny trained run (1 epoch, with its report.html) shared by the tests that only read a run folder."""
    from gctxseg.workflows.train_report import train_and_report

    return train_and_report(tiny_config(phantom_dir, tmp_path_factory.mktemp("tiny_runs"), epochs=1))


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and do not stall when shared CPU cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fake_clock(monkeypatch) -> list[float]:
    """The clock a time budget is measured on (``training.schedule.now``, as the epoch driver and segmentation
    training read it), replaced: every reading is a second after the one before, so a budgeted run ends at the same
    step on any CPU. Returns the list holding the time: a test makes a phase cost seconds by adding to ``[0]``."""
    from gctxseg.training import driver, segmentation
    from gctxseg.training import schedule as schedule_module

    clock = [0.0]

    def tick() -> float:
        clock[0] += 1.0
        return clock[0]

    for module in (schedule_module, driver, segmentation):
        monkeypatch.setattr(module, "now", tick)
    return clock


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """Two phantom eyes of known geometry and their truth (tests/helpers_clinic_files.py); eyepy needed."""
    from helpers_clinic_files import phantom_eyes

    return phantom_eyes(tmp_path_factory.mktemp("eyes"))


def one_line(err) -> str:
    """The message of a raised error (a pytest.ExceptionInfo) or a command's stderr (a str), asserted to be one line
    with no blanks around it."""
    text = err.strip() if isinstance(err, str) else str(err.value)
    assert "\n" not in text and text.strip() == text, text
    return text


TINY_TRAIN_FLAGS = ["--model", "unet", "--model-option", "base_width=4", "--base-size", "32", "32", "--batch-size",
                    "4", "--workers", "0", "--amp", "off", "--device", "cpu"]  # fmt: skip


def fold_config(images: Path, results: Path, **overrides):
    """A tiny 2-fold training config (fold 0, patients by ``p<N>_``) on ``images``."""
    from gctxseg.training import TrainConfig

    base = dict(data_train=str(images), img_f=".png", mask_f=".png", folds=2, fold=0, group_regex=r"^(p\d+)_",
                model="unet", model_options={"base_width": 4}, epochs=1, batch_size=2, lr=0.01, workers=0,
                amp="off", device="cpu", results=str(results), num_samples=1)
    return TrainConfig(**{**base, **overrides})
