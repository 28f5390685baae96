"""Issue 30, sections 6 and 7: converters and readers count every source; the ETDRS read-out never merges eyes."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch
from conftest import write_duke_png_copy
from PIL import Image

from gctxseg.cli import main
from gctxseg.clinical.measurements import MeasurementOptions, plan_measurements
from gctxseg.data import DatasetError
from gctxseg.data.convert import convert_drive, convert_duke_dme
from gctxseg.data.fingerprint import fingerprint_dataset
from gctxseg.data.folder import ImagePair
from gctxseg.data.io import image_size, read_image, read_mask
from gctxseg.models import create_model

# ---------------------------------------------------------------- fixtures


def _write_drive(root, subset, numbers, size=(18, 20)):
    (root / subset / "images").mkdir(parents=True, exist_ok=True)
    (root / subset / "1st_manual").mkdir(exist_ok=True)
    for n in numbers:
        Image.fromarray(np.full((*size, 3), n, np.uint8)).save(root / subset / "images" / f"{n:02d}_{subset}.tif")
        vessels = np.zeros(size, np.uint8)
        vessels[3, 2:12] = 255
        Image.fromarray(vessels).save(root / subset / "1st_manual" / f"{n:02d}_manual1.gif")


def _drive(tmp_path):
    src = tmp_path / "DRIVE"
    _write_drive(src, "training", range(21, 27))
    _write_drive(src, "test", range(1, 5))
    return src


def _one_line(err) -> str:
    line = str(err.value)
    assert "\n" not in line
    return line


def _checkpoint(path, base=16):
    torch.manual_seed(0)
    model = create_model("unet", 1, 3, base_width=2)
    torch.save({"model_name": "unet", "model_kwargs": {"base_width": 2}, "model": model.state_dict(),
                "value_map": {"0": 0, "128": 1, "255": 2}, "fingerprint": {"channels": 1},
                "base_size": [base, base], "normalization": {"mean": [0.5], "std": [0.25]}}, path)
    return path


def _exif_rotated_jpeg(path, stored):
    """A JPEG stored as ``stored`` (H x W) whose EXIF says: turn it 90 degrees clockwise to show it (orientation 6)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=100)


# ---------------------------------------------------------------- section 6: converters count every source


def test_convert_drive_two_photographs_of_one_number_are_refused_naming_both(tmp_path):
    src = _drive(tmp_path)
    Image.fromarray(np.zeros((18, 20, 3), np.uint8)).save(src / "training" / "images" / "21_copy.tif")
    with pytest.raises(DatasetError) as err:
        convert_drive(src, tmp_path / "out", folds=3)
    line = _one_line(err)
    assert "21_copy.tif" in line and "21_training.tif" in line and "both convert to" in line
    assert not (tmp_path / "out").exists()


def test_convert_duke_png_copy_img_1_and_img_01_are_refused_naming_both(tmp_path):
    write_duke_png_copy(tmp_path / "src")
    Image.fromarray(np.full((12, 16), 40, np.uint8)).save(tmp_path / "src" / "img_for_inference" / "img_01.png")
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(tmp_path / "src" / "annotation" / "img_01.png")
    with pytest.raises(DatasetError) as err:
        convert_duke_dme(tmp_path / "src", tmp_path / "out", folds=2)
    line = _one_line(err)
    assert "img_01.png" in line and "img_1.png" in line and "p01_b01" in line
    assert not (tmp_path / "out").exists()


def test_convert_duke_mat_subject_1_and_subject_01_are_refused_naming_both(tmp_path):
    (tmp_path / "src").mkdir()
    for name in ("Subject_1.mat", "Subject_01.mat", "Subject_02.mat"):
        (tmp_path / "src" / name).write_bytes(b"")  # refused by name, before any file is read
    assert main(["convert", "duke-dme", str(tmp_path / "src"), str(tmp_path / "out"), "--folds", "2"]) == 1
    with pytest.raises(DatasetError) as err:
        convert_duke_dme(tmp_path / "src", tmp_path / "out", folds=2)
    line = _one_line(err)
    assert "Subject_1.mat" in line and "Subject_01.mat" in line and "patient 01" in line
    assert not (tmp_path / "out").exists()


