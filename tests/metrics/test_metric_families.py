"""The metrics package's functions on arrays: a set's pooled scores, amounts compared per unit, spacing rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gctxseg.metrics import agreement_by_unit, check_spacing, pooled_mean_dice, score_predictions, surface_metrics


def test_pooled_mean_dice_sums_counts_over_the_set_and_is_zero_where_nothing_is_defined():
    target = np.zeros((8, 8), np.int64)
    target[2:4, 2:4] = 1  # 4 pixels
    pred = np.zeros((8, 8), np.int64)
    pred[2:4, 2:6] = 1  # 8 pixels, 4 of them right
    # pooled over both images: tp 8, fp 4, fn 0 -> 16 / 20; a mean of the images' Dice would be (2/3 + 1) / 2
    assert pooled_mean_dice([pred, target], [target, target], 2) == pytest.approx(0.8)
    assert score_predictions([pred, target], [target, target], 2)["dice"] == [pytest.approx(0.8)]
    empty = np.zeros((8, 8), np.int64)
    assert pooled_mean_dice([empty], [empty], 2) == 0.0


def test_agreement_by_unit_summarises_each_unit_apart_in_the_order_of_the_rows():
    cases = [("hole_mld_um", "um", 300.0, 330.0), ("edema_total_nl", "nl", 10.0, 8.0),
             ("hole_mld_um", "um", 400.0, 390.0), ("edema_total_nl", "nl", 20.0, 20.0)]
    rows = [{"file": f"v{i}", "kind": "volume", "class": c, "unit": u, "truth": t, "predicted": p,
             "difference": p - t} for i, (c, u, t, p) in enumerate(cases)]
    summary = agreement_by_unit(rows)
    assert [(s["class"], s["unit"], s["n"]) for s in summary] == [("hole_mld_um", "um", 2), ("edema_total_nl", "nl", 2)]
    hole = summary[0]
    assert hole["bias"] == pytest.approx(10.0) and hole["mean absolute error"] == pytest.approx(20.0)
    sd = math.sqrt(((30 - 10) ** 2 + (-10 - 10) ** 2) / 1)
    assert hole["limits of agreement"] == [pytest.approx(10 - 1.96 * sd), pytest.approx(10 + 1.96 * sd)]


def test_spacing_is_floats_and_refused_when_not_positive():
    assert check_spacing([0.5, 1]) == (0.5, 1.0) and check_spacing(2) == 2.0 and check_spacing(None) is None
    with pytest.raises(ValueError, match="spacing must be > 0"):
        check_spacing((0.5, 0))


@pytest.mark.parametrize("seed", range(3))
def test_surface_metrics_equal_monais_two_functions_called_apart(seed):
    """HD95 and NSD come from one edge-distance call per class; they must be the figures MONAI's
    compute_hausdorff_distance and compute_surface_dice give, empty classes, spacing and tolerance 0 included."""
    import warnings

    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(seed)
    for case in range(40):
        k, (h, w) = int(rng.integers(2, 5)), rng.integers(8, 80, 2)
        truth, pred = np.zeros((h, w), np.int64), np.zeros((h, w), np.int64)
        for c in range(1, k):
            for labels in (truth, pred):
                if rng.random() < 0.8:  # else the class is absent from this map
                    y0, x0 = rng.integers(0, h), rng.integers(0, w)
                    labels[y0:y0 + rng.integers(1, h), x0:x0 + rng.integers(1, w)] = c
        pred = np.where(rng.random((h, w)) < 0.05, rng.integers(0, k, (h, w)), pred)
        spacing, tolerance = [(None, 2.0), (0.7, 0.0), ((1.3, 0.4), 1.5)][case % 3]
        one_hot = [torch.nn.functional.one_hot(torch.as_tensor(m), k).permute(2, 0, 1)[None].float()
                   for m in (pred, truth)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hd95 = compute_hausdorff_distance(*one_hot, percentile=95, spacing=spacing)[0].tolist()
            nsd = compute_surface_dice(*one_hot, [tolerance] * (k - 1), spacing=spacing)[0].tolist()
        got = surface_metrics(pred, truth, k, nsd_tolerance=tolerance, spacing=spacing)
        assert np.array_equal(got[0], hd95, equal_nan=True) and np.array_equal(got[1], nsd, equal_nan=True)
