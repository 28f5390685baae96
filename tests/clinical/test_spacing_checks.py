"""One check for a pixel spacing, whether a flag, spacing.json or a DICOM header gives it; predict says which
spacing it used and from where."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import torch
from conftest import one_line
from helpers_checkpoints import checkpoint_of
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from gctxseg.cli import main
from gctxseg.clinical.measurements import (
    MeasurementOptions,
    plan_measurements,
    read_spacing_file,
)
from gctxseg.data import DatasetError, read_info

BAD_SPACINGS = [
    ((1e200, 1e200), "implausible, above 10 mm per pixel"),  # overflowed areas to inf
    ((11.0, 0.5), "implausible, above 10 mm per pixel"),
    ((True, 1), "numbers only"),
    (("0.5", "0.5"), "numbers only"),
    ((math.nan, 0.5), "finite and > 0"),
    ((0.5, -0.5), "finite and > 0"),
    ((0.5,), "must be 2 numbers"),
]


def _dicom(path, pixel_spacing: bytes) -> None:
    """A 4 x 4 CT slice whose PixelSpacing holds exactly ``pixel_spacing`` (pydicom would not write nan)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, generate_uid(), "CT"
    ds.Rows, ds.Columns, ds.PixelSpacing = 4, 4, [1, 1]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.zeros((4, 4), np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    at = data.index(b"\x28\x00\x30\x00DS")  # (0028,0030) PixelSpacing, explicit VR little endian
    old = struct.unpack("<H", data[at + 6 : at + 8])[0]
    value = pixel_spacing + b" " * (len(pixel_spacing) % 2)
    path.write_bytes(data[: at + 6] + struct.pack("<H", len(value)) + value + data[at + 8 + old :])


@pytest.mark.parametrize("spacing, problem", BAD_SPACINGS)
def test_pixel_spacing_flag_is_checked(spacing, problem):
    with pytest.raises(ValueError, match=problem) as err:
        MeasurementOptions(pixel_spacing=spacing).check()
    assert one_line(err).startswith("--pixel-spacing ") and "e.g. --pixel-spacing" in str(err.value)


def test_pixel_spacing_flag_too_large_stops_predict_with_one_line(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "img" / "a.png")
    code = main(["predict", "--weights", str(tmp_path / "missing.pt"), "--source", str(tmp_path / "img"),
                 "--out", str(tmp_path / "pred"), "--pixel-spacing", "1e200", "1e200"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "implausible, above 10 mm per pixel" in err and err.count("\n") == 1, err
    assert not (tmp_path / "pred").exists()


@pytest.mark.parametrize(
    "text, problem",
    [
        ('"12"', "must be 2 numbers"),  # read as 1 x 2 mm before
        ("[true, 1]", "numbers only"),  # read as 1 x 1 mm before
        ("[[1, 2]]", "must be 2 numbers"),
        ("[[1], [2]]", "numbers only"),
        ('["0.5", "0.5"]', "numbers only"),
        ("[NaN, 1]", "finite and > 0"),
        ("[1e300, 1]", "implausible, above 10 mm per pixel"),
    ],
)
def test_spacing_json_holding_anything_but_two_plausible_numbers_is_refused(tmp_path, text, problem):
    (tmp_path / "images").mkdir()
    path = tmp_path / "spacing.json"
    path.write_text('{"pixel_spacing_mm": ' + text + "}")
    with pytest.raises(ValueError, match=problem) as err:
        read_spacing_file(tmp_path / "images")
    assert one_line(err).startswith(f"{path}: pixel_spacing_mm") and "delete the file" in str(err.value)


def test_spacing_json_of_two_numbers_still_reads(tmp_path):
    (tmp_path / "spacing.json").write_text(json.dumps({"pixel_spacing_mm": [0.5, 2]}))
    assert read_spacing_file(tmp_path) == (0.5, 2.0)


@pytest.mark.parametrize(
    "raw, problem",
    [
        (b"-0.5\\0.5", "finite and > 0"),  # gave negative areas
        (b"nan\\nan", "finite and > 0"),
        (b"1e300\\1", "implausible, above 10 mm per pixel"),
        (b"abc\\1", "numbers only"),
        (b"0.5", "must be 2 numbers"),
    ],
)
def test_dicom_pixel_spacing_is_checked_and_stops_the_measurement_plan(tmp_path, raw, problem):
    path = tmp_path / "s.dcm"
    _dicom(path, raw)
    with pytest.raises(DatasetError, match=problem) as err:
        read_info(path)
    assert one_line(err).startswith(f"{path}: DICOM PixelSpacing") and "--pixel-spacing" in str(err.value)
    with pytest.raises(DatasetError, match=problem):  # not silently left out of measurements.csv
        plan_measurements([path], MeasurementOptions())


def test_a_plausible_dicom_pixel_spacing_still_measures(tmp_path):
    _dicom(tmp_path / "s.dcm", b"0.5\\0.25")
    assert read_info(tmp_path / "s.dcm").spacing == (0.5, 0.25)
    (row,) = plan_measurements([tmp_path / "s.dcm"], MeasurementOptions())
    assert row.geometry.pixel_mm2 == pytest.approx(0.125)


def test_a_group_regex_naming_empty_volumes_is_refused(tmp_path):
    from gctxseg.clinical.measurements import plan_measurements

    for name in ("eye1_b0.png", "eye1_b1.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / name)
    files = sorted(tmp_path.glob("*.png"))
    with pytest.raises(ValueError, match="names an empty volume"):
        plan_measurements(files, MeasurementOptions(group_regex="(x*)", slice_spacing=0.1), None)
    groups = plan_measurements(files, MeasurementOptions(group_regex=r"(eye\d+)_b", slice_spacing=0.1), None)
    assert [g.file for g in groups if g.kind == "group"] == ["eye1"]


def test_a_slice_spacing_without_volumes_is_refused(tmp_path):
    from gctxseg.clinical.measurements import plan_measurements

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="--slice-spacing 0.1 is used for B-scans joined by --group-regex"):
        plan_measurements([tmp_path / "a.png"], MeasurementOptions(slice_spacing=0.1), None)


def test_predict_says_which_spacing_it_used_and_from_where(tmp_path, capsys):
    from gctxseg.data.spacing import write_spacing_file
    from gctxseg.workflows.predict_folder import predict_folder

    ckpt = {**checkpoint_of(), "base_size": [16, 16], "normalization": {"mean": [0.5], "std": [0.25]}}
    torch.save(ckpt, tmp_path / "best.pt")
    (tmp_path / "set" / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "set" / "images" / "a.png")
    predict_folder(tmp_path / "best.pt", tmp_path / "set" / "images", tmp_path / "p1", device="cpu", amp="off")
    assert "pixel spacing: none for pictures: areas and volumes left blank" in capsys.readouterr().out
    write_spacing_file(tmp_path / "set", 0.004, 0.012)
    predict_folder(tmp_path / "best.pt", tmp_path / "set" / "images", tmp_path / "p2", device="cpu", amp="off")
    assert f"pixel spacing: {tmp_path / 'set' / 'spacing.json'}: 0.004 x 0.012 mm" in capsys.readouterr().out
    predict_folder(tmp_path / "best.pt", tmp_path / "set" / "images", tmp_path / "p3", device="cpu", amp="off",
                   measure=MeasurementOptions(pixel_spacing=(0.005, 0.01)))
    assert "pixel spacing: --pixel-spacing 0.005 x 0.01 mm" in capsys.readouterr().out
