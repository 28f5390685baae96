"""Post-processing rules: kept only where they raise the out-of-fold Dice; what each rule does to a mask."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from gctxseg.inference.postprocess import ClassRule, PostProcessing, apply_rule, choose_postprocessing


def test_post_processing_is_kept_only_where_it_raises_out_of_fold_dice():
    targets, preds = [], []
    for i in range(4):
        target = np.zeros((40, 40), np.int64)
        target[5:15, 5:15] = 1  # a cyst of 100 px
        target[20:28, 20:26] = 1  # and one of 48 px
        target[30:38, 2:12] = 2  # one hole
        pred = target.copy()
        pred[2, 30 + i] = 1  # a one-pixel false positive speck of class 1
        pred[35, 35] = 2  # a false speck of class 2: keep-largest removes it
        targets.append(target)
        preds.append(pred)
    chosen = choose_postprocessing(preds, targets, 3)
    assert chosen.rules[1].kind == "min_size" and 1 < chosen.rules[1].min_size <= 100
    assert chosen.rules[2].kind in ("largest", "min_size")
    assert chosen.evidence["1"]["none"] < 1.0
    fixed = chosen(preds[0])
    assert np.array_equal(fixed, targets[0])
    # a rule that would remove true cysts is not kept: no specks, only small true components
    small = [np.pad(np.ones((2, 2), np.int64), 5) for _ in range(3)]
    assert choose_postprocessing(small, small, 2).rules == {}
    # round trip through the file gctxseg predict reads
    chosen.save(json_path := Path(tempfile.mkdtemp()) / "pp.json")
    assert PostProcessing.load(json_path).rules == chosen.rules


def test_apply_rule_keep_largest_and_min_size():
    pred = np.zeros((10, 10), np.int64)
    pred[0:3, 0:3] = 1
    pred[6:8, 6:8] = 1
    pred[9, 0] = 2
    assert (apply_rule(pred, 1, ClassRule("largest")) == 1).sum() == 9
    assert (apply_rule(pred, 1, ClassRule("min_size", 5)) == 1).sum() == 9
    assert (apply_rule(pred, 1, ClassRule("min_size", 4)) == 1).sum() == 13
    assert apply_rule(pred, 1, ClassRule("largest"))[9, 0] == 2  # other classes untouched


def test_each_rules_evidence_is_the_pooled_dice_of_applying_it_to_every_scan():
    """The candidates' Dice come from each component's counts, not from masks rewritten rule by rule: they must
    be the Dice of the masks apply_rule gives, every candidate and class (empty scans, ties in size included)."""
    rng = np.random.default_rng(4)
    targets = [np.zeros((30, 40), np.int64) for _ in range(12)]
    for target in targets:  # rectangles of several sizes, some touching, of both classes
        for _ in range(5):
            y, x, h, w = rng.integers(0, 30), rng.integers(0, 40), rng.integers(1, 9), rng.integers(1, 9)
            target[y:y + h, x:x + w] = rng.integers(1, 3)
    preds = [np.where(rng.random((30, 40)) < 0.2, rng.integers(0, 3, (30, 40)), t) for t in targets]
    preds[3][:] = 0  # a scan without either class
    chosen = choose_postprocessing(preds, targets, 3)
    for k in (1, 2):
        for name, dice in chosen.evidence[str(k)].items():
            if name == "chosen":
                continue
            rule = (ClassRule() if name == "none" else ClassRule("largest") if name == "largest"
                    else ClassRule("min_size", int(name.split("<")[1].split()[0])))
            applied = [apply_rule(p, k, rule) for p in preds]
            tp = sum(int(((p == k) & (t == k)).sum()) for p, t in zip(applied, targets))
            predicted = sum(int((p == k).sum()) for p in applied)
            true = sum(int((t == k).sum()) for t in targets)
            assert dice == 2 * tp / (predicted + true), (k, name)
        assert len(chosen.evidence[str(k)]) > 3  # none, largest and size thresholds were all tried


def test_an_ensemble_is_said_and_a_cv_post_processing_is_not_applied_to_a_mix(tiny_run, tmp_path, monkeypatch, capsys):
    from gctxseg.inference import predictor

    rules = tmp_path / "cv" / "postprocessing.json"
    rules.parent.mkdir()
    PostProcessing({}).save(rules)
    import shutil

    import pytest

    best = tiny_run / "best.pt"
    copies = [shutil.copy(best, tmp_path / f"fold_{k}.pt") for k in range(3)]
    chosen = (rules.parent, best)
    monkeypatch.setattr(predictor, "ensemble_members", lambda weights: (copies[:2] if len(weights) == 1 else
                                                                        copies, rules))
    one_cv = predictor.load_predictor([chosen[0]], "cpu", "off")  # one cv folder: its own rules apply
    err = capsys.readouterr().err
    assert one_cv.postprocess is not None and f"post-processing: {rules}" in err
    assert "ensemble: the softmax of 2 checkpoints averaged, each weighing the same" in err
    mixed = predictor.load_predictor(list(chosen), "cpu", "off")  # the cv's folds and another run
    err = capsys.readouterr().err
    assert mixed.postprocess is None and f"note: {rules} is not applied" in err and "post-processing: none" in err
    monkeypatch.setattr(predictor, "ensemble_members", lambda weights: ([copies[0], copies[1], copies[0]], None))
    with pytest.raises(ValueError, match="named twice among the weights"):  # it would weigh twice, unsaid
        predictor.load_predictor([copies[0], copies[1], copies[0]], "cpu", "off")
