"""Patient groups and split files: group k-fold keeps a patient on one side; a splits.json or groups.json of the
wrong shape is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import one_line
from PIL import Image

from gctxseg.data import DatasetError, ImagePair
from gctxseg.data.splits import group_kfold, groups_from_regex, resolve_splits, select_fold


def _pairs(names):
    return [ImagePair(Path(f"/x/images/{n}.png"), Path(f"/x/masks/{n}.png")) for n in names]


def _patients(root, names):
    from gctxseg.data.folder import find_pairs

    for name in names:
        for sub in ("images", "masks"):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / sub / f"{name}.png")
    return find_pairs(root / "images", ".png", ".png")


NAMES = [f"p{p}_b{b}" for p in range(3) for b in range(2)]


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


def test_unreadable_groups_json_is_one_line(tmp_path):
    (tmp_path / "images").mkdir()
    pairs = _pairs(["a", "b", "c"])
    (tmp_path / "groups.json").write_text('{"a": "p1", ')  # cut short
    with pytest.raises(DatasetError, match=r"groups.json: not a readable JSON file \(JSONDecodeError\)"):
        resolve_splits(pairs, 2, tmp_path / "images")
    (tmp_path / "groups.json").write_text('["p1", "p2"]')
    with pytest.raises(DatasetError, match=r"groups.json: expected \{file stem: group\}"):
        resolve_splits(pairs, 2, tmp_path / "images")


@pytest.mark.parametrize("splits, problem", [
    ('"p0_b0"', "expected a list"),
    ('[{"train": "p0_b0", "val": []}]', 'fold 0 "train" is str, not a list'),
    ('[{"train": [["p0_b0"]], "val": []}]', 'fold 0 "train"[0] is ["p0_b0"], not a file stem'),
    ('[{"train": null, "val": []}]', 'fold 0 "train" is null'),
    ('[{"train": ["p0_b0", 7], "val": []}]', 'fold 0 "train"[1] is 7, not a file stem'),
    ('[{"train": []}]', 'fold 0 has no "train" and "val"'),
])
def test_splits_json_of_the_wrong_types_is_one_line(tmp_path, splits, problem):
    from gctxseg.data.splits import resolve_splits

    pairs = _patients(tmp_path, NAMES)
    (tmp_path / "splits.json").write_text(splits)
    with pytest.raises(DatasetError) as err:
        resolve_splits(pairs, 1, tmp_path / "images")
    line = one_line(err)
    assert problem in line and "splits.json" in line


def test_splits_json_of_another_fold_count_is_refused_not_ignored(tmp_path):
    from gctxseg.data.splits import group_kfold, resolve_splits

    pairs = _patients(tmp_path, NAMES)
    (tmp_path / "splits.json").write_text(json.dumps(group_kfold({n: n[:2] for n in NAMES}, 3)))
    with pytest.raises(DatasetError, match=r"holds 3 folds, not --folds 2; use --folds 3, or --group-regex"):
        resolve_splits(pairs, 2, tmp_path / "images")
    assert len(resolve_splits(pairs, 3, tmp_path / "images")[0]) == 3


@pytest.mark.parametrize("groups, problem", [
    ({n: n[:2] for n in NAMES[:-1]}, "no group for 1 of 6 images (e.g. ['p2_b1'])"),
    ({**{n: n[:2] for n in NAMES}, "p0_b0": 1}, "the group of 'p0_b0' is 1, not a name"),
    ({**{n: n[:2] for n in NAMES}, "p0_b0": None}, "the group of 'p0_b0' is null"),
    ({**{n: n[:2] for n in NAMES}, "p0_b0": ["p0"]}, "is [\"p0\"], not a name"),
])
def test_groups_json_missing_stems_or_of_the_wrong_types_is_refused(tmp_path, groups, problem):
    from gctxseg.data.splits import resolve_splits

    pairs = _patients(tmp_path, NAMES)
    (tmp_path / "groups.json").write_text(json.dumps(groups))
    with pytest.raises(DatasetError) as err:
        resolve_splits(pairs, 3, tmp_path / "images")
    assert problem in one_line(err) and "groups.json" in one_line(err)


def test_a_full_groups_json_keeps_patients_apart(tmp_path):
    from gctxseg.data.splits import resolve_splits

    pairs = _patients(tmp_path, NAMES)
    (tmp_path / "groups.json").write_text(json.dumps({n: n[:2] for n in NAMES}))
    splits, source = resolve_splits(pairs, 3, tmp_path / "images")
    assert source.endswith("groups.json")
    for fold in splits:
        assert not {n[:2] for n in fold["train"]} & {n[:2] for n in fold["val"]}
