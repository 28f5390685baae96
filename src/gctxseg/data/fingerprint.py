"""Dataset fingerprint: properties discovered by reading every case once (nnU-Net style).

The fingerprint holds what training needs to know and must not be configured by hand: the mask
values and their class indices, the input channels, per-channel mean/std and intensity
percentiles, for scans also the intensity percentiles inside the masks' foreground (where a CT
auto-window comes from) and the pixel spacing. It also records the intensity mapping (values as
read -> [0, 1] input) its mean/std were computed after. Every file is checked while it is read;
problems are collected and raised once.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.files import atomic_write_text
from ..core.remembered import Remembered
from .ct import AUTO, CTWindow
from .errors import DatasetError, DataWarning, raise_collected
from .folder import ImagePair
from .intensity import IntensityMapping, choose_intensity
from .io import (
    ImageInfo,
    fit_channels,
    is_grey_colour,
    is_scan,
    read_image,
    read_info,
    read_mask_with_encoding,
    turned_by_exif,
)

__all__ = ["CaseAnalysis", "DatasetFingerprint", "MAX_CLASSES", "MaskValueMap", "aggregate_cases", "analyze_case",
           "fingerprint_dataset", "remembered_fingerprints"]

MAX_CLASSES = 256  # class indices are stored as uint8 (dataset, disk cache): more would wrap around
# "many values, most rare": what anti-aliasing, resizing or JPEG leaves in a picture mask (measured on the
# phantom: JPEG quality 95 gives 27 values, 23 under 0.5% of the pixels; label sets have a few common values)
MANY_MASK_VALUES = 10
RARE_VALUE_SHARE = 0.005


class MaskValueMap:
    """Maps raw mask values (e.g. 0/128/255) to class indices 0..K-1 and back; background = smallest."""

    def __init__(self, values: Iterable[int]) -> None:
        self.values = sorted({int(v) for v in values})
        if not self.values:
            raise ValueError("MaskValueMap needs at least one mask value, got none")
        self._lut = {v: i for i, v in enumerate(self.values)}

    @property
    def num_classes(self) -> int:
        return len(self.values)

    def encode(self, raw: np.ndarray, source: str | Path = "mask") -> np.ndarray:
        """Raw values -> class indices (``H x W`` int64); unknown values raise :class:`DatasetError`."""
        values = np.asarray(self.values)
        idx = np.clip(np.searchsorted(values, raw), 0, len(values) - 1)
        bad = values[idx] != raw
        if bad.any():
            unknown = sorted(set(np.unique(raw[bad]).tolist()))
            raise DatasetError(
                f"{source}: value(s) {unknown} not among the training mask values {self.values}; fix the mask"
            )
        return idx.astype(np.int64)

    def decode(self, index: np.ndarray) -> np.ndarray:
        """Class indices -> raw mask values (uint8 when they fit, else uint16)."""
        dtype = np.uint8 if self.values[-1] <= 255 else np.uint16
        return np.asarray(self.values, dtype=dtype)[index]

    def to_dict(self) -> dict[str, int]:
        return {str(v): i for i, v in enumerate(self.values)}

    @classmethod
    def from_dict(cls, mapping: dict[str, int]) -> MaskValueMap:
        return cls(int(v) for v, _ in sorted(mapping.items(), key=lambda kv: kv[1]))

    def __repr__(self) -> str:
        return f"MaskValueMap({self.to_dict()})"


@dataclass
class DatasetFingerprint:
    """What was discovered about a set of image/mask pairs (a volume counts once per slice)."""

    num_cases: int
    channels: int  # network input channels (after the intensity mapping; grey scans saved as RGB count as 1)
    sizes: dict[str, int]  # "HxW" -> number of images
    mask_values: dict[str, int]  # raw value -> pixel count
    mean: list[float]  # per input channel, of the mapped values (what Normalize uses)
    std: list[float]
    percentile_00_5: list[float] = field(default_factory=list)  # per channel, of the values as read (HU for CT)
    percentile_99_5: list[float] = field(default_factory=list)
    foreground_percentile_00_5: list[float] = field(default_factory=list)  # as read, inside the mask foreground
    foreground_percentile_99_5: list[float] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)  # natural / ct / scan -> number of images
    spacing: list[float] | None = None  # median (row, column) pixel spacing in mm, where the files state it
    intensity: dict = field(default_factory=lambda: IntensityMapping().to_dict())  # values as read -> [0, 1]
    mask_value_images: dict[str, int] = field(default_factory=dict)  # raw value -> images (slices) holding it
    # median width in pixels of the foreground structures (2 x the median distance of a foreground pixel to the
    # background, over training images): the planner keeps thin structures (vessels) at their resolution
    structure_width: float | None = None

    @property
    def value_map(self) -> MaskValueMap:
        return MaskValueMap(int(v) for v in self.mask_values)

    @property
    def intensity_mapping(self) -> IntensityMapping:
        return IntensityMapping.from_dict(self.intensity)

    def check_classes(self, where: str | Path) -> None:
        """Raise :class:`DatasetError` where the masks hold one value only: no class to learn."""
        if self.value_map.num_classes < 2:
            raise DatasetError(f"{where}: masks hold only the value {self.value_map.values}; need background and a "
                               "class: check that the masks are the labelled ones (--mask_f)")

    def describe(self) -> str:
        """Two lines: the images (count, sizes, kinds) and the classes found (mask value, images holding it)."""
        sizes = sorted(self.sizes.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{n} of {size}" for size, n in sizes[:3]) + (" ..." if len(sizes) > 3 else "")
        names = {"natural": "pictures", "ct": "CT", "scan": "scans"}
        kinds = ", ".join(f"{n} {names.get(kind, kind)}" for kind, n in self.kinds.items())
        values = self.value_map.values
        classes = [f"value {v}: background" if k == 0 else f"value {v}: class {k} in "
                   f"{self.mask_value_images.get(str(v), 0)} images" for k, v in enumerate(values)]
        return (f"data: {self.num_cases} images ({shown}; {kinds}), {self.channels} input channel(s)\n"
                f"classes: {'; '.join(classes)}")

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> DatasetFingerprint:
        return cls(**json.loads(Path(path).read_text()))


def _broadcast_pool(samples: list[np.ndarray], channels: int) -> np.ndarray:
    # a grayscale image among colour ones is fed as gray RGB: broadcast its single channel
    return np.concatenate([np.broadcast_to(p, (p.shape[0], channels)) for p in samples])


def _check_label_values(value_counts: dict[int, int], richest_mask: tuple[int, object, bool]) -> None:
    """Refuse training masks whose values cannot be class labels (every distinct value becomes a class).

    Raises:
        DatasetError: more values than uint8 class indices hold, or (picture masks) many values of which most
            are rare: anti-aliasing, resizing or JPEG compression, named with the mask that has the most values.
    """
    count, mask, is_picture = richest_mask
    total = sum(value_counts.values())
    common = sorted(value_counts, key=value_counts.get, reverse=True)
    rare = [v for v in common if value_counts[v] < RARE_VALUE_SHARE * total]
    shown = ", ".join(f"{v} ({100 * value_counts[v] / total:.1f}%)" for v in common[:4])
    found = f"values {shown} and {len(common) - 4} more" if len(common) > 4 else f"values {shown}"
    if is_picture and len(common) > MANY_MASK_VALUES and len(rare) > len(common) / 2:
        raise DatasetError(
            f"{mask}: {count} distinct mask values ({len(common)} in all the training masks: {found}, "
            f"{len(rare)} of them each under {100 * RARE_VALUE_SHARE:g}% of the pixels) look like anti-aliasing or "
            "JPEG, not class labels; save masks as PNG without anti-aliasing (nearest-neighbour resizing), or "
            "threshold them to the class values"
        )
    if len(common) > MAX_CLASSES:
        raise DatasetError(
            f"{mask}: the training masks hold {len(common)} distinct values ({found}) but at most {MAX_CLASSES} "
            "classes fit the uint8 class indices; merge labels or relabel the masks 0..255"
        )


@dataclass
class CaseAnalysis:
    """What one image/mask pair (one slice of a volume) contributes to the fingerprint (:func:`analyze_case`)."""

    where: str  # the mask, and the slice of a volume
    mask: object  # the mask's path
    size: str  # "HxW"
    kind: str  # natural / ct / scan
    spacing: tuple[float, float] | None  # (row, column) mm, where the file states it
    channels: int  # as read
    value_counts: dict[int, int]  # raw mask value -> pixels
    encoding: str | None  # how the mask states its classes (palette index, grey value)
    picture_mask: bool  # the mask is a picture file (not a scan), where anti-aliasing can add values
    background: int  # smallest mask value seen so far, this case's included
    structure_width: float | None  # None: no foreground
    sample: np.ndarray  # sampled pixels as read, ``N x channels`` float32
    foreground_values: np.ndarray | None  # sampled foreground pixels as read (None: no foreground)
    foreground_labels: np.ndarray | None  # their mask values
    sums: tuple | None  # (pixels, sum, sum of squares) of the mapped values per channel (None: no mapping yet)


def analyze_case(
    pair: ImagePair,
    *,
    mapping: IntensityMapping | None,
    known: set[int] | None,
    known_channels: int | None,
    background: int | None,
    sample_pixels: int,
    rng: np.random.Generator,
    infos: dict[Path, ImageInfo | None],
) -> CaseAnalysis:
    """Read one pair, check it and measure it (nnU-Net's per-case fingerprint step).

    Args:
        pair: the image/mask pair (a slice of a volume when ``pair.slice_index`` is set).
        mapping: the intensity mapping when known before the scan (checked against the file, its sums taken).
        known: the training set's mask values (validation sets), else None.
        known_channels: the training set's input channels (validation sets), else None.
        background: smallest mask value seen in the cases before this one (or the known set's), or None.
        sample_pixels: pixels sampled per image file (per volume: spread over its slices).
        rng: the generator the pixels are sampled with (shared by the cases, in order, so a set samples the same
            pixels every time).
        infos: image path -> its header (volumes are read once for all their slices); filled in here.

    Raises:
        DatasetError: an unreadable file, a file of the wrong kind for the mapping, an image that does not fit
            ``known_channels``, a mask of another size than its image or with values outside ``known``.
    """
    image, mask, encoding, info = _read_pair(pair, mapping, known_channels, infos)
    where = pair.mask if pair.slice_index is None else f"{pair.mask} (slice {pair.slice_index})"
    if image.shape[:2] != mask.shape:
        raise DatasetError(_size_problem(where, mask.shape, image.shape, pair.image))
    values, counts = np.unique(mask, return_counts=True)
    if known is not None and not set(values.tolist()) <= known:
        unseen = sorted(set(values.tolist()) - known)
        raise DatasetError(f"{where}: value(s) {unseen} never seen in the training masks {sorted(known)}; fix the mask")
    background = int(values[0]) if background is None else min(background, int(values[0]))
    budget = max(1, sample_pixels // (info.depth or 1) if info is not None else sample_pixels)
    flat = image.reshape(-1, image.shape[2])
    sample = flat[rng.integers(0, flat.shape[0], min(budget, flat.shape[0]))].astype(np.float32)
    width = fg_values = fg_labels = None
    fg = np.flatnonzero(mask.ravel() != background)  # labels kept: the background may still go down
    if fg.size:
        width = _remembered_width(pair, mask, background)
        picked = fg[rng.integers(0, fg.size, min(budget, fg.size))]
        fg_values, fg_labels = flat[picked].astype(np.float32), mask.ravel()[picked]
    sums = None
    if mapping is not None:
        mapped = mapping.apply(image).reshape(-1, mapping.channels(image.shape[2])).astype(np.float64)
        sums = (mapped.shape[0], mapped.sum(0), (mapped**2).sum(0))
    return CaseAnalysis(
        where=where, mask=pair.mask, size=f"{image.shape[0]}x{image.shape[1]}",
        kind=info.kind if info is not None else "natural",
        spacing=info.spacing if info is not None else None, channels=image.shape[2],
        value_counts=dict(zip(values.tolist(), counts.tolist())), encoding=encoding,
        picture_mask=not is_scan(pair.mask), background=background, structure_width=width, sample=sample,
        foreground_values=fg_values, foreground_labels=fg_labels, sums=sums,
    )


def _read_pair(pair: ImagePair, mapping: IntensityMapping | None, known_channels: int | None,
               infos: dict[Path, ImageInfo | None]) -> tuple[np.ndarray, np.ndarray, str | None, ImageInfo | None]:
    """(image ``H x W x C`` as read, mask, how the mask states its classes, the image's header or None)."""
    if mapping is not None:
        mapping.check(pair.image)
    if pair.image not in infos:
        infos[pair.image] = read_info(pair.image) if is_scan(pair.image) else None
    image = read_image(pair.image, pair.slice_index)
    if is_grey_colour(image):
        image = image[..., :1]  # a grey scan saved as RGB: one channel (the model is then grey)
    if known_channels is not None:
        fit_channels(image, known_channels, pair.image)
    mask, encoding = read_mask_with_encoding(pair.mask, pair.slice_index)
    return image, mask, encoding, infos[pair.image]


def fingerprint_dataset(
    pairs: Sequence[ImagePair],
    known_values: Sequence[int] | None = None,
    sample_pixels: int = 20000,
    *,
    known_channels: int | None = None,
    ct: bool = False,
    windows: Sequence[CTWindow | str] = (AUTO,),
    intensity: IntensityMapping | None = None,
) -> DatasetFingerprint:
    """Read every pair once (:func:`analyze_case`), check it, and summarise the set (:func:`aggregate_cases`).

    The intensity mapping is ``intensity`` when given (validation sets: the training set's), else
    chosen by :func:`~gctxseg.data.intensity.choose_intensity` from what was read: pictures as read,
    scans windowed (``ct``) or range-scaled. Mean/std are exact sums over all mapped pixels when the
    mapping is known before the scan, and estimates from the sampled pixels when it is derived from
    them (the CT auto-window, the percentile range).

    Args:
        pairs: image/mask pairs to scan (volume slices from :func:`~gctxseg.data.folder.expand_slices`).
        known_values: mask values of the training set; values outside it are errors (validation sets).
        known_channels: input channels of the training set; images that do not fit them (colour images in a
            grey set) are errors (validation sets).
        sample_pixels: pixels sampled per image file (per volume: spread over its slices) for percentiles.
        ct: the images are CT: window them (see ``windows``).
        windows: CT windows from :func:`~gctxseg.data.ct.resolve_windows`; ``"auto"`` = derived from the
            0.5th-99.5th percentiles of the values inside the masks' foreground.
        intensity: a fixed mapping (overrides ``ct`` and ``windows``).

    Raises:
        DatasetError: unreadable files, image/mask size mismatch, unknown mask values, files of the wrong
            kind for the mapping (all checked, then one error naming the first problem and counting the
            rest); pictures mixed with scans.

    Warns:
        DataWarning: ``ct`` on picture files (see :func:`~gctxseg.data.intensity.choose_intensity`).
    """
    if not pairs:
        raise DatasetError("no image/mask pairs to scan; check the data folders")
    key = _remembered_key(pairs, known_values, sample_pixels, known_channels, ct, windows, intensity)
    if key is not None and (kept := _FINGERPRINTS.get(key)) is not None:
        return copy.deepcopy(kept)
    fingerprint = _scan_pairs(pairs, known_values, sample_pixels, known_channels, ct, windows, intensity)
    if key is not None:
        _FINGERPRINTS.keep(key, copy.deepcopy(fingerprint))
    return fingerprint


# Fingerprints taken inside ``remembered_fingerprints()``: a set of pairs scanned again with the same settings, its
# files unchanged (path, size and modification time), gives the fingerprint taken the first time. ``gctxseg cv``
# scans each fold's images for every configuration (and a fold's training images for the planning before it).
_FINGERPRINTS = Remembered()
remembered_fingerprints = _FINGERPRINTS.block


def _remembered_key(pairs, *settings) -> tuple | None:
    """What a fingerprint is taken from: the pairs, their files' sizes and modification times, and the settings;
    None outside ``remembered_fingerprints()`` or where a file cannot be read (the scan then says so)."""
    if not _FINGERPRINTS.open:
        return None
    try:
        files = tuple((str(p.image), str(p.mask), p.slice_index, *_stamp(p.image), *_stamp(p.mask)) for p in pairs)
    except OSError:
        return None
    known_values, sample_pixels, known_channels, ct, windows, intensity = settings
    return (files, None if known_values is None else tuple(int(v) for v in known_values), sample_pixels,
            known_channels, ct, repr(list(windows)), None if intensity is None else repr(intensity.to_dict()))


def _remembered_width(pair: ImagePair, mask: np.ndarray, background: int) -> float:
    """The mask's structure width, kept inside ``remembered_fingerprints()``: each fold of a cv scans its own set of
    pairs, and the distance transform is most of a scan's time."""
    key = None
    if _FINGERPRINTS.open:  # outside a block nothing is kept: no stat of the mask either
        try:
            key = ("structure width", str(pair.mask), pair.slice_index, *_stamp(pair.mask), background)
        except OSError:
            pass
    if key is not None and (kept := _FINGERPRINTS.get(key)) is not None:
        return kept
    width = _structure_width(mask != background)
    if key is not None:
        _FINGERPRINTS.keep(key, width)
    return width


def _stamp(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def _scan_pairs(pairs, known_values, sample_pixels, known_channels, ct, windows, intensity) -> DatasetFingerprint:
    """:func:`fingerprint_dataset`'s scan: every pair read, checked and summarised."""
    files = list(dict.fromkeys(p.image for p in pairs))
    mapping = intensity
    if mapping is None and (not any(is_scan(f) for f in files) or (ct and AUTO not in windows)):
        mapping = choose_intensity(files, ct, windows, (0.0, 1.0), None)  # nothing to derive: decide now
    known = set(int(v) for v in known_values) if known_values is not None else None
    background = min(known) if known else None
    rng = np.random.default_rng(0)
    infos: dict[Path, ImageInfo | None] = {}
    cases: list[CaseAnalysis] = []
    problems: list[str] = []
    for pair in pairs:
        try:
            case = analyze_case(pair, mapping=mapping, known=known, known_channels=known_channels,
                                background=background, sample_pixels=sample_pixels, rng=rng, infos=infos)
        except DatasetError as err:
            problems.append(str(err))
            continue
        background = case.background
        cases.append(case)
    raise_collected(problems)
    return aggregate_cases(cases, files, mapping, ct=ct, windows=windows, check_labels=known is None)


def aggregate_cases(
    cases: Sequence[CaseAnalysis],
    files: Sequence[Path],
    mapping: IntensityMapping | None,
    *,
    ct: bool = False,
    windows: Sequence[CTWindow | str] = (AUTO,),
    check_labels: bool = True,
) -> DatasetFingerprint:
    """The fingerprint of a set from its cases (in the order they were read): sizes, classes, statistics.

    ``mapping`` None: the intensity mapping is chosen here from the sampled pixels (``files``, ``ct`` and
    ``windows`` as for :func:`fingerprint_dataset`). ``check_labels``: refuse mask values that cannot be class
    labels (a training set; a validation set was checked against its training set's values case by case).

    Raises:
        DatasetError: palette and greyscale masks mixed; mask values that look like anti-aliasing or exceed the
            uint8 classes (``check_labels``).
    """
    value_counts: dict[int, int] = {}
    value_images: dict[int, int] = {}
    sizes: dict[str, int] = {}
    kinds: dict[str, int] = {}
    encodings: dict[str, object] = {}  # how masks state their classes -> first mask
    richest_mask: tuple[int, object, bool] = (0, None, False)  # most distinct values: (count, mask, is a picture)
    for case in cases:
        if case.encoding is not None:
            encodings.setdefault(case.encoding, case.mask)
        for v, c in case.value_counts.items():
            value_counts[v] = value_counts.get(v, 0) + c
            value_images[v] = value_images.get(v, 0) + 1
        if len(case.value_counts) > richest_mask[0]:
            richest_mask = (len(case.value_counts), case.where, case.picture_mask)
        sizes[case.size] = sizes.get(case.size, 0) + 1
        kinds[case.kind] = kinds.get(case.kind, 0) + 1
    _check_one_encoding(encodings)
    if check_labels:
        _check_label_values(value_counts, richest_mask)
        _warn_two_conventions(cases)
    channels = max((case.channels for case in cases), default=0)
    background = cases[-1].background if cases else None
    spacings = [case.spacing for case in cases if case.spacing is not None]
    widths = [case.structure_width for case in cases if case.structure_width is not None]
    mapping, stats = _intensity_statistics(cases, files, mapping, channels, background, ct, windows)
    return DatasetFingerprint(
        num_cases=len(cases),
        channels=mapping.channels(channels),
        sizes=sizes,
        mask_values={str(v): c for v, c in sorted(value_counts.items())},
        **stats,
        kinds=kinds,
        spacing=np.median(np.asarray(spacings), axis=0).round(6).tolist() if spacings else None,
        intensity=mapping.to_dict(),
        mask_value_images={str(v): n for v, n in sorted(value_images.items())},
        structure_width=round(float(np.median(widths)), 3) if widths else None,
    )


def _intensity_statistics(cases, files, mapping, channels, background, ct, windows) -> tuple[IntensityMapping, dict]:
    """(the mapping, chosen here when None; the fingerprint's mean, std and percentile fields) from the cases."""
    pooled = _broadcast_pool([case.sample for case in cases], channels)
    low, high = np.percentile(pooled, [0.5, 99.5], axis=0)
    with_fg = [case for case in cases if case.foreground_values is not None]
    fg_pooled = None
    if with_fg:
        labels = np.concatenate([case.foreground_labels for case in with_fg])
        fg_pooled = _broadcast_pool([case.foreground_values for case in with_fg], channels)[labels > background]
    fg_low = fg_high = np.zeros(0)
    if fg_pooled is not None and fg_pooled.size:
        fg_low, fg_high = np.percentile(fg_pooled, [0.5, 99.5], axis=0)
    if mapping is None:
        fg_range = (float(fg_low[0]), float(fg_high[0])) if fg_low.size else None
        mapping = choose_intensity(files, ct, windows, (float(low[0]), float(high[0])), fg_range)
        mapped = mapping.apply(pooled[:, None, :]).reshape(pooled.shape[0], -1).astype(np.float64)
        mean, std = mapped.mean(0), np.sqrt(np.maximum(mapped.var(0), 1e-12))
    else:
        input_channels = mapping.channels(channels)
        sums = [case.sums for case in cases]
        total = sum(n for n, *_ in sums)
        mean = sum(np.broadcast_to(s, (input_channels,)) for _, s, _ in sums) / total
        sq_mean = sum(np.broadcast_to(q, (input_channels,)) for _, _, q in sums) / total
        std = np.sqrt(np.maximum(sq_mean - mean**2, 1e-12))
    return mapping, dict(
        mean=mean.round(6).tolist(),
        std=std.round(6).tolist(),
        percentile_00_5=low.round(6).tolist(),
        percentile_99_5=high.round(6).tolist(),
        foreground_percentile_00_5=fg_low.round(6).tolist(),
        foreground_percentile_99_5=fg_high.round(6).tolist(),
    )


def _size_problem(where: object, mask: tuple[int, ...], image: tuple[int, ...], image_path: object) -> str:
    turned = (mask[0], mask[1]) == (image[1], image[0]) and turned_by_exif(image_path)
    hint = "" if not turned else (f" ({image_path} is turned by its EXIF orientation: pictures are read as viewers "
                                  "show them, so draw the mask on the photo as shown)")
    return (f"{where}: {mask[0]}x{mask[1]} but its image is {image[0]}x{image[1]}{hint}; re-export the mask at the "
            "image size")


def _check_one_encoding(encodings: dict[str, object]) -> None:
    """Palette PNGs (class = palette index) among greyscale masks (class = grey value) give one class two numbers
    (edema index 1 in some masks, grey 128 in others) and phantom classes: refused, naming a mask of each."""
    if len(encodings) > 1:
        raise DatasetError(
            f"{encodings['palette']}: a palette PNG (classes are its palette indices) but {encodings['grey']} is a "
            "greyscale mask (classes are its grey values); one set read both ways gives one class two numbers; save "
            "every mask the same way (all palette PNGs, or all greyscale with the class values)"
        )


def _warn_two_conventions(cases: Sequence[CaseAnalysis]) -> None:
    """Masks of 0/1 beside masks of 0/255 and none holding both: most likely one structure saved two ways (a
    class index, a white mask), which would be trained as two classes."""
    ones = [c.where for c in cases if 1 in c.value_counts]
    whites = [c.where for c in cases if 255 in c.value_counts]
    values = {v for c in cases for v in c.value_counts} - {0}
    if values == {1, 255} and not set(ones) & set(whites):
        warnings.warn(f"{ones[0]}: {len(ones)} mask(s) hold 1 and {len(whites)} others 255 (e.g. {whites[0]}), never "
                      "both: one structure saved two ways (0/1 and 0/255)? They are trained as two classes; save "
                      "every mask one way", DataWarning, stacklevel=3)


def _structure_width(foreground: np.ndarray) -> float:
    """2 x the median Euclidean distance of a foreground pixel to the nearest background pixel: about the width of
    a vessel-like structure, a large fraction of a blob's diameter."""
    from scipy.ndimage import distance_transform_edt

    return 2.0 * float(np.median(distance_transform_edt(np.pad(foreground, 1))[1:-1, 1:-1][foreground]))
