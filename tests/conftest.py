"""Shared fixtures: tiny phantom datasets and a helper to write image/mask pairs by hand."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
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


def write_heyex_vol(path: str | Path, bscans: np.ndarray, ascan_mm: float, axial_mm: float, distance_mm: float,
                    eye: str, positions: Sequence[tuple[float, float, float, float]],
                    localizer: np.ndarray | None = None, localizer_mm: float = 0.01) -> Path:
    """Write ``bscans`` (``S x H x W`` uint8) as a HEYEX VOL file with eyepy's own VOL structure.

    eyepy 0.21's ``HeVolWriter`` cannot encode the header's dates on Python 3.11 (its date adapter wants ISO text
    and a float for a 64-bit integer), so its ``vol_format`` is built here with fixed dates; every other field is
    written as ``HeVolWriter`` writes it (intensities through ``to_vol_intensity``).
    """
    import construct as cs
    from eyepy.core.utils import to_vol_intensity
    from eyepy.io.he.vol_reader import vol_format

    count, height, width = bscans.shape
    localizer = np.zeros((256, 256), np.uint8) if localizer is None else localizer
    date = "2000-01-01T00:00:00"
    fmt = cs.Struct(*[("exam_time" / cs.Int64ul) if sc.name == "exam_time" else sc for sc in vol_format.subcons])
    items = [dict(bscan_hdr_size=256 + 17 * 4 * width, start_x=p[0], start_y=p[1], end_x=p[2], end_y=p[3],
                  num_seg=0, quality=30.0, shift=0, iv_transformation=[0.0] * 6,
                  layer_segmentations=np.zeros((0, width), np.float32),
                  data=to_vol_intensity(b.astype(np.float32) / 255.0)) for b, p in zip(bscans, positions)]
    header = dict(size_x=width, size_y=height, n_bscans=count, scale_x=ascan_mm, scale_y=axial_mm, distance=distance_mm,
                  size_x_slo=localizer.shape[1], size_y_slo=localizer.shape[0], scale_x_slo=localizer_mm,
                  scale_y_slo=localizer_mm, field_size_slo=30, scan_focus=0.0, scan_position=eye, exam_time=0,
                  scan_pattern=3, id="1", reference_id="", pid=0, patient_id="phantom", dob=date, vid=0, visit_id="",
                  visit_date=date, grid_type=0, grid_offset=0, grid_type1=0, grid_offset1=0, prog_id="",
                  localizer=localizer.astype(np.uint8), bscans=items)
    path = Path(path)
    path.write_bytes(fmt.build(header))
    return path
