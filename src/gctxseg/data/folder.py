"""Pairing images with masks: ``.../images/NAME<img_f>`` with ``.../masks/NAME<mask_f>``.

Volumes (NIfTI) are paired as files, then split into one pair per 2D slice by :func:`expand_slices`,
which also checks that each mask volume lies on its image's grid and can leave out most slices
without foreground.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import DatasetError, raise_collected
from .io import NIFTI_SUFFIXES, file_stem, read_info, read_mask

__all__ = ["ImagePair", "as_suffix", "is_apple_double", "expand_slices", "find_images", "find_pairs", "masks_dir_for",
           "shared_images"]


@dataclass(frozen=True)
class ImagePair:
    """An image file and its mask file (paired by file stem); ``slice_index`` addresses a volume's slice."""

    image: Path
    mask: Path
    slice_index: int | None = None

    @property
    def name(self) -> str:
        stem = file_stem(self.image)
        return stem if self.slice_index is None else f"{stem}_{self.slice_index:03d}"

    def __str__(self) -> str:
        return str(self.image) if self.slice_index is None else f"{self.image} (slice {self.slice_index})"


def masks_dir_for(images_dir: str | Path) -> Path:
    """The ``masks`` folder beside an ``images`` folder."""
    return Path(images_dir).parent / "masks"


def _stem(path: Path, suffix: str) -> str:
    # ``name.nii.gz`` style double suffixes: strip the configured suffix, not just the last dot part
    return path.name[: -len(suffix)] if suffix and path.name.lower().endswith(suffix.lower()) else path.stem


def is_apple_double(path: Path) -> bool:
    """``._NAME``: the metadata file macOS writes beside each file it copies to a foreign disk (a USB stick, a
    share): not an image, though it ends in ``.png``."""
    return path.name.startswith("._")


def as_suffix(suffix: str) -> str:
    """``png`` (a bare extension, as users type it) as ``.png``; ``.png`` and ``_mask.png`` as they are. Without
    the dot, ``000.png`` would match ``png`` and lose the dot from its stem (its mask looked for as ``000..png``)."""
    return f".{suffix}" if suffix and "." not in suffix else suffix


def _suffixes_found(folder: Path) -> str:
    counts: dict[str, int] = {}
    for p in folder.iterdir():
        if p.is_file() and not p.name.startswith("."):
            end = ".nii.gz" if p.name.lower().endswith(".nii.gz") else p.suffix.lower()
            counts[end] = counts.get(end, 0) + 1
    common = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{n} {end or 'without a suffix'}" for end, n in common)


def find_images(folder: str | Path, suffix: str | tuple[str, ...]) -> list[Path]:
    """Files in ``folder`` ending in ``suffix`` (one or several, case-insensitive), sorted; errors when none."""
    folder = Path(folder)
    suffixes = tuple(as_suffix(s) for s in ((suffix,) if isinstance(suffix, str) else suffix))
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found; point the option at a folder of images")
    ends = tuple(s.lower() for s in suffixes)
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.name.lower().endswith(ends) and not is_apple_double(p))
    if not files:
        shown = "', '*".join(suffixes) if len(suffixes) < 4 else "' or '*".join((suffixes[0], suffixes[-1]))
        found = _suffixes_found(folder)
        raise DatasetError(f"{folder}: no images matching '*{shown}'"
                           + (f" (it holds {found}); pass the images' suffix with --img_f" if found
                              else "; check the folder or the suffix (--img_f)"))
    return files


def find_pairs(images_dir: str | Path, img_suffix: str = ".jpg", mask_suffix: str = ".png") -> list[ImagePair]:
    """Pair every image in ``images_dir`` with the mask of the same stem in the sibling ``masks`` folder.

    Raises:
        DatasetError: no images, no masks folder, or images without a mask (all listed at once).
    """
    img_suffix, mask_suffix = as_suffix(img_suffix), as_suffix(mask_suffix)
    images = find_images(images_dir, img_suffix)
    masks_dir = masks_dir_for(images_dir)
    if not masks_dir.is_dir():
        raise DatasetError(f"{masks_dir}: masks folder not found; put masks in a 'masks' folder beside 'images'")
    pairs, missing = [], []
    for image in images:
        mask = masks_dir / (_stem(image, img_suffix) + mask_suffix)
        if mask.is_file():
            pairs.append(ImagePair(image, mask))
        else:
            missing.append((mask, image))
    found = _suffixes_found(masks_dir) if missing and not pairs else ""
    if found:  # not one mask: most likely the suffix
        raise DatasetError(f"{masks_dir}: no mask named like the {len(images)} images with the suffix {mask_suffix} "
                           f"(e.g. {missing[0][0].name}; it holds {found}); pass the masks' suffix with --mask_f")
    raise_collected([f"{mask}: no mask for {image}; add one with the same stem (suffix {mask_suffix})"
                     for mask, image in missing])
    return pairs


