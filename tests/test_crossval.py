"""Patient-wise folds, the Duke DME converter, foreground top-up sampling and post-processing chosen on CV."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gctxseg.data import DatasetError, ImagePair
from gctxseg.data.convert import convert_drive, convert_duke_dme
from gctxseg.data.sampling import ForegroundTopUpSampler
from gctxseg.data.splits import fold_files, group_kfold, groups_from_regex, resolve_splits, select_fold
from gctxseg.inference.postprocess import ClassRule, PostProcessing, apply_rule, choose_postprocessing


def _pairs(names):
    return [ImagePair(Path(f"/x/images/{n}.png"), Path(f"/x/masks/{n}.png")) for n in names]


def test_group_kfold_never_puts_a_group_on_both_sides_and_balances_items():
    groups = {f"p{p:02d}_b{b}": f"p{p:02d}" for p in range(7) for b in range(3 + p % 3)}
    folds = group_kfold(groups, 3, seed=0)
    assert sorted(n for f in folds for n in f["val"]) == sorted(groups)  # every item held out exactly once
    for fold in folds:
        train_groups = {groups[n] for n in fold["train"]}
        val_groups = {groups[n] for n in fold["val"]}
        assert not train_groups & val_groups
        assert set(fold["train"]) | set(fold["val"]) == set(groups)
    sizes = [len(f["val"]) for f in folds]
    assert max(sizes) - min(sizes) <= 5  # the largest group (5 scans) bounds the imbalance
    assert group_kfold(groups, 3, seed=0) == folds  # deterministic


def test_fewer_groups_than_folds_is_one_line():
    with pytest.raises(DatasetError, match=r"2 group\(s\).*for 5 folds; use --folds 2"):
        group_kfold({"a1": "a", "a2": "a", "b1": "b"}, 5)


def test_group_regex_names_the_first_file_it_does_not_match():
    pairs = _pairs(["p01_b0", "p01_b1", "scan7"])
    assert groups_from_regex(pairs[:2], r"^(p\d+)_") == {"p01_b0": "p01", "p01_b1": "p01"}
    with pytest.raises(DatasetError, match=r"/x/images/scan7.png: --group-regex .* matches no part"):
        groups_from_regex(pairs, r"^(p\d+)_")
    with pytest.raises(DatasetError, match="not a valid regular expression"):
        groups_from_regex(pairs, "(")


def test_splits_naming_missing_files_are_listed():
    pairs = _pairs(["a", "b", "c"])
    splits = [{"train": ["a", "b"], "val": ["c", "zz"]}]
    with pytest.raises(DatasetError, match=r"splits.json: fold 0 names 1 file\(s\) not in the data folder.*zz"):
        select_fold(pairs, splits, 0, "splits.json")
    train, val = select_fold(pairs, [{"train": ["a", "b"], "val": ["c"]}], 0, "s")
    assert [p.name for p in train] == ["a", "b"] and [p.name for p in val] == ["c"]


def _write_duke_mat(path, scans=4, graded=(1, 3), seed=0):
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (24, 32, scans)).astype(np.float64)
    fluid = np.full((24, 32, scans), np.nan)
    for s in graded:
        fluid[:, :, s] = 0
        fluid[5:9, 10:20, s] = 2  # graders number their regions: any value > 0 is fluid
    savemat(path, {"images": images, "manualFluid1": fluid, "manualFluid2": fluid})
    return images


def test_unreadable_groups_json_is_one_line(tmp_path):
    (tmp_path / "images").mkdir()
    pairs = _pairs(["a", "b", "c"])
    (tmp_path / "groups.json").write_text('{"a": "p1", ')  # cut short
    with pytest.raises(DatasetError, match=r"groups.json: not a readable JSON file \(JSONDecodeError\)"):
        resolve_splits(pairs, 2, tmp_path / "images")
    (tmp_path / "groups.json").write_text('["p1", "p2"]')
    with pytest.raises(DatasetError, match=r"groups.json: expected \{file stem: group\}"):
        resolve_splits(pairs, 2, tmp_path / "images")


def test_convert_duke_mat_keeps_graded_scans_and_splits_by_patient(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    images = {p: _write_duke_mat(src / f"Subject_{p:02d}.mat", seed=p) for p in (1, 2, 3)}
    done = convert_duke_dme(src, tmp_path / "out", folds=3)
    assert done == {"scans": 6, "patients": 3, "with fluid": 6, "folds": 3, "source": "mat"}
    names = sorted(p.stem for p in (tmp_path / "out" / "images").iterdir())
    assert names == [f"p{p:02d}_b{s:02d}" for p in (1, 2, 3) for s in (1, 3)]  # NaN scans left out
    image = np.asarray(Image.open(tmp_path / "out" / "images" / "p02_b03.png"))
    assert np.array_equal(image, images[2][:, :, 3].astype(np.uint8))
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "p02_b03.png"))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255} and (mask == 255).sum() == 40
    splits = json.loads((tmp_path / "out" / "splits.json").read_text())
    assert len(splits) == 3 and all({n[:3] for n in f["val"]} & {n[:3] for n in f["train"]} == set() for f in splits)
    # the folder now trains fold by fold with no further option: splits.json beside images is found
    train, val, source = fold_files(tmp_path / "out" / "images", ".png", ".png", 3, 0)
    assert source.endswith("splits.json") and len(train) == 4 and len(val) == 2


def test_convert_duke_png_copy(tmp_path):
    root = tmp_path / "copy" / "data"
    (root / "img_for_inference").mkdir(parents=True)
    (root / "annotation").mkdir()
    for n in range(22):  # 2 patients x 11 scans
        grey = np.full((12, 16), n, np.uint8)
        Image.fromarray(np.stack([grey] * 3, -1)).save(root / "img_for_inference" / f"img_{n}.png")
        ann = np.zeros((12, 16, 3), np.uint8)
        ann[2:4, 2:6] = 250 if n % 2 else 0  # anti-aliased near-white fluid
        ann[5, 5] = 100  # below the threshold: not fluid
        Image.fromarray(ann).save(root / "annotation" / f"img_{n}.png")
    done = convert_duke_dme(tmp_path / "copy", tmp_path / "out", folds=2)
    assert done["scans"] == 22 and done["patients"] == 2 and done["with fluid"] == 11
    assert Image.open(tmp_path / "out" / "images" / "p02_b03.png").mode == "L"
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "p01_b01.png"))
    assert (mask == 255).sum() == 8 and mask[5, 5] == 0
    with pytest.raises(DatasetError, match="neither Subject_NN.mat files nor"):
        convert_duke_dme(tmp_path, tmp_path / "o2")


def _write_drive(root, subset, numbers, size=(18, 20)):
    (root / subset / "images").mkdir(parents=True)
    (root / subset / "1st_manual").mkdir()
    for n in numbers:
        rgb = np.full((*size, 3), (n, 2 * n, 3 * n), np.uint8)
        Image.fromarray(rgb).save(root / subset / "images" / f"{n:02d}_{subset}.tif")
        vessels = np.zeros(size, np.uint8)
        vessels[3, 2:12] = 255  # one vessel a pixel wide
        Image.fromarray(vessels).save(root / subset / "1st_manual" / f"{n:02d}_manual1.gif")


def test_convert_drive_keeps_its_split_and_reads_as_train_and_val(tmp_path):
    src = tmp_path / "DRIVE"
    _write_drive(src, "training", range(21, 27))
    _write_drive(src, "test", range(1, 5))
    done = convert_drive(src, tmp_path / "out", folds=3)
    assert done == {"photographs": 10, "with vessels": 10, "folds": 3, "source": "drive"}
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "test" / "images").iterdir()) == ["01.png", "02.png", "03.png", "04.png"]
    image = np.asarray(Image.open(out / "train" / "images" / "22.png"))
    assert image.shape == (18, 20, 3) and tuple(image[0, 0]) == (22, 44, 66)
    mask = np.asarray(Image.open(out / "train" / "masks" / "22.png"))
    assert set(np.unique(mask)) == {0, 255} and (mask == 255).sum() == 10
    # the training images fold by fold (each photograph its own subject), the test set as --data-val
    train, val, source = fold_files(out / "train" / "images", ".png", ".png", 3, 1)
    assert source.endswith("splits.json") and len(train) == 4 and len(val) == 2
    # a photograph without its label is named before anything is written
    (src / "test" / "1st_manual" / "03_manual1.gif").unlink()
    with pytest.raises(DatasetError, match=r"03_test.tif: no first-observer label .*03_manual1.gif"):
        convert_drive(src, tmp_path / "o2")
    assert not (tmp_path / "o2").exists()


def test_top_up_sampler_puts_a_rare_class_in_every_batch_and_is_deterministic():
    presence = np.zeros((40, 3), bool)
    presence[:, 0] = True
    presence[:2, 2] = True  # class 2 in 2 of 40 images
    presence[::2, 1] = True  # class 1 in half of them
    sampler = ForegroundTopUpSampler(presence, batch_size=6, share=1 / 3, seed=3)
    sampler.set_epoch(1)
    order = list(sampler)
    assert len(order) == 40
    for start in range(0, 36, 6):
        batch = order[start:start + 6]
        assert presence[batch, 2].sum() >= 2 and presence[batch, 1].sum() >= 2
    assert list(sampler) == order
    sampler.set_epoch(2)
    assert list(sampler) != order
    plain = ForegroundTopUpSampler(presence, batch_size=6, share=0.0, seed=3)
    assert sorted(plain) == list(range(40))  # share 0: a permutation, nothing replaced
    ranks = [list(ForegroundTopUpSampler(presence, 6, 0.0, seed=3, rank=r, world=2)) for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1]) and len(ranks[0]) == 20


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
