"""`gctxseg evaluate`'s true vs predicted amounts: exact differences, MAE and limits of agreement, the report."""

from __future__ import annotations

import csv
import statistics

import numpy as np
import pytest
from conftest import write_pair

from gctxseg.clinical.measurements import MeasurementOptions
from gctxseg.evaluation.evaluate import evaluate_folder
from gctxseg.inference.predictor import Predictor
from gctxseg.reporting.report import write_html_report

pytestmark = pytest.mark.slow  # every test here reads tiny_run, which trains a model


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models only: one thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def evaluated(tiny_run, tmp_path_factory):
    """4 images with 72 edema and 50 hole pixels each; the 'model' predicts 72 + 10 i edema pixels, no hole."""
    tmp_path = tmp_path_factory.mktemp("agreement")
    for i in range(4):
        mask = np.zeros((32, 40), np.uint8)
        mask[2:10, 3:12] = 128  # 72 edema pixels
        mask[15:20, 20:30] = 255  # 50 hole pixels
        write_pair(tmp_path / "val", f"case_{i}", np.full((32, 40), 60 + i, np.uint8), mask)
    calls = []

    def predict_image(self, image, source="image"):
        i = len(calls)
        calls.append(source)
        pred = np.zeros(image.shape[:2], np.int64)
        pred[2:10, 3:12] = 1
        pred[30:31, :10 * i] = 1  # 10 i extra edema pixels (images are 32 x 40)
        return pred

    options = MeasurementOptions(pixel_spacing=(0.1, 0.2), slice_spacing=0.5, group_regex=r"^(case)_\d+$",
                                 class_names=("edema", "hole"))  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Predictor, "predict_images",
                      lambda self, images, sources: [predict_image(self, x, s) for x, s in zip(images, sources)])
        result = evaluate_folder(tiny_run / "best.pt", tmp_path / "val" / "images", ".png", ".png", tmp_path / "eval",
                                 device="cpu", amp="off", measure=options, worst_k=0)  # fmt: skip
    return result, tmp_path / "eval"


def test_amounts_per_image_and_volume_are_exact(evaluated):
    _, out = evaluated
    with open(out / "amounts_per_image.csv") as f:
        rows = list(csv.DictReader(f))
    edema = [r for r in rows if r["class"] == "edema" and r["kind"] == "image"]
    assert [r["file"] for r in edema] == [f"case_{i}.png" for i in range(4)] and {r["unit"] for r in edema} == {"mm2"}
    assert [float(r["truth"]) for r in edema] == pytest.approx([72 * 0.02] * 4)
    assert [float(r["difference"]) for r in edema] == pytest.approx([0, 0.2, 0.4, 0.6])
    hole = [r for r in rows if r["class"] == "hole" and r["kind"] == "image"]
    assert [float(r["predicted"]) for r in hole] == [0.0] * 4 and float(hole[0]["difference"]) == pytest.approx(-1.0)
    (volume,) = [r for r in rows if r["class"] == "edema" and r["kind"] == "group"]
    assert volume["unit"] == "mm3" and float(volume["truth"]) == pytest.approx(4 * 72 * 0.02 * 0.5)
    assert float(volume["difference"]) == pytest.approx(60 * 0.02 * 0.5)


def test_summary_has_mean_absolute_error_and_limits_of_agreement(evaluated):
    result, _ = evaluated
    (edema,) = [a for a in result.summary["agreement"] if a["class"] == "edema" and a["level"] == "image"]
    sd = statistics.stdev([0, 0.2, 0.4, 0.6])
    assert edema["n"] == 4 and edema["mean absolute error"] == pytest.approx(0.3)
    assert edema["limits of agreement"] == pytest.approx([0.3 - 1.96 * sd, 0.3 + 1.96 * sd])
    (hole,) = [a for a in result.summary["agreement"] if a["class"] == "hole" and a["level"] == "volume"]
    assert hole["unit"] == "mm3" and hole["mean absolute error"] == pytest.approx(4 * 50 * 0.02 * 0.5)


def test_report_shows_the_agreement_table_and_plots(evaluated, tiny_run, tmp_path):
    _, out = evaluated
    assert (out / "bland_altman.png").stat().st_size > 1000 and (out / "amount_scatter.png").is_file()
    page = write_html_report(tiny_run, out, out=tmp_path / "report.html").read_text()
    assert 'id="agreement"' in page and 'alt="Bland-Altman"' in page and 'alt="predicted vs true"' in page
    assert "<td>edema</td><td>image</td><td>4</td><td>mm2</td>" in page
