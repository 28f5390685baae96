"""Inputs real users have: lossy masks, too many classes, 1-bit masks, RGB grey scans, colliding names, bad files,
resume flags, another working directory, a log file instead of a terminal, weight decay where it belongs."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image

from gctxseg.cli import _given_train_settings, main
from gctxseg.core.console import progress
from gctxseg.data import DatasetError, find_pairs, fingerprint_dataset
from gctxseg.training import TrainConfig, optimizer_param_groups, train
from gctxseg.training.config import resume_config
from gctxseg.workflows.predict_folder import predict_folder

TINY = ["--model", "unet", "--model-option", "base_width=4", "--base-size", "32", "32", "--batch-size", "4",
        "--workers", "0", "--amp", "off", "--device", "cpu"]  # fmt: skip


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
    args = ["train", *TINY, "--epochs", "1", "--img_f", ".png", "--results", str(runs),
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


def test_resume_names_the_ignored_flags_and_an_explicit_epochs_wins(phantom_dir, tmp_path, capsys):
    args = ["train", *TINY, "--epochs", "1", "--results", str(tmp_path / "runs"),
            "--data-train", str(phantom_dir / "train" / "images"), "--data-val", str(phantom_dir / "val" / "images")]
    assert main(args) == 0
    last = tmp_path / "runs" / "exp" / "last.pt"
    first_lr = json.loads((last.parent / "log.json").read_text())["train parameters"]["lr"]  # planned: not given
    capsys.readouterr()
    assert main(["train", "--resume", str(last), "--epochs", "2", "--lr", "0.5", "--batch-size", "2"]) == 0
    err = capsys.readouterr().err
    ignored = [line for line in err.splitlines() if line.startswith("--resume: ignoring")]
    assert ignored == [ignored[0]] and "--batch-size, --lr" in ignored[0]
    log = json.loads((last.parent / "log.json").read_text())
    assert [k for k in log if k.startswith("epoch:")] == ["epoch:0", "epoch:1"]
    assert log["train parameters"]["lr"] == first_lr != 0.5 and log["train parameters"]["batch size"] == 4
    # an explicit --epochs equal to the default still counts (a 400-epoch run shortened to 300)
    assert {"epochs", "resume"} <= _given_train_settings(["train", "--resume", "x.pt", "--epochs", "300"])
    saved = {"config": asdict(tiny_config(phantom_dir, tmp_path, epochs=400))}
    assert resume_config(TrainConfig(resume="x.pt", epochs=300), saved, {"epochs", "resume"}).epochs == 300
    assert resume_config(TrainConfig(resume="x.pt"), saved, {"resume"}).epochs == 400


def test_report_works_from_another_working_directory(phantom_dir, tmp_path, monkeypatch):
    shutil.copytree(phantom_dir, tmp_path / "project" / "data")
    monkeypatch.chdir(tmp_path / "project")
    run = train(tiny_config(Path("data"), Path("runs"), epochs=1)).resolve()  # relative paths, as users type them
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(run), "--device", "cpu", "--amp", "off"]) == 0
    assert (run / "report.html").is_file() and (run / "eval" / "summary.json").is_file()


def test_progress_prints_plain_lines_when_not_on_a_terminal(capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert list(progress(range(40), "train")) == list(range(40))  # pytest's captured stderr is not a terminal
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and lines[0].startswith("  train  10% (4/40)") and "100% (40/40)" in lines[-1]
    assert list(progress(range(5), "val", show=False)) == list(range(5))  # other ranks: silent
    assert capsys.readouterr().out == ""


def test_weight_decay_spares_norm_weights_biases_and_position_tables(tiny_run):
    from gctxseg.models import create_model

    model = create_model("gctx_unet", 1, 3, img_size=32, embed_dim=8, num_heads=[1, 1, 1, 1], window_sizes=[4, 2, 1, 1])
    groups = optimizer_param_groups(model, 0.05)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, param in model.named_parameters():
        exempt = param.ndim <= 1 or name.endswith(".bias") or "relative_position_bias_table" in name
        assert (id(param) not in decayed) == exempt, name
    ckpt = torch.load(tiny_run / "last.pt", weights_only=True)
    planned = ckpt["config"]["weight_decay"]  # the run's (planned) weight decay
    assert planned > 0 and sorted(g["weight_decay"] for g in ckpt["optimizer"]["param_groups"]) == [0.0, planned]
