"""A log.json's epochs as typed rows: what the curves are drawn from."""

from __future__ import annotations

import math

from gctxseg.runs.runlog import epoch_rows

INFO = {"pixel accuracy": 0.9, "Precision": [0.5], "Recall": [0.4], "F1 score": [0.45], "Dice": [0.45],
        "IoU": [0.3], "mean precision": 0.5, "mean recall": 0.4, "mean f1 score": 0.45, "mean dice": 0.45,
        "mean iou": 0.3, "loss": 0.7}


def test_epoch_rows_are_sorted_typed_and_none_where_not_validated(tmp_path):
    from gctxseg.visualize.plots import plot_curves

    log = {"train parameters": {"epochs": 3},
           "epoch:1": {"train log:": {"info": {**INFO, "loss": 0.5, "lr": 1e-3}}},
           "epoch:0": {"train log:": {"info": {**INFO, "lr": 2e-3}}, "val log:": {"info": {**INFO, "loss": 0.8}}}}
    rows = epoch_rows(log)
    assert [e for e, _, _ in rows] == [0, 1]
    assert rows[0][1].lr == 2e-3 and rows[0][2].loss == 0.8 and rows[0][2].mean_dice == 0.45
    assert rows[1][1].loss == 0.5 and rows[1][2] is None  # epoch 1 was not validated
    plot_curves(log, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000 and not math.isnan(rows[1][1].scores.mean_iou)
