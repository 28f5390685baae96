"""A HEYEX XML export (the XML and its B-scan and localizer pictures, in the layout eyepy's ``import_heyex_xml``
reads) through ``predict --source``: its geometry and eye read back as written, its pictures not taken for pictures
of their own, and the ETDRS fluid of a phantom eye within 5% of truth.json."""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from helpers_clinic_files import CLASSES, SHAPE, TruthLookupPredictor, assert_within_5_percent
from PIL import Image

from gctxseg.data.oct_volumes import raster_layout, read_oct_volume

pytest.importorskip("eyepy")

LEFT, TOP, LOCALIZER_MM = 0.4, 0.8, 0.015  # where the raster starts on the localizer (mm), mm per localizer pixel


def _sub(parent: ElementTree.Element, path: str, text: object | None = None) -> ElementTree.Element:
    """The element at ``path`` (slash-separated, made where missing) under ``parent``, with ``text``."""
    for tag in path.split("/"):
        found = parent.find(tag)
        parent = found if found is not None else ElementTree.SubElement(parent, tag)
    if text is not None:
        parent.text = str(text)
    return parent


def _image(series: ElementTree.Element, kind: str, url: str, width: int, height: int, scale: tuple[float, float]):
    image = ElementTree.SubElement(series, "Image")
    _sub(image, "ImageType/Type", kind)
    context = _sub(image, "OphthalmicAcquisitionContext")
    _sub(context, "Width", width), _sub(context, "Height", height)
    _sub(context, "ScaleX", scale[0]), _sub(context, "ScaleY", scale[1])
    _sub(image, "ImageData/ExamURL", f"C:\\HEYEX\\export\\{url}")  # a Windows path, as HEYEX writes it
    return context


def write_heyex_xml(folder: Path, images: np.ndarray, done: dict, laterality: str) -> Path:
    """``folder/exam.xml`` with ``exam_b000.png``... (B-scan 0 superior) and ``exam_localizer.png``."""
    count, rows, cols = images.shape
    root = ElementTree.Element("HEDX")
    body = ElementTree.SubElement(root, "BODY")
    _sub(body, "SWVersion/Version", "6.16")
    _sub(body, "Patient/PatientID", "phantom")
    series = _sub(body, "Patient/Study/Series")
    _sub(series, "Laterality", laterality)
    localizer = np.full((512, 512), 70, np.uint8)
    Image.fromarray(localizer).save(folder / "exam_localizer.png")
    context = _image(series, "LOCALIZER", "exam_localizer.png", 512, 512, (LOCALIZER_MM, LOCALIZER_MM))
    _sub(context, "Angle", 30), _sub(context, "Focus", 0.0)
    for k, bscan in enumerate(images):
        Image.fromarray(bscan).save(folder / f"exam_b{k:03d}.png")
        context = _image(series, "OCT", f"exam_b{k:03d}.png", cols, rows, (done["col_mm"], done["row_mm"]))
        y = TOP + k * done["slice_mm"]
        for end, x in (("Start", LEFT), ("End", LEFT + (cols - 1) * done["col_mm"])):
            _sub(context, f"{end}/Coord/X", x), _sub(context, f"{end}/Coord/Y", y)
    path = folder / "exam.xml"
    ElementTree.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def test_heyex_xml_geometry_and_eye_read_back_as_written(phantom, tmp_path):  # noqa: F811
    _, done, data = phantom
    images, _ = data["eyes"]["eye000"]
    volume = read_oct_volume(write_heyex_xml(tmp_path, images, done, "L"))
    geo = volume.geometry
    assert volume.format == "HEYEX XML" and volume.eye == "OS" and volume.eye_source == "HEYEX XML laterality"
    assert (geo.ascan_mm, geo.axial_mm) == (done["col_mm"], done["row_mm"])
    assert np.array_equal(volume.bscans, images)
    assert geo.position_unit == "mm" and geo.positions[1] == pytest.approx(
        (LEFT, TOP + done["slice_mm"], LEFT + (SHAPE[2] - 1) * done["col_mm"], TOP + done["slice_mm"]))
    layout = raster_layout(volume)
    assert layout.order == tuple(range(SHAPE[0])) and layout.slice_mm == pytest.approx(done["slice_mm"])
    assert volume.localizer.shape == (512, 512) and volume.localizer_mm == (LOCALIZER_MM, LOCALIZER_MM)


def test_predict_reads_a_heyex_xml_export_on_its_own_geometry(phantom, tmp_path, monkeypatch, capsys):  # noqa: F811
    from gctxseg.clinical import dicom_out
    from gctxseg.workflows import predict_folder as predict

    _, done, data = phantom
    monkeypatch.setattr(dicom_out, "have_highdicom", lambda: False)  # DICOM out of a non-DICOM source: tested on VOL
    exams = tmp_path / "exams"
    exams.mkdir()
    write_heyex_xml(exams, data["eyes"]["eye001"][0], done, "R")
    monkeypatch.setattr(predict, "load_predictor", lambda *a, **k: TruthLookupPredictor(data["eyes"]))
    summary = predict.predict_folder("unused.pt", exams, tmp_path / "out",
                                     measure=predict.MeasurementOptions(class_names=CLASSES))
    assert "geometry: exam.xml (HEYEX XML, 32 B-scans of 64x96)" in capsys.readouterr().out
    assert summary.failed == [] and summary.written == [tmp_path / "out" / "masks" / "exam"]  # its PNGs are its own
    with open(tmp_path / "out" / "etdrs.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    assert row["file"] == "exam" and row["eye"] == "OD"
    assert_within_5_percent(row, data["truth"]["eye001"]["fluid_nl"], "OD")
    assert (tmp_path / "out" / "enface" / "exam_localizer.png").is_file()
