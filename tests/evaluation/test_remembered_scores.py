"""gctxseg cv scores each held-out scan in its fold's report and again in its configuration's summary: inside
``remembered_image_scores()`` the same labels against the same truth are scored once."""

from __future__ import annotations

import numpy as np

from gctxseg.evaluation.image_scores import remembered_image_scores, scored_image
from gctxseg.metrics import predictions


def test_the_same_labels_are_scored_once_inside_the_block_and_a_change_is_scored_again(monkeypatch):
    rng = np.random.default_rng(0)
    target = (rng.random((48, 40)) > 0.6).astype(np.int64) * 2
    pred = np.where(rng.random((48, 40)) > 0.9, 1, target)
    calls = []
    real = predictions.surface_metrics
    monkeypatch.setattr(predictions, "surface_metrics", lambda *a: calls.append(1) or real(*a))
    alone = scored_image(pred, target, 3)
    scored_image(pred, target, 3)
    assert len(calls) == 2  # outside a block every call scores
    with remembered_image_scores():
        first = scored_image(pred, target, 3)
        first["confusion"] += 1  # a caller's change to what it was given is its own
        again = scored_image(pred.copy(), target.copy(), 3)
        assert len(calls) == 3
        assert again["confusion"].equal(alone["confusion"])
        np.testing.assert_equal([again["hd95"], again["nsd"]], [alone["hd95"], alone["nsd"]])
        changed = pred.copy()
        changed[0, 0] = 2 - changed[0, 0]
        scored_image(changed, target, 3)
        scored_image(pred, target, 3, nsd_tolerance=1.0)  # other settings
        scored_image(pred.astype(np.int32), target, 3)  # other dtype: not taken for the same bytes
        assert len(calls) == 6
    scored_image(pred, target, 3)
    assert len(calls) == 7  # the block's scores are gone after it
