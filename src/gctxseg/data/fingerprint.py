"""Dataset fingerprint: properties discovered by reading every case once (nnU-Net style).

The fingerprint holds what training needs to know and must not be configured by hand: the mask
values and their class indices, the input channels, per-channel mean/std and intensity
percentiles. Every file is checked while it is read; problems are collected and raised once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import DatasetError, raise_collected
from .folder import ImagePair
from .io import read_image, read_mask

__all__ = ["MaskValueMap", "DatasetFingerprint", "fingerprint_dataset"]


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
    """What was discovered about a set of image/mask pairs."""

    num_cases: int
    channels: int
    sizes: dict[str, int]  # "HxW" -> number of images
    mask_values: dict[str, int]  # raw value -> pixel count
    mean: list[float]
    std: list[float]
    percentile_00_5: list[float] = field(default_factory=list)
    percentile_99_5: list[float] = field(default_factory=list)

    @property
    def value_map(self) -> MaskValueMap:
        return MaskValueMap(int(v) for v in self.mask_values)

    def save(self, path: str | Path) -> None:
        from ..utils import atomic_write_text  # lazy: utils is a leaf module, avoids an import cycle at init

        atomic_write_text(path, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> DatasetFingerprint:
        return cls(**json.loads(Path(path).read_text()))


def fingerprint_dataset(
    pairs: Sequence[ImagePair], known_values: Sequence[int] | None = None, sample_pixels: int = 20000
) -> DatasetFingerprint:
    """Read every pair once, check it, and summarise it.

    Args:
        pairs: image/mask pairs to scan.
        known_values: mask values of the training set; values outside it are errors (validation sets).
        sample_pixels: pixels per image sampled for the intensity percentiles.

    Raises:
        DatasetError: unreadable files, image/mask size mismatch, unknown mask values (all checked, then
            one error naming the first problem and counting the rest).
    """
    if not pairs:
        raise DatasetError("no image/mask pairs to scan; check the data folders")
    problems: list[str] = []
    sizes: dict[str, int] = {}
    value_counts: dict[int, int] = {}
    channels = 0
    stats = []  # per image: (pixels, sum, sum of squares, sampled pixels), each per channel
    rng = np.random.default_rng(0)
    known = set(int(v) for v in known_values) if known_values is not None else None
    for pair in pairs:
        try:
            image = read_image(pair.image)
            mask = read_mask(pair.mask)
        except DatasetError as err:
            problems.append(str(err))
            continue
        if image.shape[:2] != mask.shape:
            problems.append(
                f"{pair.mask}: {mask.shape[0]}x{mask.shape[1]} but its image is "
                f"{image.shape[0]}x{image.shape[1]}; re-export the mask at the image size"
            )
            continue
        values, counts = np.unique(mask, return_counts=True)
        if known is not None and not set(values.tolist()) <= known:
            unseen = sorted(set(values.tolist()) - known)
            problems.append(
                f"{pair.mask}: value(s) {unseen} never seen in the training masks {sorted(known)}; fix the mask"
            )
            continue
        for v, c in zip(values.tolist(), counts.tolist()):
            value_counts[v] = value_counts.get(v, 0) + c
        key = f"{image.shape[0]}x{image.shape[1]}"
        sizes[key] = sizes.get(key, 0) + 1
        channels = max(channels, image.shape[2])
        flat = image.reshape(-1, image.shape[2]).astype(np.float64)
        picked = flat[rng.integers(0, flat.shape[0], min(sample_pixels, flat.shape[0]))]
        stats.append((flat.shape[0], flat.sum(0), (flat**2).sum(0), picked))
    raise_collected(problems)
    # a grayscale image among colour ones is fed as gray RGB: broadcast its single channel
    total = sum(n for n, *_ in stats)
    mean = sum(np.broadcast_to(s, (channels,)) for _, s, _, _ in stats) / total
    sq_mean = sum(np.broadcast_to(q, (channels,)) for _, _, q, _ in stats) / total
    std = np.sqrt(np.maximum(sq_mean - mean**2, 1e-12))
    pooled = np.concatenate([np.broadcast_to(p, (p.shape[0], channels)) for *_, p in stats])
    return DatasetFingerprint(
        num_cases=len(pairs),
        channels=channels,
        sizes=sizes,
        mask_values={str(v): c for v, c in sorted(value_counts.items())},
        mean=mean.round(6).tolist(),
        std=std.round(6).tolist(),
        percentile_00_5=np.percentile(pooled, 0.5, axis=0).round(6).tolist(),
        percentile_99_5=np.percentile(pooled, 99.5, axis=0).round(6).tolist(),
    )
