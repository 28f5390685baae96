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


def test_a_broken_log_json_is_one_line_naming_it_for_report_and_compare(tmp_path, capsys):
    import json

    from gctxseg.cli import main

    good = {"train parameters": {"epochs": 1}, "epoch:0": {"train log:": {"info": {**INFO, "lr": 1e-3}}}}
    log = tmp_path / "run" / "log.json"
    log.parent.mkdir()
    for text, says in (("[1, 2]", "is [1, 2], not an object"), (json.dumps(good)[:40], "not JSON"),
                       (json.dumps({**good, "epoch:0": "text"}), "not a gctxseg training log (AttributeError"),
                       (json.dumps({**good, "train parameters": None}), "'train parameters' is null, not an object")):
        log.write_text(text)
        for command in (["report", str(log.parent)], ["compare", str(log.parent), str(log.parent)]):
            assert main(command) != 0
            err = capsys.readouterr().err.strip()
            assert err.startswith(f"error: {log}: ") and says in err and "\n" not in err, (command, err)
            assert "restore it from a copy, or train the run again" in err
