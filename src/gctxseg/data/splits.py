"""Cross-validation folds by group (patient or eye): scans of one patient never sit on both sides.

A fold list has nnU-Net's ``splits_final.json`` shape: ``[{"train": [stems...], "val": [stems...]}, ...]``,
keyed by file stem (``ImagePair.name``). Groups come from a ``--group-regex`` applied to the file name (its
first capture group, or the whole match), from a ``groups.json`` (stem -> group) that a converter wrote, or a
``splits.json`` given directly.

Folds are a contract (:func:`check_splits`): a fold's train and val do not overlap, every fold holds every scan of
the file, every scan is held out exactly once, and no patient sits on both sides wherever the patient rule is known.
``gctxseg cv`` writes its folds once, as ``CV/splits_final.json``; every later reader (resume, ``--summary-only``,
the race, ensembles, a fold's report) reads them from there (:func:`cv_splits_file`), and a scan of the data folder
in no fold is named, never folded in.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .folder import ImagePair, expand_slices, find_pairs
from .io import read_mask

__all__ = ["check_fold_classes", "check_splits", "cv_folds", "cv_splits_file", "fold_files", "group_kfold",
           "groups_from_regex", "held_out_scans", "known_groups", "load_groups", "load_splits", "resolve_splits",
           "run_fold_files", "select_fold", "unlisted_scans", "ONE_GROUP_PER_IMAGE", "SPLITS_FINAL"]

ONE_GROUP_PER_IMAGE = "one group per image"
SPLITS_FINAL = "splits_final.json"  # the folds a `gctxseg cv` folder was trained on (nnU-Net's name)
_WARNED: set[str] = set()  # scans-in-no-fold warnings already printed by this process
_CLASSES_CHECKED: set[tuple] = set()  # fold sets whose classes check_fold_classes passed in this process


def group_kfold(groups: Mapping[str, str], folds: int, seed: int = 0) -> list[dict[str, list[str]]]:
    """Split items into ``folds`` folds so that no group is on both sides.

    Groups are shuffled with ``seed``, then each goes to the fold holding the fewest items so far (largest
    groups first), so folds are balanced in items even when patients have different scan counts.

    Raises:
        DatasetError: fewer groups than folds, or ``folds`` < 2.
    """
    if folds < 2:
        raise DatasetError(f"--folds {folds}: need at least 2 folds")
    members: dict[str, list[str]] = {}
    for item, group in sorted(groups.items()):
        members.setdefault(group, []).append(item)
    if len(members) < folds:
        raise DatasetError(
            f"{len(members)} group(s) ({', '.join(sorted(members)[:5])}) for {folds} folds; "
            f"use --folds {max(2, len(members))} or fewer, or check --group-regex"
        )
    names = sorted(members)
    order = np.random.default_rng(seed).permutation(len(names))
    shuffled = [names[i] for i in order]
    shuffled.sort(key=lambda g: -len(members[g]))  # stable: equal sizes keep the shuffled order
    val: list[list[str]] = [[] for _ in range(folds)]
    for group in shuffled:
        target = min(range(folds), key=lambda f: (len(val[f]), f))
        val[target] += members[group]
    everything = sorted(groups)
    held_out = [set(v) for v in val]
    return [{"train": [n for n in everything if n not in h], "val": sorted(h)} for h in held_out]


def groups_from_regex(pairs: Sequence[ImagePair], pattern: str) -> dict[str, str]:
    """Stem -> group, the group read from each image's file name with ``pattern``.

    Raises:
        DatasetError: an invalid pattern, or a file name the pattern does not match (the first one named).
    """
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise DatasetError(f"--group-regex {pattern!r}: not a valid regular expression ({err})") from None
    groups, unmatched = {}, []
    for pair in pairs:
        found = regex.search(pair.image.name)
        if found is None:
            unmatched.append(pair.image)
            continue
        groups[pair.name] = found.group(1) if regex.groups else found.group(0)
    if unmatched:
        raise DatasetError(
            f"{unmatched[0]}: --group-regex {pattern!r} matches no part of the name ({len(unmatched)} of "
            f"{len(pairs)} files unmatched); e.g. '^(p\\d+)_' for names like p01_b03.png"
        )
    return groups


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: not a readable JSON file ({type(err).__name__}); write it again") from None


def _stem_list(value, where: str) -> str | None:
    """``value`` as a list of file stems, or why not (the first bad item named)."""
    if not isinstance(value, list):
        return f"{where} is {type(value).__name__ if value is not None else 'null'}, not a list of file stems"
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            shown = "null" if item is None else json.dumps(item)[:40]
            return f"{where}[{i}] is {shown}, not a file stem (a non-empty string such as \"p01_b03\")"
    return None


def load_splits(path: str | Path) -> list[dict[str, list[str]]]:
    """Read a ``splits.json`` (nnU-Net shape), checking every fold; one line naming the first problem."""
    path = Path(path)
    splits = _read_json(path)
    shape = 'expected a list of {"train": [stems], "val": [stems]} folds (nnU-Net\'s splits_final.json)'
    if not isinstance(splits, list) or not splits:
        raise DatasetError(f"{path}: {shape}; write it again")
    for fold, split in enumerate(splits):
        if not isinstance(split, dict) or not {"train", "val"} <= set(split):
            raise DatasetError(f"{path}: fold {fold} has no \"train\" and \"val\" lists; {shape}")
        for side in ("train", "val"):
            problem = _stem_list(split[side], f'fold {fold} "{side}"')
            if problem:
                raise DatasetError(f"{path}: {problem}; {shape}")
    return splits


def _read_groups(path: Path) -> dict[str, str]:
    """A ``groups.json`` (file stem -> group) as it is, every group a non-empty string."""
    groups = _read_json(path)
    if not isinstance(groups, dict):
        raise DatasetError(f"{path}: expected {{file stem: group}}, got a {type(groups).__name__}; write it again")
    bad = next(((k, v) for k, v in groups.items() if not isinstance(v, str) or not v), None)
    if bad is not None:
        raise DatasetError(f"{path}: the group of {bad[0]!r} is {json.dumps(bad[1])[:40]}, not a name; groups are "
                           "strings such as \"p01\"")
    return groups


def load_groups(path: str | Path, pairs: Sequence[ImagePair]) -> dict[str, str]:
    """Read a ``groups.json`` (file stem -> group) for ``pairs``: every stem must be there, every group a string."""
    path = Path(path)
    groups = _read_groups(path)
    missing = [p.name for p in pairs if p.name not in groups]
    if missing:
        raise DatasetError(f"{path}: no group for {len(missing)} of {len(pairs)} images (e.g. {missing[:3]}); add "
                           "them, or delete the file and give --group-regex")
    return {p.name: groups[p.name] for p in pairs}


def known_groups(
    pairs: Sequence[ImagePair], images_dir: str | Path, group_regex: str | None = None
) -> tuple[dict[str, str], str] | None:
    """(stem -> patient, the rule's name) where a patient rule is known: ``--group-regex``, else a converter's
    ``groups.json`` beside the images folder; None where none is (then a split file is the only word on patients).

    Only the scans the rule covers are in the map: a split file is checked on them, the rest are for
    :func:`select_fold` to name."""
    if group_regex:
        return groups_from_regex(pairs, group_regex), f"--group-regex {group_regex}"
    path = Path(images_dir).parent / "groups.json"
    if path.is_file():
        groups = _read_groups(path)
        return {p.name: groups[p.name] for p in pairs if p.name in groups}, str(path)
    return None


def _first_repeat(names: Sequence[str]) -> str | None:
    seen: set[str] = set()
    return next((n for n in names if n in seen or seen.add(n)), None)


def check_splits(splits: list[dict[str, list[str]]], source: str, groups: tuple[dict[str, str], str] | None = None
                 ) -> None:
    """The fold contract, refused in one line naming ``source``, the scan and the folds where it is broken.

    Each fold lists a scan once, never on both sides, and holds every scan of the file (train + val); with two
    folds or more every scan is held out exactly once (one fold is a plain train/val split); and with ``groups``
    (:func:`known_groups`) no patient has scans on both sides of a fold."""
    everything = set().union(*(set(s["train"]) | set(s["val"]) for s in splits))
    held_out: dict[str, int] = {}
    for fold, split in enumerate(splits):
        for side in ("train", "val"):
            twice = _first_repeat(split[side])
            if twice is not None:
                raise DatasetError(f'{source}: scan {twice!r} is listed twice in fold {fold} "{side}"; list each '
                                   "scan once")
        both = sorted(set(split["train"]) & set(split["val"]))
        if both:
            raise DatasetError(f'{source}: scan {both[0]!r} is in both "train" and "val" of fold {fold} '
                               f"({len(both)} such); a fold's model must not train on the scans it is scored on")
        left_out = sorted(everything - set(split["train"]) - set(split["val"]))
        if left_out:
            raise DatasetError(f"{source}: fold {fold} leaves out scan {left_out[0]!r} ({len(left_out)} such), which "
                               'other folds hold; put it in the fold\'s "train" or "val"')
        for name in split["val"]:
            if name in held_out:
                raise DatasetError(f"{source}: scan {name!r} is held out in folds {held_out[name]} and {fold}; every "
                                   "scan must be held out exactly once (fix the file, or let gctxseg make the folds)")
            held_out[name] = fold
    never = sorted(everything - held_out.keys())
    if len(splits) > 1 and never:
        raise DatasetError(f"{source}: scan {never[0]!r} is held out in no fold ({len(never)} such); every scan must "
                           "be held out exactly once (fix the file, or let gctxseg make the folds)")
    if groups is not None:
        _check_groups(splits, source, *groups)


def _check_groups(splits: list[dict[str, list[str]]], source: str, groups: dict[str, str], rule: str) -> None:
    for fold, split in enumerate(splits):
        held = {groups[n]: n for n in split["val"] if n in groups}
        shared = next((n for n in split["train"] if groups.get(n) in held), None)
        if shared is not None:
            patient = groups[shared]
            raise DatasetError(f'{source}: patient {patient!r} ({rule}) has scan {held[patient]!r} in fold {fold} '
                               f'"val" and {shared!r} in its "train"; hold out all scans of a patient together')


def held_out_scans(splits: list[dict[str, list[str]]]) -> list[str]:
    """Every scan a fold holds out, sorted (out-of-fold scoring covers exactly these)."""
    return sorted({n for s in splits for n in s["val"]})


def unlisted_scans(pairs: Sequence[ImagePair], splits: list[dict[str, list[str]]]) -> list[str]:
    """Scans of the data folder that no fold lists (added after the folds were made), sorted."""
    listed = _listed(splits)
    return sorted(p.name for p in pairs if p.name not in listed)


def _listed(splits: list[dict[str, list[str]]]) -> set[str]:
    return {n for s in splits for side in ("train", "val") for n in s[side]}


def resolve_splits(
    pairs: Sequence[ImagePair],
    folds: int,
    images_dir: str | Path,
    group_regex: str | None = None,
    splits_path: str | Path | None = None,
    seed: int = 0,
) -> tuple[list[dict[str, list[str]]], str]:
    """The fold list for ``pairs`` and where it came from, checked (:func:`check_splits`).

    Order of precedence: an explicit ``splits_path``; a ``--group-regex``; a ``splits.json`` / ``groups.json``
    beside the images folder (as the converters write); else each image is its own group (said in the source
    string, so the caller can warn: scans of one patient may then sit on both sides). A split file is checked
    against the patient rule wherever one is known (:func:`known_groups`), never passed over.
    """
    root = Path(images_dir).parent
    if splits_path is not None:
        splits, source = load_splits(splits_path), str(splits_path)
    elif group_regex:
        splits = group_kfold(groups_from_regex(pairs, group_regex), folds, seed)
        source = f"--group-regex {group_regex}"
    # a grouping file that is present is used or refused, never passed over: patients would mix across folds
    elif (root / "splits.json").is_file():
        splits, source = load_splits(root / "splits.json"), str(root / "splits.json")
        if len(splits) != folds:
            raise DatasetError(f"{source}: holds {len(splits)} folds, not --folds {folds}; use --folds "
                               f"{len(splits)}, or --group-regex to make {folds} folds by patient")
    elif (root / "groups.json").is_file():
        splits = group_kfold(load_groups(root / "groups.json", pairs), folds, seed)
        source = str(root / "groups.json")
    else:
        return group_kfold({p.name: p.name for p in pairs}, folds, seed), ONE_GROUP_PER_IMAGE
    _check_fold_files(pairs, splits, source)
    check_splits(splits, source, known_groups([p for p in pairs if p.name in _listed(splits)], images_dir,
                                              group_regex))
    return splits, source


def _check_fold_files(pairs: Sequence[ImagePair], splits: list[dict[str, list[str]]], source: str) -> None:
    """Every scan a fold lists is in the data folder (those missing named first: the likeliest slip)."""
    for fold in range(len(splits)):
        select_fold(pairs, splits, fold, source)


def select_fold(
    pairs: Sequence[ImagePair], splits: list[dict[str, list[str]]], fold: int, source: str
) -> tuple[list[ImagePair], list[ImagePair]]:
    """(train, val) pairs of ``fold``; every name in the splits must be a pair here (all missing ones listed)."""
    if not 0 <= fold < len(splits):
        raise DatasetError(f"--fold {fold}: {source} has folds 0..{len(splits) - 1}")
    by_name = {p.name: p for p in pairs}
    wanted = splits[fold]["train"] + splits[fold]["val"]
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise DatasetError(
            f"{source}: fold {fold} names {len(missing)} file(s) not in the data folder, e.g. {missing[:3]}; "
            "fix the splits or the folder"
        )
    overlap = set(splits[fold]["train"]) & set(splits[fold]["val"])
    if overlap:
        raise DatasetError(f"{source}: fold {fold} has {sorted(overlap)[:3]} on both sides; fix the splits")
    return [by_name[n] for n in splits[fold]["train"]], [by_name[n] for n in splits[fold]["val"]]


def cv_folds(
    pairs: Sequence[ImagePair],
    folds: int,
    images_dir: str | Path,
    cv_dir: str | Path,
    group_regex: str | None = None,
    splits_path: str | Path | None = None,
) -> tuple[list[dict[str, list[str]]], bool]:
    """The folds ``gctxseg cv`` trains into ``cv_dir``, and whether they are already written there.

    A cv folder with a ``splits_final.json`` continues on those folds: they are checked (:func:`check_splits`)
    against the data folder as it is now, and a scan in no fold is refused, since training would leave it out
    without a word. Otherwise the folds come from the flags (:func:`resolve_splits`)."""
    recorded = Path(cv_dir) / SPLITS_FINAL
    if not recorded.is_file():
        splits, source = resolve_splits(pairs, folds, images_dir, group_regex, splits_path)
        if len(splits) != folds:
            raise DatasetError(f"{source}: holds {len(splits)} folds, not --folds {folds}; pass --folds {len(splits)}")
        return splits, False
    splits = load_splits(recorded)
    if splits_path is not None and load_splits(splits_path) != splits:
        raise ValueError(f"--splits {splits_path}: not the folds {recorded} was begun on; drop --splits to continue "
                         "this cv, or give a new --name")
    if len(splits) != folds:
        raise ValueError(f"{recorded}: holds {len(splits)} folds, not --folds {folds}; pass --folds {len(splits)} to "
                         "continue this cv, or give a new --name")
    _check_fold_files(pairs, splits, str(recorded))
    check_splits(splits, str(recorded), known_groups([p for p in pairs if p.name in _listed(splits)], images_dir,
                                                     group_regex))
    unlisted = unlisted_scans(pairs, splits)
    if unlisted:
        raise DatasetError(f"{recorded}: {len(unlisted)} scan(s) of {images_dir} are in no fold of this cv (e.g. "
                           f"{unlisted[0]}); move them out to finish it on the scans it began with, score its folds "
                           "with --summary-only, or cross-validate every scan under a new --name")
    return splits, True


def cv_splits_file(fold_dir: str | Path) -> Path | None:
    """The ``splits_final.json`` of the ``gctxseg cv`` folder a fold folder sits in (``CV/<model>/fold_k``), or None
    for a fold trained on its own (also a fold of the first cv layout, ``CV/fold_k``, which wrote no such file)."""
    recorded = Path(fold_dir).parent.parent / SPLITS_FINAL
    return recorded if recorded.is_file() else None


def fold_files(
    images_dir: str | Path,
    img_f: str,
    mask_f: str,
    folds: int,
    fold: int,
    group_regex: str | None = None,
    splits_path: str | Path | None = None,
) -> tuple[list[ImagePair], list[ImagePair], str]:
    """(train, val, source) file pairs of ``fold`` of the labelled folder ``images_dir`` (see resolve_splits).

    Scans of the folder that a split file leaves out are named on stderr (they are neither trained on nor
    scored); the folds are never recomputed to take them in."""
    pairs = find_pairs(images_dir, img_f, mask_f)
    splits, source = resolve_splits(pairs, folds, images_dir, group_regex, splits_path)
    if len(splits) != folds:
        raise DatasetError(f"{source}: holds {len(splits)} folds, not --folds {folds}; pass --folds {len(splits)}")
    train, val = select_fold(pairs, splits, fold, source)
    unlisted = unlisted_scans(pairs, splits)
    warning = (f"warning: {source}: {len(unlisted)} scan(s) of {images_dir} are in no fold (e.g. {unlisted[0]}); "
               "they are neither trained on nor scored") if unlisted else None
    if warning and warning not in _WARNED:  # once per process, not once per fold read
        _WARNED.add(warning)
        print(warning, file=sys.stderr)
    return train, val, source


def run_fold_files(run_config: Mapping, run_dir: str | Path) -> tuple[list[ImagePair], list[ImagePair], str]:
    """(train, val, source) of a trained fold, read back: from the ``splits_final.json`` of its cv folder where it
    sits in one (:func:`cv_splits_file`), else from the folds its checkpoint's config recorded."""
    cfg = run_config
    splits = cv_splits_file(run_dir) or cfg.get("splits")
    return fold_files(cfg["data_train"], cfg["img_f"], cfg["mask_f"], cfg["folds"], cfg["fold"],
                      cfg.get("group_regex"), splits)


def _mask_values(pair: ImagePair) -> set[int]:
    """The raw values of a pair's mask (every slice of a volume); none where it is unreadable: the fingerprint,
    which reads every mask anyway, names that problem with the others."""
    values: set[int] = set()
    try:
        for item in expand_slices([pair]):
            values.update(np.unique(read_mask(item.mask, item.slice_index)).tolist())
    except DatasetError:
        return set()
    return values


def check_fold_classes(
    images_dir: str | Path,
    img_f: str,
    mask_f: str,
    folds: int,
    group_regex: str | None = None,
    splits_path: str | Path | None = None,
) -> None:
    """Refuse folds of which one holds out every scan of a class, before any fold trains.

    That fold would train without the class and then fail on its held-out masks (which are correct): with folds by
    patient, a class in one patient's scans only is always held out whole by one fold. Every mask is read once.

    Raises:
        DatasetError: one line naming a mask with the class, the fold, and what to do.
    """
    key = (str(Path(images_dir).resolve()), img_f, mask_f, folds, group_regex,
           None if splits_path is None else str(Path(splits_path).resolve()))
    if key in _CLASSES_CHECKED:  # a cv's later folds, configurations and lr probe: the masks were read once
        return
    every_fold = [fold_files(images_dir, img_f, mask_f, folds, k, group_regex, splits_path) for k in range(folds)]
    values: dict[str, set[int]] = {}
    for train, val, _ in every_fold:  # a split file's folds need not each cover every scan
        values.update({p.name: _mask_values(p) for p in train + val if p.name not in values})
    for k, (train, val, source) in enumerate(every_fold):
        trained = set().union(*(values.get(p.name, set()) for p in train))
        for pair in val:
            unseen = sorted(values.get(pair.name, set()) - trained)
            if unseen:
                holders = sum(unseen[0] in values.get(p.name, set()) for p in val)
                fewer = f"try --folds {folds - 1} if it is in several patients' scans, else " if folds > 2 else ""
                raise DatasetError(
                    f"{pair.mask}: mask value {unseen[0]} is in {holders} scan(s), all held out by fold {k} of "
                    f"{source}, so that fold cannot learn it; {fewer}the class is too rare to cross-validate: label "
                    "it in more patients, or train without --folds"
                )
    _CLASSES_CHECKED.add(key)
