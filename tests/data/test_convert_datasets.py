"""gctxseg convert (Duke DME .mat and PNG copy, DRIVE): what it writes, and every source file it does not convert
named; a damaged source or a failed write leaves nothing behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import one_line, write_duke_png_copy
from PIL import Image

from gctxseg.cli import main
from gctxseg.data import DatasetError
from gctxseg.data.convert import convert_drive, convert_duke_dme
from gctxseg.data.splits import fold_files


def _write_duke_mat(path, scans=4, graded=(1, 3), seed=0):
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (24, 32, scans)).astype(np.float64)
    fluid = np.full((24, 32, scans), np.nan)
    for s in graded:
        fluid[:, :, s] = 0
        fluid[5:9, 10:20, s] = 2  # graders number their regions: any value > 0 is fluid
    savemat(path, {"images": images, "manualFluid1": fluid, "manualFluid2": fluid})
    return images


def _write_drive(root, subset, numbers, size=(18, 20)):
    (root / subset / "images").mkdir(parents=True, exist_ok=True)
    (root / subset / "1st_manual").mkdir(exist_ok=True)
    for n in numbers:
        rgb = np.full((*size, 3), (n, 2 * n, 3 * n), np.uint8)
        Image.fromarray(rgb).save(root / subset / "images" / f"{n:02d}_{subset}.tif")
        vessels = np.zeros(size, np.uint8)
        vessels[3, 2:12] = 255  # one vessel a pixel wide
        Image.fromarray(vessels).save(root / subset / "1st_manual" / f"{n:02d}_manual1.gif")


def _drive(tmp_path):
    src = tmp_path / "DRIVE"
    _write_drive(src, "training", range(21, 27))
    _write_drive(src, "test", range(1, 5))
    return src


def test_convert_duke_mat_keeps_graded_scans_and_splits_by_patient(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    images = {p: _write_duke_mat(src / f"Subject_{p:02d}.mat", seed=p) for p in (1, 2, 3)}
    done = convert_duke_dme(src, tmp_path / "out", folds=3)
    assert done == {"scans": 6, "patients": 3, "with fluid": 6, "folds": 3, "source": "mat"}
    names = sorted(p.stem for p in (tmp_path / "out" / "images").iterdir())
    assert names == [f"p{p:02d}_b{s:02d}" for p in (1, 2, 3) for s in (1, 3)]  # NaN scans left out
    image = np.asarray(Image.open(tmp_path / "out" / "images" / "p02_b03.png"))
    assert np.array_equal(image, images[2][:, :, 3].astype(np.uint8))
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "p02_b03.png"))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255} and (mask == 255).sum() == 40
    splits = json.loads((tmp_path / "out" / "splits.json").read_text())
    assert len(splits) == 3 and all({n[:3] for n in f["val"]} & {n[:3] for n in f["train"]} == set() for f in splits)
    # the folder now trains fold by fold with no further option: splits.json beside images is found
    train, val, source = fold_files(tmp_path / "out" / "images", ".png", ".png", 3, 0)
    assert source.endswith("splits.json") and len(train) == 4 and len(val) == 2


def test_convert_duke_png_copy(tmp_path):
    root = tmp_path / "copy" / "data"
    (root / "img_for_inference").mkdir(parents=True)
    (root / "annotation").mkdir()
    for n in range(22):  # 2 patients x 11 scans
        grey = np.full((12, 16), n, np.uint8)
        Image.fromarray(np.stack([grey] * 3, -1)).save(root / "img_for_inference" / f"img_{n}.png")
        ann = np.zeros((12, 16, 3), np.uint8)
        ann[2:4, 2:6] = 250 if n % 2 else 0  # anti-aliased near-white fluid
        ann[5, 5] = 100  # below the threshold: not fluid
        Image.fromarray(ann).save(root / "annotation" / f"img_{n}.png")
    done = convert_duke_dme(tmp_path / "copy", tmp_path / "out", folds=2)
    assert done["scans"] == 22 and done["patients"] == 2 and done["with fluid"] == 11
    assert Image.open(tmp_path / "out" / "images" / "p02_b03.png").mode == "L"
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "p01_b01.png"))
    assert (mask == 255).sum() == 8 and mask[5, 5] == 0
    with pytest.raises(DatasetError, match="neither Subject_NN.mat files nor"):
        convert_duke_dme(tmp_path, tmp_path / "o2")


def test_convert_drive_keeps_its_split_and_reads_as_train_and_val(tmp_path):
    src = tmp_path / "DRIVE"
    _write_drive(src, "training", range(21, 27))
    _write_drive(src, "test", range(1, 5))
    done = convert_drive(src, tmp_path / "out", folds=3)
    assert done == {"photographs": 10, "with vessels": 10, "folds": 3, "source": "drive"}
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "test" / "images").iterdir()) == ["01.png", "02.png", "03.png", "04.png"]
    image = np.asarray(Image.open(out / "train" / "images" / "22.png"))
    assert image.shape == (18, 20, 3) and tuple(image[0, 0]) == (22, 44, 66)
    mask = np.asarray(Image.open(out / "train" / "masks" / "22.png"))
    assert set(np.unique(mask)) == {0, 255} and (mask == 255).sum() == 10
    # the training images fold by fold (each photograph its own subject), the test set as --data-val
    train, val, source = fold_files(out / "train" / "images", ".png", ".png", 3, 1)
    assert source.endswith("splits.json") and len(train) == 4 and len(val) == 2
    # a photograph without its label is named before anything is written
    (src / "test" / "1st_manual" / "03_manual1.gif").unlink()
    with pytest.raises(DatasetError, match=r"03_test.tif: no first-observer label .*03_manual1.gif"):
        convert_drive(src, tmp_path / "o2")
    assert not (tmp_path / "o2").exists()


def test_convert_drive_two_photographs_of_one_number_are_refused_naming_both(tmp_path):
    src = _drive(tmp_path)
    Image.fromarray(np.zeros((18, 20, 3), np.uint8)).save(src / "training" / "images" / "21_copy.tif")
    with pytest.raises(DatasetError) as err:
        convert_drive(src, tmp_path / "out", folds=3)
    line = one_line(err)
    assert "21_copy.tif" in line and "21_training.tif" in line and "both convert to" in line
    assert not (tmp_path / "out").exists()


def test_convert_duke_png_copy_img_1_and_img_01_are_refused_naming_both(tmp_path):
    write_duke_png_copy(tmp_path / "src")
    Image.fromarray(np.full((12, 16), 40, np.uint8)).save(tmp_path / "src" / "img_for_inference" / "img_01.png")
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(tmp_path / "src" / "annotation" / "img_01.png")
    with pytest.raises(DatasetError) as err:
        convert_duke_dme(tmp_path / "src", tmp_path / "out", folds=2)
    line = one_line(err)
    assert "img_01.png" in line and "img_1.png" in line and "p01_b01" in line
    assert not (tmp_path / "out").exists()


def test_convert_duke_mat_subject_1_and_subject_01_are_refused_naming_both(tmp_path):
    (tmp_path / "src").mkdir()
    for name in ("Subject_1.mat", "Subject_01.mat", "Subject_02.mat"):
        (tmp_path / "src" / name).write_bytes(b"")  # refused by name, before any file is read
    assert main(["convert", "duke-dme", str(tmp_path / "src"), str(tmp_path / "out"), "--folds", "2"]) == 1
    with pytest.raises(DatasetError) as err:
        convert_duke_dme(tmp_path / "src", tmp_path / "out", folds=2)
    line = one_line(err)
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


def test_convert_a_damaged_annotation_is_named_and_nothing_is_written(tmp_path, capsys):
    write_duke_png_copy(tmp_path / "src")
    damaged = tmp_path / "src" / "annotation" / "img_5.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 16), dtype=np.uint8)).save(damaged)
    damaged.write_bytes(damaged.read_bytes()[:120])  # the header reads, the pixels do not
    assert main(["convert", "duke-dme", str(tmp_path / "src"), str(tmp_path / "out"), "--folds", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "img_5.png: damaged" in err[0] and "free space" not in err[0]
    assert not (tmp_path / "out").exists() and not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_convert_a_write_failure_names_the_output_folder_not_the_staging_one(tmp_path, capsys, monkeypatch):
    from gctxseg.data import convert

    write_duke_png_copy(tmp_path / "src")

    def disk_full(out, name, image, fluid):
        raise OSError(28, "No space left on device", str(out / "images" / f"{name}.png"))

    monkeypatch.setattr(convert, "_write_pair", disk_full)
    assert main(["convert", "duke-dme", str(tmp_path / "src"), str(tmp_path / "out"), "--folds", "2"]) == 4
    err = capsys.readouterr().err
    assert str(tmp_path / "out") in err and "converting" not in err and "No space left" in err


def test_convert_an_odd_subject_file_name_is_one_line(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    for name in ("Subject_01.mat", "Subject_02.mat", "Subject_x.mat"):
        (tmp_path / "src" / name).write_bytes(b"")
    assert main(["convert", "duke-dme", str(tmp_path / "src"), str(tmp_path / "out"), "--folds", "2"]) == 1
    assert "not a Duke DME subject file (Subject_NN.mat)" in capsys.readouterr().err
