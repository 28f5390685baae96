"""The command line's own face: --help, --version, and predict without --weights."""

from __future__ import annotations

import argparse
import os
import re
import shutil

import pytest

from gctxseg import __version__
from gctxseg.cli import main


def test_help_says_what_the_tool_does_and_lists_every_command_with_an_example(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "Parsing only" not in out
    assert "segmentation models" in out and "mm2" in out
    from gctxseg.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"train", "predict", "cv", "plan", "convert", "convert-checkpoint"} <= set(commands)
    for command in commands:
        assert re.search(rf"gctxseg {re.escape(command)}(\s|$)", out, re.M), command  # an example per command


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"gctxseg {__version__}"


def test_predict_without_weights_and_without_runs_says_how(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    code = main(["predict", "--source", str(tmp_path / "img"), "--results", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "no run folder with best.pt" in err and "--weights runs/NAME/best.pt" in err


@pytest.mark.slow
def test_predict_without_weights_takes_the_newest_runs_best_pt(tiny_run, phantom_dir, tmp_path, capsys, one_thread):
    for name, age in (("old", 1000), ("new", 10), ("older", 2000)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        shutil.copy(tiny_run / "best.pt", tmp_path / "runs" / name / "best.pt")
        t = (tmp_path / "runs" / name / "best.pt").stat().st_mtime - age
        os.utime(tmp_path / "runs" / name / "best.pt", (t, t))
    source = tmp_path / "img"
    source.mkdir()
    shutil.copy(next((phantom_dir / "val" / "images").glob("*.jpg")), source)
    code = main(["predict", "--source", str(source), "--out", str(tmp_path / "out"), "--results",
                 str(tmp_path / "runs"), "--device", "cpu", "--amp", "off"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].startswith(f"using {tmp_path / 'runs' / 'new' / 'best.pt'} (best.pt of the newest run")
    assert (tmp_path / "out" / "measurements.csv").is_file()
