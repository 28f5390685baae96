"""ETDRS subfield fluid, hole diameters and the fovea on phantom eyes whose true geometry is known."""

from __future__ import annotations

import numpy as np
import pytest

from gctxseg.clinical import etdrs, macular_hole
from gctxseg.data import DatasetError
from gctxseg.data.phantom_volume import render_oct_volume

SHAPE = (64, 96, 128)  # B-scans, rows, columns: 94 x 21 x 47 µm


def _eye(seed, **kw):
    return render_oct_volume(np.random.default_rng(seed), SHAPE, **kw)


def _given(eye):
    return etdrs.Fovea(float(eye.fovea[0]), float(eye.fovea[1]), "given")


@pytest.mark.parametrize("seed", [0, 2, 4])
def test_total_and_central_fluid_within_2_percent_of_the_geometry(seed):
    eye = _eye(seed, edema=True, hole=False)
    volumes = etdrs.subfield_volumes_nl(etdrs.fluid_thickness_px(eye.masks, (1,)), _given(eye), eye.spacing, None)
    truth = eye.truth["fluid_nl"]
    assert truth["central"] > 5  # the test means something only with fluid in the 1 mm circle
    assert volumes["total"] == pytest.approx(truth["total"], rel=0.02)
    assert volumes["central"] == pytest.approx(truth["central"], rel=0.02)
    assert volumes["circle_6mm"] <= volumes["total"] + 1e-9
    assert volumes["circle_3mm"] == pytest.approx(volumes["central"] + sum(
        volumes[f"inner_{q}"] for q in ("superior", "right", "inferior", "left")))


@pytest.mark.parametrize("seed", [1, 3, 5])
def test_hole_mld_and_base_within_one_pixel(seed):
    eye = _eye(seed, edema=True, hole=True)
    slice_mm, row_mm, col_mm = eye.spacing
    hole = eye.truth["hole"]
    per_bscan = [macular_hole.hole_diameters_mm(eye.masks[s] == 2, row_mm, col_mm) for s in range(SHAPE[0])]
    mld, base = per_bscan[eye.fovea[0]]  # the B-scan through the axis
    assert abs(mld * 1000 - hole["mld_um"]) <= col_mm * 1000
    assert abs(base * 1000 - hole["base_um"]) <= col_mm * 1000
    largest = max(d[0] for d in per_bscan if d is not None)
    assert abs(largest * 1000 - hole["mld_um"]) <= col_mm * 1000
    for s, true in hole["per_bscan"].items():  # B-scans through the neck, off the axis: chords
        if abs(true["offset_mm"]) <= 0.5 * hole["mld_um"] / 2000:
            got = per_bscan[int(s)]
            assert abs(got[0] * 1000 - true["mld_um"]) <= col_mm * 1000
            assert abs(got[1] * 1000 - true["base_um"]) <= col_mm * 1000
    found = etdrs.find_fovea(eye.masks, eye.spacing, (2,), eye.images)
    assert found.source == "hole"
    assert abs(found.slice - eye.fovea[0]) <= 0.5 and abs(found.column - eye.fovea[1]) <= 0.5


def test_mirrored_bscans_with_os_swap_nasal_and_temporal_and_nothing_else():
    eye = _eye(2, edema=True)
    px = etdrs.fluid_thickness_px(eye.masks, (1,))
    od = etdrs.subfield_volumes_nl(px, _given(eye), eye.spacing, "OD")
    os_same = etdrs.subfield_volumes_nl(px, _given(eye), eye.spacing, "OS")
    swap = {"nasal": "temporal", "temporal": "nasal"}
    for name, value in od.items():
        ring, _, side = name.partition("_")
        other = f"{ring}_{swap[side]}" if side in swap else name
        assert os_same[other] == pytest.approx(value, rel=1e-12, abs=1e-12)
    assert od["inner_nasal"] != pytest.approx(od["inner_temporal"])  # the swap is visible
    mirrored = etdrs.Fovea(float(eye.fovea[0]), float(SHAPE[2] - 1 - eye.fovea[1]), "given")
    os_mirror = etdrs.subfield_volumes_nl(px[:, ::-1], mirrored, eye.spacing, "OS")
    for name, value in od.items():  # the left eye's mirror image reads as the right eye
        assert os_mirror[name] == pytest.approx(value, rel=1e-9, abs=1e-9)
    assert etdrs.partial_subfields(px.shape, mirrored, eye.spacing[0], eye.spacing[2], "OS") == \
        etdrs.partial_subfields(px.shape, _given(eye), eye.spacing[0], eye.spacing[2], "OD")


