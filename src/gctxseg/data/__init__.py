"""Datasets, dataset fingerprint and mask-value discovery, transforms, readers (pictures, DICOM, NIfTI),
CT windowing and the OCT phantom."""

from .ct import WINDOW_PRESETS, CTWindow, resolve_windows, window_ct
from .dataset import SegmentationDataset
from .errors import DatasetError, DataWarning
from .fingerprint import DatasetFingerprint, MaskValueMap, fingerprint_dataset
from .folder import ImagePair, expand_slices, find_images, find_pairs, masks_dir_for
from .intensity import IntensityMapping
from .io import IMAGE_SUFFIXES, READABLE_SUFFIXES, read_image, read_info, read_mask

__all__ = [
    "CTWindow",
    "DataWarning",
    "DatasetError",
    "DatasetFingerprint",
    "IMAGE_SUFFIXES",
    "ImagePair",
    "IntensityMapping",
    "MaskValueMap",
    "READABLE_SUFFIXES",
    "SegmentationDataset",
    "WINDOW_PRESETS",
    "expand_slices",
    "find_images",
    "find_pairs",
    "fingerprint_dataset",
    "masks_dir_for",
    "read_image",
    "read_info",
    "read_mask",
    "resolve_windows",
    "window_ct",
]
