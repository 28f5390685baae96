"""Progress output when stderr is not a terminal."""

from __future__ import annotations

from gctxseg.core.console import progress


def test_progress_prints_plain_lines_when_not_on_a_terminal(capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert list(progress(range(40), "train")) == list(range(40))  # pytest's captured stderr is not a terminal
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and lines[0].startswith("  train  10% (4/40)") and "100% (40/40)" in lines[-1]
    assert list(progress(range(5), "val", show=False)) == list(range(5))  # other ranks: silent
    assert capsys.readouterr().out == ""
