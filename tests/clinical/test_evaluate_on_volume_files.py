"""``gctxseg evaluate`` on a folder of device exports: truth from a mask folder in convert's layout (a HEYEX VOL)
or from a DICOM SEG beside the source (an OCT DICOM), the fluid read-out on each file's own geometry."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from helpers_clinic_files import (  # noqa: F401
    CLASSES,
    SHAPE,
    TruthLookupPredictor,
    assert_within_5_percent,
    write_opt_dicom,
    write_vol,
)
from PIL import Image

from gctxseg.data import DatasetError

pytest.importorskip("highdicom")


class HoleBlindPredictor(TruthLookupPredictor):
    """The true masks of eye000; eye001's with its hole missed (class 2 -> background), so scores can fail."""

    device = "cpu"

    def __init__(self, eyes: dict) -> None:
        super().__init__(eyes)
        blind = {bscan.tobytes() for bscan in eyes["eye001"][0]}
        self.table = {k: np.where(v == 2, 0, v) if k in blind else v for k, v in self.table.items()}


def _exams(root: Path, done: dict, data: dict) -> tuple[Path, Path]:
    """exams/eye000.vol (OD) with masks/eye000_bNNN.png in its file order; exams/eye001.dcm (OS) with a SEG
    beside it whose segments are numbered the other way round (found by label)."""
    from gctxseg.clinical.dicom_out import build_segmentation, source_image
    from gctxseg.data.oct_volumes import read_oct_volume

    exams, masks = root / "exams", root / "masks"
    exams.mkdir()
    masks.mkdir()
    images, labels = data["eyes"]["eye000"]
    write_vol(exams / "eye000.vol", images, done, "OD")  # B-scan 0 inferior: the masks in the file's order
    values = np.asarray([0, 128, 255], np.uint8)
    for k, mask in enumerate(labels[::-1]):
        Image.fromarray(values[mask]).save(masks / f"eye000_b{k:03d}.png")
    images, labels = data["eyes"]["eye001"]
    write_opt_dicom(exams / "eye001.dcm", images, done, "L")
    source, _ = source_image(read_oct_volume(exams / "eye001.dcm"))
    swapped = np.choose(labels, [0, 2, 1])  # segment 1 = hole, segment 2 = edema
    build_segmentation(source, swapped, CLASSES[::-1]).save_as(exams / "eye001_seg.dcm")
    return exams, masks


def test_evaluate_reads_truth_from_masks_or_a_seg_and_measures_each_files_geometry(phantom, tmp_path, monkeypatch,  # noqa: F811
                                                                                    capsys):
    from gctxseg.evaluation import volume_files

    _, done, data = phantom
    exams, masks = _exams(tmp_path, done, data)
    monkeypatch.setattr(volume_files, "load_predictor", lambda *a, **k: HoleBlindPredictor(data["eyes"]))
    result = volume_files.evaluate_volume_folder("unused.pt", exams, tmp_path / "eval",
                                      measure=volume_files.MeasurementOptions(class_names=CLASSES))
    captured = capsys.readouterr()
    s = result.summary
    assert s["volumes"] == 2 and s["images"] == 2 * SHAPE[0] and s["distance unit"] == "mm"
    assert s["truth"]["eye000.vol"].startswith(str(masks / "eye000_bNNN.png"))
    assert s["truth"]["eye001.dcm"].startswith(f"DICOM SEG {exams / 'eye001_seg.dcm'} (segments by label")
    assert "truth: eye001.dcm: DICOM SEG" in captured.out and "geometry: eye000.vol (HEYEX VOL" in captured.out
    assert "HEYEX layer lines" in captured.err and "not used as truth" in captured.err
    edema, hole = s["per class"]
    assert edema["dice"] == pytest.approx(1.0) and edema["hd95 mean"] == 0
    assert hole["missed"] > 0 and hole["dice"] < 0.8  # eye001's hole missed: the SEG's truth was decoded by label
    with open(tmp_path / "eval" / "grader_etdrs.csv", newline="") as f:
        grader = {r["file"]: r for r in csv.DictReader(f)}
    for name, eye in (("eye000", "OD"), ("eye001", "OS")):
        assert_within_5_percent(grader[f"{name}.{'vol' if eye == 'OD' else 'dcm'}"], data["truth"][name]["fluid_nl"],
                                 eye)
    with open(tmp_path / "eval" / "predicted_etdrs.csv", newline="") as f:
        predicted = {r["file"]: r for r in csv.DictReader(f)}
    assert predicted["eye001.dcm"]["hole_mld_um"] == "" and grader["eye001.dcm"]["hole_mld_um"] != ""
    agreement = {a["class"]: a for a in s["etdrs agreement"]}
    assert agreement["edema_total_nl"]["mean absolute error"] == 0 and agreement["edema_total_nl"]["n"] == 2
    volumes = {a["class"]: a for a in s["agreement"] if a["level"] == "volume"}
    assert volumes["edema"]["unit"] == "mm3" and volumes["edema"]["mean absolute error"] == 0
    rows = list(csv.DictReader(open(tmp_path / "eval" / "metrics_per_image.csv", newline="")))
    assert len(rows) == 2 * SHAPE[0] * 2 and rows[0]["file"] == "eye000.vol:0"
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["volumes"] == 2
    assert (tmp_path / "eval" / "enface" / "grader_eye000.vol.png").is_file()


