"""``gctxseg convert oct-volumes``: a folder of device exports -> B-scan pictures, a geometry file per volume and
groups.json (issue 33 item 1), built from phantom eyes (no downloads)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_clinic_files import SHAPE, write_opt_dicom, write_vol
from PIL import Image

from gctxseg.cli import main
from gctxseg.data import DatasetError
from gctxseg.data.convert import convert_oct_volumes


@pytest.fixture
def exams(phantom, tmp_path):
    _, done, data = phantom
    folder = tmp_path / "exams"
    folder.mkdir()
    write_vol(folder / "eye000.vol", data["eyes"]["eye000"][0], done, "OD")
    write_opt_dicom(folder / "eye001.dcm", data["eyes"]["eye001"][0], done, "L")
    return folder, done, data


def test_convert_writes_bscans_geometry_and_groups_of_each_volume(exams, tmp_path, capsys):
    folder, done, data = exams
    (folder / "notes.txt").write_text("exam list")
    out = tmp_path / "out"
    assert main(["convert", "oct-volumes", str(folder), str(out)]) == 0
    printed = capsys.readouterr()
    assert f"{folder / 'notes.txt'}: not an OCT volume file" in printed.err and "no masks" in printed.out
    assert not (out / "masks").exists()
    images = {p.stem for p in (out / "images").glob("*.png")}
    assert len(images) == 2 * SHAPE[0]
    vol_order = data["eyes"]["eye000"][0][::-1]  # a Spectralis VOL holds the B-scans inferior-first
    for k in (0, SHAPE[0] - 1):
        assert np.array_equal(np.asarray(Image.open(out / "images" / f"eye000_b{k:03d}.png")), vol_order[k])
        assert np.array_equal(np.asarray(Image.open(out / "images" / f"eye001_b{k:03d}.png")),
                              data["eyes"]["eye001"][0][k])
    groups = json.loads((out / "groups.json").read_text())
    assert set(groups) == images and groups["eye000_b005"] == "eye000" and groups["eye001_b031"] == "eye001"
    vol = json.loads((out / "geometry" / "eye000.json").read_text())
    assert (vol["format"], vol["eye"], vol["eye_source"]) == ("HEYEX VOL", "OD", "HEYEX VOL laterality")
    assert (vol["geometry"]["ascan_mm"], vol["geometry"]["axial_mm"]) == (done["col_mm"], done["row_mm"])
    assert vol["geometry"]["sources"]["ascan_mm"] == "HEYEX VOL scale_x" and len(vol["geometry"]["positions"]) == 32
    assert vol["layout"]["slice_mm"] == pytest.approx(done["slice_mm"])
    assert vol["layout"]["superior_first"] == list(range(SHAPE[0] - 1, -1, -1))
    assert vol["localizer"] == "localizer/eye000.png" and (out / "localizer" / "eye000.png").is_file()
    dcm = json.loads((out / "geometry" / "eye001.json").read_text())
    assert (dcm["format"], dcm["eye"]) == ("DICOM OPT", "OS") and "PlanePositionSequence" in dcm["layout"][
        "slice_mm_source"]


def test_convert_refuses_a_corrupt_file_or_two_files_of_one_name_before_writing(exams, tmp_path):
    folder, done, data = exams
    write_opt_dicom(folder / "eye000.dcm", data["eyes"]["eye000"][0], done, "R")  # eye000.vol is there too
    with pytest.raises(DatasetError, match="both convert to eye000"):
        convert_oct_volumes(folder, tmp_path / "out")
    (folder / "eye000.dcm").unlink()
    (folder / "broken.vol").write_bytes(b"HSF-OCT-103 " + b"\0" * 40)
    with pytest.raises(DatasetError) as err:
        convert_oct_volumes(folder, tmp_path / "out")
    assert str(folder / "broken.vol") in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_enface_map_is_drawn_on_the_localizer_where_the_bscans_lie(phantom, tmp_path, monkeypatch):
    """Issue 33 item 2's last sentence: the ETDRS grid lands on the localizer where the file's B-scan positions put
    the fovea (a VOL written with a 7.68 mm localizer and its B-scans from (0.5, 1.0) mm)."""
    from helpers_clinic_files import CLASSES, TruthLookupPredictor, write_heyex_vol

    from gctxseg.clinical.volume_readout import volume_readout
    from gctxseg.data.oct_volumes import raster_layout, read_oct_volume
    from gctxseg.workflows import predict_folder as predict

    _, done, data = phantom
    images, labels = data["eyes"]["eye000"]
    count, _, width = images.shape
    left, top, pixel_mm = 0.5, 1.0, 0.01
    positions = [(left, top + (count - 1 - k) * done["slice_mm"], left + (width - 1) * done["col_mm"],
                  top + (count - 1 - k) * done["slice_mm"]) for k in range(count)]  # B-scan 0 inferior
    localizer = np.full((768, 768), 60, np.uint8)
    exams = tmp_path / "exams"
    exams.mkdir()
    write_heyex_vol(exams / "eye000.vol", images[::-1], done["col_mm"], done["row_mm"], done["slice_mm"], "OD",
                    positions, localizer, pixel_mm)
    volume = read_oct_volume(exams / "eye000.vol")
    _, report = volume_readout(volume, labels[::-1], CLASSES, columns_eye="OD")
    view = report.localizer
    assert view is not None and view.picture.shape == (768, 768) and view.pixel_mm == (pixel_mm, pixel_mm)
    assert raster_layout(volume).order[0] == count - 1  # the superior B-scan is the file's last
    fovea = report.fovea  # superior-first B-scan, column: on the localizer at the positions the file gave
    expected = ((left + fovea.column * done["col_mm"]) / pixel_mm, (top + fovea.slice * done["slice_mm"]) / pixel_mm)
    assert view.pixel(fovea.slice, fovea.column) == pytest.approx(expected)
    monkeypatch.setattr(predict, "load_predictor", lambda *a, **k: TruthLookupPredictor(data["eyes"]))
    predict.predict_folder("unused.pt", exams, tmp_path / "out",
                           measure=predict.MeasurementOptions(class_names=CLASSES))
    drawn = np.asarray(Image.open(tmp_path / "out" / "enface" / "eye000_localizer.png"))
    assert drawn.ndim == 3 and drawn.shape[0] > 200  # the picture, with the map and grid over it
    assert (tmp_path / "out" / "enface" / "eye000.png").is_file()  # the map in mm around the fovea is kept