def shared_images(train: Sequence[ImagePair], val: Sequence[ImagePair]) -> list[tuple[Path, Path]]:
    """(validation image, training image) pairs of byte-identical files (a copied folder, a scan in both sets):
    validation on them measures what was memorised. Files are hashed only where their sizes match."""
    import hashlib

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    by_size: dict[int, list[Path]] = {}
    for path in dict.fromkeys(p.image for p in train):
        by_size.setdefault(path.stat().st_size, []).append(path)
    hashed: dict[Path, str] = {}
    shared = []
    for path in dict.fromkeys(p.image for p in val):
        same_size = by_size.get(path.stat().st_size, [])
        if same_size:
            mine = digest(path)
            twin = next((t for t in same_size if hashed.setdefault(t, digest(t)) == mine), None)
            if twin is not None:
                shared.append((path, twin))
    return shared


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def _volume_problem(pair: ImagePair) -> tuple[int | None, str | None]:
    """(slices, None) for a volume whose mask fits it, (None, None) for a 2D file, (None, problem) else."""
    if not pair.image.name.lower().endswith(NIFTI_SUFFIXES):
        return None, None  # pictures and DICOM slices are 2D: no header to read here
    info = read_info(pair.image)
    if not info.is_volume:
        return None, None
    mask = read_info(pair.mask)
    if not mask.is_volume:
        return None, f"{pair.mask}: 2D mask for the volume {pair.image}; save the mask as a NIfTI volume"
    if mask.shape != info.shape:
        return None, (f"{pair.mask}: volume {_fmt(mask.shape)} but its image is {_fmt(info.shape)}; "
                      f"re-export the mask on the image grid")
    diff = float(np.abs(mask.affine - info.affine).max())
    if diff > 1e-3 * max(1.0, float(np.abs(info.affine).max())):
        return None, (f"{pair.mask}: affine differs from its image's by up to {diff:.3g} mm; "
                      f"resample the mask onto the image grid")
    return info.depth, None


def expand_slices(
    pairs: Sequence[ImagePair], empty_slice_fraction: float = 1.0, seed: int = 0
) -> list[ImagePair]:
    """Split volume pairs into one pair per slice; optionally keep few slices without foreground.

    2D pairs pass through unchanged. With ``empty_slice_fraction < 1`` every mask is read: items
    (slices or 2D images) whose mask holds only the background value (the smallest mask value of the
    set) are sampled down to that fraction, drawn at random with ``seed``; items with foreground are
    all kept. Order is preserved.

    Args:
        pairs: file pairs from :func:`find_pairs`.
        empty_slice_fraction: share of background-only items kept, in [0, 1] (1 keeps all).
        seed: seed of the draw.

    Raises:
        ValueError: ``empty_slice_fraction`` outside [0, 1].
        DatasetError: unreadable headers, a 2D mask for a volume, a mask volume whose shape or affine
            differs from its image (all checked, then one error).
    """
    if not 0 <= empty_slice_fraction <= 1:
        raise ValueError(f"empty_slice_fraction must be in [0, 1], got {empty_slice_fraction}")
    items, problems = [], []
    for pair in pairs:
        try:
            depth, problem = _volume_problem(pair)
        except DatasetError as err:
            depth, problem = None, str(err)
        if problem:
            problems.append(problem)
        elif depth is None:
            items.append(pair)
        else:
            items += [replace(pair, slice_index=k) for k in range(depth)]
    raise_collected(problems)
    if empty_slice_fraction >= 1 or not items:
        return items
    lows, highs = [], []
    for item in items:
        mask = read_mask(item.mask, item.slice_index)
        lows.append(int(mask.min()))
        highs.append(int(mask.max()))
    background = min(lows)
    empty = [i for i, high in enumerate(highs) if high == background]
    rng = np.random.default_rng(seed)
    kept = rng.choice(empty, size=round(empty_slice_fraction * len(empty)), replace=False) if empty else []
    dropped = set(empty) - {int(i) for i in kept}
    return [item for i, item in enumerate(items) if i not in dropped]
