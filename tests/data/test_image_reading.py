"""Reading images and masks as users have them: palette masks, EXIF-rotated photographs, decompression bombs,
truncated files and other files in the folder."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import one_line
from helpers_checkpoints import saved_checkpoint
from PIL import Image

from gctxseg.data import DatasetError
from gctxseg.data.fingerprint import fingerprint_dataset
from gctxseg.data.folder import ImagePair
from gctxseg.data.io import image_size, read_image, read_mask


def _exif_rotated_jpeg(path, stored):
    """A JPEG stored as ``stored`` (H x W) whose EXIF says: turn it 90 degrees clockwise to show it (orientation 6)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=100)


def _mask_set(tmp_path, palette_names, grey_names, identity_palette=False):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    labels = np.zeros((16, 16), np.uint8)
    labels[2:6, 2:6], labels[8:10, 8:12] = 1, 2
    pairs = []
    for name in palette_names + grey_names:
        Image.fromarray(np.full((16, 16), 90, np.uint8)).save(tmp_path / "images" / f"{name}.png")
        if name in palette_names:
            mask = Image.fromarray(labels * 100 if identity_palette else labels, mode="L").convert("P")
            colours = [0, 0, 0, 255, 0, 0, 0, 255, 0] if not identity_palette else [v for i in range(256) for v in
                                                                                     (i, i, i)]
            mask.putpalette(colours)
        else:
            mask = Image.fromarray(np.asarray([0, 128, 255], np.uint8)[labels], mode="L")
        mask.save(tmp_path / "masks" / f"{name}.png")
        pairs.append(ImagePair(tmp_path / "images" / f"{name}.png", tmp_path / "masks" / f"{name}.png"))
    return pairs


def test_palette_masks_among_greyscale_masks_are_refused_naming_one_of_each(tmp_path):
    pairs = _mask_set(tmp_path, ["a", "b"], ["c", "d"])
    with pytest.raises(DatasetError) as err:
        fingerprint_dataset(pairs)
    line = one_line(err)
    assert "masks/a.png: a palette PNG" in line and "masks/c.png is a greyscale mask" in line


def test_palette_masks_alone_still_train_as_their_indices(tmp_path):
    fp = fingerprint_dataset(_mask_set(tmp_path, ["a", "b"], []))
    assert sorted(map(int, fp.mask_values)) == [0, 1, 2]
    assert read_mask(tmp_path / "masks" / "a.png").max() == 2


def test_a_palette_of_grey_ramp_colours_reads_the_same_as_greyscale_and_mixes(tmp_path):
    fp = fingerprint_dataset(_mask_set(tmp_path, ["a"], ["c"], identity_palette=True))
    assert sorted(map(int, fp.mask_values)) == [0, 100, 128, 200, 255]  # each value what its file says, no refusal


def test_exif_rotated_jpeg_is_read_as_viewers_show_it_and_its_mask_fits(tmp_path):
    stored = np.zeros((20, 30), np.uint8)
    stored[:, :5] = 255  # a bright band on the stored left: shown at the top after a 90 degree clockwise turn
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    _exif_rotated_jpeg(tmp_path / "images" / "photo.jpg", stored)
    image = read_image(tmp_path / "images" / "photo.jpg")
    assert image.shape[:2] == (30, 20) == image_size(tmp_path / "images" / "photo.jpg")
    assert image[:3].mean() > 0.9 and image[-3:].mean() < 0.1  # the band on top, as shown
    drawn = np.zeros((30, 20), np.uint8)  # the mask drawn on the photo as shown
    drawn[:5] = 255
    Image.fromarray(drawn).save(tmp_path / "masks" / "photo.png")
    fp = fingerprint_dataset([ImagePair(tmp_path / "images" / "photo.jpg", tmp_path / "masks" / "photo.png")])
    assert fp.sizes == {"30x20": 1}


def test_a_mask_in_stored_pixel_order_names_the_exif_turn(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    _exif_rotated_jpeg(tmp_path / "images" / "photo.jpg", np.zeros((20, 30), np.uint8))
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "masks" / "photo.png")
    with pytest.raises(DatasetError) as err:
        fingerprint_dataset([ImagePair(tmp_path / "images" / "photo.jpg", tmp_path / "masks" / "photo.png")])
    assert "EXIF orientation" in one_line(err)


def test_predict_writes_the_mask_of_an_exif_rotated_photo_as_it_is_shown(tmp_path):
    from gctxseg.workflows.predict_folder import predict_folder

    (tmp_path / "img").mkdir()
    _exif_rotated_jpeg(tmp_path / "img" / "photo.jpg", np.zeros((20, 30), np.uint8))
    predict_folder(saved_checkpoint(tmp_path / "best.pt"), tmp_path / "img", tmp_path / "out", device="cpu", amp="off")
    assert Image.open(tmp_path / "out" / "masks" / "photo.png").size == (20, 30)  # W x H as shown
    assert Image.open(tmp_path / "out" / "overlays" / "photo.png").size == (20, 30)


def test_a_decompression_bomb_mask_is_one_line_naming_it(tmp_path, monkeypatch):
    pairs = _mask_set(tmp_path, [], ["a", "b"])
    big = np.zeros((64, 64), np.uint8)
    Image.fromarray(big).save(tmp_path / "masks" / "b.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 > 2 x 1000: PIL's bomb error, not a warning
    with pytest.raises(DatasetError) as err:
        fingerprint_dataset(pairs)
    line = one_line(err)
    assert "masks/b.png: DecompressionBombError, refused as a possible decompression bomb" in line
    with pytest.raises(DatasetError, match="b.png: DecompressionBombError, refused as a possible decompression bomb"):
        image_size(tmp_path / "masks" / "b.png")


def test_truncated_jpeg_and_non_image_files(phantom_dir, tmp_path):
    import shutil

    from gctxseg.data import DatasetError, find_pairs, fingerprint_dataset

    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    images = data / "train" / "images"
    (images / "notes.txt").write_text("scanner export log")  # other files in the folder are ignored
    (images / ".DS_Store").write_bytes(b"\x00\x01")
    pairs = find_pairs(images, ".jpg", ".png")
    assert len(pairs) == 14 and all(p.image.suffix == ".jpg" for p in pairs)
    jpeg = pairs[3].image
    jpeg.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])
    with pytest.raises(DatasetError) as err:
        fingerprint_dataset(pairs)
    assert str(err.value).startswith(f"{jpeg}: unreadable or corrupt image") and "\n" not in str(err.value)
