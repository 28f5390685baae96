"""Vendor OCT volumes in (HEYEX VOL through eyepy, DICOM Ophthalmic Tomography through pydicom) with their own
geometry: built from phantom eyes with a known geometry and laterality, read back, and measured against the
phantom's truth.json. No downloads."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from helpers_clinic_files import (
    CLASSES,
    SHAPE,
    TruthLookupPredictor,
    assert_within_5_percent,
    write_heyex_vol,
    write_opt_dicom,
    write_vol,
)

from gctxseg.clinical.etdrs_rows import etdrs_record
from gctxseg.clinical.volume_readout import volume_readout
from gctxseg.data import DatasetError, IntensityMapping
from gctxseg.data.oct_volumes import raster_layout, read_oct_volume


def test_vol_geometry_and_laterality_read_back_as_written(phantom, tmp_path):
    _, done, data = phantom
    images, _ = data["eyes"]["eye000"]
    volume = read_oct_volume(write_vol(tmp_path / "eye.vol", images, done, "OS"))
    geo = volume.geometry
    assert volume.format == "HEYEX VOL" and volume.eye == "OS"
    assert (geo.ascan_mm, geo.axial_mm, geo.bscan_distance_mm) == (done["col_mm"], done["row_mm"], done["slice_mm"])
    assert np.array_equal(volume.bscans, images[::-1])  # eyepy's own intensity mapping round-trips uint8 exactly
    assert geo.positions[0][1] > geo.positions[-1][1] and geo.position_unit == "mm"
    layout = raster_layout(volume)
    assert layout.order == tuple(range(SHAPE[0] - 1, -1, -1)) and not layout.flip_columns
    assert layout.slice_mm == pytest.approx(done["slice_mm"]) and layout.note == ""
    assert volume.localizer is not None and volume.localizer.ndim == 2


def test_dicom_geometry_and_laterality_read_back_as_written(phantom, tmp_path):
    _, done, data = phantom
    images, _ = data["eyes"]["eye000"]
    volume = read_oct_volume(write_opt_dicom(tmp_path / "eye.dcm", images, done, "R"))
    geo = volume.geometry
    assert volume.format == "DICOM OPT" and volume.eye == "OD" and volume.eye_source == "DICOM ImageLaterality"
    assert (geo.axial_mm, geo.ascan_mm) == (done["row_mm"], done["col_mm"])
    assert geo.bscan_distance_mm == pytest.approx(done["slice_mm"])
    assert np.allclose(np.abs(np.diff(geo.plane_offsets_mm)), done["slice_mm"])  # along the frame normal
    assert np.array_equal(volume.bscans, images)
    layout = raster_layout(volume)
    assert layout.order == tuple(range(SHAPE[0])) and layout.slice_mm == pytest.approx(done["slice_mm"])
    assert "PlanePositionSequence" in layout.source


@pytest.mark.parametrize("fmt,eye", [("vol", "OD"), ("dcm", "OS")])
def test_etdrs_fluid_from_each_format_within_5_percent_of_truth(phantom, tmp_path, fmt, eye):
    _, done, data = phantom
    for name, (images, labels) in data["eyes"].items():
        if fmt == "vol":
            volume = read_oct_volume(write_vol(tmp_path / f"{name}.vol", images, done, eye))
            file_order = labels[::-1]  # the truth masks as the file's B-scans lie
        else:
            volume = read_oct_volume(write_opt_dicom(tmp_path / f"{name}.dcm", images, done, "L"))
            file_order = labels
        row, report = volume_readout(volume, file_order, CLASSES, columns_eye="OD")
        assert report.record["eye"] == eye and report.record["quadrants"] == "nasal/temporal"
        assert_within_5_percent(report.record, data["truth"][name]["fluid_nl"], eye)
        spacing = (done["slice_mm"], done["row_mm"], done["col_mm"])  # the phantom's stack as the picture path reads it
        same = etdrs_record(name, labels, spacing, CLASSES, eye, report.fovea)
        assert {k: v for k, v in same.items() if k.endswith("_nl")} == {
            k: v for k, v in report.record.items() if k.endswith("_nl")}
        assert row.volumes()[0] == pytest.approx(data["truth"][name]["fluid_nl"]["total"] / 1000, rel=0.05, abs=5e-4)


def test_unevenly_spaced_bscans_are_not_measured_as_if_even(phantom, tmp_path):
    _, done, data = phantom
    images, labels = data["eyes"]["eye000"]
    gaps = np.full(SHAPE[0] - 1, done["slice_mm"])
    gaps[::2] *= 1.5  # a raster whose B-scans are 1.5x and 1x apart
    volume = read_oct_volume(write_opt_dicom(tmp_path / "uneven.dcm", images, done, "R", gaps=gaps))
    row, report = volume_readout(volume, labels, CLASSES, columns_eye="OD")
    assert "not evenly spaced" in report.record["note"] and report.record["edema_total_nl"] == ""
    assert row.volumes() == [None, None] and row.pixels is not None  # pixels counted, no guessed ruler


def test_implausible_geometry_is_refused_with_a_note_never_guessed(phantom, tmp_path):
    _, done, data = phantom
    images, labels = data["eyes"]["eye000"]
    bad = dict(done, col_mm=250.0)  # a unit mistake: µm written as mm
    volume = read_oct_volume(write_vol(tmp_path / "bad.vol", images, bad, "OD"))
    assert volume.geometry.ascan_mm is None and "implausible" in volume.geometry.notes[0]
    _, report = volume_readout(volume, labels[::-1], CLASSES, columns_eye="OD")
    assert report.record["edema_total_nl"] == "" and "implausible" in report.record["note"]


def test_a_distance_the_positions_supply_is_not_called_a_read_out_in_pixels(phantom, tmp_path):
    from gctxseg.clinical.volume_readout import describe_volume

    _, done, data = phantom
    images, labels = data["eyes"]["eye000"]
    count, _, width = images.shape
    positions = [(0.5, 1.0 + k * done["slice_mm"], 0.5 + (width - 1) * done["col_mm"], 1.0 + k * done["slice_mm"])
                 for k in range(count)]
    path = write_heyex_vol(tmp_path / "no_distance.vol", images, done["col_mm"], done["row_mm"], 0.0, "OD",
                           positions)  # the header's distance 0 (implausible), the positions in mm
    volume = read_oct_volume(path)
    layout = raster_layout(volume)
    assert volume.geometry.bscan_distance_mm is None and layout.slice_mm == pytest.approx(done["slice_mm"])
    line = describe_volume(volume, layout)
    assert "read-out in pixels" not in line and "B-scan start/end" in line and layout.note == ""
    _, report = volume_readout(volume, labels, CLASSES, columns_eye="OD")
    assert report.record["edema_total_nl"] != "" and "pixels" not in report.record["note"]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
@pytest.mark.parametrize("suffix", [".vol", ".dcm"])
def test_corrupt_or_truncated_files_give_one_line_naming_them(phantom, tmp_path, damage, suffix):
    _, done, data = phantom
    images, _ = data["eyes"]["eye000"]
    good = tmp_path / f"good{suffix}"
    write_vol(good, images, done, "OD") if suffix == ".vol" else write_opt_dicom(good, images, done, "R")
    blob = good.read_bytes()
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes({"truncated": blob[: len(blob) // 3], "garbage": b"not an OCT file" * 20, "empty": b""}[damage])
    with pytest.raises(DatasetError) as err:
        read_oct_volume(bad)
    line = str(err.value)
    assert str(bad) in line and "\n" not in line and "re-export" in line


def test_single_frame_8bit_oct_dicom_is_a_picture_to_a_picture_model(tmp_path, phantom):
    _, done, data = phantom
    images, _ = data["eyes"]["eye000"]
    path = write_opt_dicom(tmp_path / "one.dcm", images[:1], done, "R")
    picture = IntensityMapping()  # a model trained on PNG exports
    read = picture.read(path)
    assert read.shape == (SHAPE[1], SHAPE[2], 1) and read.dtype == np.float32
    assert np.allclose(read[..., 0] * 255, images[0])
    from gctxseg.data import read_info

    # the Ophthalmic Tomography image keeps its spacing in the shared functional group, not at the top level
    assert read_info(path).spacing == pytest.approx((done["row_mm"], done["col_mm"]))
    ct = tmp_path / "ct.dcm"  # a CT slice stays refused for that model
    from pydicom import dcmread

    ds = dcmread(path)
    ds.Modality, ds.BitsAllocated, ds.BitsStored, ds.HighBit = "CT", 16, 16, 15
    ds.PixelData = images[0].astype(np.uint16).tobytes()
    ds.save_as(ct)
    with pytest.raises(DatasetError, match="takes pictures"):
        picture.read(ct)


def test_predict_on_a_folder_of_device_exports_uses_each_files_geometry(phantom, tmp_path, monkeypatch, capsys):
    from gctxseg.workflows import predict_folder as predict

    _, done, data = phantom
    exams = tmp_path / "exams"
    exams.mkdir()
    write_vol(exams / "eye000.vol", data["eyes"]["eye000"][0], done, "OD")
    write_opt_dicom(exams / "eye001.dcm", data["eyes"]["eye001"][0], done, "L")
    (exams / "broken.vol").write_bytes(b"HSF-OCT-103 " + b"\0" * 40)
    monkeypatch.setattr(predict, "load_predictor", lambda *a, **k: TruthLookupPredictor(data["eyes"]))
    summary = predict.predict_folder("unused.pt", exams, tmp_path / "out", measure=predict.MeasurementOptions(
        class_names=CLASSES))
    printed = capsys.readouterr().out
    assert "geometry: eye000.vol (HEYEX VOL" in printed and "HEYEX VOL scale_x" in printed
    assert "geometry: eye001.dcm (DICOM OPT" in printed and "eye OS (DICOM ImageLaterality)" in printed
    assert len(summary.failed) == 1 and "broken.vol" in summary.failed[0]
    with open(tmp_path / "out" / "etdrs.csv", newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    assert rows["eye000"]["eye"] == "OD" and rows["eye001"]["eye"] == "OS"
    for name, eye in (("eye000", "OD"), ("eye001", "OS")):
        assert_within_5_percent(rows[name], data["truth"][name]["fluid_nl"], eye)
    assert len(list((tmp_path / "out" / "masks" / "eye000").glob("b*.png"))) == SHAPE[0]
    assert (tmp_path / "out" / "enface" / "eye000.png").is_file()
    assert (tmp_path / "out" / "overlays" / "eye001.png").is_file()
    for flag, options in (("--eye", dict(eye="OS")), ("--pixel-spacing", dict(pixel_spacing=(0.01, 0.01)))):
        with pytest.raises(ValueError) as err:  # each file states its own: the flag would be ignored unsaid
            predict.predict_folder("unused.pt", exams, tmp_path / "out2", measure=predict.MeasurementOptions(
                class_names=CLASSES, **options))
        assert str(err.value) == f"{flag}: OCT volume files are measured on their own geometry and eye; drop the flag"
    assert not (tmp_path / "out2").exists()


def test_without_eyepy_a_vol_file_says_how_to_install_the_extra(phantom, tmp_path, monkeypatch):
    import sys

    _, done, data = phantom
    path = write_vol(tmp_path / "eye.vol", data["eyes"]["eye000"][0], done, "OD")
    monkeypatch.setitem(sys.modules, "eyepy", None)  # import eyepy now raises ImportError, as on a core install
    with pytest.raises(DatasetError) as err:
        read_oct_volume(path)
    assert str(err.value) == f'{path}: reading HEYEX files needs eyepy; pip install "gctxseg[oct]"'
