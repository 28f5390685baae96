"""Vendor OCT exports built from phantom eyes of known geometry: HEYEX VOL and DICOM Ophthalmic Tomography writers,
the phantom's truth, and a stand-in model that answers with the true masks. Imported by the tests of reading,
converting and measuring clinic files; a module that imports it is skipped where eyepy is not installed."""

from __future__ import annotations

import json
from collections.abc import Sequence
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


def write_heyex_vol(path: str | Path, bscans: np.ndarray, ascan_mm: float, axial_mm: float, distance_mm: float,
                    eye: str, positions: Sequence[tuple[float, float, float, float]],
                    localizer: np.ndarray | None = None, localizer_mm: float = 0.01) -> Path:
    """Write ``bscans`` (``S x H x W`` uint8) as a HEYEX VOL file with eyepy's own VOL structure.

    eyepy 0.21's ``HeVolWriter`` cannot encode the header's dates on Python 3.11 (its date adapter wants ISO text
    and a float for a 64-bit integer), so its ``vol_format`` is built here with fixed dates; every other field is
    written as ``HeVolWriter`` writes it (intensities through ``to_vol_intensity``).
    """
    import construct as cs
    from eyepy.core.utils import to_vol_intensity
    from eyepy.io.he.vol_reader import vol_format

    count, height, width = bscans.shape
    localizer = np.zeros((256, 256), np.uint8) if localizer is None else localizer
    date = "2000-01-01T00:00:00"
    fmt = cs.Struct(*[("exam_time" / cs.Int64ul) if sc.name == "exam_time" else sc for sc in vol_format.subcons])
    items = [dict(bscan_hdr_size=256 + 17 * 4 * width, start_x=p[0], start_y=p[1], end_x=p[2], end_y=p[3],
                  num_seg=0, quality=30.0, shift=0, iv_transformation=[0.0] * 6,
                  layer_segmentations=np.zeros((0, width), np.float32),
                  data=to_vol_intensity(b.astype(np.float32) / 255.0)) for b, p in zip(bscans, positions)]
    header = dict(size_x=width, size_y=height, n_bscans=count, scale_x=ascan_mm, scale_y=axial_mm, distance=distance_mm,
                  size_x_slo=localizer.shape[1], size_y_slo=localizer.shape[0], scale_x_slo=localizer_mm,
                  scale_y_slo=localizer_mm, field_size_slo=30, scan_focus=0.0, scan_position=eye, exam_time=0,
                  scan_pattern=3, id="1", reference_id="", pid=0, patient_id="phantom", dob=date, vid=0, visit_id="",
                  visit_date=date, grid_type=0, grid_offset=0, grid_type1=0, grid_offset1=0, prog_id="",
                  localizer=localizer.astype(np.uint8), bscans=items)
    path = Path(path)
    path.write_bytes(fmt.build(header))
    return path


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


def _truth_in_columns(truth: dict, eye: str) -> dict[str, float]:
    """truth.json's image-side subfields named as etdrs.csv names them for ``eye`` (nasal = image right of OD)."""
    nasal, temporal = ("right", "left") if eye == "OD" else ("left", "right")
    out = {"central": truth["central"], "total": truth["total"]}
    for ring in ("inner", "outer"):
        out.update({f"{ring}_superior": truth[f"{ring}_superior"], f"{ring}_inferior": truth[f"{ring}_inferior"],
                    f"{ring}_nasal": truth[f"{ring}_{nasal}"], f"{ring}_temporal": truth[f"{ring}_{temporal}"]})
    return out


def assert_within_5_percent(record: dict, truth: dict, eye: str) -> None:
    """Total and the 1/3/6 mm circles within 5% of truth.json; each subfield within 5% of the eye's fluid (a
    32-B-scan raster 0.19 mm apart cuts a 0.3 mm pocket in one or two places: a subfield alone is coarser)."""
    named = _truth_in_columns(truth, eye)
    sides = ("superior", "nasal", "inferior", "temporal")
    circles = {"circle_1mm": named["central"]}
    circles["circle_3mm"] = circles["circle_1mm"] + sum(named[f"inner_{q}"] for q in sides)
    circles["circle_6mm"] = circles["circle_3mm"] + sum(named[f"outer_{q}"] for q in sides)
    for key, true in {**circles, "total": truth["total"]}.items():
        assert float(record[f"edema_{key}_nl"]) == pytest.approx(true, rel=0.05, abs=0.5), key
    for key, true in named.items():
        assert abs(float(record[f"edema_{key}_nl"]) - true) <= 0.05 * truth["total"], key
