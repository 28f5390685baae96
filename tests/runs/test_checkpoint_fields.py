"""A checkpoint's fields are checked before its model is built: a crafted, truncated or foreign file is one line."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from conftest import one_line
from helpers_checkpoints import SMALL, checkpoint_of
from PIL import Image

from gctxseg.cli import main
from gctxseg.runs.checkpoint import load_checkpoint, model_from_checkpoint


@pytest.mark.parametrize("name", sorted(SMALL))
def test_genuine_checkpoints_of_every_model_still_build(name):
    ckpt = checkpoint_of(name)
    model = model_from_checkpoint(ckpt, "best.pt")
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"model_kwargs": {"base_width": 2**20}}, r"model_kwargs\['base_width'\] = 1048576: a size must be 1..4096"),
        ({"model_kwargs": {"base_width": 2, "depth": 5}}, r"\['depth'\] are no options of unet"),
        ({"model_kwargs": {"base_width": True}}, "must be int"),
        ({"model_kwargs": {"bilinear": "yes"}}, "must be bool"),
        ({"model_kwargs": {"base_width": math.inf}}, "must be int"),
        ({"model_kwargs": [2]}, "model_kwargs list, not a dict"),
        ({"model_name": "unet9"}, "unknown model 'unet9'"),
        ({"model_name": 3}, "model_name 3 is not a model's name"),
        ({"value_map": None}, "value_map None is not a map"),
        ({"value_map": [0, 128, 255]}, "is not a map of mask values"),
        ({"value_map": {"0": "0", "255": "1"}}, "must map to classes 0, 1, ... in order"),
        ({"value_map": {"0": 1, "255": 0}}, "must map to classes 0, 1, ... in order"),
        ({"fingerprint": {}}, "no input channels"),
        ({"fingerprint": {"channels": 2**40}}, "input channels 1099511627776, not a count in 1..4096"),
    ],
)
def test_crafted_checkpoint_fields_are_refused_with_one_line_naming_the_file(tmp_path, changes, problem):
    path = tmp_path / "best.pt"
    ckpt = checkpoint_of()
    if "value_map" in changes and changes["value_map"] is None:
        del ckpt["value_map"]  # missing altogether
        changes = {}
    torch.save({**ckpt, **changes}, path)
    with pytest.raises(ValueError, match=problem) as err:
        load_checkpoint(path)
    assert one_line(err).startswith(f"{path}: not a usable gctxseg checkpoint")


def test_options_within_bounds_that_make_more_weights_than_the_file_holds_allocate_nothing():
    ckpt = checkpoint_of(model_kwargs={"base_width": 4096})  # 55 G weights, 220 GB: counted on meta tensors
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"make 54,8\d\d,\d{3},\d{3} weights for unet, the file holds") as err:
        model_from_checkpoint(ckpt, "best.pt")
    assert one_line(err).startswith("best.pt: not a usable gctxseg checkpoint")
    assert "conv_0.0.0.weight: (2, 1, 3, 3) in the file, (4096, 1, 3, 3) built" in str(err.value)
    assert time.perf_counter() - start < 10


def test_predict_with_a_crafted_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "img" / "a.png")
    torch.save(checkpoint_of(model_kwargs={"base_width": 2**20}), tmp_path / "best.pt")
    code = main(["predict", "--weights", str(tmp_path / "best.pt"), "--source", str(tmp_path / "img"),
                 "--out", str(tmp_path / "pred"), "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "not a usable gctxseg checkpoint" in err and err.count("\n") == 1, err


def test_weights_that_do_not_fit_name_the_key_and_both_shapes():
    ckpt = checkpoint_of()
    key = next(k for k, v in ckpt["model"].items() if v.dim() == 4)
    state = {**ckpt["model"], key: torch.zeros(3, 3, 3, 3)}
    del state[next(reversed(state))]
    with pytest.raises(ValueError) as err:
        model_from_checkpoint({**ckpt, "model": state}, "x.pt")
    line = one_line(err)
    assert f"{key}: (3, 3, 3, 3) in the file, {tuple(ckpt['model'][key].shape)} in the model" in line
    assert "1 missing" in line


def test_truncated_and_foreign_checkpoints_give_one_line(tmp_path, capsys):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(b"PK\x03\x04 not really a zip")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "scan.png")
    for path, expected in ((truncated, "may be truncated"), (foreign, "not a gctxseg checkpoint")):
        assert main(["predict", "--weights", str(path), "--source", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and str(path) in err and "\n" not in err
