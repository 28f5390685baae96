"""Metrics against independent computations (scikit-learn) and the documented empty-class convention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from gctxseg.metrics import ConfusionMatrix, confusion_matrix, scores_from_confusion


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn_over_batches(seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 4, (6, 17, 23))
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 4, target.shape))
    cm = ConfusionMatrix(4)
    for i in range(0, 6, 2):  # accumulate in batches: the result must equal one pass over all pixels
        cm.update(torch.from_numpy(pred[i : i + 2]), torch.from_numpy(target[i : i + 2]))
    t, p = target.ravel(), pred.ravel()
    assert np.array_equal(cm.matrix.numpy(), sk_confusion_matrix(t, p, labels=range(4)))
    info = cm.compute()
    fg = [1, 2, 3]
    np.testing.assert_allclose(info["Precision"], precision_score(t, p, labels=fg, average=None))
    np.testing.assert_allclose(info["Recall"], recall_score(t, p, labels=fg, average=None))
    np.testing.assert_allclose(info["Dice"], f1_score(t, p, labels=fg, average=None))
    np.testing.assert_allclose(info["IoU"], jaccard_score(t, p, labels=fg, average=None))
    assert info["pixel accuracy"] == pytest.approx((t == p).mean())
    assert info["mean dice"] == pytest.approx(f1_score(t, p, labels=fg, average="macro"))
    assert info["mean iou"] == pytest.approx(jaccard_score(t, p, labels=fg, average="macro"))


def test_class_absent_from_truth_and_prediction_is_nan_and_left_out_of_means():
    target = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1]])
    info = scores_from_confusion(confusion_matrix(pred, target, 3))
    assert info["Dice"][0] == pytest.approx(2 * 2 / (2 * 2 + 1))
    assert math.isnan(info["Dice"][1]) and math.isnan(info["IoU"][1])
    assert info["mean dice"] == pytest.approx(info["Dice"][0])


def test_class_predicted_but_absent_from_truth_scores_zero():
    target = torch.tensor([[0, 0, 0, 0]])
    pred = torch.tensor([[0, 2, 0, 0]])
    info = scores_from_confusion(confusion_matrix(pred, target, 3))
    assert info["Dice"][1] == 0.0 and info["Precision"][1] == 0.0 and math.isnan(info["Dice"][0])


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\) vs \(3, 2\)"):
        confusion_matrix(torch.zeros(2, 3), torch.zeros(3, 2), 2)