def test_convert_names_every_source_file_it_does_not_convert(tmp_path, capsys):
    src = _drive(tmp_path)
    (src / "training" / "images" / "Thumbs.db").write_bytes(b"x")
    Image.fromarray(np.zeros((18, 20), np.uint8)).save(src / "test" / "1st_manual" / "09_manual1.gif")
    assert main(["convert", "drive", str(src), str(tmp_path / "out"), "--folds", "3"]) == 0
    captured = capsys.readouterr()
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 2
    assert any("Thumbs.db: not a .tif photograph" in line for line in skipped)
    assert any("09_manual1.gif: no photograph of this number" in line for line in skipped)
    assert "wrote 10 photographs" in captured.out  # the count is of what was written
    assert len(list((tmp_path / "out" / "test" / "images").iterdir())) == 4


def test_convert_duke_png_copy_names_an_annotation_without_its_scan(tmp_path, capsys):
    write_duke_png_copy(tmp_path / "src")
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(tmp_path / "src" / "annotation" / "img_99.png")
    done = convert_duke_dme(tmp_path / "src", tmp_path / "out", folds=2)
    assert done["scans"] == 22
    assert "img_99.png: no scan img_for_inference/ of this name" in capsys.readouterr().err


# ---------------------------------------------------------------- section 6: one mask encoding per set


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
    line = _one_line(err)
    assert "masks/a.png: a palette PNG" in line and "masks/c.png is a greyscale mask" in line


def test_palette_masks_alone_still_train_as_their_indices(tmp_path):
    fp = fingerprint_dataset(_mask_set(tmp_path, ["a", "b"], []))
    assert sorted(map(int, fp.mask_values)) == [0, 1, 2]
    assert read_mask(tmp_path / "masks" / "a.png").max() == 2


def test_a_palette_of_grey_ramp_colours_reads_the_same_as_greyscale_and_mixes(tmp_path):
    fp = fingerprint_dataset(_mask_set(tmp_path, ["a"], ["c"], identity_palette=True))
    assert sorted(map(int, fp.mask_values)) == [0, 100, 128, 200, 255]  # each value what its file says, no refusal


# ---------------------------------------------------------------- section 6: one orientation everywhere


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
    assert "EXIF orientation" in _one_line(err)


def test_predict_writes_the_mask_of_an_exif_rotated_photo_as_it_is_shown(tmp_path):
    from gctxseg.workflows.predict_folder import predict_folder

    (tmp_path / "img").mkdir()
    _exif_rotated_jpeg(tmp_path / "img" / "photo.jpg", np.zeros((20, 30), np.uint8))
    predict_folder(_checkpoint(tmp_path / "best.pt"), tmp_path / "img", tmp_path / "out", device="cpu", amp="off")
    assert Image.open(tmp_path / "out" / "masks" / "photo.png").size == (20, 30)  # W x H as shown
    assert Image.open(tmp_path / "out" / "overlays" / "photo.png").size == (20, 30)


# ---------------------------------------------------------------- section 6: one bad file costs one line


def test_a_file_name_that_is_not_utf8_fails_alone_and_the_rest_are_written(tmp_path, capsys):
    source = tmp_path / "img"
    source.mkdir()
    Image.fromarray(np.full((16, 16), 60, np.uint8)).save(source / "a.png")
    bad = os.path.join(os.fsencode(source), b"scan\xff.png")
    try:
        with open(bad, "wb") as f:
            f.write((source / "a.png").read_bytes())
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    code = main(["predict", "--weights", str(_checkpoint(tmp_path / "best.pt")), "--source", str(source),
                 "--out", str(tmp_path / "out"), "--device", "cpu", "--amp", "off"])
    err = capsys.readouterr().err
    assert code == 1 and "1 image(s) failed" in err
    assert "scan\\xff.png: the file name is not UTF-8 text" in err
    with open(tmp_path / "out" / "measurements.csv", newline="") as f:
        assert [row["file"] for row in csv.DictReader(f)] == ["a.png"]
    assert (tmp_path / "out" / "index.html").is_file() and (tmp_path / "out" / "masks" / "a.png").is_file()


