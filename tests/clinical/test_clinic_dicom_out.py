"""DICOM out for OCT volumes (issue 33 item 3): a DICOM Segmentation and a TID 1500 Measurement Report per volume,
built with highdicom from predict's own records, checked by decoding them back with pydicom and highdicom."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers_clinic_files import CLASSES, SHAPE, TruthLookupPredictor, write_opt_dicom, write_vol
from PIL import Image

from gctxseg.data import MaskValueMap

hd = pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")


def _predict(out: Path, exams: Path, data: dict, monkeypatch, **kwargs):
    from gctxseg.workflows import predict_folder as predict

    monkeypatch.setattr(predict, "load_predictor", lambda *a, **k: TruthLookupPredictor(data["eyes"]))
    return predict.predict_folder("unused.pt", exams, out, measure=predict.MeasurementOptions(class_names=CLASSES),
                                  **kwargs)


@pytest.fixture(scope="module")
def predicted(phantom, tmp_path_factory):
    """predict on a folder of a HEYEX VOL (OD) and an OCT DICOM (OS), with the true masks as the predictions."""
    _, done, data = phantom
    root = tmp_path_factory.mktemp("dicom_out")
    exams = root / "exams"
    exams.mkdir()
    write_vol(exams / "eye000.vol", data["eyes"]["eye000"][0], done, "OD")
    write_opt_dicom(exams / "eye001.dcm", data["eyes"]["eye001"][0], done, "L")
    with pytest.MonkeyPatch.context() as monkeypatch:
        summary = _predict(root / "out", exams, data, monkeypatch)
    assert summary.failed == []
    with open(root / "out" / "etdrs.csv", newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    return root, rows


def _predicted_masks(out: Path, name: str) -> np.ndarray:
    lookup = MaskValueMap((0, 128, 255))
    return np.stack([lookup.encode(np.asarray(Image.open(out / "masks" / name / f"b{k:03d}.png")))
                     for k in range(SHAPE[0])])


@pytest.mark.parametrize("name,source", [("eye000", "out/dicom/eye000_opt.dcm"), ("eye001", "exams/eye001.dcm")])
def test_seg_decodes_back_to_the_predicted_masks_and_references_the_source(predicted, name, source):
    root, _ = predicted
    out = root / "out"
    source_ds = pydicom.dcmread(root / source)  # a VOL's B-scans as an OPT image; a DICOM source itself
    assert source_ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.5.4"  # Ophthalmic Tomography Image
    pydicom.dcmread(out / "dicom" / f"{name}_seg.dcm")  # a plain DICOM file too
    seg = hd.seg.segread(out / "dicom" / f"{name}_seg.dcm")
    assert seg.SegmentationType == "BINARY" and seg.StudyInstanceUID == source_ds.StudyInstanceUID
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source_ds.SOPInstanceUID
    for item in seg.PerFrameFunctionalGroupsSequence:  # every SEG frame names its B-scan in the source
        ref = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == source_ds.SOPInstanceUID and 1 <= ref.ReferencedFrameNumber <= SHAPE[0]
    decoded = seg.get_pixels_by_source_frame(source_ds.SOPInstanceUID, list(range(1, SHAPE[0] + 1)),
                                             combine_segments=True, assert_missing_frames_are_empty=True)
    masks = _predicted_masks(out, name)
    assert masks.max() == 2 and np.array_equal(decoded, masks)  # exactly the masks predict wrote, frame by frame
    from pydicom.sr.codedict import codes

    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert [segments[n].SegmentLabel for n in (1, 2)] == list(CLASSES)
    edema = segments[1].SegmentedPropertyTypeCodeSequence[0]
    assert (edema.CodeValue, edema.CodingSchemeDesignator) == (codes.SCT.Edema.value, "SCT")
    hole = segments[2].SegmentedPropertyTypeCodeSequence[0]
    assert hole.CodingSchemeDesignator == "99GCTX" and hole.CodeMeaning == "hole"


def _referenced(group):
    """The referenced segment (TID 1411) or segmentation frame (TID 1410) item of a measurement group."""
    found = group.referenced_segment if hasattr(group, "referenced_segment") else group.referenced_segmentation_frame
    return found[0].ReferencedSOPSequence[0]


def _segment_number(group) -> int:
    return int(_referenced(group).ReferencedSegmentNumber)


@pytest.mark.parametrize("name,eye,laterality", [("eye000", "OD", "Right"), ("eye001", "OS", "Left")])
def test_sr_numbers_equal_etdrs_csv_and_reference_their_segment(predicted, name, eye, laterality):
    root, rows = predicted
    out, row = root / "out", rows[name]
    seg = pydicom.dcmread(out / "dicom" / f"{name}_seg.dcm")
    pydicom.dcmread(out / "dicom" / f"{name}_sr.dcm")
    sr = hd.sr.srread(out / "dicom" / f"{name}_sr.dcm")
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    report = sr.content
    assert report[0].ContentTemplateSequence[0].TemplateIdentifier == "1500"
    (fluid,) = report.get_volumetric_roi_measurement_groups()
    assert _referenced(fluid).ReferencedSOPInstanceUID == seg.SOPInstanceUID and _segment_number(fluid) == 1
    from gctxseg.clinical.dicom_out import _area_code
    from gctxseg.clinical.etdrs import CIRCLES, subfield_names

    numbers = {}
    for m in fluid.get_measurements():
        assert m.name.meaning == "Volume" and m.unit.value == "nL"
        site = m.finding_sites[0]
        assert site.laterality.meaning == laterality and site.value.meaning == "Retina"
        numbers[site.topographical_modifier.value] = m.value
    areas = [*subfield_names(eye), *CIRCLES, "total"]
    partial = set(row["partial"].split())  # a sector the scan covers in part is coded as such, never as the whole
    outer = bool(partial & {a for a in areas if a.startswith("outer")})
    partial |= {"circle_6mm"} if outer else set()
    expected = {_area_code(a, a in partial)[0]: float(row[f"edema_{a}_nl"]) for a in areas}
    assert numbers == pytest.approx(expected, rel=1e-12) and len(numbers) == 13
    assert {v for v in numbers if v.endswith("-PART")} == {_area_code(a, True)[0] for a in partial}
    diameters = {}
    for group in report.get_planar_roi_measurement_groups():
        assert _segment_number(group) == 2
        assert _referenced(group).ReferencedSOPInstanceUID == seg.SOPInstanceUID
        frame = int(_referenced(group).ReferencedFrameNumber)
        seg_item = seg.PerFrameFunctionalGroupsSequence[frame - 1]
        source_frame = int(seg_item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
        for m in group.get_measurements():
            assert m.name.meaning == "Diameter" and m.unit.value == "um"
            diameters[m.method.value] = (m.value, source_frame)
    # etdrs.csv counts B-scans superior-first; a Spectralis VOL's B-scan 0 is inferior, so frame = S - bscan
    to_frame = (lambda b: SHAPE[0] - int(b)) if name == "eye000" else (lambda b: int(b) + 1)
    assert diameters == {"GCTX-hole-mld": (float(row["hole_mld_um"]), to_frame(row["hole_mld_bscan"])),
                         "GCTX-hole-base": (float(row["hole_base_um"]), to_frame(row["hole_base_bscan"]))}


def test_class_codes_json_sets_the_segments_codes_and_a_bad_one_is_refused(phantom, tmp_path, monkeypatch):
    _, done, data = phantom
    exams = tmp_path / "exams"
    exams.mkdir()
    write_opt_dicom(exams / "eye001.dcm", data["eyes"]["eye001"][0], done, "L")
    codes = tmp_path / "codes.json"
    codes.write_text(json.dumps({"hole": {"value": "H-1", "scheme": "99CLINIC", "meaning": "Full-thickness hole"}}))
    _predict(tmp_path / "out", exams, data, monkeypatch, class_codes=codes)
    seg = pydicom.dcmread(tmp_path / "out" / "dicom" / "eye001_seg.dcm")
    hole = seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0]
    assert (hole.CodeValue, hole.CodingSchemeDesignator, hole.CodeMeaning) == ("H-1", "99CLINIC", "Full-thickness hole")
    for text, says in (("{not json", "not a readable JSON"), ('{"hole": {"value": "H-1"}}', "key 'hole' needs"),
                       ('{"holes": {"value": "1", "scheme": "S", "meaning": "m"}}', "key 'holes' is not a class")):
        codes.write_text(text)
        with pytest.raises(ValueError) as err:
            _predict(tmp_path / "out2", exams, data, monkeypatch, class_codes=codes)
        assert str(err.value).startswith(str(codes)) and says in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out2").exists()  # refused before anything was written


def test_a_volume_without_pixel_spacing_gets_a_note_not_a_guessed_dicom_ruler(phantom, tmp_path, monkeypatch,
                                                                              capsys):
    _, done, data = phantom
    exams = tmp_path / "exams"
    exams.mkdir()
    write_vol(exams / "eye000.vol", data["eyes"]["eye000"][0], dict(done, col_mm=250.0), "OD")
    summary = _predict(tmp_path / "out", exams, data, monkeypatch)
    assert summary.failed == [] and not list((tmp_path / "out").glob("dicom/*.dcm"))
    assert "no usable pixel spacing in the file; DICOM SEG/SR are not written" in capsys.readouterr().err


def test_without_highdicom_predict_says_how_to_install_it(phantom, tmp_path, monkeypatch, capsys):
    _, done, data = phantom
    exams = tmp_path / "exams"
    exams.mkdir()
    write_opt_dicom(exams / "eye001.dcm", data["eyes"]["eye001"][0], done, "L")
    monkeypatch.setitem(sys.modules, "highdicom", None)  # import highdicom now raises ImportError
    summary = _predict(tmp_path / "out", exams, data, monkeypatch)
    assert summary.failed == [] and not (tmp_path / "out" / "dicom").exists()
    assert 'DICOM SEG/SR not written (highdicom is not installed; pip install "gctxseg[dicom]")' in (
        capsys.readouterr().err)
    codes = tmp_path / "codes.json"
    codes.write_text("{}")
    with pytest.raises(ValueError, match=r'needs highdicom; pip install "gctxseg\[dicom\]"'):
        _predict(tmp_path / "out2", exams, data, monkeypatch, class_codes=codes)


def _spacing_moved(path: Path, where: str) -> None:
    """Rewrite an OPT so that its PixelSpacing sits at the top level (``top``) or nowhere (``none``)."""
    ds = pydicom.dcmread(path)
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    if where == "top":
        ds.PixelSpacing = measures.PixelSpacing
    del measures.PixelSpacing
    ds.save_as(path, enforce_file_format=True)


def test_an_opt_with_its_pixel_spacing_at_the_top_level_is_measured_and_gets_its_seg_and_sr(phantom, tmp_path,
                                                                                            monkeypatch, capsys):
    from gctxseg.data.oct_volumes import read_oct_volume

    _, done, data = phantom
    exams = tmp_path / "exams"
    exams.mkdir()
    write_opt_dicom(exams / "eye001.dcm", data["eyes"]["eye001"][0], done, "L")
    _spacing_moved(exams / "eye001.dcm", "top")
    geo = read_oct_volume(exams / "eye001.dcm").geometry
    assert (geo.axial_mm, geo.ascan_mm) == pytest.approx((done["row_mm"], done["col_mm"]))
    assert geo.sources["ascan_mm"] == "DICOM PixelSpacing[1]"  # where it was found, not where it usually is
    summary = _predict(tmp_path / "out", exams, data, monkeypatch)
    assert summary.failed == []
    seg = hd.seg.segread(tmp_path / "out" / "dicom" / "eye001_seg.dcm")
    spacing = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert [float(v) for v in spacing] == pytest.approx([done["row_mm"], done["col_mm"]])
    assert (tmp_path / "out" / "dicom" / "eye001_sr.dcm").is_file()


def test_an_opt_without_pixel_spacing_gets_a_note_and_no_dicom_objects(phantom, tmp_path, monkeypatch, capsys):
    _, done, data = phantom
    exams = tmp_path / "exams"
    exams.mkdir()
    write_opt_dicom(exams / "eye001.dcm", data["eyes"]["eye001"][0], done, "L")
    _spacing_moved(exams / "eye001.dcm", "none")
    summary = _predict(tmp_path / "out", exams, data, monkeypatch)
    out = capsys.readouterr()
    assert summary.failed == [] and not list((tmp_path / "out").glob("dicom/*.dcm"))
    assert "no usable pixel spacing in the file; DICOM SEG/SR are not written" in out.err
    assert "read-out in pixels: " in out.out  # its geometry line


def test_a_read_out_without_a_number_writes_the_seg_and_says_why_there_is_no_report(phantom, tmp_path):
    from gctxseg.clinical.dicom_out import write_dicom_objects
    from gctxseg.data.oct_volumes import raster_layout, read_oct_volume

    _, done, data = phantom
    path = write_opt_dicom(tmp_path / "eye001.dcm", data["eyes"]["eye001"][0], done, "L")
    volume = read_oct_volume(path)
    labels = data["eyes"]["eye001"][1]
    record = {"file": "eye001", "eye": "OS", "quadrants": "nasal/temporal"}  # no number: a read-out in pixels
    written, notes = write_dicom_objects(volume, labels, record, CLASSES, raster_layout(volume), tmp_path / "dicom",
                                         "eye001")
    assert [p.name for p in written] == ["eye001_seg.dcm"] and (tmp_path / "dicom" / "eye001_seg.dcm").is_file()
    assert len(notes) == 1 and notes[0].startswith(str(path)) and "no measurement report" in notes[0]


def test_without_bscan_positions_the_sr_carries_no_quadrant_it_would_have_guessed(phantom, tmp_path, monkeypatch,
                                                                                   capsys):
    _, done, data = phantom
    exams = tmp_path / "exams"
    exams.mkdir()
    path = write_opt_dicom(exams / "eye001.dcm", data["eyes"]["eye001"][0], done, "L")
    ds = pydicom.dcmread(path)
    for item in ds.PerFrameFunctionalGroupsSequence:  # plane positions kept (the distance), frame locations gone
        del item.OphthalmicFrameLocationSequence
    ds.save_as(path, enforce_file_format=True)
    summary = _predict(tmp_path / "out", exams, data, monkeypatch)
    assert summary.failed == []
    assert "no B-scan positions in the file; eye001_sr.dcm holds the central subfield, the circles" in (
        capsys.readouterr().err)
    (fluid,) = hd.sr.srread(tmp_path / "out" / "dicom" / "eye001_sr.dcm").content \
        .get_volumetric_roi_measurement_groups()
    sites = {m.finding_sites[0].topographical_modifier.value for m in fluid.get_measurements()}
    # a partly scanned circle keeps its own code (-PART); no quadrant (ETDRS-IS, -ON ...) is named at all
    assert {v.removesuffix("-PART") for v in sites} == {"ETDRS-C", "ETDRS-1MM", "ETDRS-3MM", "ETDRS-6MM", "GCTX-TOTAL"}
