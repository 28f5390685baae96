"""Issue 18: no received file or flag crashes the tool or measures with the wrong ruler.

Item 5 (duplicate class names), 7 (one spacing check for the flag, spacing.json and DICOM), 8 (CSV formula
injection) and 9 (a checkpoint's fields checked before its model is built). Tiny arrays, no training.
"""

from __future__ import annotations

import csv
import json
import math
import struct
import time

import numpy as np
import pytest
import torch
from conftest import write_duke_png_copy
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from gctxseg.cli import main
from gctxseg.clinical.measurements import (
    MeasurementOptions,
    class_names_for,
    fill_counts,
    plan_measurements,
    read_spacing_file,
    write_measurements_csv,
)
from gctxseg.core.files import atomic_write_csv
from gctxseg.data import DatasetError, read_info
from gctxseg.models import create_model
from gctxseg.runs.checkpoint import load_checkpoint, model_from_checkpoint


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and message.strip() == message
    return message


# ---------------------------------------------------------------- item 8: CSV formula injection


def test_csv_cells_a_spreadsheet_would_run_get_a_quote_and_numbers_stay_numbers(tmp_path):
    path = tmp_path / "t.csv"
    texts = ['=HYPERLINK("http:x")+1.jpg', "+a", "-a", "@SUM(A1)", "\tx", "\rx", "-1+1", "plain", "a=b"]
    rows = [{"text": t, "int": -3, "float": -2.5, "number_text": "-1e-05"} for t in texts]
    atomic_write_csv(path, ["text", "int", "float", "number_text", "=1+1"], rows)
    with open(path, newline="") as f:
        header, *cells = list(csv.reader(f))
    assert header[-1] == "'=1+1"  # class names reach the header
    expected = ["'" + t for t in texts[:7]] + texts[7:]
    assert [row[0] for row in cells] == expected
    assert {tuple(row[1:4]) for row in cells} == {("-3", "-2.5", "-1e-05")}  # numbers, also as text, unchanged


def test_a_carriage_return_inside_a_cell_cannot_start_a_row_with_a_formula(tmp_path):
    atomic_write_csv(tmp_path / "t.csv", ["file", "n"], [{"file": "x\r=HYPERLINK(1)", "n": 1}])
    text = (tmp_path / "t.csv").read_bytes().decode()
    assert text == 'file,n\n"x\r=HYPERLINK(1)",1\n'  # quoted: one cell, one row


