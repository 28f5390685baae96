"""Evaluation: metrics against an independent computation, surface metrics, empty cases, files, inference modes."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from gctxseg.cli import main
from gctxseg.core.runtime import cxx_compiler
from gctxseg.data import DatasetError, read_image, read_mask
from gctxseg.evaluation.evaluate import CSV_COLUMNS, evaluate_folder
from gctxseg.inference.predictor import EnsemblePredictor, Predictor
from gctxseg.metrics import score_image, surface_metrics
from gctxseg.workflows.predict_folder import predict_folder


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs tiny models: one thread (see conftest.one_thread)."""


@pytest.fixture
def run(tiny_run):
    return tiny_run


def _dice_iou(pred: np.ndarray, target: np.ndarray, c: int) -> tuple[float, float]:
    tp = np.sum((pred == c) & (target == c))
    fp = np.sum((pred == c) & (target != c))
    fn = np.sum((pred != c) & (target == c))
    if tp + fp + fn == 0:
        return math.nan, math.nan
    return 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)


@pytest.mark.slow
def test_metrics_equal_an_independent_computation_on_the_same_predictions(run, phantom_dir, tmp_path):
    val = phantom_dir / "val" / "images"
    result = evaluate_folder(run / "best.pt", val, out=tmp_path / "ev", device="cpu", amp="off", worst_k=2)
    predictor = Predictor(run / "best.pt", "cpu", "off")
    lut = {0: 0, 128: 1, 255: 2}
    total = np.zeros((3, 3), np.int64)
    rows = {(r["file"], r["class"]): r for r in result.rows}
    for image_path in sorted(val.iterdir()):
        pred = predictor.predict_image(read_image(image_path))
        target = np.vectorize(lut.get)(read_mask(phantom_dir / "val" / "masks" / f"{image_path.stem}.png"))
        assert pred.shape == target.shape == (64, 64)  # scored at the original size, not the 32x32 training size
        total += sk_confusion_matrix(target.ravel(), pred.ravel(), labels=[0, 1, 2])
        for c in (1, 2):
            dice, iou = _dice_iou(pred, target, c)
            row = rows[(image_path.name, c)]
            assert row["dice"] == pytest.approx(dice, nan_ok=True) and row["iou"] == pytest.approx(iou, nan_ok=True)
            assert row["truth_pixels"] == np.sum(target == c) and row["pred_pixels"] == np.sum(pred == c)
    assert np.array_equal(result.confusion.numpy(), total)
    summary = result.summary
    tp = np.diag(total)
    for c in (1, 2):
        denominator = total[c].sum() + total[:, c].sum()
        expected = 2 * tp[c] / denominator if denominator else math.nan
        assert summary["Dice"][c - 1] == pytest.approx(expected, nan_ok=True)
    assert summary["pixel accuracy"] == pytest.approx(tp.sum() / total.sum())
    assert summary["images"] == 6 and summary["tta"] == "off" and summary["infer mode"] == "resize"


def test_hd95_and_nsd_on_lines_with_known_distances():
    truth = np.zeros((40, 40), np.int64)
    truth[10, 5:25] = 1  # a one-pixel line: every pixel is a boundary pixel
    shifted = np.zeros_like(truth)
    shifted[13, 5:25] = 1  # the same line 3 rows lower: every boundary distance is exactly 3
    hd95, nsd = surface_metrics(shifted, truth, 2, nsd_tolerance=2.0)
    assert hd95 == [pytest.approx(3.0)] and nsd == [pytest.approx(0.0)]
    assert surface_metrics(shifted, truth, 2, nsd_tolerance=3.0)[1] == [pytest.approx(1.0)]
    # spacing in (row, column) units: 3 rows of 0.5 mm
    assert surface_metrics(shifted, truth, 2, spacing=(0.5, 1.0))[0] == [pytest.approx(1.5)]
    # one outlier pixel 20 rows away among 40 exact boundary pixels: HD95 ignores it, NSD counts it
    line = np.zeros((40, 40), np.int64)
    line[10, 0:40] = 1
    outlier = line.copy()
    outlier[30, 20] = 1
    hd95, nsd = surface_metrics(outlier, line, 2, nsd_tolerance=2.0)
    assert hd95 == [pytest.approx(0.0)]
    assert nsd == [pytest.approx(80 / 81)]  # 40 + 40 boundary distances <= 2 out of 41 + 40


def test_empty_truth_and_prediction_follow_the_documented_conventions():
    empty = np.zeros((32, 32), np.int64)
    blob = empty.copy()
    blob[8:16, 8:16] = 1
    both = score_image(empty, empty, 2)
    assert all(math.isnan(both[k][0]) for k in ("dice", "iou", "hd95", "nsd"))
    false_alarm = score_image(blob, empty, 2)  # truth empty, prediction not
    missed = score_image(empty, blob, 2)  # prediction empty, truth not
    for scores in (false_alarm, missed):
        assert scores["dice"] == [0.0] and scores["iou"] == [0.0] and scores["nsd"] == [0.0]
        assert math.isnan(scores["hd95"][0])  # MONAI: 95th percentile of infinite distances
    assert false_alarm["truth_pixels"] == [0] and false_alarm["pred_pixels"] == [64]
    perfect = score_image(blob, blob, 2)
    assert perfect["dice"] == [1.0] and perfect["hd95"] == [0.0] and perfect["nsd"] == [1.0]


