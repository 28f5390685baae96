"""Issue 19 wired in: ``predict`` writes etdrs.csv and en-face maps (shown in index.html) per volume, ``evaluate``
the grader's and the predicted ones with their agreement in summary.json; ``--eye`` and ``--fovea``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from gctxseg.cli import main
from gctxseg.clinical.measurements import MeasurementOptions, plan_measurements
from gctxseg.data import MaskValueMap
from gctxseg.data.phantom_volume import synthesize_volumes
from gctxseg.models import create_model
from gctxseg.workflows.predict_folder import write_folder_measurements

REGEX = r"(eye\d+)_b\d+"


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("volumes")
    done = synthesize_volumes(root, n=2, shape=(32, 48, 64), seed=1, hole_rate=1.0)
    return root, done


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("unet", 1, 3, base_width=4)
    ckpt = {"model_name": "unet", "model_kwargs": {"base_width": 4}, "model": model.state_dict(),
            "value_map": {"0": 0, "128": 1, "255": 2}, "fingerprint": {"channels": 1}, "base_size": [16, 16],
            "normalization": {"mean": [0.5], "std": [0.25]}}
    path = tmp_path_factory.mktemp("weights") / "best.pt"
    torch.save(ckpt, path)
    return path


def _rows(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def test_the_graders_masks_measured_as_predict_measures_them_give_the_true_volumes(volumes, tmp_path, capsys):
    root, done = volumes
    truth = json.loads((root / "truth.json").read_text())
    files = sorted((root / "images").iterdir())
    options = MeasurementOptions(group_regex=REGEX, slice_spacing=done["slice_mm"], class_names=("edema", "hole"),
                                 eye="OD")
    plan = plan_measurements(files, options, root / "images")
    masks = {f: root / "masks" / f"{f.stem}.png" for f in files}
    write_folder_measurements(plan, masks, MaskValueMap((0, 128, 255)), tmp_path, ["edema", "hole"], "OD")
    rows = _rows(tmp_path / "etdrs.csv")
    assert sorted(rows) == ["eye000", "eye001"]
    for name, row in rows.items():
        assert row["quadrants"] == "nasal/temporal" and row["fovea_from"] == "hole"
        assert float(row["edema_total_nl"] or 0) == pytest.approx(truth[name]["fluid_nl"]["total"], rel=0.05, abs=1)
        assert abs(float(row["hole_mld_um"]) - truth[name]["hole"]["mld_um"]) <= done["col_mm"] * 1000 * 1.5
        assert (tmp_path / "enface" / f"{name}.png").is_file()
    page = (tmp_path / "index.html").read_text()
    assert page.count('<img class="enface" src="enface/eye00') == 2 and 'href="etdrs.csv"' in page


def test_predict_cli_writes_etdrs_and_maps_and_evaluate_adds_the_agreement(volumes, weights, tmp_path, capsys):
    root, done = volumes
    flags = ["--group-regex", REGEX, "--slice-spacing", str(done["slice_mm"]), "--class-names", "edema", "hole",
             "--eye", "OS", "--device", "cpu", "--amp", "off"]
    assert main(["predict", "--weights", str(weights), "--source", str(root / "images"), "--out",
                 str(tmp_path / "pred"), *flags]) == 0
    rows = _rows(tmp_path / "pred" / "etdrs.csv")
    assert sorted(rows) == ["eye000", "eye001"] and "edema_inner_nasal_nl" in rows["eye000"]
    assert len(list((tmp_path / "pred" / "enface").glob("*.png"))) == 2
    assert main(["evaluate", "--weights", str(weights), "--data", str(root / "images"), "--out",
                 str(tmp_path / "eval"), *flags]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    agreement = {a["class"]: a for a in summary["etdrs agreement"]}
    assert agreement["edema_total_nl"]["n"] == 2 and agreement["edema_total_nl"]["unit"] == "nl"
    assert agreement["hole_mld_um"]["mean truth"] > 0
    grader, predicted = _rows(tmp_path / "eval" / "grader_etdrs.csv"), _rows(tmp_path / "eval" / "predicted_etdrs.csv")
    for name in grader:  # the predictions are measured on the grader's grid
        assert grader[name]["fovea_slice"] == predicted[name]["fovea_slice"]
    assert (tmp_path / "eval" / "enface" / "grader_eye000.png").is_file()
    assert (tmp_path / "eval" / "enface" / "predicted_eye000.png").is_file()


def test_agreement_of_the_graders_volumes_with_themselves_is_exact(volumes):
    from gctxseg.clinical.agreement import etdrs_agreement
    from gctxseg.clinical.etdrs_rows import volume_reports
    from gctxseg.data import read_mask

    root, done = volumes
    files = sorted((root / "images").iterdir())
    plan = plan_measurements(files, MeasurementOptions(group_regex=REGEX, slice_spacing=done["slice_mm"]),
                             root / "images")
    value_map = MaskValueMap((0, 128, 255))

    def labels(path):
        return value_map.encode(read_mask(root / "masks" / f"{path.stem}.png"))

    def doubled(path):
        return labels(path) * 0 + (labels(path) > 0) * 1  # every labelled pixel called fluid, no hole

    reports = volume_reports(plan, labels, lambda p: None, ["edema", "hole"])
    same = etdrs_agreement(reports, reports, ["edema", "hole"], None)
    assert same and all(a["mean absolute error"] == 0 and a["bias"] == 0 for a in same)
    other = volume_reports(plan, doubled, lambda p: None, ["edema", "hole"], centres={r.name: r.fovea for r in reports})
    moved = {a["class"]: a for a in etdrs_agreement(reports, other, ["edema", "hole"], None)}
    assert moved["edema_total_nl"]["bias"] > 0 and moved["hole_mld_um"]["mean predicted"] == 0


def test_eye_and_fovea_flags_are_checked_with_one_line(volumes, weights, tmp_path, capsys):
    root, done = volumes
    base = ["predict", "--weights", str(weights), "--source", str(root / "images"), "--device", "cpu",
            "--group-regex", REGEX, "--slice-spacing", str(done["slice_mm"])]
    with pytest.raises(SystemExit) as stop:
        main([*base, "--out", str(tmp_path / "a"), "--eye", "left"])
    assert stop.value.code == 2
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "b"), "--fovea", "99", "3"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--fovea 99 3 is outside the volume (32 B-scans x 64 columns)" in err[0]