def test_partial_rings_of_a_scan_smaller_than_the_grid():
    fovea = etdrs.Fovea(10.0, 20.0, "given")
    # 21 B-scans x 41 columns of 0.1 mm: 2.1 x 4.1 mm around the fovea, only the central 1 mm whole
    partial = etdrs.partial_subfields((21, 41), fovea, 0.1, 0.1, "OD")
    assert "central" not in partial and "inner_nasal" in partial and "outer_superior" in partial
    assert len(partial) == 8
    assert etdrs.partial_subfields((61, 61), etdrs.Fovea(30.0, 30.0, "given"), 0.1, 0.1, None) == []


def test_fovea_outside_the_volume_is_one_line():
    with pytest.raises(DatasetError) as err:
        etdrs.check_fovea((64, 10), (64, 128), "eye000")
    assert "\n" not in str(err.value) and "0..63" in str(err.value) and "eye000" in str(err.value)
    assert etdrs.check_fovea((63, 127), (64, 128), "eye000").source == "given"


def test_inner_surface_finds_the_pit_of_a_dry_eye():
    eye = _eye(7, edema=False, hole=False)
    found = etdrs.find_fovea(eye.masks, eye.spacing, (2,), eye.images)
    assert found.source == "inner surface"
    slice_mm, _, col_mm = eye.spacing
    off = np.hypot((found.slice - eye.fovea[0]) * slice_mm, (found.column - eye.fovea[1]) * col_mm)
    assert off < 0.15  # mm


def test_size_class_thresholds():
    assert [macular_hole.hole_size_class(v) for v in (None, 250, 251, 400, 401)] == ["", "small", "medium", "medium",
                                                                               "large"]


def test_enface_map_png_is_written(tmp_path):
    from PIL import Image

    from gctxseg.clinical.enface import plot_enface_map

    eye = _eye(0, edema=True)
    thickness = etdrs.fluid_thickness_px(eye.masks, (1,)) * eye.spacing[1] * 1000
    path = plot_enface_map(thickness, _given(eye), eye.spacing[0], eye.spacing[2], "OD", tmp_path / "map.png")
    with Image.open(path) as im:
        assert im.size[0] > 300 and np.asarray(im.convert("L")).std() > 10  # a picture, not a blank canvas


def test_synth_volumes_writes_stacks_and_truth(tmp_path, capsys):
    import json

    from gctxseg.cli import main

    assert main(["synth", "--out", str(tmp_path / "v"), "--volumes", "2", "--slices", "12", "--size", "48", "64"]) == 0
    truth = json.loads((tmp_path / "v" / "truth.json").read_text())
    assert sorted(truth) == ["eye000", "eye001"]
    assert len(list((tmp_path / "v" / "images").glob("eye000_b*.jpg"))) == 12
    assert len(list((tmp_path / "v" / "masks").glob("eye001_b*.png"))) == 12
    assert truth["eye000"]["spacing_mm"]["slice"] == pytest.approx(0.5)
    assert main(["synth", "--out", str(tmp_path / "w"), "--volumes", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # one line


def test_etdrs_record_blank_without_spacing_and_partial_marked(tmp_path):
    import csv

    from gctxseg.clinical.etdrs_rows import etdrs_record, locate_fovea, write_etdrs_csv

    eye = _eye(3, edema=True, hole=True)
    names = ["edema", "hole"]
    where = locate_fovea("eye3", eye.masks, eye.spacing, names, eye.fovea)
    row = etdrs_record("eye3", eye.masks, eye.spacing, names, "OD", where)
    assert float(row["edema_total_nl"]) == pytest.approx(eye.truth["fluid_nl"]["total"], rel=0.02)
    assert abs(float(row["hole_mld_um"]) - eye.truth["hole"]["mld_um"]) <= eye.spacing[2] * 1000
    assert row["hole_mld_bscan"] == str(eye.fovea[0]) and row["hole_size_class"] in ("small", "medium", "large")
    assert row["partial"] and row["partial"].split()[0] in row["note"]
    blank = etdrs_record("eye3", eye.masks, (None, eye.spacing[1], eye.spacing[2]), names, None, where)
    assert blank["edema_central_nl"] == "" and "spacing" in blank["note"]
    # a hole's diameters lie in one B-scan: they need the pixel spacing only, not the distance between B-scans
    assert blank["hole_mld_um"] == row["hole_mld_um"] and blank["hole_base_bscan"] == row["hole_base_bscan"]
    assert blank["quadrants"].startswith("image sides") and "edema_inner_left_nl" in blank
    no_ruler = etdrs_record("eye3", eye.masks, (eye.spacing[0], None, eye.spacing[2]), names, None, where)
    assert no_ruler["edema_central_nl"] == "" and no_ruler["hole_mld_um"] == ""
    path = write_etdrs_csv([row], tmp_path / "etdrs.csv", names, "OD")
    with open(path) as f:
        assert next(csv.DictReader(f))["edema_central_nl"] == row["edema_central_nl"]
    with pytest.raises(DatasetError):
        locate_fovea("eye3", eye.masks, eye.spacing, names, (99, 0))