def test_a_file_and_a_class_named_like_formulas_are_text_in_measurements_csv(tmp_path):
    image = tmp_path / '=HYPERLINK("http x")+1.png'
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(image)
    plan = fill_counts(plan_measurements([image], MeasurementOptions(pixel_spacing=(0.1, 0.1))), {image: [3]})
    write_measurements_csv(plan, tmp_path / "measurements.csv", ["@cmd"])
    with open(tmp_path / "measurements.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["file"] == "'" + image.name and rows[0]["'@cmd_pixels"] == "3"


# ---------------------------------------------------------------- item 7: one check for every spacing

BAD_SPACINGS = [
    ((1e200, 1e200), "implausible, above 10 mm per pixel"),  # overflowed areas to inf
    ((11.0, 0.5), "implausible, above 10 mm per pixel"),
    ((True, 1), "numbers only"),
    (("0.5", "0.5"), "numbers only"),
    ((math.nan, 0.5), "finite and > 0"),
    ((0.5, -0.5), "finite and > 0"),
    ((0.5,), "must be 2 numbers"),
]


@pytest.mark.parametrize("spacing, problem", BAD_SPACINGS)
def test_pixel_spacing_flag_is_checked(spacing, problem):
    with pytest.raises(ValueError, match=problem) as err:
        MeasurementOptions(pixel_spacing=spacing).check()
    assert _one_line(err).startswith("--pixel-spacing ") and "e.g. --pixel-spacing" in str(err.value)


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
    assert _one_line(err).startswith(f"{path}: pixel_spacing_mm") and "delete the file" in str(err.value)


def test_spacing_json_of_two_numbers_still_reads(tmp_path):
    (tmp_path / "spacing.json").write_text(json.dumps({"pixel_spacing_mm": [0.5, 2]}))
    assert read_spacing_file(tmp_path) == (0.5, 2.0)


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
    assert _one_line(err).startswith(f"{path}: DICOM PixelSpacing") and "--pixel-spacing" in str(err.value)
    with pytest.raises(DatasetError, match=problem):  # not silently left out of measurements.csv
        plan_measurements([path], MeasurementOptions())


def test_a_plausible_dicom_pixel_spacing_still_measures(tmp_path):
    _dicom(tmp_path / "s.dcm", b"0.5\\0.25")
    assert read_info(tmp_path / "s.dcm").spacing == (0.5, 0.25)
    (row,) = plan_measurements([tmp_path / "s.dcm"], MeasurementOptions())
    assert row.geometry.pixel_mm2 == pytest.approx(0.125)


# ---------------------------------------------------------------- item 9: checkpoint fields

SMALL = {  # tiny but genuine options of every registered model
    "unet": {"base_width": 2},
    "gct_unet": {"base_width": 2},
    "gctx_unet": {"embed_dim": 8, "img_size": 32, "window_sizes": [2, 2, 2, 1]},
    "nnunet": {"base_width": 2, "patch_size": [32, 32]},
    "unet3_plus": {"widths": [2, 4, 8, 16, 32], "cat_channels": 2},
    "unet_plus_plus": {"widths": [2, 4, 8, 16, 32]},
}


def _checkpoint(name: str = "unet", **changes) -> dict:
    torch.manual_seed(0)
    model = create_model(name, 1, 3, **SMALL[name])
    ckpt = {"model_name": name, "model_kwargs": dict(SMALL[name]), "model": model.state_dict(),
            "value_map": {"0": 0, "128": 1, "255": 2}, "fingerprint": {"channels": 1}}  # fmt: skip
    return {**ckpt, **changes}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_genuine_checkpoints_of_every_model_still_build(name):
    ckpt = _checkpoint(name)
    model = model_from_checkpoint(ckpt, "best.pt")
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"model_kwargs": {"base_width": 2**20}}, r"model_kwargs\['base_width'\] = 1048576: a size must be 1..4096"),
        ({"model_kwargs": {"base_width": 2, "depth": 5}}, r"\['depth'\] are no options of unet"),
        ({"model_kwargs": {"base_width": True}}, "must be int"),
        ({"model_kwargs": {"bilinear": "yes"}}, "must be bool"),
        ({"model_kwargs": {"base_width": math.inf}}, "must be int"),
        ({"model_kwargs": [2]}, "model_kwargs list, not a dict"),
        ({"model_name": "unet9"}, "unknown model 'unet9'"),
        ({"model_name": 3}, "model_name 3 is not a model's name"),
        ({"value_map": None}, "value_map None is not a map"),
        ({"value_map": [0, 128, 255]}, "is not a map of mask values"),
        ({"value_map": {"0": "0", "255": "1"}}, "must map to classes 0, 1, ... in order"),
        ({"value_map": {"0": 1, "255": 0}}, "must map to classes 0, 1, ... in order"),
        ({"fingerprint": {}}, "no input channels"),
        ({"fingerprint": {"channels": 2**40}}, "input channels 1099511627776, not a count in 1..4096"),
    ],
)
def test_crafted_checkpoint_fields_are_refused_with_one_line_naming_the_file(tmp_path, changes, problem):
    path = tmp_path / "best.pt"
    ckpt = _checkpoint()
    if "value_map" in changes and changes["value_map"] is None:
        del ckpt["value_map"]  # missing altogether
        changes = {}
    torch.save({**ckpt, **changes}, path)
    with pytest.raises(ValueError, match=problem) as err:
        load_checkpoint(path)
    assert _one_line(err).startswith(f"{path}: not a usable gctxseg checkpoint")


def test_options_within_bounds_that_make_more_weights_than_the_file_holds_allocate_nothing():
    ckpt = _checkpoint(model_kwargs={"base_width": 4096})  # 55 G weights, 220 GB: counted on meta tensors
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"make 54,8\d\d,\d{3},\d{3} weights for unet, the file holds") as err:
        model_from_checkpoint(ckpt, "best.pt")
    assert _one_line(err).startswith("best.pt: not a usable gctxseg checkpoint")
    assert "conv_0.0.0.weight: (2, 1, 3, 3) in the file, (4096, 1, 3, 3) built" in str(err.value)
    assert time.perf_counter() - start < 10


