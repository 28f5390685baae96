"""`gctxseg predict` end to end: measurements.csv counts its own masks, index.html renders in headless Chromium."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from gctxseg.cli import main
from gctxseg.data import MaskValueMap, read_mask

pytestmark = pytest.mark.slow  # every test here reads tiny_run, which trains a model

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models only: one thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def predicted(tiny_run, phantom_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gallery") / "out"
    code = main(["predict", "--weights", str(tiny_run / "best.pt"), "--source", str(phantom_dir / "val" / "images"),
                 "--out", str(out), "--device", "cpu", "--amp", "off", "--pixel-spacing", "0.01", "0.03",
                 "--class-names", "edema", "hole"])  # fmt: skip
    assert code == 0
    return out


def _rows(out: Path) -> list[dict]:
    with open(out / "measurements.csv") as f:
        return list(csv.DictReader(f))


def test_measurements_csv_counts_the_written_masks(predicted, phantom_dir):
    rows = _rows(predicted)
    images = sorted(p.name for p in (phantom_dir / "val" / "images").iterdir() if p.suffix == ".jpg")
    assert [r["file"] for r in rows] == images and {r["kind"] for r in rows} == {"image"}
    values = MaskValueMap([0, 128, 255])
    for row in rows:
        labels = values.encode(read_mask(predicted / "masks" / (Path(row["file"]).stem + ".png")))
        for c, name in ((1, "edema"), (2, "hole")):
            assert int(row[f"{name}_pixels"]) == int((labels == c).sum())
            assert float(row[f"{name}_area_mm2"]) == pytest.approx((labels == c).sum() * 0.0003, abs=1e-12)
        assert row["edema_volume_mm3"] == ""


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.lazy_images = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("img", "script", "link") and (attrs.get("src") or attrs.get("href")):
            self.links.append(attrs.get("src") or attrs.get("href"))
            self.lazy_images += tag == "img" and attrs.get("loading") == "lazy"
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def _chromium(tmp_path: Path, width: int = 1280) -> list[str]:
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},1400"]  # fmt: skip


def test_gallery_is_self_contained_and_links_every_overlay_and_mask(predicted):
    page = _Page()
    page.feed((predicted / "index.html").read_text())
    for link in page.links:
        assert not re.match(r"^[a-z]+://", link), f"network link {link}"  # self-contained: nothing fetched
        assert (predicted / unquote(link)).is_file(), f"broken link {link}"
    n = len(_rows(predicted))
    assert page.lazy_images == n
    assert sum(link.startswith("masks/") for link in page.links) == n


def test_gallery_sorts_and_filters_in_headless_chromium(predicted, tmp_path):
    flags = _chromium(tmp_path)
    rows = _rows(predicted)
    with_edema = [r for r in rows if int(r["edema_pixels"]) > 0]
    url = (predicted / "index.html").resolve().as_uri() + "?sort=edema_pixels&order=desc&present=1"
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    shown = re.search(r'data-rows-shown="(\d+)"', dom)
    assert shown, "the page's script did not run"
    assert int(shown.group(1)) == len(with_edema)
    visible = re.findall(r'<tr(?![^>]*hidden)[^>]*>.*?<td class="file" data-value="([^"]+)"', dom)
    order = sorted(with_edema, key=lambda r: -int(r["edema_pixels"]))
    assert [int(r["edema_pixels"]) for r in order] == [
        int(next(r["edema_pixels"] for r in rows if r["file"] == f)) for f in visible
    ]
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert loaded and int(loaded.group(1)) >= 1  # the overlays in view load from the relative links


def test_gallery_is_readable_on_a_phone_width(predicted, tmp_path):
    shot = tmp_path / "phone.png"
    url = (predicted / "index.html").resolve().as_uri()
    flags = _chromium(tmp_path, 390)
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert 'data-page-fits="true"' in dom  # only the table scrolls sideways, the page fits 390 px
    subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1400, 390)
    # an overlay (coloured thumbnails) fits in the phone's width: the page is not a blank or tiny render
    assert pixels.std() > 10


def test_gallery_shows_every_overlay_of_odd_and_colliding_names_in_headless_chromium(tiny_run, tmp_path):
    """Issue 18: names with URL characters (``#``, ``%``, ``?``, spaces) and colliding stems each show their own
    overlay and mask in a browser (every image of the page loads from its relative link)."""
    flags = _chromium(tmp_path)
    source = tmp_path / "odd"
    source.mkdir()
    for name in ("scan#1 %20?.jpg", "a.jpg", "a.png", "b c.png"):
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(source / name)
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(tiny_run / "best.pt"), "--source", str(source), "--out", str(out),
                 "--device", "cpu", "--amp", "off"]) == 0
    assert len(_rows(out)) == 4 and all(r["note"] == "" for r in _rows(out))
    dom = subprocess.run([*flags, "--dump-dom", (out / "index.html").resolve().as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    assert 'data-images-loaded="4/4"' in dom, re.findall(r"data-images-loaded=\S+", dom)
