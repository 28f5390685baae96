"""Datasets, dataset fingerprint and mask-value discovery, transforms, readers and the OCT phantom."""

from .dataset import SegmentationDataset
from .errors import DatasetError
from .fingerprint import DatasetFingerprint, MaskValueMap, fingerprint_dataset
from .folder import ImagePair, find_images, find_pairs, masks_dir_for
from .io import IMAGE_SUFFIXES, read_image, read_mask

__all__ = [
    "DatasetError",
    "DatasetFingerprint",
    "IMAGE_SUFFIXES",
    "ImagePair",
    "MaskValueMap",
    "SegmentationDataset",
    "find_images",
    "find_pairs",
    "fingerprint_dataset",
    "masks_dir_for",
    "read_image",
    "read_mask",
]
