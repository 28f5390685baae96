"""Masks users have: lossy or anti-aliased masks are refused, more classes than uint8 holds are refused, 1-bit
masks and RGB grey scans train, evaluate and predict."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TRAIN_FLAGS, write_pair
from PIL import Image

from gctxseg.cli import main
from gctxseg.data import DatasetError, find_pairs, fingerprint_dataset
from gctxseg.workflows.predict_folder import predict_folder


def _copy_masks(phantom_dir: Path, out: Path, convert) -> Path:
    """The phantom's training split with every mask passed through ``convert`` (PIL image -> PIL image)."""
    shutil.copytree(phantom_dir / "train" / "images", out / "images")
    (out / "masks").mkdir()
    for mask in (phantom_dir / "train" / "masks").iterdir():
        convert(Image.open(mask)).save(out / "masks" / mask.name)
    return out / "images"


def _as_jpeg(mask: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    mask.save(buffer, "JPEG", quality=90)
    return Image.open(buffer)


@pytest.mark.parametrize("convert", [_as_jpeg, lambda m: m.resize((48, 48), Image.BILINEAR).resize((64, 64))])
def test_anti_aliased_or_jpeg_masks_are_refused_with_one_line(phantom_dir, tmp_path, convert):
    images = _copy_masks(phantom_dir, tmp_path / "lossy", convert)
    with pytest.raises(DatasetError) as err:
        fingerprint_dataset(find_pairs(images, ".jpg", ".png"))
    message = str(err.value)
    assert "\n" not in message and "/masks/" in message and "values 0 (" in message
    assert "anti-aliasing" in message and "threshold" in message


def test_more_classes_than_uint8_holds_are_refused(tmp_path):
    import nibabel as nib

    for kind in ("images", "masks"):
        (tmp_path / kind).mkdir()
    labels = np.arange(400).reshape(20, 20, 1) % 300  # 300 labels, each common enough to be a class
    nib.save(nib.Nifti1Image(np.random.rand(20, 20, 1).astype(np.float32), np.eye(4)), tmp_path / "images" / "a.nii")
    nib.save(nib.Nifti1Image(labels.astype(np.int16), np.eye(4)), tmp_path / "masks" / "a.nii")
    with pytest.raises(DatasetError, match="at most 256 classes") as err:
        fingerprint_dataset(find_pairs(tmp_path / "images", ".nii", ".nii"))
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_one_bit_masks_and_rgb_grey_scans_train_evaluate_and_predict(phantom_dir, tmp_path, capsys):
    data = tmp_path / "public_oct"
    for split in ("train", "val"):
        (data / split / "images").mkdir(parents=True)
        (data / split / "masks").mkdir()
        for mask in (phantom_dir / split / "masks").iterdir():
            Image.open(mask).point(lambda v: 255 * (v > 0)).convert("1").save(data / split / "masks" / mask.name)
            scan = Image.open(phantom_dir / split / "images" / f"{mask.stem}.jpg").convert("RGB")
            scan.save(data / split / "images" / mask.name)
    assert Image.open(next((data / "train" / "masks").iterdir())).mode == "1"
    runs = tmp_path / "runs"
    args = ["train", *TINY_TRAIN_FLAGS, "--epochs", "1", "--img_f", ".png", "--results", str(runs),
            "--data-train", str(data / "train" / "images"), "--data-val", str(data / "val" / "images")]  # fmt: skip
    assert main(args) == 0
    weights = runs / "exp" / "best.pt"
    params = json.loads((runs / "exp" / "log.json").read_text())["train parameters"]
    assert params["num classes"] == 2 and params["in channels"] == 1  # grey scans saved as RGB: a grey model
    assert main(["evaluate", "--weights", str(weights), "--data", str(data / "val" / "images"), "--img_f", ".png",
                 "--device", "cpu", "--out", str(tmp_path / "eval")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["images"] == 6
    assert main(["predict", "--weights", str(weights), "--source", str(data / "val" / "images"),
                 "--out", str(tmp_path / "pred"), "--device", "cpu"]) == 0  # fmt: skip
    assert len(list((tmp_path / "pred" / "masks").iterdir())) == 6
    # a true colour image: listed as failed at prediction, refused with one line as validation data
    colour = np.asarray(Image.open(next((data / "val" / "images").iterdir()))).copy()
    colour[..., 0] = 255 - colour[..., 0]
    Image.fromarray(colour).save(data / "val" / "images" / "colour.png")
    shutil.copy(next((data / "val" / "masks").iterdir()), data / "val" / "masks" / "colour.png")
    summary = predict_folder(weights, data / "val" / "images", tmp_path / "pred2", device="cpu", amp="off")
    assert len(summary.written) == 6 and "colour.png: 3-channel image but the model takes 1" in summary.failed[0]
    capsys.readouterr()
    assert main([*args, "--exist-ok"]) == 1  # the data is wrong: exit 1
    err = capsys.readouterr().err.strip()
    assert "colour.png: 3-channel image but the model takes 1" in err and "\n" not in err


def test_masks_of_0_1_beside_masks_of_0_255_are_warned_as_one_structure_saved_two_ways(tmp_path, capsys):
    from gctxseg.data import DataWarning

    for i in range(4):
        mask = np.zeros((16, 16), np.uint8)
        mask[4:9, 4:9] = 1 if i % 2 else 255  # two export conventions, one structure
        write_pair(tmp_path, f"scan{i}", np.full((16, 16), 40 * i, np.uint8), mask)
    with pytest.warns(DataWarning, match=r"2 mask\(s\) hold 1 and 2 others 255 .* never both"):
        fingerprint_dataset(find_pairs(tmp_path / "images", ".png", ".png"))
    main(["plan", str(tmp_path / "images"), "--model", "unet", "--device", "cpu"])
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"warning: {tmp_path / 'masks' / 'scan1.png'}: 2 mask(s) hold 1")  # one line, no source
