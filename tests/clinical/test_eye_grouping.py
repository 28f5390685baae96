"""B-scans grouped into volumes: the ETDRS read-out never merges two eyes or scans without a B-scan number."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import one_line
from PIL import Image

from gctxseg.cli import main
from gctxseg.clinical.measurements import MeasurementOptions, plan_measurements
from gctxseg.data import DatasetError


@pytest.fixture(scope="module")
def two_eyes(tmp_path_factory):
    from gctxseg.data.phantom_volume import synthesize_volumes

    root = tmp_path_factory.mktemp("eyes")
    synthesize_volumes(root, n=2, shape=(8, 48, 64), seed=0)
    return root / "images"


def _predict_cli(source, out, *flags):
    return main(["predict", "--weights", str(out.parent / "missing.pt"), "--source", str(source),
                 "--out", str(out), *flags])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--group-regex", "eye", "--slice-spacing", "1"], "--group-regex 'eye': no capture group"),
        (["--group-regex", r"(eye\d+)_b\d+", "--slice-spacing", "1e300"], "--slice-spacing 1e+300: implausible"),
        (["--group-regex", r"(scan\d+)_b\d+", "--slice-spacing", "0.1"], "matches none of the 16 file names"),
        (["--eye", "OD"], "--eye: place the ETDRS grid of B-scan volumes, and there are none"),
        (["--fovea", "4", "30"], "--fovea: place the ETDRS grid of B-scan volumes, and there are none"),
    ],
)
def test_grouping_flags_that_would_merge_or_ignore_are_refused_before_any_output(two_eyes, tmp_path, capsys,
                                                                                 flags, message):
    code = _predict_cli(two_eyes, tmp_path / "pred", *flags)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "pred").exists()


def test_two_eyes_in_one_volume_are_refused_as_two_scans_of_one_bscan(two_eyes):
    files = sorted(two_eyes.glob("*.jpg"))
    with pytest.raises(DatasetError) as err:
        plan_measurements(files, MeasurementOptions(group_regex=r"(eye)\d+_b\d+", slice_spacing=0.1))
    line = one_line(err)
    assert "eye000_b000.jpg and eye001_b000.jpg are both B-scan 0 of one volume" in line


def test_each_eye_is_its_own_volume_in_bscan_order(two_eyes, tmp_path):
    files = sorted(two_eyes.glob("*.jpg"), reverse=True)  # listing order does not matter, the B-scan number does
    rows = plan_measurements(files, MeasurementOptions(group_regex=r"(eye\d+)_b\d+", slice_spacing=0.1))
    groups = {r.file: r for r in rows if r.kind == "group"}
    assert sorted(groups) == ["eye000", "eye001"] and all(r.geometry.slices == 8 for r in groups.values())
    assert [p.name for p in groups["eye001"].members] == [f"eye001_b{s:03d}.jpg" for s in range(8)]


def test_a_grouped_scan_without_a_bscan_number_is_refused(tmp_path):
    for name in ("eyeA_top.png", "eyeA_mid.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / name)
    with pytest.raises(DatasetError, match="has no B-scan number"):
        plan_measurements(sorted(tmp_path.glob("*.png")), MeasurementOptions(group_regex=r"(eye\w)_",
                                                                             slice_spacing=0.1))
