"""The records of a run's JSON files (log.json, an evaluation's summary.json) write the bytes the dicts wrote, and
files written before the records existed read back."""

import json

import pytest

from gctxseg.reporting.report import summarize_run
from gctxseg.runs.evalsummary import AmountAgreement, ClassScores, EvaluationSummary
from gctxseg.runs.runlog import EpochScores, ModelSize, RunLog

POOLED = {"pixel accuracy": 0.25, "Precision": [0.0, 0.5], "Recall": [0.0, 1.0], "F1 score": [0.0, 0.625],
          "Dice": [0.0, 0.625], "IoU": [0.0, 0.5], "mean precision": 0.25, "mean recall": 0.5,
          "mean f1 score": 0.3125, "mean dice": 0.3125, "mean iou": 0.25}  # fmt: skip
CLASS = {"class": 1, "value": 128, "name": "class 1 (value 128)", "dice": 0.0, "iou": 0.0, "precision": 0.0,
         "recall": 0.0, "mean image dice": 0.0, "mean image iou": 0.0, "hd95 mean": None, "hd95 median": None,
         "nsd mean": 0.0, "images with truth": 1, "images with prediction": 0, "missed": 1, "false alarms": 0}
AGREEMENT = {"level": "image", "class": "class1", "unit": "mm2", "n": 5, "mean truth": 0.0789, "mean predicted": 0.0,
             "mean absolute error": 0.0789, "bias": -0.0789, "sd of differences": 0.176,
             "limits of agreement": [-0.42, 0.27]}
# summary.json as gctxseg evaluate wrote it before the records (key order and all)
SUMMARY = {"weights": "['runs/a/best.pt']", "data": "D/val/images", "images": 5, "infer mode": "resize", "tta": "off",
           "nsd tolerance": 2.0, "spacing": None, "distance unit": "px", "mask values": {"0": 0, "128": 1, "255": 2},
           **POOLED, "mean hd95": 33.9, "mean nsd": 0.0, "mean image dice": 0.02, "per class": [CLASS],
           "confusion matrix": [[0, 0, 5], [0, 0, 1], [0, 0, 3]], "seconds per image": 0.0057, "device": "cpu",
           "agreement": [AGREEMENT]}  # fmt: skip
MODEL = {"total parameters": 52819, "flops": 5787648, "flops note": "multiply-adds counted once"}


def _same_bytes(record, data) -> None:
    assert json.dumps(record.to_json()) == json.dumps(data)


@pytest.mark.parametrize("record, data", [
    (ClassScores, CLASS), (AmountAgreement, AGREEMENT), (ModelSize, MODEL), (EvaluationSummary, SUMMARY),
    (EpochScores, {**POOLED, "loss": 1.8, "lr": 0.0005}),
    (EpochScores, {**POOLED, "loss": 1.8, "amp skipped steps": 2, "lr": 0.0005}),  # an fp16 run's training block
    (EvaluationSummary, {**SUMMARY, "etdrs agreement": [AGREEMENT]}),  # volumes evaluated
])  # fmt: skip
def test_each_record_writes_the_json_it_was_read_from(record, data):
    _same_bytes(record.from_json(data), data)


def test_summary_records_read_as_attributes():
    summary = EvaluationSummary.from_json(SUMMARY)
    assert summary.pooled.mean_dice == 0.3125 and summary.distance_unit == "px" and summary.etdrs_agreement is None
    (scores,) = summary.per_class
    assert scores.class_index == 1 and scores.missed == 1 and scores.hd95_mean is None
    (agreement,) = summary.agreement
    assert agreement.class_name == "class1" and agreement.limits_of_agreement == [-0.42, 0.27]


def test_a_missing_key_is_named():
    with pytest.raises(KeyError, match="mean absolute error"):
        AmountAgreement.from_json({k: v for k, v in AGREEMENT.items() if k != "mean absolute error"})


def _log(epochs: dict) -> dict:
    return {"train parameters": {"model": "unet", "input size": [48, 64], "mask values": {"0": 0, "255": 1}},
            "model": MODEL, **epochs}


def test_an_old_log_reads_back_with_unvalidated_epochs(tmp_path):
    train = {**POOLED, "loss": 1.0, "lr": 0.001}
    log = _log({
        "epoch:1": {"train log:": {"info": train}},  # validated every 2 epochs: no val block
        "epoch:0": {"train log:": {"info": train}, "val log:": {"info": {**POOLED, "loss": 1.5, "lr": 0.001}}},
        "epoch:2": {"train log:": {"info": train}, "val log:": {"info": {**POOLED, "mean dice": 0.5, "loss": 1.2}}},
    })  # fmt: skip
    run = RunLog.from_json(log)
    assert [e for e, _, _ in run.epochs] == [0, 1, 2] and run.epochs[1][2] is None
    assert run.best_epoch()[0] == 2 and run.epochs[2][2].lr is None  # a block without "lr" reads back
    (tmp_path / "log.json").write_text(json.dumps(log))
    summary = summarize_run(tmp_path)
    assert (summary.model, summary.parameters, summary.epochs, summary.best_epoch) == ("unet", 52819, 3, 2)
    assert summary.best_val.mean_dice == 0.5 and summary.last_val.scores.mean_dice == 0.5
