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
