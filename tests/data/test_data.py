"""Data pipeline: pairing, fingerprint and mask-value discovery, one-line errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gctxseg.data import DatasetError, MaskValueMap, SegmentationDataset, find_pairs, fingerprint_dataset, read_image
from gctxseg.data.transforms import train_transforms


def test_pairs_and_fingerprint_discover_values_channels_and_stats(make_split):
    images = make_split(n=3)
    pairs = find_pairs(images, ".png", ".png")
    assert [p.name for p in pairs] == ["case_0", "case_1", "case_2"]
    fp = fingerprint_dataset(pairs)
    assert fp.value_map.to_dict() == {"0": 0, "128": 1, "255": 2}
    assert fp.channels == 1 and fp.num_cases == 3 and fp.sizes == {"32x40": 3}
    pixels = np.concatenate([read_image(p.image).ravel() for p in pairs])
    assert fp.mean[0] == pytest.approx(pixels.mean(), abs=1e-5)
    assert fp.std[0] == pytest.approx(pixels.std(), abs=1e-5)


def test_mask_value_map_round_trip_and_unknown_value():
    vm = MaskValueMap([255, 0, 128])
    raw = np.array([[0, 128], [255, 0]])
    idx = vm.encode(raw)
    assert idx.tolist() == [[0, 1], [2, 0]]
    assert vm.decode(idx).tolist() == raw.tolist()
    assert MaskValueMap.from_dict(vm.to_dict()).values == [0, 128, 255]
    with pytest.raises(DatasetError, match=r"m\.png: value\(s\) \[77\] not among"):
        vm.encode(np.array([[0, 77]]), source="m.png")


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_empty_folder_names_glob(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError) as err:
        find_pairs(tmp_path / "images", ".jpg", ".png")
    assert "no images matching '*.jpg'" in _one_line(err)


def test_a_bare_suffix_pairs_as_with_its_dot_and_a_wrong_one_names_the_suffixes_found(tmp_path):
    for name in ("000", "001"):
        write = Image.fromarray(np.zeros((8, 8), np.uint8))
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        write.save(tmp_path / "images" / f"{name}.png")
        write.save(tmp_path / "masks" / f"{name}.png")
    pairs = find_pairs(tmp_path / "images", "png", "png")  # typed without the dot: 000.png, not 000..png
    assert [p.mask.name for p in pairs] == ["000.png", "001.png"]
    with pytest.raises(DatasetError) as err:
        find_pairs(tmp_path / "images", ".jpg", ".png")
    assert "no images matching '*.jpg' (it holds 2 .png); pass the images' suffix with --img_f" in _one_line(err)
    with pytest.raises(DatasetError) as err:
        find_pairs(tmp_path / "images", ".png", ".tif")
    assert _one_line(err) == (f"{tmp_path / 'masks'}: no mask named like the 2 images with the suffix .tif (e.g. "
                              "000.tif; it holds 2 .png); pass the masks' suffix with --mask_f")


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="folder not found"):
        find_pairs(tmp_path / "nope" / "images")


def test_image_without_mask_names_both_files(make_split):
    images = make_split(n=3)
    (images.parent / "masks" / "case_1.png").unlink()
    (images.parent / "masks" / "case_2.png").unlink()
    with pytest.raises(DatasetError) as err:
        find_pairs(images, ".png", ".png")
    text = _one_line(err)
    assert "case_1.png: no mask for" in text and "images/case_1.png" in text and "(and 1 more)" in text


def test_mask_size_mismatch(make_split):
    images = make_split(n=2)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(images.parent / "masks" / "case_1.png")
    with pytest.raises(DatasetError) as err:
        fingerprint_dataset(find_pairs(images, ".png", ".png"))
    assert "masks/case_1.png: 10x10 but its image is 32x40; re-export" in _one_line(err)


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00truncated"])
def test_corrupt_or_empty_image(make_split, content):
    images = make_split(n=2)
    (images / "case_0.png").write_bytes(content)
    with pytest.raises(DatasetError) as err:
        fingerprint_dataset(find_pairs(images, ".png", ".png"))
    text = _one_line(err)
    assert "case_0.png" in text and ("corrupt" in text or "empty file" in text)


def test_validation_value_never_seen_in_training(make_split):
    train = fingerprint_dataset(find_pairs(make_split("train", n=2), ".png", ".png"))
    val_images = make_split("val", n=2, values=(0, 128, 200))
    with pytest.raises(DatasetError) as err:
        fingerprint_dataset(find_pairs(val_images, ".png", ".png"), known_values=train.value_map.values)
    assert "value(s) [200] never seen in the training masks [0, 128, 255]" in _one_line(err)


@pytest.mark.parametrize("strength", ["standard", "strong"])
def test_dataset_resizes_and_augments_masks_with_nearest(make_split, strength):
    pairs = find_pairs(make_split(n=2), ".png", ".png")
    fp = fingerprint_dataset(pairs)
    ds = SegmentationDataset(pairs, fp.value_map, (48, 48), 1, train_transforms(fp.mean, fp.std, strength=strength))
    torch.manual_seed(0)
    for _ in range(5):
        image, mask, index = ds[1]
        assert image.shape == (1, 48, 48) and image.dtype == torch.float32
        assert mask.shape == (48, 48) and mask.dtype == torch.int64
        assert set(mask.unique().tolist()) <= {0, 1, 2}  # no interpolated in-between labels
    assert index == 1
    with pytest.raises(ValueError, match="'wild' is not one of"):
        train_transforms(fp.mean, fp.std, strength="wild")


def test_grayscale_16bit_and_rgba_images_are_valid(tmp_path):
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(tmp_path / "a.png")
    arr = read_image(tmp_path / "a.png")
    assert arr.shape == (8, 8, 1) and arr.max() == pytest.approx(63000 / 65535, rel=1e-6)
    Image.fromarray(np.full((8, 8, 4), 200, np.uint8), mode="RGBA").save(tmp_path / "b.png")
    assert read_image(tmp_path / "b.png").shape == (8, 8, 3)


def test_32bit_integer_pictures_share_one_scale_and_a_stack_is_refused_not_cut_to_its_first_page(tmp_path):
    from gctxseg.data.io import image_size

    for name, top in (("dark.tif", 250), ("bright.tif", 300)):  # chosen per file, 100 read 0.39 or 0.0015
        values = np.full((4, 4), 100, np.int32)
        values[0, 0] = top
        Image.fromarray(values).save(tmp_path / name)
    assert read_image(tmp_path / "dark.tif")[1, 1, 0] == read_image(tmp_path / "bright.tif")[1, 1, 0]
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(DatasetError, match=r"wide.tif: 32-bit integer values 70000..70000, outside 0..65535"):
        read_image(tmp_path / "wide.tif")
    pages = [Image.fromarray(np.full((4, 6), k * 40, np.uint8)) for k in range(4)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    for read in (read_image, image_size):
        with pytest.raises(DatasetError) as err:
            read(tmp_path / "stack.tif")
        assert str(err.value).startswith(f"{tmp_path / 'stack.tif'}: 4 pages in one picture file")


def _counting_decode(monkeypatch) -> list:
    """Record every file decode the dataset makes (``load_resized`` calls) and return the record."""
    from gctxseg.data import dataset as dataset_module

    decoded, real = [], dataset_module.load_resized
    monkeypatch.setattr(
        dataset_module, "load_resized", lambda pair, *a, **k: decoded.append(pair.name) or real(pair, *a, **k)
    )
    return decoded


def test_disk_cache_matches_memory_cache_and_serves_later_datasets_without_decoding(make_split, tmp_path, monkeypatch):
    pairs = find_pairs(make_split(n=3), ".png", ".png")
    fp = fingerprint_dataset(pairs)
    decoded = _counting_decode(monkeypatch)
    in_memory = SegmentationDataset(pairs, fp.value_map, (24, 24), 1)
    on_disk = SegmentationDataset(pairs, fp.value_map, (24, 24), 1, cache_dir=tmp_path / "cache")
    for i in range(3):
        first = on_disk[i]  # decoded, written, returned
        for a, b in zip(in_memory[i][:2], first[:2]):
            assert torch.equal(a, b)  # float16-rounded image and uint8-derived mask alike
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 6  # an image and a mask file per sample
    decoded.clear()
    later = SegmentationDataset(pairs, fp.value_map, (24, 24), 1, cache_dir=tmp_path / "cache")  # a new run
    for i in range(3):
        assert all(torch.equal(a, b) for a, b in zip(later[i][:2], in_memory[i][:2]))
    assert decoded == []  # read back from the memory-mapped files only
    SegmentationDataset(pairs, fp.value_map, (16, 16), 1, cache_dir=tmp_path / "cache")[0]
    assert decoded == ["case_0"]  # another size is another entry


def test_disk_cache_never_serves_an_edited_file_or_a_broken_entry(make_split, tmp_path, monkeypatch):
    pairs = find_pairs(make_split(n=2), ".png", ".png")
    fp = fingerprint_dataset(pairs)
    decoded = _counting_decode(monkeypatch)
    cache = tmp_path / "cache"
    SegmentationDataset(pairs, fp.value_map, (24, 24), 1, cache_dir=cache)[0]
    mask = np.zeros((32, 40), np.uint8)  # the user fixes a mask: case_0 is now all background
    Image.fromarray(mask).save(pairs[0].mask)
    _, fixed, _ = SegmentationDataset(pairs, fp.value_map, (24, 24), 1, cache_dir=cache)[0]
    assert decoded == ["case_0", "case_0"] and fixed.max() == 0
    for entry in cache.glob("*.image.npy"):
        entry.write_bytes(entry.read_bytes()[:100])  # cut short, as by a full disk
    decoded.clear()
    image, _, _ = SegmentationDataset(pairs, fp.value_map, (24, 24), 1, cache_dir=cache)[0]
    assert decoded == ["case_0"] and image.shape == (1, 24, 24)


def test_validation_images_byte_identical_to_training_images_are_found(phantom_dir, tmp_path):
    import shutil

    from gctxseg.data.folder import shared_images

    train = find_pairs(phantom_dir / "train" / "images")
    copy = tmp_path / "val"
    shutil.copytree(phantom_dir / "val", copy)
    shutil.copy(train[3].image, copy / "images" / "copied.jpg")  # one training scan in the validation set
    shutil.copy(train[3].mask, copy / "masks" / "copied.png")
    shared = shared_images(train, find_pairs(copy / "images"))
    assert shared == [(copy / "images" / "copied.jpg", train[3].image)]
    assert shared_images(train, find_pairs(phantom_dir / "val" / "images")) == []


def test_macos_metadata_files_beside_the_images_are_not_taken_for_images(tmp_path):
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / folder / "000.png")
        (tmp_path / folder / "._000.png").write_bytes(b"\x00\x05\x16\x07 Mac OS X")  # AppleDouble, as copied
    assert [p.image.name for p in find_pairs(tmp_path / "images", ".png", ".png")] == ["000.png"]
