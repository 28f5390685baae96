"""Checkpoints are safe to share: loading never runs code from the file; old-format files get a way to convert."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

from gctxseg.cli import main
from gctxseg.runs.checkpoint import convert_checkpoint, load_checkpoint, model_from_checkpoint


class _CreatesFileWhenUnpickled:
    """What an attacker puts in a .pt: unpickling calls os.system, here only to touch a marker file."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.fixture
def crafted(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "best.pt"
    torch.save({"model_name": "unet", "model": {}, "value_map": _CreatesFileWhenUnpickled(marker)}, path)
    return path, marker


@pytest.fixture
def scans(tmp_path):
    """A labelled folder of one scan: ``scans/images/scan.png`` and its mask."""
    for kind in ("images", "masks"):
        (tmp_path / "scans" / kind).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "scans" / kind / "scan.png")
    return tmp_path / "scans" / "images"


def test_a_crafted_checkpoint_is_refused_with_one_line_and_runs_nothing(crafted, scans, tmp_path, capsys):
    path, marker = crafted
    with pytest.raises(ValueError, match="gctxseg convert-checkpoint --trust") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    commands = (
        ["predict", "--weights", str(path), "--source", str(scans), "--out", str(tmp_path / "out")],
        ["evaluate", "--weights", str(path), "--data", str(scans), "--img_f", ".png", "--out", str(tmp_path / "e")],
        ["export", "--weights", str(path)],
        ["train", "--resume", str(path)],
    )
    for command in commands:
        assert main(command) == 2, command
        err = capsys.readouterr().err.strip()
        assert "refused" in err and str(path) in err and "\n" not in err, command
    assert not marker.exists()  # nothing in the file ran


def test_convert_checkpoint_needs_trust(crafted, tmp_path, capsys):
    path, marker = crafted
    assert main(["convert-checkpoint", str(path), str(tmp_path / "new.pt")]) == 2
    assert "--trust" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "new.pt").exists()


@pytest.mark.slow
def test_checkpoints_hold_plain_data_that_loads_weights_only(tiny_run):
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(tiny_run / name, map_location="cpu", weights_only=True)
        assert set(ckpt["rng"]) == {"torch"}  # no pickled numpy / Python RNG state
        model_from_checkpoint(ckpt, tiny_run / name)


@pytest.mark.slow
def test_an_old_format_checkpoint_names_the_conversion_which_then_works(tiny_run, tmp_path, scans, capsys):
    ckpt = load_checkpoint(tiny_run / "best.pt")
    ckpt["rng"] = {**ckpt["rng"], "numpy": np.random.get_state(), "python": random.getstate()}  # as before 0.1.1
    old = tmp_path / "old.pt"
    torch.save(ckpt, old)
    assert main(["predict", "--weights", str(old), "--source", str(scans), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"gctxseg convert-checkpoint --trust {old}" in err and "\n" not in err
    new = tmp_path / "new.pt"
    assert main(["convert-checkpoint", "--trust", str(old), str(new)]) == 0
    converted = load_checkpoint(new)
    assert set(converted["rng"]) == {"torch"}
    assert all(torch.equal(converted["model"][k], ckpt["model"][k]) for k in ckpt["model"])
    assert main(["predict", "--weights", str(new), "--source", str(scans), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "masks" / "scan.png").is_file()


@pytest.mark.slow
def test_convert_refuses_to_overwrite_its_input(tiny_run, tmp_path):
    with pytest.raises(ValueError, match="new file"):
        convert_checkpoint(tiny_run / "best.pt", tiny_run / "best.pt", trust=True)
