"""On-disk cache of decoded samples, shared by loader workers, DDP ranks and later runs.

Decoding (PNG/DICOM/NIfTI), intensity mapping and resizing happen once per sample and setting; the result is a
pair of ``.npy`` files (float16 image, uint8 mask) that are read back memory-mapped, so the operating system's
page cache, not every worker process, holds the data. The in-memory cache of :class:`SegmentationDataset` is the
default; this one pays off with several workers or ranks, data larger than a worker's memory, and repeated runs
on the same data (the second run starts without decoding anything).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..core.files import atomic_write_bytes
from .fingerprint import MaskValueMap
from .folder import ImagePair
from .intensity import IntensityMapping

__all__ = ["DiskCache"]

_FORMAT = 1  # bump when what a cache entry holds changes: older entries are then never read


class DiskCache:
    """Decoded, resized samples as ``.npy`` files under ``folder``, keyed by everything that made them.

    An entry's key hashes the contents and byte sizes of the image and mask files, the slice index, and the
    settings that shape the sample (size, channels, mask values, intensity mapping): an edited file or another
    setting gets a new entry and never reads a stale one. Entries are written through a temporary file and a
    rename, so workers or ranks that decode the same sample at once, or a run stopped mid-write, leave either
    no entry or a complete one; an unreadable entry is decoded again.

    Args:
        folder: where the entries live (created when missing); one folder can serve many datasets.
        size: (H, W) of the samples.
        channels: input channels of the samples.
        value_map: raw mask values -> class indices.
        intensity: values as read -> [0, 1]; None = as read.
    """

    def __init__(
        self,
        folder: str | Path,
        size: Sequence[int],
        channels: int,
        value_map: MaskValueMap,
        intensity: IntensityMapping | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        settings = {
            "format": _FORMAT,
            "size": [int(s) for s in size],
            "channels": int(channels),
            "mask values": value_map.to_dict(),
            "intensity": (intensity or IntensityMapping()).to_dict(),
        }
        self._settings = json.dumps(settings, sort_keys=True)
        self._file_ids: dict[Path, str] = {}  # a volume's slices share one file: hash it once per process

    def _file_id(self, path: Path) -> str:
        if path not in self._file_ids:
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "blake2b").hexdigest()
            self._file_ids[path] = f"{digest}:{path.stat().st_size}"
        return self._file_ids[path]

    def key(self, pair: ImagePair) -> str:
        """The entry name of ``pair`` under the cache's settings."""
        parts = (self._settings, self._file_id(pair.image), self._file_id(pair.mask), str(pair.slice_index))
        return hashlib.blake2b("\0".join(parts).encode(), digest_size=16).hexdigest()

    def _paths(self, pair: ImagePair) -> tuple[Path, Path]:
        key = self.key(pair)
        return self.folder / f"{key}.image.npy", self.folder / f"{key}.mask.npy"

    def has(self, pair: ImagePair) -> bool:
        """Whether ``pair`` has an entry (its image file, written last, exists)."""
        return self._paths(pair)[0].is_file()

    def load(self, pair: ImagePair) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(image C x H x W float32, mask H x W uint8)`` from the cache, or None when there is no valid entry."""
        image_path, mask_path = self._paths(pair)
        try:
            image = np.load(image_path, mmap_mode="r")
            mask = np.load(mask_path, mmap_mode="r")
        except (OSError, ValueError):  # missing, or cut short by a crash outside our rename
            return None
        if image.dtype != np.float16 or mask.dtype != np.uint8 or image.shape[1:] != mask.shape:
            return None
        return torch.from_numpy(image.astype(np.float32)), torch.from_numpy(np.array(mask))

    def save(self, pair: ImagePair, image: torch.Tensor, mask: torch.Tensor) -> None:
        """Store ``image`` (kept as float16) and ``mask`` (uint8) as ``pair``'s entry."""
        image_path, mask_path = self._paths(pair)
        # mask first: an entry counts only once its image exists, which is written last
        for path, array in ((mask_path, mask.numpy().astype(np.uint8)), (image_path, image.half().numpy())):
            buffer = io.BytesIO()
            np.save(buffer, array)
            atomic_write_bytes(path, buffer.getvalue())
