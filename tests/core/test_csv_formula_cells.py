"""CSV cells a spreadsheet would run as a formula are written as text; numbers stay numbers."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from gctxseg.clinical.measurements import (
    MeasurementOptions,
    fill_counts,
    plan_measurements,
    write_measurements_csv,
)
from gctxseg.core.files import atomic_write_csv


def test_csv_cells_a_spreadsheet_would_run_get_a_quote_and_numbers_stay_numbers(tmp_path):
    path = tmp_path / "t.csv"
    texts = ['=HYPERLINK("http:x")+1.jpg', "+a", "-a", "@SUM(A1)", "\tx", "\rx", "-1+1", "plain", "a=b"]
    rows = [{"text": t, "int": -3, "float": -2.5, "number_text": "-1e-05"} for t in texts]
    atomic_write_csv(path, ["text", "int", "float", "number_text", "=1+1"], rows)
    with open(path, newline="") as f:
        header, *cells = list(csv.reader(f))
    assert header[-1] == "'=1+1"  # class names reach the header
    expected = ["'" + t for t in texts[:7]] + texts[7:]
    assert [row[0] for row in cells] == expected
    assert {tuple(row[1:4]) for row in cells} == {("-3", "-2.5", "-1e-05")}  # numbers, also as text, unchanged


def test_a_carriage_return_inside_a_cell_cannot_start_a_row_with_a_formula(tmp_path):
    atomic_write_csv(tmp_path / "t.csv", ["file", "n"], [{"file": "x\r=HYPERLINK(1)", "n": 1}])
    text = (tmp_path / "t.csv").read_bytes().decode()
    assert text == 'file,n\n"x\r=HYPERLINK(1)",1\n'  # quoted: one cell, one row


def test_a_file_and_a_class_named_like_formulas_are_text_in_measurements_csv(tmp_path):
    image = tmp_path / '=HYPERLINK("http x")+1.png'
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(image)
    plan = fill_counts(plan_measurements([image], MeasurementOptions(pixel_spacing=(0.1, 0.1))), {image: [3]})
    write_measurements_csv(plan, tmp_path / "measurements.csv", ["@cmd"])
    with open(tmp_path / "measurements.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["file"] == "'" + image.name and rows[0]["'@cmd_pixels"] == "3"
