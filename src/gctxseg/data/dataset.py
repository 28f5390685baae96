"""Folder segmentation dataset: decode once, map intensities, resize to the training size, cache, augment."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from .cache import DiskCache
from .fingerprint import MaskValueMap
from .folder import ImagePair
from .intensity import IntensityMapping
from .io import fit_channels, read_image, read_mask

__all__ = ["SegmentationDataset", "load_resized"]


def load_resized(
    pair: ImagePair,
    value_map: MaskValueMap,
    size: tuple[int, int],
    channels: int,
    intensity: IntensityMapping | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a pair (or a volume's slice), map intensities to [0, 1] and mask values to classes, resize.

    Args:
        pair: the image and mask files (and slice).
        value_map: raw mask values -> class indices.
        size: (H, W) to resize to.
        channels: input channels of the model.
        intensity: values as read -> [0, 1] (CT windows, percentile range); None = as read (pictures).

    Returns:
        image ``C x H x W`` float32 in [0, 1] (antialiased bilinear), mask ``H x W`` uint8 class indices
        (nearest neighbour, so no value is invented between classes).
    """
    image = read_image(pair.image, pair.slice_index)
    if intensity is not None:
        image = intensity.apply(image)
    image = fit_channels(image, channels, pair.image)  # grey in a colour set; a grey scan saved as RGB
    image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    mask = read_mask(pair.mask, pair.slice_index)
    mask = torch.from_numpy(value_map.encode(mask, source=pair.mask).astype(np.uint8))
    if tuple(image.shape[-2:]) != tuple(size):
        image = TF.resize(image, list(size), antialias=True)
        mask = TF.resize(mask[None], list(size), interpolation=TF.InterpolationMode.NEAREST_EXACT)[0]
    return image.clamp_(0, 1), mask


class SegmentationDataset(Dataset):
    """Image/mask pairs as ``(image C x H x W float32, mask H x W int64, index)``.

    Each pair is decoded and resized once, then kept in memory (float16 image, uint8 mask: about
    150 KB per 224x224 grayscale case), so later epochs only augment tensors; with ``cache_dir`` it is
    kept on disk instead (:class:`~gctxseg.data.cache.DiskCache`), shared by every loader worker and
    rank and by later runs. The first access to a slice of a volume loads all of that volume's slices in
    the set, so each volume is decoded once even when the samples come in shuffled order.

    Args:
        pairs: image/mask files.
        value_map: raw mask values -> class indices.
        size: (H, W) every sample is resized to.
        channels: input channels of the model (grayscale images are repeated to fill 3).
        transform: a v2 transform taking ``(tv_tensors.Image, tv_tensors.Mask)``.
        cache: keep decoded samples in memory (ignored with ``cache_dir``).
        intensity: values as read -> [0, 1] input (the fingerprint's mapping); None = as read.
        cache_dir: keep decoded samples as memory-mapped ``.npy`` files in this folder instead of in memory.
    """

    def __init__(
        self,
        pairs: Sequence[ImagePair],
        value_map: MaskValueMap,
        size: tuple[int, int],
        channels: int,
        transform: Callable | None = None,
        cache: bool = True,
        intensity: IntensityMapping | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.pairs = list(pairs)
        self.value_map = value_map
        self.size = tuple(size)
        self.channels = channels
        self.transform = transform
        self.intensity = intensity
        self.disk_cache = DiskCache(cache_dir, size, channels, value_map, intensity) if cache_dir else None
        use_memory = cache and self.disk_cache is None
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = {} if use_memory else None
        self._volume_items: dict[Path, list[int]] = {}  # volume file -> indices of its slices here
        for i, pair in enumerate(self.pairs):
            if pair.slice_index is not None:
                self._volume_items.setdefault(pair.image, []).append(i)

    def __len__(self) -> int:
        return len(self.pairs)

    def _decoded_with(self, index: int) -> list[int]:
        """``index`` and, for a volume's slice, the volume's other slices: the reader keeps the volume meanwhile."""
        pair = self.pairs[index]
        return self._volume_items[pair.image] if pair.slice_index is not None else [index]

    def load_untransformed(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``index`` decoded and resized but not augmented (image ``C x H x W`` float32, mask ``H x W``
        uint8), from the cache when it is there: what a preview, a class count or a sampler reads."""
        if self.disk_cache is not None:
            loaded = self.disk_cache.load(self.pairs[index])
            if loaded is None:
                for i in self._decoded_with(index):
                    if i == index or not self.disk_cache.has(self.pairs[i]):
                        image, mask = self._decode(i)
                        self.disk_cache.save(self.pairs[i], image, mask)
                        if i == index:
                            loaded = image.float(), mask
            return loaded
        if self.cache is None:
            image, mask = self._decode(index)
            return image.float(), mask
        if index not in self.cache:
            for i in self._decoded_with(index):
                self.cache[i] = self._decode(i)
        image, mask = self.cache[index]
        return image.float(), mask


    def _decode(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = load_resized(self.pairs[index], self.value_map, self.size, self.channels, self.intensity)
        return image.half(), mask  # the cached precision, also on first use, so every epoch sees the same input

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, mask = self.load_untransformed(index)
        image, mask = tv_tensors.Image(image), tv_tensors.Mask(mask)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long(), index
