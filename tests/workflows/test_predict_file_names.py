"""predict on a folder whose file names collide or cannot be decoded: each file fails alone, the rest are written."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from helpers_checkpoints import saved_checkpoint
from PIL import Image

from gctxseg.cli import main
from gctxseg.workflows.predict_folder import predict_folder


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
    code = main(["predict", "--weights", str(saved_checkpoint(tmp_path / "best.pt")), "--source", str(source),
                 "--out", str(tmp_path / "out"), "--device", "cpu", "--amp", "off"])
    err = capsys.readouterr().err
    assert code == 1 and "1 image(s) failed" in err
    assert "scan\\xff.png: the file name is not UTF-8 text" in err
    with open(tmp_path / "out" / "measurements.csv", newline="") as f:
        assert [row["file"] for row in csv.DictReader(f)] == ["a.png"]
    assert (tmp_path / "out" / "index.html").is_file() and (tmp_path / "out" / "masks" / "a.png").is_file()


@pytest.mark.slow
def test_predict_keeps_a_png_and_a_jpg_apart_and_lists_every_failure(tiny_run, tmp_path, monkeypatch):
    source = tmp_path / "img"
    source.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(source / "a.png")
    Image.fromarray(np.zeros((30, 50), np.uint8)).save(source / "a.jpg")
    Image.fromarray(np.zeros((300, 300), np.uint8)).save(source / "bomb.png")
    (source / "broken.png").write_bytes(b"garbage")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(source / "z.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # 300 x 300 is over twice that: a decompression bomb
    summary = predict_folder(tiny_run / "best.pt", source, tmp_path / "out", device="cpu", amp="off")
    assert sorted(p.name for p in summary.written) == ["a.jpg.png", "a.png.png", "z.png"]
    assert Image.open(tmp_path / "out" / "masks" / "a.jpg.png").size == (50, 30)
    assert Image.open(tmp_path / "out" / "masks" / "a.png.png").size == (40, 40)
    assert len(summary.failed) == 2 and all("\n" not in line for line in summary.failed)
    assert "bomb.png: DecompressionBombError" in summary.failed[0] and "broken.png" in summary.failed[1]


def test_an_image_far_darker_than_the_training_images_is_said_not_silently_predicted_empty(tiny_run, phantom_dir,
                                                                                         tmp_path, capsys):
    source = tmp_path / "img"
    source.mkdir()
    scan = np.asarray(Image.open(sorted((phantom_dir / "val" / "images").glob("*.jpg"))[0]).convert("L"))
    Image.fromarray(scan).save(source / "as_trained.png")
    Image.fromarray(scan.astype(np.uint16) * 16).save(source / "twelve_bit.png")  # 12-bit values in a 16-bit file
    predict_folder(tiny_run / "best.pt", source, tmp_path / "out", device="cpu", amp="off")
    notes = [line for line in capsys.readouterr().err.splitlines() if "training images' intensities" in line]
    assert len(notes) == 1 and notes[0].startswith("note: 1 of 2 image(s) lie far outside")
    assert f"first {source / 'twelve_bit.png'}: far darker than the training images" in notes[0]
