"""Topcon ``.fda`` files: listed by ``predict --source`` and read through eyepy's ``import_topcon_fda`` (which needs
oct-converter). No FDA writer exists, so a real file's geometry is not tested; a file that cannot be read (or
oct-converter missing) fails alone with one line naming it."""

from __future__ import annotations

import importlib.util

import pytest
from helpers_clinic_files import TruthLookupPredictor

from gctxseg.data import DatasetError
from gctxseg.data.oct_volumes import is_volume_file, read_oct_volume

pytest.importorskip("eyepy")


def _expected_problem() -> str:
    if importlib.util.find_spec("oct_converter") is None:
        return 'reading Topcon FDA files needs oct-converter; pip install "gctxseg[fda]"'
    return "not a readable Topcon FDA file"


def test_an_unreadable_fda_gives_one_line_naming_it(tmp_path):
    path = tmp_path / "scan.fda"
    path.write_bytes(b"FOCT" + b"\0" * 64)
    assert is_volume_file(path)
    with pytest.raises(DatasetError) as err:
        read_oct_volume(path)
    line = str(err.value)
    assert line.startswith(f"{path}: ") and _expected_problem() in line and "\n" not in line


def test_predict_lists_fda_files_and_an_unreadable_one_fails_in_one_line(tmp_path, monkeypatch):
    from gctxseg.workflows import predict_folder as predict

    exams = tmp_path / "exams"
    exams.mkdir()
    (exams / "scan.fda").write_bytes(b"FOCT" + b"\0" * 64)
    monkeypatch.setattr(predict, "load_predictor", lambda *a, **k: TruthLookupPredictor({}))
    summary = predict.predict_folder("unused.pt", exams, tmp_path / "out")
    assert len(summary.failed) == 1 and summary.failed[0].startswith(f"{exams / 'scan.fda'}: ")
    assert _expected_problem() in summary.failed[0] and summary.written == []
