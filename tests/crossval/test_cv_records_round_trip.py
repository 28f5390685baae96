"""The JSON files of a cv folder as records: each is written back byte for byte, and an older file still reads."""

from __future__ import annotations

import json

import pytest

from gctxseg.crossval.configurations import CvChoice, UnitTime, _read_timing
from gctxseg.crossval.folds import CvSummary
from gctxseg.crossval.lr_probe import ProbeRecord, read_record
from gctxseg.crossval.race import RaceRecord, read_race

POOLED = {"dice": [0.75, None], "iou": [0.6, None], "hd95": [3.0, None], "nsd": [0.9, None], "images": 6}
SKIPPED_PROBE = {
    "family": "transformer", "planned lr": 0.0001, "fold": 0, "base size": [32, 32], "batch size": 4,
    "steps per candidate": 11, "images per candidate": 44, "minutes": 0.19, "chosen": 0.0001,
    "skipped": "44 images (11 steps) per candidate fit one fold's share (0.2 min), fewer than 600"}
PROBED = {
    "family": "transformer", "planned lr": 0.0001, "fold": 0, "base size": [224, 224], "batch size": 8,
    "steps per candidate": 125, "images per candidate": 1000, "minutes": None,
    "held-out dice": {"0.0001": 0.61, "0.0005": 0.64, "0.002": 0.2}, "steps": {"0.0001": 125, "0.0005": 125,
                                                                                  "0.002": 125},
    "chosen": 0.0005, "rule": "the planned lr unless another beats it by more than 0.02 Dice"}
RACE = {
    "fold": 0, "held-out dice": {"gctx_unet": 0.0, "unet": 0.75}, "margin": 0.1, "kept": ["unet"],
    "dropped": {"gctx_unet": "fold 0 held-out Dice 0.000, 0.750 below unet's 0.750"}, "minutes per fold": 0.2375,
    "minutes per later fold": 0.475, "folds": 2, "rule": "a configuration more than 0.1 fold-0 Dice below ...",
    "top-up": {"unet": {"minutes": 0.13, "steps before": 11, "steps": 9}, "nnunet": {"skipped": "no top-up"}}}
CONFIGURATION_SUMMARY = {
    "folds": 2, "images": 12, "classes": {"0": 0, "255": 1}, "model": "unet",
    "per fold": {"0": POOLED, "1": POOLED}, "fold mean": {"dice": [[0.75, 0.0]], "iou": [[0.6, None]]},
    "pooled out-of-fold": POOLED, "postprocessing": {"rules": {}, "evidence": {"1": {"chosen": "none"}}},
    "pooled out-of-fold post-processed": POOLED, "out-of-fold": {"from arrays": [0, 1], "predicted again": []}}
CV_SUMMARY = {
    "folds": 2, "images": 12, "classes": {"0": 0, "255": 1},
    "configurations": {m: {"cpu s": 55.0, "wall s": 30.0, "steps per fold": [11, 12], "epochs per fold": [1, 1],
                           "pooled out-of-fold": POOLED, "pooled out-of-fold post-processed": POOLED,
                           "lr probe": probe} for m, probe in (("gctx_unet", SKIPPED_PROBE), ("unet", None))},
    "ranking": [{"name": "unet", "members": ["unet"], "dice": [0.75], "post-processed dice": [0.76],
                 "mean dice": 0.76, "margin to best": 0.0, "cpu s": 55.0, "postprocessing": {"rules": {}}}],
    "race": RACE,
    "tie rule": "within 0.005 pooled Dice of the best: fewest members, then least training CPU time",
    "chosen": {"name": "unet", "members": ["unet"], "mean dice": 0.76, "post-processed dice": [0.76],
               "postprocessing": "postprocessing.json"}}


def _bytes(data: dict) -> str:
    return json.dumps(data, indent=2)


@pytest.mark.parametrize("record, data", [
    (UnitTime, {"wall s": 30.5, "cpu s": 55.25}),
    (ProbeRecord, SKIPPED_PROBE), (ProbeRecord, PROBED),
    (RaceRecord, RACE), (RaceRecord, {k: v for k, v in RACE.items() if k != "top-up"}),
    (CvSummary, CONFIGURATION_SUMMARY), (CvChoice, CV_SUMMARY), (CvChoice, {**CV_SUMMARY, "race": None})])
def test_each_cv_record_writes_back_the_bytes_it_was_read_from(record, data):
    assert _bytes(record.from_json(data).to_json()) == _bytes(data)


def test_a_cv_record_reads_attributes_where_code_read_keys():
    choice = CvChoice.from_json(CV_SUMMARY)
    assert choice.configurations["gctx_unet"].lr_probe.skipped.startswith("44 images")
    assert choice.configurations["unet"].lr_probe is None and choice.configurations["unet"].steps_per_fold == [11, 12]
    assert choice.race.top_up["unet"].steps_before == 11 and choice.race.top_up["nnunet"].minutes is None
    assert choice.ranking[0].margin_to_best == 0.0 and choice.chosen.post_processed_dice == [0.76]
    assert CvSummary.from_json(CONFIGURATION_SUMMARY).out_of_fold.from_arrays == [0, 1]


def test_older_cv_files_without_the_newer_keys_read_back(tmp_path):
    # lr_probe.json before "steps per candidate" (it counted epochs), a summary before the stored arrays
    older_probe = {k: v for k, v in SKIPPED_PROBE.items() if k != "steps per candidate"} | {"epochs": 2}
    (tmp_path / "lr_probe.json").write_text(json.dumps(older_probe))
    probe = read_record(tmp_path)
    assert probe.chosen == 0.0001 and probe.steps_per_candidate is None and "epochs" not in probe.to_json()
    older_summary = {k: v for k, v in CONFIGURATION_SUMMARY.items() if k != "out-of-fold"}
    summary = CvSummary.from_json(older_summary)
    assert summary.out_of_fold is None and _bytes(summary.to_json()) == _bytes(older_summary)
    older_choice = {k: v for k, v in CV_SUMMARY.items() if k != "race"}
    assert CvChoice.from_json(older_choice).race is None
    # a race of a cv whose top-up was not planned yet, read through its checks
    (tmp_path / "race.json").write_text(json.dumps({k: v for k, v in RACE.items() if k != "top-up"}))
    race = read_race(tmp_path, ["gctx_unet", "unet"], 2)
    assert race.kept == ["unet"] and race.top_up is None and race.minutes_per_later_fold == 0.475


def test_timing_is_read_as_records_and_still_refused_with_one_line(tmp_path):
    (tmp_path / "timing.json").write_text(json.dumps({"0": {"wall s": 30.0, "cpu s": 55.0},
                                                      "lr probe": {"wall s": 6.0, "cpu s": 11.0}}))
    assert _read_timing(tmp_path) == {"0": UnitTime(30.0, 55.0), "lr probe": UnitTime(6.0, 11.0)}
    (tmp_path / "timing.json").write_text(json.dumps({"0": {"wall s": 30.0}}))
    with pytest.raises(ValueError, match=r"timing.json: '0.cpu s' is missing; remove it"):
        _read_timing(tmp_path)
