"""The gallery shows every file whatever its name: colliding stems, URL characters."""

from __future__ import annotations

import csv

import numpy as np
import torch
from helpers_checkpoints import checkpoint_of
from PIL import Image


def test_stems_that_collide_are_measured_and_shown_in_the_gallery(tmp_path):
    from gctxseg.workflows.predict_folder import output_names, predict_folder

    ckpt = {**checkpoint_of(), "base_size": [16, 16], "normalization": {"mean": [0.5], "std": [0.25]}}
    torch.save(ckpt, tmp_path / "best.pt")
    (tmp_path / "img").mkdir()
    for name in ("a.jpg", "a.png", "b.jpg"):
        scan = np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)
        Image.fromarray(scan).save(tmp_path / "img" / name)
    summary = predict_folder(tmp_path / "best.pt", tmp_path / "img", tmp_path / "out", device="cpu", amp="off")
    with open(tmp_path / "out" / "measurements.csv", newline="") as f:
        rows = {row["file"]: row for row in csv.DictReader(f)}
    assert sorted(rows) == ["a.jpg", "a.png", "b.jpg"] and not summary.failed
    assert all(row["note"] == "" and row["class1_pixels"] != "" for row in rows.values()), rows
    page = (tmp_path / "out" / "index.html").read_text()
    for shown in ("a.jpg.png", "a.png.png", "b.png"):
        assert f'src="overlays/{shown}"' in page and f'href="masks/{shown}"' in page
    names = output_names([tmp_path / n for n in ("a.jpg", "a.jpg.png", "A.png")])  # a.jpg's name is a.jpg.png's stem
    assert len({n.casefold() for n in names.values()}) == 3


def test_gallery_links_of_names_with_url_characters_are_encoded(tmp_path):
    from urllib.parse import unquote

    from gctxseg.workflows.predict_folder import predict_folder

    ckpt = {**checkpoint_of(), "base_size": [16, 16], "normalization": {"mean": [0.5], "std": [0.25]}}
    torch.save(ckpt, tmp_path / "best.pt")
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "img" / "scan#1 %20?.jpg")
    predict_folder(tmp_path / "best.pt", tmp_path / "img", tmp_path / "out", device="cpu", amp="off")
    page = (tmp_path / "out" / "index.html").read_text()
    src = page.split('src="overlays/', 1)[1].split('"', 1)[0]
    assert "#" not in src and "?" not in src and " " not in src
    assert (tmp_path / "out" / "overlays" / unquote(src)).is_file()
    href = page.split('href="masks/', 1)[1].split('"', 1)[0]
    assert (tmp_path / "out" / "masks" / unquote(href)).is_file()
