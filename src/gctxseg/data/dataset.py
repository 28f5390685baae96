"""Folder segmentation dataset: decode once, resize to the training size, cache, augment on tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from .fingerprint import MaskValueMap
from .folder import ImagePair
from .io import read_image, read_mask

__all__ = ["SegmentationDataset", "load_resized"]


def load_resized(
    pair: ImagePair, value_map: MaskValueMap, size: tuple[int, int], channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a pair, map mask values to classes and resize to ``size``.

    Returns:
        image ``C x H x W`` float32 in [0, 1] (antialiased bilinear), mask ``H x W`` uint8 class indices
        (nearest neighbour, so no value is invented between classes).
    """
    image = torch.from_numpy(np.ascontiguousarray(read_image(pair.image).transpose(2, 0, 1)))
    if image.shape[0] < channels:
        image = image.expand(channels, -1, -1)  # grayscale image in a colour dataset
    mask = torch.from_numpy(value_map.encode(read_mask(pair.mask), source=pair.mask).astype(np.uint8))
    if tuple(image.shape[-2:]) != tuple(size):
        image = TF.resize(image, list(size), antialias=True)
        mask = TF.resize(mask[None], list(size), interpolation=TF.InterpolationMode.NEAREST_EXACT)[0]
    return image.clamp_(0, 1), mask


class SegmentationDataset(Dataset):
    """Image/mask pairs as ``(image C x H x W float32, mask H x W int64, index)``.

    Each pair is decoded and resized once, then kept in memory (float16 image, uint8 mask: about
    100 KB per 224x224 grayscale case), so later epochs only augment tensors.

    Args:
        pairs: image/mask files.
        value_map: raw mask values -> class indices.
        size: (H, W) every sample is resized to.
        channels: input channels of the model (grayscale images are repeated to fill 3).
        transform: a v2 transform taking ``(tv_tensors.Image, tv_tensors.Mask)``.
        cache: keep decoded samples in memory.
    """

    def __init__(
        self,
        pairs: Sequence[ImagePair],
        value_map: MaskValueMap,
        size: tuple[int, int],
        channels: int,
        transform: Callable | None = None,
        cache: bool = True,
    ) -> None:
        self.pairs = list(pairs)
        self.value_map = value_map
        self.size = tuple(size)
        self.channels = channels
        self.transform = transform
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cache is not None and index in self.cache:
            image, mask = self.cache[index]
            return image.float(), mask
        image, mask = load_resized(self.pairs[index], self.value_map, self.size, self.channels)
        image = image.half()  # the cached precision, also on first use, so every epoch sees the same input
        if self.cache is not None:
            self.cache[index] = (image, mask)
        return image.float(), mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, mask = self._load(index)
        image, mask = tv_tensors.Image(image), tv_tensors.Mask(mask)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long(), index
