"""report.html after training (rendered in headless Chromium), `gctxseg report`, `gctxseg compare`."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gctxseg.cli import main
from gctxseg.workflows.train_report import write_report_or_warn

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs tiny models: one thread (see conftest.one_thread)."""


@pytest.fixture
def run(tiny_run):
    return tiny_run


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.table_ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("img", "script", "link") and (attrs.get("src") or attrs.get("href")):
            self.links.append(attrs.get("src") or attrs.get("href"))
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "table" and attrs.get("id"):
            self.table_ids.append(attrs["id"])


def _check_links(report: Path) -> _Links:
    parser = _Links()
    parser.feed(report.read_text())
    for link in parser.links:
        assert link.startswith("data:image/png;base64,") or (report.parent / link).is_file(), f"broken link {link}"
    return parser


@pytest.mark.slow
def test_training_writes_a_report_that_renders_in_chromium(run, tmp_path):
    report = run / "report.html"
    assert report.is_file()
    parser = _check_links(report)
    assert {"parameters", "model", "best-epoch", "evaluation"} <= set(parser.table_ids)
    assert sum(link.startswith("data:") for link in parser.links) >= 6  # curves, confusion, histogram, cases, samples

    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip("chromium not installed: apt-get install chromium chromium-driver")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000"]  # fmt: skip
    url = report.resolve().as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert loaded, "the page's load script did not run"
    assert loaded.group(1) == loaded.group(2) and int(loaded.group(2)) >= 6, f"images loaded {loaded.group(0)}"
    assert 'id="best-epoch"' in dom and 'id="evaluation"' in dom and "<td>class 1 (value 128)</td>" in dom
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2000, 1280) and pixels.std() > 10  # a page with content, not a blank screen


@pytest.mark.slow
def test_report_command_rebuilds_the_report_from_the_run_folder(run):
    shutil.rmtree(run / "eval")
    (run / "report.html").unlink()
    assert main(["report", str(run), "--device", "cpu", "--amp", "off"]) == 0
    assert (run / "eval" / "summary.json").is_file()
    _check_links(run / "report.html")


def test_a_report_failure_only_warns(tmp_path, capsys):
    write_report_or_warn(tmp_path / "not_a_run", "cpu", "off")
    assert "warning: report.html not written" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_prints_best_metrics_size_and_speed(run, tmp_path, capsys):
    out = tmp_path / "compare.png"
    assert main(["compare", str(run), str(run), "--out", str(out), "--device", "cpu", "--timing-seconds", "0.2"]) == 0
    text = capsys.readouterr().out
    for column in ("val mean dice", "params (M)", "G mult-adds", "images/s"):
        assert column in text
    assert text.count("unet") >= 2 and Image.open(out).size[0] > 100
