"""gctxseg cv plans each configuration several times (affordability, lr probe, first fold) and scans each fold's
files for every configuration: inside its block, a step is timed once and a set of files scanned once."""

from __future__ import annotations

import os
from dataclasses import asdict

import numpy as np
import torch
from PIL import Image

from gctxseg.core.runtime import cpu_threads
from gctxseg.data import find_pairs
from gctxseg.data import fingerprint as fp
from gctxseg.data.fingerprint import fingerprint_dataset, remembered_fingerprints
from gctxseg.training import planning
from gctxseg.training.planning import plan_training, remembered_step_times


def _count_timings(monkeypatch) -> list[tuple]:
    timed: list[tuple] = []

    def timed_step(model_name, options, channels, classes, size, batch, *rest) -> float:
        timed.append((model_name, tuple(size), batch, torch.get_num_threads()))
        return 0.01 * batch

    monkeypatch.setattr(planning, "_seconds_per_step", timed_step)
    return timed


def _plan(width: int = 4, budget_s: float = 600.0):
    return plan_training("unet", {"64x64": 400}, 400, 40, 1, 2, torch.device("cpu"), given={},
                         model_options={"base_width": width}, time_budget_s=budget_s)


def test_plans_inside_the_block_time_each_step_once_and_plan_the_same(monkeypatch):
    timed = _count_timings(monkeypatch)
    with cpu_threads(2):
        alone = _plan()
        first_count = len(timed)
        assert first_count >= 3  # threads, batch: measured
        _plan()
        assert len(timed) == 2 * first_count  # outside a block every plan times again
        timed.clear()
        with remembered_step_times():
            first = _plan()
            n = len(timed)
            again = _plan(budget_s=590.0)  # a fold's share differs a little from the affordability check's
            assert len(timed) == n  # nothing timed again
            other = _plan(width=8)
            assert len(timed) > n  # another network is timed
        assert first.to_dict() == alone.to_dict()
        assert (again.base_size, again.batch_size, again.cpu_threads) == (first.base_size, first.batch_size,
                                                                          first.cpu_threads)
        assert other.batch_size >= 1
        timed.clear()
        _plan()  # the block's timings are gone after it
        assert len(timed) == first_count


def _write_pairs(root, n: int = 4):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(0, 255, (32, 32), dtype=np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        mask[8:16, 8:16] = 255
        Image.fromarray(image).save(root / "images" / f"s{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"s{i}.png")
    return find_pairs(root / "images", ".png", ".png")


def test_a_set_is_scanned_once_inside_the_block_and_again_when_a_file_changes(tmp_path, monkeypatch):
    pairs = _write_pairs(tmp_path)
    scans = []
    scan = fp._scan_pairs
    monkeypatch.setattr(fp, "_scan_pairs", lambda *a: scans.append(len(a[0])) or scan(*a))
    with remembered_fingerprints():
        first = fingerprint_dataset(pairs)
        again = fingerprint_dataset(pairs)
        assert len(scans) == 1 and asdict(again) == asdict(first)
        again.mean = [123.0]  # a caller changing its copy changes nothing remembered
        assert fingerprint_dataset(pairs).mean == first.mean and len(scans) == 1
        fingerprint_dataset(pairs[:3])  # another set: scanned
        assert len(scans) == 2
        fingerprint_dataset(pairs, known_values=[0, 255])  # other settings: scanned
        assert len(scans) == 3
        # a file rewritten since (another size or time) is scanned again, and what it now holds counts
        mask = np.zeros((32, 32), np.uint8)
        Image.fromarray(mask).save(pairs[0].mask)
        os.utime(pairs[0].mask, ns=(1, 1))
        changed = fingerprint_dataset(pairs)
        assert len(scans) == 4
        assert asdict(changed) != asdict(first)
    fingerprint_dataset(pairs)
    assert len(scans) == 5  # outside the block every call scans


def test_a_checkpoint_mapped_inside_the_block_is_read_once_until_it_is_replaced(tiny_run, tmp_path, monkeypatch):
    import shutil

    from gctxseg.runs import checkpoint
    from gctxseg.runs.checkpoint import load_checkpoint, remembered_checkpoints, save_checkpoint

    last = tmp_path / "last.pt"
    shutil.copy(tiny_run / "last.pt", last)
    reads = []
    real_load = torch.load
    monkeypatch.setattr(checkpoint.torch, "load", lambda path, **kw: reads.append(path) or real_load(path, **kw))
    load_checkpoint(last, mmap=True)
    load_checkpoint(last, mmap=True)
    assert len(reads) == 2  # outside a block every read reads the file
    with remembered_checkpoints():
        first = load_checkpoint(last, mmap=True)
        assert load_checkpoint(last, mmap=True) is first and len(reads) == 3
        load_checkpoint(last)  # a full read (weights wanted) is never taken from the block
        assert len(reads) == 4
        ckpt = load_checkpoint(tiny_run / "last.pt")
        ckpt["epoch"] = first["epoch"] + 7
        save_checkpoint(ckpt, last)  # replaced: written atomically, a new file
        reads.clear()
        again = load_checkpoint(last, mmap=True)
        assert len(reads) == 1 and again["epoch"] == first["epoch"] + 7
    load_checkpoint(last, mmap=True)
    assert len(reads) == 2  # the block's reads are gone after it


def test_a_fold_scanning_its_own_set_measures_each_mask_structure_once(tmp_path, monkeypatch):
    """Each fold of a cv scans another set of the same files: a mask's structure width (a distance transform) is
    measured once inside the block, again when the mask changed, and the fingerprint is the one a lone scan takes."""
    pairs = _write_pairs(tmp_path)
    widths = []
    width = fp._structure_width
    monkeypatch.setattr(fp, "_structure_width", lambda fg: widths.append(1) or width(fg))
    alone = fingerprint_dataset(pairs[1:])
    widths.clear()
    with remembered_fingerprints():
        fingerprint_dataset(pairs[:-1])
        measured = len(widths)
        assert measured > 0
        in_block = fingerprint_dataset(pairs[1:])  # one new mask: one new measure
        assert len(widths) == measured + 1
        assert asdict(in_block) == asdict(alone)
        mask = np.asarray(Image.open(pairs[1].mask)).copy()
        mask[:4, :4] = mask.max()
        Image.fromarray(mask).save(pairs[1].mask)
        os.utime(pairs[1].mask, ns=(2, 2))
        before = len(widths)
        fingerprint_dataset(pairs[1:3])
        assert len(widths) == before + 1  # the rewritten mask is measured again
