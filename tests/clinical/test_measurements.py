"""measurements.csv: pixels, mm² and mm³ of masks of known size on known grids, and one-line bad input."""

from __future__ import annotations

import csv
import math

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from gctxseg.cli import main
from gctxseg.clinical.measurements import MeasurementOptions, plan_measurements, write_spacing_file
from gctxseg.data import DatasetError, MaskValueMap
from gctxseg.workflows.predict_folder import write_folder_measurements

VALUES = MaskValueMap([0, 128, 255])
NAMES = ["edema", "hole"]


def _bscan(folder, name, size, boxes):
    """Write an image and its 'predicted' mask (dataset values) with rectangles ``(value, r0, r1, c0, c1)``."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    (folder / "out" / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros(size, np.uint8)).save(folder / "img" / f"{name}.png")
    mask = np.zeros(size, np.uint8)
    for value, r0, r1, c0, c1 in boxes:
        mask[r0:r1, c0:c1] = value
    Image.fromarray(mask).save(folder / "out" / "masks" / f"{name}.png")
    return folder / "img" / f"{name}.png", folder / "out" / "masks" / f"{name}.png"


def _measure(tmp_path, files, masks, options=None, names=NAMES, values=VALUES):
    plan = plan_measurements(files, options or MeasurementOptions(), tmp_path / "img")
    write_folder_measurements(plan, dict(zip(files, masks)), values, tmp_path / "out", names)
    with open(tmp_path / "out" / "measurements.csv") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def test_bscan_areas_to_the_pixel_on_a_known_spacing(tmp_path):
    a = _bscan(tmp_path, "a", (40, 50), [(128, 2, 10, 3, 12), (255, 20, 25, 30, 40)])  # 72 edema, 50 hole
    b = _bscan(tmp_path, "b", (40, 50), [(128, 0, 1, 0, 1)])  # one edema pixel, no hole
    rows = _measure(tmp_path, [a[0], b[0]], [a[1], b[1]], MeasurementOptions(pixel_spacing=(0.01, 0.02)))
    assert rows["a.png"]["edema_pixels"] == "72" and rows["a.png"]["hole_pixels"] == "50"
    assert float(rows["a.png"]["edema_area_mm2"]) == pytest.approx(72 * 0.0002, rel=1e-9)
    assert float(rows["a.png"]["hole_area_mm2"]) == pytest.approx(50 * 0.0002, rel=1e-9)
    assert rows["b.png"]["edema_pixels"] == "1" and rows["b.png"]["hole_pixels"] == "0"
    assert rows["b.png"]["hole_area_mm2"] == "0"  # known spacing, nothing there: a true 0
    assert rows["a.png"]["edema_volume_mm3"] == ""  # a single B-scan has no volume
    assert rows["a.png"]["row_spacing_mm"] == "0.01" and rows["a.png"]["col_spacing_mm"] == "0.02"


def test_unknown_spacing_leaves_areas_blank_not_zero(tmp_path):
    a = _bscan(tmp_path, "a", (16, 16), [(128, 0, 4, 0, 4)])
    rows = _measure(tmp_path, [a[0]], [a[1]])
    assert rows["a.png"]["edema_pixels"] == "16"
    assert rows["a.png"]["edema_area_mm2"] == "" and rows["a.png"]["hole_area_mm2"] == ""
    with open(tmp_path / "out" / "measurements.csv") as f:
        header = f.readline().strip().split(",")
    assert {"edema_area_mm2", "edema_volume_mm3", "row_spacing_mm", "slice_spacing_mm"} <= set(header)


def test_spacing_json_beside_the_images_is_used(tmp_path):
    a = _bscan(tmp_path, "a", (16, 16), [(255, 0, 2, 0, 5)])
    write_spacing_file(tmp_path / "img", 0.5, 0.25)
    rows = _measure(tmp_path, [a[0]], [a[1]])
    assert float(rows["a.png"]["hole_area_mm2"]) == pytest.approx(10 * 0.125)


def test_bscans_grouped_into_a_volume_by_regex_and_slice_spacing(tmp_path):
    scans = [_bscan(tmp_path, f"eye1_b{i}", (20, 30), [(128, 0, i + 1, 0, 10)]) for i in range(3)]  # 10, 20, 30 px
    other = _bscan(tmp_path, "eye2_b0", (20, 30), [(128, 0, 1, 0, 1)])
    options = MeasurementOptions(pixel_spacing=(0.004, 0.012), slice_spacing=0.12, group_regex=r"^(.+)_b\d+$")
    files, masks = zip(*scans, other)
    rows = _measure(tmp_path, files, masks, options)
    assert rows["eye1"]["kind"] == "group" and rows["eye1"]["slices"] == "3"
    assert rows["eye1"]["edema_pixels"] == "60"
    assert float(rows["eye1"]["edema_volume_mm3"]) == pytest.approx(60 * 0.004 * 0.012 * 0.12, rel=1e-9)
    assert rows["eye1"]["slice_spacing_mm"] == "0.12" and rows["eye1"]["edema_area_mm2"] == ""
    assert rows["eye2"]["edema_pixels"] == "1" and rows["eye1_b2.png"]["edema_pixels"] == "30"


def test_nifti_volume_with_an_anisotropic_rotated_affine_gives_the_exact_mm3(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "out" / "masks").mkdir(parents=True)
    c, s = math.cos(0.3), math.sin(0.3)
    affine = np.array([[0.5 * c, -0.8 * s, 0, 10], [0.5 * s, 0.8 * c, 0, -4], [0, 0, 2.5, 7], [0, 0, 0, 1]])
    labels = np.zeros((12, 10, 6), np.uint8)  # x, y, z: slices along z (the head-foot axis)
    labels[2:5, 3:7, 1:6] = 1  # 3 x 4 x 5 = 60 voxels of edema
    labels[8, 8, 0] = 2  # one hole voxel
    nib.save(nib.Nifti1Image(np.zeros_like(labels, np.int16), affine), str(tmp_path / "img" / "v.nii.gz"))
    nib.save(nib.Nifti1Image(labels, affine), str(tmp_path / "out" / "masks" / "v.nii.gz"))
    rows = _measure(tmp_path, [tmp_path / "img" / "v.nii.gz"], [tmp_path / "out" / "masks" / "v.nii.gz"],
                    values=MaskValueMap([0, 1, 2]))  # fmt: skip
    row = rows["v.nii.gz"]
    assert row["kind"] == "volume" and row["slices"] == "6" and row["edema_pixels"] == "60"
    assert float(row["edema_volume_mm3"]) == pytest.approx(60 * 0.5 * 0.8 * 2.5, rel=1e-9)  # 60 mm³
    assert float(row["hole_volume_mm3"]) == pytest.approx(1.0, rel=1e-9)
    assert float(row["slice_spacing_mm"]) == pytest.approx(2.5) and row["edema_area_mm2"] == ""


def _dicom(path, z, size=(8, 8), series="1.2.3"):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality, ds.SeriesInstanceUID = CTImageStorage, generate_uid(), "CT", series
    ds.Rows, ds.Columns = size
    ds.PixelSpacing, ds.ImageOrientationPatient, ds.ImagePositionPatient = [0.5, 0.6], [1, 0, 0, 0, 1, 0], [0, 0, z]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.zeros(size, np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_series_volume_from_the_slice_positions(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "out" / "masks").mkdir(parents=True)
    files, masks = [], []
    for i, z in enumerate((0.0, 3.0, 1.5)):  # 1.5 mm apart once sorted
        _dicom(tmp_path / "img" / f"s{i}.dcm", z)
        mask = np.zeros((8, 8), np.uint8)
        mask[:2, :2] = 128  # 4 px per slice
        Image.fromarray(mask).save(tmp_path / "out" / "masks" / f"s{i}.png")
        files.append(tmp_path / "img" / f"s{i}.dcm")
        masks.append(tmp_path / "out" / "masks" / f"s{i}.png")
    rows = _measure(tmp_path, files, masks)
    assert float(rows["s0.dcm"]["edema_area_mm2"]) == pytest.approx(4 * 0.3)
    series = rows["series 1.2.3"]
    assert series["slices"] == "3" and float(series["slice_spacing_mm"]) == pytest.approx(1.5)
    assert float(series["edema_volume_mm3"]) == pytest.approx(12 * 0.3 * 1.5)


def test_dicom_series_with_a_slice_missing_is_not_measured_as_if_evenly_spaced(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "out" / "masks").mkdir(parents=True)
    files, masks = [], []
    for i, z in enumerate((0.0, 3.0, 6.0, 12.0)):  # the slice at 9 mm is missing
        _dicom(tmp_path / "img" / f"s{i}.dcm", z)
        mask = np.zeros((8, 8), np.uint8)
        mask[:2, :2] = 128
        Image.fromarray(mask).save(tmp_path / "out" / "masks" / f"s{i}.png")
        files.append(tmp_path / "img" / f"s{i}.dcm")
        masks.append(tmp_path / "out" / "masks" / f"s{i}.png")
    series = _measure(tmp_path, files, masks)["series 1.2.3"]
    assert series["slice_spacing_mm"] == "" and series["edema_volume_mm3"] == ""  # never 4 x 3 mm of slices
    assert "not evenly spaced (3 to 6 mm apart" in series["note"] and series["edema_pixels"] == "16"


def test_group_with_slices_of_different_sizes_is_one_line(tmp_path):
    a = _bscan(tmp_path, "eye_b0", (20, 30), [])
    b = _bscan(tmp_path, "eye_b1", (20, 31), [])
    options = MeasurementOptions(pixel_spacing=(0.01, 0.01), slice_spacing=0.1, group_regex=r"(.+)_b\d+")
    with pytest.raises(DatasetError, match=r"^eye: slices of one volume differ in size \(eye_b0.png 20x30, "
                                           r"eye_b1.png 20x31\); re-export") as err:  # fmt: skip
        plan_measurements([a[0], b[0]], options)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--pixel-spacing", "0", "0.01"], "--pixel-spacing 0.0 0.01: both values must be finite and > 0"),
        (["--pixel-spacing", "0.01", "-0.02"], "--pixel-spacing 0.01 -0.02: both values must be finite and > 0"),
        (["--group-regex", "(.+)_b"], "no --slice-spacing was given; pass the distance between B-scans in mm"),
        (["--slice-spacing", "-1"], "--slice-spacing -1.0: must be finite and > 0"),
    ],
)
def test_bad_measurement_options_stop_predict_with_one_line(tmp_path, capsys, flags, message):
    _bscan(tmp_path, "a_b0", (16, 16), [])
    code = main(["predict", "--weights", str(tmp_path / "missing.pt"), "--source", str(tmp_path / "img"),
                 "--out", str(tmp_path / "pred"), *flags])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "pred").exists()  # stopped before loading weights or writing anything


def test_synth_writes_a_realistic_pixel_spacing_beside_the_data(tmp_path, capsys):
    from gctxseg.clinical.measurements import read_spacing_file

    assert main(["synth", "--out", str(tmp_path / "ph"), "--n", "3", "--size", "40", "60"]) == 0
    assert "spacing.json" in capsys.readouterr().out
    for folder in ("", "train/images", "val/images"):  # written once in the root, found from the images folders
        row_mm, col_mm = read_spacing_file(tmp_path / "ph" / folder)
        assert (row_mm * 40, col_mm * 60) == pytest.approx((2.0, 6.0))  # 2 mm deep, 6 mm wide


def test_demo_prints_the_predicted_areas_in_mm2(tmp_path):
    from gctxseg.workflows.demo import predicted_areas
    from gctxseg.workflows.predict_folder import PredictionSummary

    a = _bscan(tmp_path, "a", (40, 50), [(128, 0, 10, 0, 10), (255, 20, 22, 0, 5)])  # 100 edema, 10 hole
    write_spacing_file(tmp_path / "img", 0.01, 0.02)
    plan = plan_measurements([a[0]], MeasurementOptions(), tmp_path / "img")
    rows = write_folder_measurements(plan, {a[0]: a[1]}, VALUES, tmp_path / "out", NAMES)
    text = predicted_areas(PredictionSummary(measurements=rows, class_names=NAMES))
    assert "mm²" in text and "pixel 10.0 x 20.0 µm" in text
    assert "edema 0.0200  hole 0.0020" in text  # 100 x 0.0002 mm², 10 x 0.0002 mm²


def test_an_unreadable_file_is_left_to_predict_to_report_and_the_rest_is_measured(tmp_path):
    a = _bscan(tmp_path, "a", (16, 16), [(128, 0, 2, 0, 2)])
    (tmp_path / "img" / "broken.png").write_bytes(b"not a png")
    plan = plan_measurements([tmp_path / "img" / "broken.png", a[0]], MeasurementOptions())
    assert [r.file for r in plan] == ["a.png"]
    rows = write_folder_measurements(plan, {a[0]: a[1]}, VALUES, tmp_path / "out", NAMES)
    assert rows[0].pixels == [4, 0]


def test_the_spacing_line_counts_only_the_headers_that_state_one(tmp_path):
    from pydicom import dcmread

    from gctxseg.clinical.measurements import MeasurementOptions, describe_spacing

    files = []
    for i in range(3):
        _dicom(tmp_path / f"s{i}.dcm", float(i))
        files.append(tmp_path / f"s{i}.dcm")
    for path in files[1:]:  # two exports without PixelSpacing
        ds = dcmread(path)
        del ds.PixelSpacing
        ds.save_as(path)
    line = describe_spacing(files, MeasurementOptions(), tmp_path)
    assert line == ("the DICOM/NIfTI headers of 1 file(s); none in the header of 2 file(s) (e.g. s1.dcm): their "
                    "areas left blank (give --pixel-spacing ROW_MM COL_MM)")
