"""``gctxseg`` answers each kind of error with one line and its exit code: 1 the data, 2 a flag, 4 the disk."""

from __future__ import annotations

import numpy as np
from conftest import write_pair

from gctxseg.cli import main


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def test_a_bad_flag_combination_exits_2_with_one_line(capsys):
    assert main(["train", "--decoder-init", "mirror"]) == 2
    assert _error_line(capsys) == ("error: --decoder-init mirror mirrors ImageNet encoder weights into the decoder; "
                                   "add --encoder-weights imagenet (or PATH)")


def test_bad_data_exits_1_with_one_line(tmp_path, capsys):
    write_pair(tmp_path, "a", np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8))
    (tmp_path / "images" / "b.png").write_bytes((tmp_path / "images" / "a.png").read_bytes())  # no mask
    assert main(["plan", str(tmp_path / "images"), "--device", "cpu"]) == 1
    line = _error_line(capsys)
    assert line.startswith("error: ") and "b.png" in line


def test_a_disk_error_exits_4_with_the_path(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    assert main(["synth", "--out", str(tmp_path / "file" / "data"), "--n", "2", "--size", "32", "32"]) == 4
    line = _error_line(capsys)
    assert line.startswith(f"error: {tmp_path / 'file'}") and "check free space and write permission there" in line
