"""``gctxseg convert oct-volumes``: a folder of device exports -> B-scan pictures, a geometry file per volume and
groups.json (issue 33 item 1), built from phantom eyes (no downloads)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_clinic_files import SHAPE, phantom, write_opt_dicom, write_vol  # noqa: F401

from gctxseg.cli import main
from gctxseg.data import DatasetError
from gctxseg.data.convert import convert_oct_volumes


@pytest.fixture
def exams(phantom, tmp_path):  # noqa: F811
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
