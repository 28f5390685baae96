"""Nothing a user owns is overwritten (issue 18, items 1-4): predict's --out, convert's OUT, convert-checkpoint's
NEW, and a spacing.json of another dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_pair
from PIL import Image

from gctxseg.cli import main
from gctxseg.core.outputs import MARKER, staged_output
from gctxseg.data import DatasetError
from gctxseg.data.convert import convert_duke_dme
from gctxseg.data.spacing import find_spacing_file
from gctxseg.runs.checkpoint import convert_checkpoint
from gctxseg.workflows.predict_folder import OUTPUT_ENTRIES, _output_rules, check_output_folder


def _labelled(root):
    write_pair(root, "a", np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
    return root / "images"


@pytest.mark.parametrize(("out", "message"), [
    (".", "its masks/ is"),  # --source lab/images --out lab: the ground truth
    ("images", "inside the source folder"),
    ("images/sub", "inside the source folder"),
])
def test_predict_refuses_an_out_that_overwrites_the_source_or_its_masks(tmp_path, out, message):
    source = _labelled(tmp_path / "lab")
    with pytest.raises(ValueError, match=message) as err:
        check_output_folder(source, tmp_path / "lab" / out)
    assert "\n" not in str(err.value) and "--out" in str(err.value)


def test_predict_refuses_an_out_holding_its_source_and_one_holding_other_files(tmp_path):
    out = tmp_path / "out"
    (out / "overlays").mkdir(parents=True)
    with pytest.raises(ValueError, match="which predictions would overwrite"):
        check_output_folder(out / "overlays", out)  # --source out/overlays --out out
    with pytest.raises(ValueError, match="holds the source folder"):
        check_output_folder(out / "overlays" / "scans", out)
    source = _labelled(tmp_path / "lab")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.docx").write_text("mine")
    with pytest.raises(ValueError, match=r"1 file\(s\) predict did not write \(e.g. thesis.docx\)"):
        check_output_folder(source, tmp_path / "notes")
    assert (tmp_path / "notes" / "thesis.docx").read_text() == "mine"


def test_a_previous_prediction_is_replaced_whole(tmp_path, capsys):
    source = _labelled(tmp_path / "lab")
    out = tmp_path / "pred"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "stale.png").write_bytes(b"old")
    (out / "measurements.csv").write_text("file\nstale.png\n")
    (out / MARKER).write_text('{"written by": "gctxseg predict"}')  # a previous prediction (issue 30: marked)
    with staged_output(out, "predict", OUTPUT_ENTRIES, **_output_rules(source)) as staging:
        (staging / "masks").mkdir()
        (staging / "overlays").mkdir()
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "masks", "overlays"]
    assert not any((out / "masks").iterdir())
    assert "holds a previous predict output (masks, measurements.csv)" in capsys.readouterr().err


def test_predict_cli_refuses_before_reading_the_weights(tmp_path, capsys):
    source = _labelled(tmp_path / "lab")
    code = main(["predict", "--weights", str(tmp_path / "missing.pt"), "--source", str(source),
                 "--out", str(tmp_path / "lab")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "ground truth" in err[0]
    assert (tmp_path / "lab" / "masks" / "a.png").is_file()


def _png_copy(root, n=22, bad_size_at=None):
    (root / "img_for_inference").mkdir(parents=True)
    (root / "annotation").mkdir()
    for i in range(n):
        Image.fromarray(np.full((12, 16), i, np.uint8)).save(root / "img_for_inference" / f"img_{i}.png")
        shape = (10, 16) if i == bad_size_at else (12, 16)
        Image.fromarray(np.zeros(shape, np.uint8)).save(root / "annotation" / f"img_{i}.png")
    return root


def test_convert_refuses_a_non_empty_out_unless_forced(tmp_path):
    src = _png_copy(tmp_path / "copy")
    out = tmp_path / "duke"
    out.mkdir()
    (out / "splits.json").write_text("mine")
    with pytest.raises(DatasetError, match="not empty .* pass --force"):
        convert_duke_dme(src, out, folds=2)
    assert (out / "splits.json").read_text() == "mine"
    convert_duke_dme(src, out, folds=2, force=True)
    assert len(json.loads((out / "splits.json").read_text())) == 2 and len(list((out / "images").iterdir())) == 22


@pytest.mark.parametrize(("damage", "message"), [
    ("size", "10x16 but its scan is 12x16"),
    ("name", r"img_0 \(copy\).png: not a scan of the PNG copy"),
    ("patients", "2 patient\\(s\\), fewer than --folds 5"),
])
def test_convert_checks_every_source_file_before_writing_one(tmp_path, damage, message):
    src = _png_copy(tmp_path / "copy", bad_size_at=21 if damage == "size" else None)
    if damage == "name":
        Image.fromarray(np.zeros((12, 16), np.uint8)).save(src / "img_for_inference" / "img_0 (copy).png")
    with pytest.raises(DatasetError, match=message):
        convert_duke_dme(src, tmp_path / "duke", folds=5 if damage == "patients" else 2)
    assert not (tmp_path / "duke").exists() and not list(tmp_path.glob(".duke*"))  # nothing half-written


def test_convert_checkpoint_does_not_overwrite_new(tmp_path):
    old, new = tmp_path / "old.pt", tmp_path / "best.pt"
    old.write_bytes(b"anything")
    new.write_bytes(b"the user's checkpoint")
    with pytest.raises(ValueError, match="already exists.*--force"):
        convert_checkpoint(old, new, trust=True)
    assert new.read_bytes() == b"the user's checkpoint"


def test_the_spacing_search_stops_at_a_dataset_root(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "spacing.json").write_text(json.dumps({"pixel_spacing_mm": [0.0089, 0.0268]}))
    phantom = tmp_path / "data" / "val" / "images"
    phantom.mkdir(parents=True)
    duke = tmp_path / "data" / "duke" / "images"
    duke.mkdir(parents=True)
    (duke.parent / "splits.json").write_text("[]")  # a converter's output: its own dataset
    assert find_spacing_file(phantom) == tmp_path / "data" / "spacing.json"
    assert find_spacing_file(duke) is None