def test_predict_with_a_crafted_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "img" / "a.png")
    torch.save(_checkpoint(model_kwargs={"base_width": 2**20}), tmp_path / "best.pt")
    code = main(["predict", "--weights", str(tmp_path / "best.pt"), "--source", str(tmp_path / "img"),
                 "--out", str(tmp_path / "pred"), "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "not a usable gctxseg checkpoint" in err and err.count("\n") == 1, err


# ---------------------------------------------------------------- item 5: duplicate class names


@pytest.mark.parametrize(
    "names, duplicate",
    [(("fluid", "fluid"), "'fluid' would name classes 1 and 2"), (("class2",), "'class2' would name classes 1 and 2")],
)
def test_duplicate_class_names_are_refused(names, duplicate):
    with pytest.raises(ValueError, match=duplicate) as err:
        class_names_for(MeasurementOptions(class_names=names), 3)
    assert _one_line(err).startswith(f"--class-names {' '.join(names)}:")


def test_distinct_class_names_and_a_class_named_its_own_default_pass():
    assert class_names_for(MeasurementOptions(class_names=("edema", "hole")), 3) == ["edema", "hole"]
    assert class_names_for(MeasurementOptions(class_names=("class1",)), 3) == ["class1", "class2"]


# ---------------------------------------------------------------- item 6: input name -> output names


def test_stems_that_collide_are_measured_and_shown_in_the_gallery(tmp_path):
    from gctxseg.workflows.predict_folder import output_names, predict_folder

    ckpt = {**_checkpoint(), "base_size": [16, 16], "normalization": {"mean": [0.5], "std": [0.25]}}
    torch.save(ckpt, tmp_path / "best.pt")
    (tmp_path / "img").mkdir()
    for name in ("a.jpg", "a.png", "b.jpg"):
        scan = np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)
        Image.fromarray(scan).save(tmp_path / "img" / name)
    summary = predict_folder(tmp_path / "best.pt", tmp_path / "img", tmp_path / "out", device="cpu", amp="off")
    with open(tmp_path / "out" / "measurements.csv", newline="") as f:
        rows = {row["file"]: row for row in csv.DictReader(f)}
    assert sorted(rows) == ["a.jpg", "a.png", "b.jpg"] and not summary.failed
    assert all(row["note"] == "" and row["class1_pixels"] != "" for row in rows.values()), rows
    page = (tmp_path / "out" / "index.html").read_text()
    for shown in ("a.jpg.png", "a.png.png", "b.png"):
        assert f'src="overlays/{shown}"' in page and f'href="masks/{shown}"' in page
    names = output_names([tmp_path / n for n in ("a.jpg", "a.jpg.png", "A.png")])  # a.jpg's name is a.jpg.png's stem
    assert len({n.casefold() for n in names.values()}) == 3


# item 10: a grouping file of the wrong shape is refused with one line naming it; never silently passed over

def _patients(root, names):
    from gctxseg.data.folder import find_pairs

    for name in names:
        for sub in ("images", "masks"):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / sub / f"{name}.png")
    return find_pairs(root / "images", ".png", ".png")


NAMES = [f"p{p}_b{b}" for p in range(3) for b in range(2)]


@pytest.mark.parametrize("splits, problem", [
    ('"p0_b0"', "expected a list"),
    ('[{"train": "p0_b0", "val": []}]', 'fold 0 "train" is str, not a list'),
    ('[{"train": [["p0_b0"]], "val": []}]', 'fold 0 "train"[0] is ["p0_b0"], not a file stem'),
    ('[{"train": null, "val": []}]', 'fold 0 "train" is null'),
    ('[{"train": ["p0_b0", 7], "val": []}]', 'fold 0 "train"[1] is 7, not a file stem'),
    ('[{"train": []}]', 'fold 0 has no "train" and "val"'),
])
def test_splits_json_of_the_wrong_types_is_one_line(tmp_path, splits, problem):
    from gctxseg.data.splits import resolve_splits

    pairs = _patients(tmp_path, NAMES)
    (tmp_path / "splits.json").write_text(splits)
    with pytest.raises(DatasetError) as err:
        resolve_splits(pairs, 1, tmp_path / "images")
    line = _one_line(err)
    assert problem in line and "splits.json" in line


def test_splits_json_of_another_fold_count_is_refused_not_ignored(tmp_path):
    from gctxseg.data.splits import group_kfold, resolve_splits

    pairs = _patients(tmp_path, NAMES)
    (tmp_path / "splits.json").write_text(json.dumps(group_kfold({n: n[:2] for n in NAMES}, 3)))
    with pytest.raises(DatasetError, match=r"holds 3 folds, not --folds 2; use --folds 3, or --group-regex"):
        resolve_splits(pairs, 2, tmp_path / "images")
    assert len(resolve_splits(pairs, 3, tmp_path / "images")[0]) == 3


@pytest.mark.parametrize("groups, problem", [
    ({n: n[:2] for n in NAMES[:-1]}, "no group for 1 of 6 images (e.g. ['p2_b1'])"),
    ({**{n: n[:2] for n in NAMES}, "p0_b0": 1}, "the group of 'p0_b0' is 1, not a name"),
    ({**{n: n[:2] for n in NAMES}, "p0_b0": None}, "the group of 'p0_b0' is null"),
    ({**{n: n[:2] for n in NAMES}, "p0_b0": ["p0"]}, "is [\"p0\"], not a name"),
])
def test_groups_json_missing_stems_or_of_the_wrong_types_is_refused(tmp_path, groups, problem):
    from gctxseg.data.splits import resolve_splits

    pairs = _patients(tmp_path, NAMES)
    (tmp_path / "groups.json").write_text(json.dumps(groups))
    with pytest.raises(DatasetError) as err:
        resolve_splits(pairs, 3, tmp_path / "images")
    assert problem in _one_line(err) and "groups.json" in _one_line(err)


