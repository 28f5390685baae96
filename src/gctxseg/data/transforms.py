"""Training and validation transforms (torchvision.transforms.v2; masks move with their images)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

__all__ = ["AUGMENTATIONS", "train_transforms", "eval_transforms"]


AUGMENTATIONS = ("standard", "strong")


def train_transforms(
    mean: Sequence[float], std: Sequence[float], *, hflip: float = 0.5, vflip: float = 0.0, strength: str = "standard"
) -> v2.Compose:
    """Augmentation on already-resized tensors: flips, an affine, brightness/contrast, then normalise.

    ``mean``/``std`` give the channel count; with other than 1 or 3 channels (stacked CT windows) the
    brightness/contrast jitter is left out. ``strength`` "standard" is a small affine and jitter on half the
    images; "strong" is closer to nnU-Net's 2D scheme (wider affine and jitter on most images, blur, noise):
    docs/real-oct.md measures both on real B-scans.

    Vertical flips are off by default: an OCT B-scan has the vitreous above the retina, and a model
    should not have to learn upside-down anatomy. Masks are ``tv_tensors.Mask`` so v2 moves them with
    nearest-neighbour sampling and leaves them out of the intensity changes.
    """
    if strength not in AUGMENTATIONS:
        raise ValueError(f"augmentation {strength!r} is not one of {AUGMENTATIONS}")
    strong = strength == "strong"
    steps: list[torch.nn.Module] = [v2.RandomHorizontalFlip(hflip)]
    if vflip > 0:
        steps.append(v2.RandomVerticalFlip(vflip))
    affine = v2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.8, 1.25)) if strong else \
        v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1))
    steps.append(v2.RandomApply([affine], p=0.7 if strong else 0.5))
    if len(mean) in (1, 3):  # torchvision's jitter takes 1 or 3 channels; stacked CT windows (2, 4 ...) skip it
        jitter = 0.3 if strong else 0.2
        steps.append(v2.RandomApply([v2.ColorJitter(brightness=jitter, contrast=jitter)], p=0.7 if strong else 0.5))
    if strong:  # intensities are in [0, 1] here (intensity mapping), which GaussianNoise's clip assumes
        steps.append(v2.RandomApply([v2.GaussianBlur(5, sigma=(0.5, 1.0))], p=0.2))
        steps.append(v2.RandomApply([v2.GaussianNoise(sigma=0.03)], p=0.3))
    steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return v2.Compose(steps)


def eval_transforms(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Validation/inference: normalise only (resizing happens when the sample is loaded)."""
    return v2.Compose([v2.Normalize(mean=list(mean), std=list(std))])
