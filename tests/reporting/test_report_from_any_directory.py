"""A run's report builds from any working directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import tiny_config

from gctxseg.cli import main
from gctxseg.training import train

pytestmark = pytest.mark.slow  # every test here trains a model


def test_report_works_from_another_working_directory(phantom_dir, tmp_path, monkeypatch):
    shutil.copytree(phantom_dir, tmp_path / "project" / "data")
    monkeypatch.chdir(tmp_path / "project")
    run = train(tiny_config(Path("data"), Path("runs"), epochs=1)).resolve()  # relative paths, as users type them
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(run), "--device", "cpu", "--amp", "off"]) == 0
    assert (run / "report.html").is_file() and (run / "eval" / "summary.json").is_file()