def test_evaluate_on_volume_files_refuses_missing_truth_and_spacing_flags(phantom, tmp_path, monkeypatch, capsys):  # noqa: F811
    from gctxseg.evaluation import volume_files

    _, done, data = phantom
    exams, masks = _exams(tmp_path, done, data)
    monkeypatch.setattr(volume_files, "load_predictor", lambda *a, **k: HoleBlindPredictor(data["eyes"]))
    from gctxseg.cli import main

    assert main(["evaluate", "--weights", "unused.pt", "--data", str(exams), "--pixel-spacing", "0.1", "0.1"]) == 2
    assert "--pixel-spacing: OCT volume files are measured on their own geometry" in capsys.readouterr().err
    assert main(["evaluate", "--weights", "unused.pt", "--data", str(masks), "--masks", str(masks)]) == 2
    assert "only for a folder of OCT volume files" in capsys.readouterr().err
    (exams / "eye001_seg.dcm").unlink()
    options = volume_files.MeasurementOptions(class_names=CLASSES)
    with pytest.raises(DatasetError) as err:
        volume_files.evaluate_volume_folder("unused.pt", exams, None, measure=options)
    assert str(err.value).startswith(f"{exams / 'eye001.dcm'}: no true masks (no {masks / 'eye001_b000.png'}, no "
                                     "DICOM SEG beside it that references it)") and "\n" not in str(err.value)
    (masks / "eye000_b005.png").unlink()
    with pytest.raises(DatasetError) as err:
        volume_files.evaluate_volume_folder("unused.pt", exams, None, measure=options)
    assert str(err.value).startswith(f"{masks / 'eye000_b005.png'}: 1 of eye000.vol's 32 B-scans have no mask")
    assert str(err.value).endswith("(and 1 more)")  # every volume checked before anything is predicted
    assert not (tmp_path / "eval").exists()


def test_an_unreadable_dicom_beside_the_volumes_is_named_not_left_out_of_the_scores(phantom, tmp_path,  # noqa: F811
                                                                                  monkeypatch):
    from gctxseg.data import IntensityMapping
    from gctxseg.evaluation import volume_files

    _, done, data = phantom
    exams, _ = _exams(tmp_path, done, data)
    monkeypatch.setattr(volume_files, "load_predictor", lambda *a, **k: HoleBlindPredictor(data["eyes"]))
    broken = exams / "eye002.dcm"
    broken.write_bytes(b"not a DICOM file" * 8)  # a damaged export: once skipped as "another file", unscored
    options = volume_files.MeasurementOptions(class_names=CLASSES)
    with pytest.raises(DatasetError) as err:
        volume_files.evaluate_volume_folder("unused.pt", exams, None, measure=options)
    line = str(err.value)
    assert line.startswith(f"{broken}: not a readable DICOM file") and "force=True" not in line and "\n" not in line
    with pytest.raises(DatasetError) as err:  # to a picture model it is unreadable, not "a scan it cannot take"
        IntensityMapping().check(broken)
    assert str(err.value).startswith(f"{broken}: not a readable DICOM file") and "force=True" not in str(err.value)
