"""The localizer of a DICOM OPT: the Ophthalmic Photography object its frames reference, read from the same folder,
with the en-face map drawn on it where the frame locations put the B-scans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_clinic_files import CLASSES, LOCALIZER_MM, SHAPE, write_opt_dicom
from PIL import Image

from gctxseg.clinical.etdrs_rows import write_volume_reports
from gctxseg.clinical.volume_readout import volume_readout
from gctxseg.data.oct_volumes import read_oct_volume

pydicom = pytest.importorskip("pydicom")
OP_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.5.1"  # Ophthalmic Photography 8 Bit Image Storage


def write_op_dicom(path: Path, picture: np.ndarray, pixel_mm: float) -> str:
    """An Ophthalmic Photography image (the infrared fundus picture); returns its SOP Instance UID."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = OP_SOP_CLASS, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = OP_SOP_CLASS, meta.MediaStorageSOPInstanceUID, "OP"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = *picture.shape, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelSpacing = [pixel_mm, pixel_mm]
    ds.PixelData = np.ascontiguousarray(picture, np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


@pytest.mark.parametrize("how", ["frame locations", "ReferencedImageSequence"])
def test_opt_localizer_is_read_beside_it_and_the_fovea_lands_where_the_frames_say(phantom, tmp_path, how):  # noqa: F811
    _, done, data = phantom
    images, labels = data["eyes"]["eye000"]
    picture = np.tile(np.linspace(0, 255, 600).astype(np.uint8), (500, 1))  # 500 x 600: rows and columns differ
    uid = write_op_dicom(tmp_path / "fundus.dcm", picture, LOCALIZER_MM)
    opt = write_opt_dicom(tmp_path / "eye.dcm", images, done, "R")
    ds = pydicom.dcmread(opt)
    if how == "frame locations":
        for item in ds.PerFrameFunctionalGroupsSequence:
            item.OphthalmicFrameLocationSequence[0].ReferencedSOPInstanceUID = uid
    else:
        reference = pydicom.Dataset()
        reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = OP_SOP_CLASS, uid
        ds.ReferencedImageSequence = pydicom.Sequence([reference])
    ds.save_as(opt)
    volume = read_oct_volume(opt)
    assert np.array_equal(volume.localizer, picture) and volume.localizer_mm == (LOCALIZER_MM, LOCALIZER_MM)
    _, report = volume_readout(volume, labels, CLASSES, columns_eye="OD")
    view, fovea = report.localizer, report.fovea
    assert view is not None
    # write_opt_dicom puts B-scan k at localizer row 50 + k * slice / pixel, its columns from localizer column 10
    expected = (10 + fovea.column * done["col_mm"] / LOCALIZER_MM, 50 + fovea.slice * done["slice_mm"] / LOCALIZER_MM)
    assert view.pixel(fovea.slice, fovea.column) == pytest.approx(expected)
    (tmp_path / "out").mkdir()
    write_volume_reports([report], tmp_path / "out", CLASSES, "OD", say=False)
    drawn = np.asarray(Image.open(tmp_path / "out" / "enface" / "eye.dcm_localizer.png"))
    assert drawn.ndim == 3 and drawn.shape[0] > 200


def test_opt_without_its_localizer_beside_it_has_no_localizer_map(phantom, tmp_path):  # noqa: F811
    _, done, data = phantom
    images, labels = data["eyes"]["eye000"]
    opt = write_opt_dicom(tmp_path / "eye.dcm", images, done, "R")
    ds = pydicom.dcmread(opt)
    for item in ds.PerFrameFunctionalGroupsSequence:
        item.OphthalmicFrameLocationSequence[0].ReferencedSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(opt)
    volume = read_oct_volume(opt)
    assert volume.localizer is None and len(volume.bscans) == SHAPE[0]
    assert volume_readout(volume, labels, CLASSES, columns_eye="OD")[1].localizer is None
