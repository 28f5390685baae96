"""OCT phantom: determinism, file format, split, label/image consistency. Tiny sizes keep it fast."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gctxseg.data.phantom import MASK_VALUES, PhantomSample, render_oct_bscan, synthesize_dataset

SIZE = (64, 64)


def _digests(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.*"))}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("phantom_a")
    return out, synthesize_dataset(out, n=10, size=SIZE, seed=3)


def test_same_seed_gives_identical_files(dataset, tmp_path):
    root, _ = dataset
    synthesize_dataset(tmp_path, n=10, size=SIZE, seed=3)
    assert _digests(tmp_path) == _digests(root)
    assert len(_digests(root)) == 22  # 10 images + 10 masks + spacing.json + the marker .gctxseg-output.json


def test_different_seed_gives_different_files(dataset, tmp_path):
    root, _ = dataset
    synthesize_dataset(tmp_path, n=10, size=SIZE, seed=4)
    first, second = _digests(root), _digests(tmp_path)
    assert first.keys() == second.keys()
    assert all(first[k] != second[k] for k in first if "/images/" in k and k.endswith(".jpg"))


def test_split_is_seven_to_three_and_layout(dataset):
    root, counts = dataset
    assert counts == {"train": 7, "val": 3}
    for split, n in counts.items():
        images = sorted((root / split / "images").glob("oct_*.jpg"))
        masks = sorted((root / split / "masks").glob("oct_*.png"))
        assert len(images) == len(masks) == n
        assert [p.stem for p in images] == [p.stem for p in masks]


def test_files_are_grayscale_with_mask_values(dataset):
    root, _ = dataset
    seen: set[int] = set()
    for mask_path in sorted(root.rglob("masks/*.png")):
        image = Image.open(mask_path.parent.parent / "images" / f"{mask_path.stem}.jpg")
        mask = Image.open(mask_path)
        assert image.mode == "L" and mask.mode == "L"
        assert image.size == mask.size == (SIZE[1], SIZE[0])
        values = set(np.unique(np.asarray(mask)).tolist())
        assert values <= set(MASK_VALUES)
        seen |= values
    assert seen == set(MASK_VALUES), "each class should occur somewhere in 10 images"


def test_render_shapes_dtypes_and_non_square_size():
    sample = render_oct_bscan(np.random.default_rng(0), (48, 80))
    assert isinstance(sample, PhantomSample)
    assert sample.image.shape == sample.mask.shape == (48, 80)
    assert sample.image.dtype == sample.mask.dtype == np.uint8
    assert set(np.unique(sample.mask).tolist()) <= {0, 1, 2}


@pytest.mark.parametrize("edema", [True, False])
@pytest.mark.parametrize("hole", [True, False])
def test_forced_pathology_is_present_or_absent(edema, hole):
    for seed in range(4):
        mask = render_oct_bscan(np.random.default_rng(seed), SIZE, edema=edema, hole=hole).mask
        assert (mask == 1).any() == edema
        assert (mask == 2).any() == hole


def test_lesions_are_darker_than_the_retina():
    for seed in range(4):
        sample = render_oct_bscan(np.random.default_rng(seed), (96, 96), edema=True, hole=True)
        image = sample.image.astype(np.float64)
        # The retina band: rows spanned by the bright tissue around the lesions, minus the lesions themselves.
        rows = np.flatnonzero((sample.mask > 0).any(axis=1))
        band = np.zeros_like(sample.mask, dtype=bool)
        band[rows.min() : rows.max() + 1] = True
        tissue = band & (sample.mask == 0)
        assert image[sample.mask == 2].mean() < image[tissue].mean() - 30
        assert image[sample.mask == 1].mean() < image[tissue].mean() - 30


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="size"):
        render_oct_bscan(np.random.default_rng(0), (16, 64))
    with pytest.raises(ValueError, match="val_fraction"):
        synthesize_dataset("unused", n=4, val_fraction=1.0)
    with pytest.raises(ValueError, match="lossless"):
        synthesize_dataset("unused", n=4, mask_suffix=".jpg")

