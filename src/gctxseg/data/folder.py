"""Pairing images with masks: ``.../images/NAME<img_f>`` with ``.../masks/NAME<mask_f>``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import DatasetError, raise_collected

__all__ = ["ImagePair", "find_images", "find_pairs", "masks_dir_for"]


@dataclass(frozen=True)
class ImagePair:
    """An image file and its mask file (paired by file stem)."""

    image: Path
    mask: Path

    @property
    def name(self) -> str:
        return self.image.stem


def masks_dir_for(images_dir: str | Path) -> Path:
    """The ``masks`` folder beside an ``images`` folder."""
    return Path(images_dir).parent / "masks"


def _stem(path: Path, suffix: str) -> str:
    # ``name.nii.gz`` style double suffixes: strip the configured suffix, not just the last dot part
    return path.name[: -len(suffix)] if suffix and path.name.lower().endswith(suffix.lower()) else path.stem


def find_images(folder: str | Path, suffix: str) -> list[Path]:
    """Files in ``folder`` ending in ``suffix`` (case-insensitive), sorted; errors when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found; point the option at a folder of images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(suffix.lower()))
    if not files:
        raise DatasetError(f"{folder}: no images matching '*{suffix}'; check the folder or the suffix (--img_f)")
    return files


def find_pairs(images_dir: str | Path, img_suffix: str = ".jpg", mask_suffix: str = ".png") -> list[ImagePair]:
    """Pair every image in ``images_dir`` with the mask of the same stem in the sibling ``masks`` folder.

    Raises:
        DatasetError: no images, no masks folder, or images without a mask (all listed at once).
    """
    images = find_images(images_dir, img_suffix)
    masks_dir = masks_dir_for(images_dir)
    if not masks_dir.is_dir():
        raise DatasetError(f"{masks_dir}: masks folder not found; put masks in a 'masks' folder beside 'images'")
    pairs, problems = [], []
    for image in images:
        mask = masks_dir / (_stem(image, img_suffix) + mask_suffix)
        if mask.is_file():
            pairs.append(ImagePair(image, mask))
        else:
            problems.append(f"{mask}: no mask for {image}; add one with the same stem (suffix {mask_suffix})")
    raise_collected(problems)
    return pairs
