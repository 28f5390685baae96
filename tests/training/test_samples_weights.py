"""The sample predictions a run draws at its end use best.pt's weights: read back when later epochs trained past
them, taken from the model when its last epoch was the best (best.pt is then not read again)."""

from __future__ import annotations

import torch
from conftest import tiny_config

from gctxseg.training import load_checkpoint, segmentation, train


def _watch(monkeypatch) -> tuple[list[dict], list[str]]:
    drawn, read = [], []

    def draw(model, *args, **kwargs):
        drawn.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    real_read = segmentation.load_checkpoint

    def reading(path, *args, **kwargs):
        read.append(str(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(segmentation, "_save_sample_predictions", draw)
    monkeypatch.setattr(segmentation, "load_checkpoint", reading)
    return drawn, read


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_samples_use_best_weights_read_back_after_worse_epochs(phantom_dir, tmp_path, monkeypatch, one_thread):
    drawn, read = _watch(monkeypatch)
    real_evaluate, calls = segmentation.evaluate, []

    def worse_each_time(*args, **kwargs):  # the first validation is the best one
        scores, matrix = real_evaluate(*args, **kwargs)
        calls.append(1)
        return {**scores, "mean dice": 1.0 / len(calls)}, matrix

    monkeypatch.setattr(segmentation, "evaluate", worse_each_time)
    run = train(tiny_config(phantom_dir, tmp_path / "runs", epochs=2))
    best, last = (load_checkpoint(run / n)["model"] for n in ("best.pt", "last.pt"))
    assert not _same(best, last)  # the second epoch trained past the best weights
    assert len(drawn) == 1 and _same(drawn[0], best)
    assert str(run / "best.pt") in read


def test_samples_use_the_model_when_its_last_epoch_was_best(phantom_dir, tmp_path, monkeypatch, one_thread):
    drawn, read = _watch(monkeypatch)
    run = train(tiny_config(phantom_dir, tmp_path / "runs", epochs=1))
    assert len(drawn) == 1 and _same(drawn[0], load_checkpoint(run / "best.pt")["model"])
    assert str(run / "best.pt") not in read
