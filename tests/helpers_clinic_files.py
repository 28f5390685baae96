"""Vendor OCT exports built from phantom eyes of known geometry: HEYEX VOL and DICOM Ophthalmic Tomography writers,
the phantom's truth, and a stand-in model that answers with the true masks. Imported by the tests of reading,
converting and measuring clinic files; a module that imports it is skipped where eyepy is not installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gctxseg.data import IntensityMapping, MaskValueMap
from gctxseg.data.phantom_volume import synthesize_volumes

pytest.importorskip("eyepy")

SHAPE = (32, 64, 96)  # B-scans, rows, columns of the phantom eyes: 6 mm x 2 mm x 6 mm
CLASSES = ("edema", "hole")
LOCALIZER_MM = 0.02  # mm per localizer pixel in the DICOM's frame locations


def phantom_eyes(root: Path) -> tuple[Path, dict, dict]:
    """Two phantom eyes written to ``root`` (truth.json), their true label stacks and images (B-scan 0 superior)."""
    done = synthesize_volumes(root, n=2, shape=SHAPE, seed=3, hole_rate=0.5)
    truth = json.loads((root / "truth.json").read_text())
    lookup = MaskValueMap((0, 128, 255))
    eyes = {}
    for name in truth:
        masks = [lookup.encode(np.asarray(Image.open(root / "masks" / f"{name}_b{s:03d}.png")))
                 for s in range(SHAPE[0])]
        images = [np.asarray(Image.open(root / "images" / f"{name}_b{s:03d}.jpg")) for s in range(SHAPE[0])]
        eyes[name] = (np.stack(images).astype(np.uint8), np.stack(masks).astype(np.int64))
    return root, done, {"truth": truth, "eyes": eyes}


def write_vol(path: Path, images: np.ndarray, done: dict, eye: str) -> Path:
    """A HEYEX VOL as Spectralis writes one: B-scan 0 inferior (the phantom's stack reversed), positions in mm."""
    from gctxseg.data.oct_volumes import write_heyex_vol

    count, _, width = images.shape
    top, left = 1.0, 0.5
    positions = [(left, top + (count - 1 - k) * done["slice_mm"], left + (width - 1) * done["col_mm"],
                  top + (count - 1 - k) * done["slice_mm"]) for k in range(count)]
    return write_heyex_vol(path, images[::-1], done["col_mm"], done["row_mm"], done["slice_mm"], eye, positions)


def write_opt_dicom(path: Path, images: np.ndarray, done: dict, laterality: str, *, gaps: np.ndarray | None = None):
    """An OCT multi-frame DICOM (Ophthalmic Tomography Image Storage) with per-frame functional groups."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from gctxseg.data.oct_volumes import OPT_SOP_CLASS

    count, rows, cols = images.shape
    steps = np.full(count - 1, done["slice_mm"]) if gaps is None else gaps
    offsets = np.concatenate([[0.0], np.cumsum(steps)])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = OPT_SOP_CLASS, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = OPT_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality, ds.ImageLaterality, ds.PatientID = "OPT", laterality, "phantom"
    ds.NumberOfFrames, ds.Rows, ds.Columns = count, rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    measures = Dataset()
    measures.PixelSpacing = [done["row_mm"], done["col_mm"]]
    measures.SliceThickness = done["slice_mm"]
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 0, 1]
    shared = Dataset()
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = Sequence([measures]), Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in range(count):
        position, location, item = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [0.0, float(offsets[k]), 0.0]
        row = 50 + offsets[k] / LOCALIZER_MM  # superior first: down the localizer
        location.ReferenceCoordinates = [row, 10.0, row, 10.0 + (cols - 1) * done["col_mm"] / LOCALIZER_MM]
        item.PlanePositionSequence, item.OphthalmicFrameLocationSequence = Sequence([position]), Sequence([location])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.ascontiguousarray(images, np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


class TruthLookupPredictor:
    """Test-only stand-in for a model: returns the phantom's true mask of each B-scan it is shown (looked up by the
    B-scan's pixels), so predict's whole path is measured against truth.json."""

    def __init__(self, eyes: dict) -> None:
        self.intensity, self.value_map = IntensityMapping(), MaskValueMap((0, 128, 255))
        self.table = {images[s].tobytes(): labels[s] for images, labels in eyes.values() for s in range(len(images))}

    @property
    def num_classes(self) -> int:
        return 3

    def predict_image(self, image: np.ndarray, source="image") -> np.ndarray:
        return self.table[np.round(image[..., 0] * 255).astype(np.uint8).tobytes()]