@pytest.mark.slow
def test_csv_columns_summary_and_plots_are_written(run, phantom_dir, tmp_path):
    out = tmp_path / "ev"
    code = main(["evaluate", "--weights", str(run / "best.pt"), "--data", str(phantom_dir / "val" / "images"),
                 "--out", str(out), "--device", "cpu", "--amp", "off", "--worst-k", "2"])  # fmt: skip
    assert code == 0
    with open(out / "metrics_per_image.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS == (
        "file", "class", "dice", "iou", "hd95", "nsd", "truth_pixels", "pred_pixels"
    )  # fmt: skip
    assert len(rows) == 6 * 2 and {r["class"] for r in rows} == {"1", "2"}
    summary = json.loads((out / "summary.json").read_text())  # strict JSON: NaN stored as null
    assert [c["value"] for c in summary["per class"]] == [128, 255]
    assert {"hd95 mean", "nsd mean", "missed", "false alarms"} <= set(summary["per class"][0])
    for name in ("confusion_matrix.png", "dice_histogram.png", "worst_cases.png", "best_cases.png"):
        assert Image.open(out / name).size[0] > 100, name


@pytest.mark.slow
def test_unknown_mask_value_is_one_line_dataset_error(run, tmp_path):
    from conftest import write_pair

    image = np.full((40, 40), 90, np.uint8)
    good = np.zeros((40, 40), np.uint8)
    bad = good.copy()
    bad[5:9, 5:9] = 77
    write_pair(tmp_path / "split", "a", image, good)
    write_pair(tmp_path / "split", "b", image, bad)
    with pytest.raises(DatasetError) as info:
        evaluate_folder(run / "best.pt", tmp_path / "split" / "images", img_f=".png", device="cpu", amp="off")
    message = str(info.value)
    assert "b.png" in message and "77" in message and "\n" not in message


@pytest.mark.slow
def test_sliding_and_resize_modes_predict_at_the_image_size(run, tmp_path):
    image = np.random.default_rng(0).random((80, 150, 1), dtype=np.float32)
    for mode in ("sliding", "resize"):
        predictor = Predictor(run / "best.pt", "cpu", "off", infer_mode=mode)
        probs = predictor.predict_proba(image)
        assert probs.shape == (3, 80, 150)
        assert torch.allclose(probs.sum(0), torch.ones(80, 150), atol=1e-4)
    source = tmp_path / "img"
    source.mkdir()
    Image.fromarray((image[..., 0] * 255).astype(np.uint8)).save(source / "wide.png")
    predict_folder(run / "best.pt", source, tmp_path / "out", device="cpu", amp="off", infer_mode="sliding", tta=True)
    assert np.asarray(Image.open(tmp_path / "out" / "masks" / "wide.png")).shape == (80, 150)
    with pytest.raises(ValueError, match="infer_mode"):
        Predictor(run / "best.pt", "cpu", "off", infer_mode="tiles")


@pytest.mark.slow
def test_images_predicted_in_one_batch_get_what_each_gets_alone(run):
    rng = np.random.default_rng(2)
    images = [rng.random(size, dtype=np.float32) for size in ((48, 56, 1), (64, 40, 1), (48, 56, 1))]
    for mode, tta in (("resize", False), ("resize", True), ("sliding", False)):
        predictor = Predictor(run / "best.pt", "cpu", "off", infer_mode=mode, tta=tta)
        batched = predictor.predict_proba_many(images, ["a", "b", "c"])
        assert [tuple(p.shape) for p in batched] == [(3, 48, 56), (3, 64, 40), (3, 48, 56)]
        for image, probs in zip(images, batched):
            assert torch.allclose(probs, predictor.predict_proba(image), atol=1e-5)
    members = [Predictor(run / "best.pt", "cpu", "off"), Predictor(run / "best.pt", "cpu", "off", tta=True)]
    ensemble = EnsemblePredictor(members, ["plain", "tta"])
    labels = ensemble.predict_images(images, ["a", "b", "c"])
    assert all(np.array_equal(got, ensemble.predict_image(image)) for got, image in zip(labels, images))


@pytest.mark.slow
def test_tta_averages_the_image_and_its_mirror(run):
    image = np.random.default_rng(1).random((48, 56, 1), dtype=np.float32)
    plain = Predictor(run / "best.pt", "cpu", "off")
    expected = (plain.predict_proba(image) + plain.predict_proba(image[:, ::-1].copy()).flip(-1)) / 2
    tta = Predictor(run / "best.pt", "cpu", "off", tta=True).predict_proba(image)
    assert torch.allclose(tta, expected, atol=1e-5)
    both = Predictor(run / "best.pt", "cpu", "off", tta_vflip=True).predict_proba(image)
    assert both.shape == (3, 48, 56) and torch.allclose(both.sum(0), torch.ones(48, 56), atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(cxx_compiler() is None, reason="torch.compile needs a C++ compiler on CPU")
def test_compiled_predictor_with_frozen_weights_gives_the_eager_probabilities(run):
    import torch._inductor.config
    from torch._dynamo.utils import counters

    image = np.random.default_rng(2).random((40, 52, 1), dtype=np.float32)
    eager = Predictor(run / "best.pt", "cpu", "off").predict_proba(image)
    with torch._inductor.config.patch(freezing=False):  # freezing is process-wide: restored on leaving
        compiled = Predictor(run / "best.pt", "cpu", "off", compile=True)
        assert torch._inductor.config.freezing
        counters.clear()
        assert torch.allclose(compiled.predict_proba(image), eager, atol=1e-4)
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["unimplemented"]  # compiled, no eager fallback
    assert not torch._inductor.config.freezing
