"""Training and validation transforms (torchvision.transforms.v2; masks move with their images)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

__all__ = ["train_transforms", "eval_transforms"]


def train_transforms(
    mean: Sequence[float], std: Sequence[float], *, hflip: float = 0.5, vflip: float = 0.0
) -> v2.Compose:
    """Augmentation on already-resized tensors: flips, a small affine, brightness/contrast, then normalise.

    ``mean``/``std`` give the channel count; with other than 1 or 3 channels (stacked CT windows) the
    brightness/contrast jitter is left out.

    Vertical flips are off by default: an OCT B-scan has the vitreous above the retina, and a model
    should not have to learn upside-down anatomy. Masks are ``tv_tensors.Mask`` so v2 moves them with
    nearest-neighbour sampling and leaves them out of the intensity changes.
    """
    steps: list[torch.nn.Module] = [v2.RandomHorizontalFlip(hflip)]
    if vflip > 0:
        steps.append(v2.RandomVerticalFlip(vflip))
    steps.append(v2.RandomApply([v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1))], p=0.5))
    if len(mean) in (1, 3):  # torchvision's jitter takes 1 or 3 channels; stacked CT windows (2, 4 ...) skip it
        steps.append(v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2)], p=0.5))
    steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return v2.Compose(steps)


def eval_transforms(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Validation/inference: normalise only (resizing happens when the sample is loaded)."""
    return v2.Compose([v2.Normalize(mean=list(mean), std=list(std))])