def test_a_decompression_bomb_mask_is_one_line_naming_it(tmp_path, monkeypatch):
    pairs = _mask_set(tmp_path, [], ["a", "b"])
    big = np.zeros((64, 64), np.uint8)
    Image.fromarray(big).save(tmp_path / "masks" / "b.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 > 2 x 1000: PIL's bomb error, not a warning
    with pytest.raises(DatasetError) as err:
        fingerprint_dataset(pairs)
    line = _one_line(err)
    assert "masks/b.png: DecompressionBombError, refused as a possible decompression bomb" in line
    with pytest.raises(DatasetError, match="b.png: DecompressionBombError, refused as a possible decompression bomb"):
        image_size(tmp_path / "masks" / "b.png")


# ---------------------------------------------------------------- section 7: the ETDRS read-out never merges eyes


@pytest.fixture(scope="module")
def two_eyes(tmp_path_factory):
    from gctxseg.data.phantom_volume import synthesize_volumes

    root = tmp_path_factory.mktemp("eyes")
    synthesize_volumes(root, n=2, shape=(8, 48, 64), seed=0)
    return root / "images"


def _predict_cli(source, out, *flags):
    return main(["predict", "--weights", str(out.parent / "missing.pt"), "--source", str(source),
                 "--out", str(out), *flags])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--group-regex", "eye", "--slice-spacing", "1"], "--group-regex 'eye': no capture group"),
        (["--group-regex", r"(eye\d+)_b\d+", "--slice-spacing", "1e300"], "--slice-spacing 1e+300: implausible"),
        (["--group-regex", r"(scan\d+)_b\d+", "--slice-spacing", "0.1"], "matches none of the 16 file names"),
        (["--eye", "OD"], "--eye: place the ETDRS grid of B-scan volumes, and there are none"),
        (["--fovea", "4", "30"], "--fovea: place the ETDRS grid of B-scan volumes, and there are none"),
    ],
)
def test_grouping_flags_that_would_merge_or_ignore_are_refused_before_any_output(two_eyes, tmp_path, capsys,
                                                                                 flags, message):
    code = _predict_cli(two_eyes, tmp_path / "pred", *flags)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "pred").exists()


def test_two_eyes_in_one_volume_are_refused_as_two_scans_of_one_bscan(two_eyes):
    files = sorted(two_eyes.glob("*.jpg"))
    with pytest.raises(DatasetError) as err:
        plan_measurements(files, MeasurementOptions(group_regex=r"(eye)\d+_b\d+", slice_spacing=0.1))
    line = _one_line(err)
    assert "eye000_b000.jpg and eye001_b000.jpg are both B-scan 0 of one volume" in line


def test_each_eye_is_its_own_volume_in_bscan_order(two_eyes, tmp_path):
    files = sorted(two_eyes.glob("*.jpg"), reverse=True)  # listing order does not matter, the B-scan number does
    rows = plan_measurements(files, MeasurementOptions(group_regex=r"(eye\d+)_b\d+", slice_spacing=0.1))
    groups = {r.file: r for r in rows if r.kind == "group"}
    assert sorted(groups) == ["eye000", "eye001"] and all(r.geometry.slices == 8 for r in groups.values())
    assert [p.name for p in groups["eye001"].members] == [f"eye001_b{s:03d}.jpg" for s in range(8)]


def test_a_grouped_scan_without_a_bscan_number_is_refused(tmp_path):
    for name in ("eyeA_top.png", "eyeA_mid.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / name)
    with pytest.raises(DatasetError, match="has no B-scan number"):
        plan_measurements(sorted(tmp_path.glob("*.png")), MeasurementOptions(group_regex=r"(eye\w)_",
                                                                             slice_spacing=0.1))
