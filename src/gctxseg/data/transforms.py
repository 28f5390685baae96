"""Training and validation transforms (torchvision.transforms.v2; masks move with their images)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.transforms import v2

__all__ = ["AUGMENTATIONS", "STRENGTHS", "Augmentation", "train_transforms", "eval_transforms"]


@dataclass(frozen=True)
class Augmentation:
    """One augmentation strength: affine and brightness/contrast ranges, and how often each step is applied."""

    degrees: float
    translate: float  # fraction of the size, each axis
    scale: tuple[float, float]
    jitter: float  # brightness and contrast factor range, 1 +- jitter
    p: float  # share of images given the affine, and the jitter
    blur: float = 0.0  # share of images blurred (0 = no step)
    noise: float = 0.0  # share of images given Gaussian noise (0 = no step)


# "standard": a small affine and jitter on half the images; "strong": closer to nnU-Net's 2D scheme (wider affine
# and jitter on most images, blur, noise). docs/real-oct.md measures both on real B-scans; the planner
# (training/planning.py) picks one.
STRENGTHS = {
    "standard": Augmentation(degrees=10, translate=0.05, scale=(0.9, 1.1), jitter=0.2, p=0.5),
    "strong": Augmentation(degrees=15, translate=0.1, scale=(0.8, 1.25), jitter=0.3, p=0.7, blur=0.2, noise=0.3),
}
AUGMENTATIONS = tuple(STRENGTHS)


def train_transforms(
    mean: Sequence[float], std: Sequence[float], *, hflip: float = 0.5, vflip: float = 0.0, strength: str = "standard"
) -> v2.Compose:
    """Augmentation on already-resized tensors: flips, an affine, brightness/contrast, then normalise.

    ``mean``/``std`` give the channel count; with other than 1 or 3 channels (stacked CT windows) the
    brightness/contrast jitter is left out. ``strength`` names one of :data:`STRENGTHS`.

    Vertical flips are off by default: an OCT B-scan has the vitreous above the retina, and a model
    should not have to learn upside-down anatomy. Masks are ``tv_tensors.Mask`` so v2 moves them with
    nearest-neighbour sampling and leaves them out of the intensity changes.
    """
    if strength not in STRENGTHS:
        raise ValueError(f"augmentation {strength!r} is not one of {AUGMENTATIONS}")
    aug = STRENGTHS[strength]
    steps: list[torch.nn.Module] = [v2.RandomHorizontalFlip(hflip)]
    if vflip > 0:
        steps.append(v2.RandomVerticalFlip(vflip))
    affine = v2.RandomAffine(degrees=aug.degrees, translate=(aug.translate, aug.translate), scale=aug.scale)
    steps.append(v2.RandomApply([affine], p=aug.p))
    if len(mean) in (1, 3):  # torchvision's jitter takes 1 or 3 channels; stacked CT windows (2, 4 ...) skip it
        steps.append(v2.RandomApply([v2.ColorJitter(brightness=aug.jitter, contrast=aug.jitter)], p=aug.p))
    # absent steps are left out, not applied with p=0: that would still draw random numbers
    if aug.blur > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(5, sigma=(0.5, 1.0))], p=aug.blur))
    if aug.noise > 0:  # intensities are in [0, 1] here (intensity mapping), which GaussianNoise's clip assumes
        steps.append(v2.RandomApply([v2.GaussianNoise(sigma=0.03)], p=aug.noise))
    steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return v2.Compose(steps)


def eval_transforms(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Validation/inference: normalise only (resizing happens when the sample is loaded)."""
    return v2.Compose([v2.Normalize(mean=list(mean), std=list(std))])
