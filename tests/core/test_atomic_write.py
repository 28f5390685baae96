"""Atomic writes: a full disk keeps the previous complete file."""

from __future__ import annotations

import json

import pytest


def test_disk_full_while_writing_keeps_the_old_file(tmp_path, monkeypatch):
    from gctxseg.core import files as utils

    target = tmp_path / "log.json"
    utils.atomic_write_json(target, {"epoch": 1})

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(utils.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        utils.atomic_write_json(target, {"epoch": 2})
    assert json.loads(target.read_text()) == {"epoch": 1}  # the previous complete file survives
    assert [p.name for p in tmp_path.iterdir()] == ["log.json"]  # no temp file left behind


def test_a_checkpoint_save_that_fails_midway_keeps_the_old_file(tmp_path, monkeypatch):
    import torch

    from gctxseg.core import files as utils

    target = tmp_path / "last.pt"
    utils.atomic_torch_save({"epoch": 1, "w": torch.ones(3)}, target)
    calls = []
    real_save = torch.save

    def half_save(obj, f):  # writes part of the file, then the disk fills
        calls.append(f)
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(utils.torch, "save", half_save)
    with pytest.raises(OSError, match="No space left"):
        utils.atomic_torch_save({"epoch": 2, "w": torch.zeros(3)}, target)
    assert calls  # it did write into a file
    monkeypatch.setattr(utils.torch, "save", real_save)
    kept = torch.load(target, weights_only=True)
    assert kept["epoch"] == 1 and torch.equal(kept["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