def test_a_full_groups_json_keeps_patients_apart(tmp_path):
    from gctxseg.data.splits import resolve_splits

    pairs = _patients(tmp_path, NAMES)
    (tmp_path / "groups.json").write_text(json.dumps({n: n[:2] for n in NAMES}))
    splits, source = resolve_splits(pairs, 3, tmp_path / "images")
    assert source.endswith("groups.json")
    for fold in splits:
        assert not {n[:2] for n in fold["train"]} & {n[:2] for n in fold["val"]}


# item 11: convert and received weights name what is wrong, never a temporary name or a wrong reason

def test_convert_a_damaged_annotation_is_named_and_nothing_is_written(tmp_path, capsys):
    write_duke_png_copy(tmp_path / "src")
    damaged = tmp_path / "src" / "annotation" / "img_5.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 16), dtype=np.uint8)).save(damaged)
    damaged.write_bytes(damaged.read_bytes()[:120])  # the header reads, the pixels do not
    assert main(["convert", "duke-dme", str(tmp_path / "src"), str(tmp_path / "out"), "--folds", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "img_5.png: damaged" in err[0] and "free space" not in err[0]
    assert not (tmp_path / "out").exists() and not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_convert_a_write_failure_names_the_output_folder_not_the_staging_one(tmp_path, capsys, monkeypatch):
    from gctxseg.data import convert

    write_duke_png_copy(tmp_path / "src")

    def disk_full(out, name, image, fluid):
        raise OSError(28, "No space left on device", str(out / "images" / f"{name}.png"))

    monkeypatch.setattr(convert, "_write_pair", disk_full)
    assert main(["convert", "duke-dme", str(tmp_path / "src"), str(tmp_path / "out"), "--folds", "2"]) == 4
    err = capsys.readouterr().err
    assert str(tmp_path / "out") in err and "converting" not in err and "No space left" in err


def test_convert_an_odd_subject_file_name_is_one_line(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    for name in ("Subject_01.mat", "Subject_02.mat", "Subject_x.mat"):
        (tmp_path / "src" / name).write_bytes(b"")
    assert main(["convert", "duke-dme", str(tmp_path / "src"), str(tmp_path / "out"), "--folds", "2"]) == 1
    assert "not a Duke DME subject file (Subject_NN.mat)" in capsys.readouterr().err


def test_weights_that_do_not_fit_name_the_key_and_both_shapes():
    ckpt = _checkpoint()
    key = next(k for k, v in ckpt["model"].items() if v.dim() == 4)
    state = {**ckpt["model"], key: torch.zeros(3, 3, 3, 3)}
    del state[next(reversed(state))]
    with pytest.raises(ValueError) as err:
        model_from_checkpoint({**ckpt, "model": state}, "x.pt")
    line = _one_line(err)
    assert f"{key}: (3, 3, 3, 3) in the file, {tuple(ckpt['model'][key].shape)} in the model" in line
    assert "1 missing" in line


# item 12: gallery links of odd names, empty volume names, a slice spacing that nothing uses

def test_gallery_links_of_names_with_url_characters_are_encoded(tmp_path):
    from urllib.parse import unquote

    from gctxseg.workflows.predict_folder import predict_folder

    ckpt = {**_checkpoint(), "base_size": [16, 16], "normalization": {"mean": [0.5], "std": [0.25]}}
    torch.save(ckpt, tmp_path / "best.pt")
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "img" / "scan#1 %20?.jpg")
    predict_folder(tmp_path / "best.pt", tmp_path / "img", tmp_path / "out", device="cpu", amp="off")
    page = (tmp_path / "out" / "index.html").read_text()
    src = page.split('src="overlays/', 1)[1].split('"', 1)[0]
    assert "#" not in src and "?" not in src and " " not in src
    assert (tmp_path / "out" / "overlays" / unquote(src)).is_file()
    href = page.split('href="masks/', 1)[1].split('"', 1)[0]
    assert (tmp_path / "out" / "masks" / unquote(href)).is_file()


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


# item 4 (the rest): every predict says which spacing it measures with, and from where

def test_predict_says_which_spacing_it_used_and_from_where(tmp_path, capsys):
    from gctxseg.data.spacing import write_spacing_file
    from gctxseg.workflows.predict_folder import predict_folder

    ckpt = {**_checkpoint(), "base_size": [16, 16], "normalization": {"mean": [0.5], "std": [0.25]}}
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
