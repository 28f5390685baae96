"""DICOM out for OCT volumes: a Segmentation and a TID 1500 Measurement Report per volume, with highdicom.

For each volume file ``predict`` measures, :func:`write_dicom_objects` writes into ``out/dicom/``:

- ``NAME_seg.dcm``: a DICOM Segmentation (highdicom ``Segmentation``, ``BINARY``: the type every SEG viewer
  reads) of the predicted label stack on the source's frames (one SEG frame per B-scan and segment with
  foreground, each naming its source frame), one segment per foreground class, labelled with the class name and
  coded (:func:`class_code`);
- ``NAME_sr.dcm``: a Comprehensive SR holding the TID 1500 Measurement Report: per fluid class one TID 1411
  volumetric group referencing its segment, with the fluid volume per ETDRS subfield, circle and the whole scan
  (SCT "Volume", UCUM ``nL``, finding site retina with the eye's laterality and the subfield as topographical
  modifier); for the hole one TID 1410 planar group per B-scan it was measured on, referencing that SEG frame,
  with the minimum linear and base diameters (SCT "Diameter", UCUM ``um``, the kind of diameter as method).
  The numbers are the cells of the volume's ``etdrs.csv`` row (never recomputed); blank cells are left out.
- ``NAME_opt.dcm`` for a source that is not DICOM (HEYEX ``.vol``/``.e2e``): the B-scans as a multi-frame
  Ophthalmic Tomography image (:func:`opt_image_from_volume`) that the SEG and SR reference.

Codes: a class whose name says edema (``edema``, ``oedema``) gets SNOMED CT 79654002 "Edema" and one that says
cyst gets 367643001 "Cyst" (category 49755003 "Morphologically Abnormal Structure", anatomic region 5665001
"Retina"), all read from pydicom's code dictionary, not typed here; every other class (subretinal or
intraretinal fluid, macular hole: pydicom's and highdicom's dictionaries hold no SNOMED CT concept for them) gets
a code of the private scheme ``99GCTX`` (PS3.16 section 8.2: designators that begin with 99 are private), which
the user replaces with ``predict --class-codes FILE.json`` (:func:`read_class_codes`). The ETDRS subfields and the
kinds of hole diameter have no standard code either: they are ``99GCTX`` codes too (:func:`_area_code`).
highdicom is an optional extra (``pip install "gctxseg[dicom]"``), imported only here.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..data.errors import DatasetError
from ..data.oct_volumes import OPT_SOP_CLASS, OctVolume, RasterLayout
from .etdrs import CIRCLES, subfield_names
from .etdrs_rows import fluid_classes, hole_classes

__all__ = ["DICOM_INSTALL", "LOCAL_SCHEME", "NoDicomImage", "ClassCode", "class_code", "read_class_codes",
           "have_highdicom", "opt_image_from_volume", "source_image", "build_segmentation", "build_measurement_report",
           "write_dicom_objects"]

DICOM_INSTALL = 'pip install "gctxseg[dicom]"'
LOCAL_SCHEME = "99GCTX"  # a private coding scheme: PS3.16 section 8.2, designators beginning with "99"
# Type 2 attributes a Segmentation/SR copies from its source: present (maybe empty) in every conformant image,
# absent in some exports; an empty value is what the standard asks for where the value is unknown
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")
_MANUFACTURER = "gctxseg"


def have_highdicom() -> bool:
    try:
        import highdicom  # noqa: F401
    except ImportError:
        return False
    return True


def _highdicom(what: str):
    try:
        import highdicom
    except ImportError:
        raise DatasetError(f"{what}: writing DICOM SEG/SR needs highdicom; {DICOM_INSTALL}") from None
    return highdicom


# ---------------------------------------------------------------- the segments' codes


class NoDicomImage(DatasetError):
    """A volume without the pixel spacing a DICOM image needs: its SEG/SR are not written (a note, not a failure)."""


@dataclass(frozen=True)
class ClassCode:
    """A class's segmented property type (and category), and where the code came from."""

    value: str
    scheme: str
    meaning: str
    category: tuple[str, str, str] = ("49755003", "SCT", "Morphologically Abnormal Structure")
    source: str = ""

    def codes(self):
        from pydicom.sr.coding import Code

        return Code(self.value, self.scheme, self.meaning), Code(*self.category)


def _dictionary_code(keyword: str) -> tuple[str, str, str]:
    """A SNOMED CT code from pydicom's dictionary by its keyword (value, scheme, meaning)."""
    from pydicom.sr.codedict import codes

    code = getattr(codes.SCT, keyword)
    return code.value, code.scheme_designator, code.meaning


# class-name words -> pydicom dictionary keyword of a SNOMED CT concept that names the class
_SNOMED_BY_WORD = (("oedema", "Edema"), ("edema", "Edema"), ("cyst", "Cyst"))


def class_code(name: str, given: Mapping[str, ClassCode] | None = None) -> ClassCode:
    """The code of class ``name``: the user's (``--class-codes``), else SNOMED CT where the name says edema or
    cyst, else a private ``99GCTX`` code named after the class (module docstring)."""
    if given and name in given:
        return given[name]
    lowered = name.lower()
    category = _dictionary_code("MorphologicallyAbnormalStructure")
    for word, keyword in _SNOMED_BY_WORD:
        if word in lowered:
            return ClassCode(*_dictionary_code(keyword), category, "SNOMED CT (pydicom code dictionary)")
    return ClassCode(f"GCTX-{name}", LOCAL_SCHEME, name, category,
                     f"private scheme {LOCAL_SCHEME}: no SNOMED CT code known to gctxseg; set it with --class-codes")


def read_class_codes(path: str | Path) -> dict[str, ClassCode]:
    """``--class-codes FILE``: ``{"class name": {"value": ..., "scheme": ..., "meaning": ..., "category":
    {"value", "scheme", "meaning"} (optional)}}``.

    Raises:
        ValueError: unreadable JSON or a missing key (one line naming the file and the key).
    """
    path = Path(path)
    example = '{"hole": {"value": "...", "scheme": "SCT", "meaning": "Macular hole"}}'
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable JSON file ({type(err).__name__}); write e.g. {example}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a JSON object of class name -> code; write e.g. {example}")
    out = {}
    for name, entry in raw.items():
        try:
            code = tuple(str(entry[k]) for k in ("value", "scheme", "meaning"))
            category = entry.get("category")
            category = (tuple(str(category[k]) for k in ("value", "scheme", "meaning")) if category is not None
                        else _dictionary_code("MorphologicallyAbnormalStructure"))
        except (TypeError, KeyError, AttributeError):
            raise ValueError(f"{path}: key {name!r} needs \"value\", \"scheme\" and \"meaning\" (and optionally "
                             f"\"category\" with the same three); write e.g. {example}") from None
        if not all(code):
            raise ValueError(f"{path}: key {name!r} has an empty value, scheme or meaning; fill them in")
        out[name] = ClassCode(*code, category, f"{path}")
    return out


# ---------------------------------------------------------------- the source image


def _fill_type2(ds) -> None:
    for keyword in _TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")


def opt_image_from_volume(volume: OctVolume):
    """A multi-frame Ophthalmic Tomography image of ``volume``'s B-scans (file order) for a source that is not
    DICOM, so that the Segmentation and the report have an image to reference.

    Geometry: ``PixelSpacing`` (axial, A-scan mm); each B-scan's plane in a frame of reference of this image: x
    along the localizer's x (mm), y the depth, z up the localizer (minus its y, mm), from the B-scans' start/end
    positions where the file has them in mm, else B-scans stacked ``bscan_distance_mm`` apart. Patient identity
    is left empty (eyepy's volume does not carry it).

    Raises:
        DatasetError: the file's A-scan or axial spacing is unknown (a DICOM image without a ruler would be read
            as one by a viewer).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    measures = _pixel_measures(volume)
    count, rows, cols = volume.bscans.shape
    now = datetime.datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = OPT_SOP_CLASS, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = OPT_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    _fill_type2(ds)
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "OPT", 1, 1
    ds.Manufacturer, ds.SoftwareVersions = _MANUFACTURER, __version__
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SeriesDescription = f"B-scans of {volume.name} ({volume.format})"
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AcquisitionDateTime = ds.ContentDate + ds.ContentTime
    ds.ImageLaterality = {"OD": "R", "OS": "L"}.get(volume.eye or "", "")
    ds.NumberOfFrames, ds.Rows, ds.Columns = count, rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.BurnedInAnnotation, ds.PresentationLUTShape, ds.LossyImageCompression = "NO", "IDENTITY", "00"
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([measures])
    planes = _planes(volume)
    if planes is not None:
        positions, orientations = planes
        ds.PerFrameFunctionalGroupsSequence = DicomSequence(positions)
        if len({tuple(o.ImageOrientationPatient) for o in orientations}) == 1:  # one raster: shared (highdicom)
            shared.PlaneOrientationSequence = DicomSequence([orientations[0]])
        else:  # radial or mixed: said per frame, as they lie
            for item, orientation in zip(positions, orientations):
                item.PlaneOrientationSequence = DicomSequence([orientation])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    ds.PixelData = np.ascontiguousarray(volume.bscans, np.uint8).tobytes()
    return ds


def _pixel_measures(volume: OctVolume):
    """The ``PixelMeasuresSequence`` item of ``volume``'s geometry: ``PixelSpacing`` (axial, A-scan mm) and
    ``SliceThickness`` (the stated B-scan distance, as devices write it; empty, Type 2, where unknown).

    Raises:
        NoDicomImage: the file has no usable pixel spacing (a DICOM image without a ruler would be measured by a
            viewer; a Segmentation copies its source's).
    """
    from pydicom.dataset import Dataset

    geo = volume.geometry
    if geo.ascan_mm is None or geo.axial_mm is None:
        raise NoDicomImage(f"{volume.path}: no usable pixel spacing in the file; DICOM SEG/SR are not written for it "
                           "(a DICOM image needs a ruler)")
    measures = Dataset()
    measures.PixelSpacing = [geo.axial_mm, geo.ascan_mm]
    measures.SliceThickness = geo.bscan_distance_mm
    return measures


def _planes(volume: OctVolume) -> tuple[list, list] | None:
    """Per-frame plane position items and plane orientations (see :func:`opt_image_from_volume`), None without
    either the B-scans' mm positions or their distance."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    geo, count = volume.geometry, len(volume.bscans)
    if geo.positions and geo.position_unit == "mm":
        starts = [(p[0], 0.0, -p[1]) for p in geo.positions]
        along = [np.asarray([p[2] - p[0], 0.0, -(p[3] - p[1])]) for p in geo.positions]
    elif geo.bscan_distance_mm is not None:
        starts = [(0.0, 0.0, -k * geo.bscan_distance_mm) for k in range(count)]
        along = [np.asarray([1.0, 0.0, 0.0])] * count
    else:
        return None
    positions, orientations = [], []
    for start, direction in zip(starts, along):
        direction = direction / max(float(np.linalg.norm(direction)), 1e-12)
        position, orientation, item = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [round(float(v), 6) for v in start]
        orientation.ImageOrientationPatient = [*(round(float(v), 4) for v in direction), 0.0, 1.0, 0.0]
        item.PlanePositionSequence = DicomSequence([position])
        positions.append(item)
        orientations.append(orientation)
    return positions, orientations


def source_image(volume: OctVolume):
    """(the image the objects reference, True where it is new and must be written): the DICOM file's own header
    (Type 2 patient/study attributes added empty where the export left them out), else :func:`opt_image_from_volume`."""
    if volume.format != "DICOM OPT":
        return opt_image_from_volume(volume), True
    import pydicom

    ds = pydicom.dcmread(volume.path, stop_before_pixels=True)
    _fill_type2(ds)
    _shared_pixel_measures(ds, volume)
    return ds, False


def _shared_pixel_measures(ds, volume: OctVolume) -> None:
    """Give the header (in memory) the shared ``PixelMeasuresSequence`` a Segmentation copies, where the export
    keeps the spacing elsewhere (top level, per frame): the spacing the read-out used, never another.

    Raises:
        NoDicomImage: the file has no usable pixel spacing.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    item = _pixel_measures(volume)
    shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
    if not shared:
        ds.SharedFunctionalGroupsSequence = shared = DicomSequence([Dataset()])
    measures = getattr(shared[0], "PixelMeasuresSequence", None)
    if measures and "PixelSpacing" in measures[0]:
        return
    shared[0].PixelMeasuresSequence = DicomSequence([item])


# ---------------------------------------------------------------- the Segmentation


def _algorithm(hd):
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(name="gctxseg", version=__version__,
                                              family=codes.cid7162.ArtificialIntelligence)


def build_segmentation(source, labels: np.ndarray, class_names: Sequence[str],
                       given: Mapping[str, ClassCode] | None = None):
    """A ``BINARY`` highdicom Segmentation of ``labels`` (``S x H x W`` class indices, the source's frame order):
    segment ``c`` is class ``c`` (``class_names[c - 1]``), on the source's frames."""
    from pydicom.sr.codedict import codes

    hd = _highdicom(str(getattr(source, "SOPInstanceUID", "source")))
    descriptions = []
    for number, name in enumerate(class_names, 1):
        prop, category = class_code(name, given).codes()
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name, segmented_property_category=category,
            segmented_property_type=prop, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=_algorithm(hd), anatomic_regions=[codes.SCT.Retina]))
    return hd.seg.Segmentation(
        source_images=[source], pixel_array=np.ascontiguousarray(labels, np.uint8), segmentation_type="BINARY",
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=_MANUFACTURER,
        manufacturer_model_name="gctxseg predict", software_versions=__version__, device_serial_number="0",
        content_description="gctxseg prediction", content_label="GCTXSEG")


def _seg_frame(seg, source_frame: int, segment: int) -> int | None:
    """The SEG frame (1-based) holding ``segment`` of the source's frame ``source_frame`` (1-based)."""
    for number, item in enumerate(seg.PerFrameFunctionalGroupsSequence, 1):
        if int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber) != segment:
            continue
        refs = item.DerivationImageSequence[0].SourceImageSequence[0]
        if [int(f) for f in np.atleast_1d(refs.ReferencedFrameNumber)] == [source_frame]:
            return number
    return None


# ---------------------------------------------------------------- the Measurement Report


_SHORT = {"central": "C", "superior": "S", "inferior": "I", "nasal": "N", "temporal": "T", "right": "R",
          "left": "L", "inner": "I", "outer": "O"}


def _area_code(area: str, partial: bool = False) -> tuple[str, str]:
    """(code value of at most 16 characters, meaning) of an etdrs.csv area (subfield, circle, total); a ``partial``
    one (the scan covers part of it) has a code of its own, so that no reader takes its volume for the whole's."""
    if area == "total":
        return "GCTX-TOTAL", "whole scanned area"
    if area in CIRCLES:
        size = area.split("_")[1]
        value, meaning = f"ETDRS-{size.upper()}", f"ETDRS {size.replace('mm', ' mm')} circle"
    else:
        value = "ETDRS-" + "".join(_SHORT[w] for w in area.split("_"))
        meaning = f"ETDRS {area.replace('_', ' ')} subfield"
    return (f"{value}-PART", f"{meaning}, scanned part only") if partial else (value, meaning)


def _finding_site(hd, laterality, area: str | None, partial: bool = False):
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    modifier = None
    if area:
        value, meaning = _area_code(area, partial)
        modifier = Code(value, LOCAL_SCHEME, meaning)
    return hd.sr.FindingSite(codes.SCT.Retina, laterality=laterality, topographical_modifier=modifier)


def _number(record: Mapping[str, str], key: str) -> float | None:
    value = record.get(key, "")
    return float(value) if value not in ("", None) else None


@dataclass(frozen=True)
class _ReportContext:
    """What every measurement group of one report shares."""

    hd: object
    source: object
    seg: object
    record: Mapping[str, str]
    laterality: object
    algorithm: object
    given: Mapping[str, ClassCode] | None


def _partial_areas(record: Mapping[str, str]) -> set[str]:
    """The record's areas the scan covers only in part (``partial``), and each circle that holds one."""
    partial = set(record.get("partial", "").split())
    rings = {"circle_1mm": ("central",), "circle_3mm": ("central", "inner"),
             "circle_6mm": ("central", "inner", "outer")}
    return partial | {c for c in CIRCLES if any(a.split("_")[0] in rings[c] for a in partial)}


def _fluid_groups(ctx: _ReportContext, class_names: Sequence[str], placed: bool = True) -> list:
    """One TID 1411 volumetric group per fluid class with a volume in the record; without the B-scans' positions
    (``placed`` False) only the central subfield, the circles and the whole scan: which quadrant is superior or
    nasal was the file's order, a guess a report must not carry as a finding site."""
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    hd, record, groups = ctx.hd, ctx.record, []
    source_item = hd.sr.SourceImageForSegmentation(ctx.source.SOPClassUID, ctx.source.SOPInstanceUID)
    areas = [*subfield_names("OD" if record.get("quadrants") == "nasal/temporal" else None), *CIRCLES, "total"]
    areas = areas if placed else ["central", *CIRCLES, "total"]
    partial = _partial_areas(record)
    for number, name in fluid_classes(class_names):
        measurements = [hd.sr.Measurement(name=codes.SCT.Volume, value=value, unit=Code("nL", "UCUM", "nL"),
                                          finding_sites=[_finding_site(hd, ctx.laterality, area, area in partial)],
                                          algorithm_id=ctx.algorithm)
                        for area in areas if (value := _number(record, f"{name}_{area}_nl")) is not None]
        if measurements:
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(hd.UID(), f"{name} of {record['file']}"),
                referenced_segment=hd.sr.ReferencedSegment(ctx.seg.SOPClassUID, ctx.seg.SOPInstanceUID, number,
                                                           source_images=[source_item]),
                finding_type=class_code(name, ctx.given).codes()[0],
                finding_sites=[_finding_site(hd, ctx.laterality, None)], algorithm_id=ctx.algorithm,
                measurements=measurements))
    return groups


def _hole_diameters(record: Mapping[str, str], layout: RasterLayout) -> dict[int, list]:
    """Source frame (1-based) -> [(kind of diameter code, µm)] of the record's hole diameters."""
    from pydicom.sr.coding import Code

    diameters = {}
    for kind, meaning in (("mld", "minimum linear diameter"), ("base", "base diameter")):
        value, bscan = _number(record, f"hole_{kind}_um"), record.get(f"hole_{kind}_bscan", "")
        if value is not None and bscan != "":
            frame = layout.order[int(bscan)] + 1  # record counts superior-first; frames are in the file's order
            diameters.setdefault(frame, []).append((Code(f"GCTX-hole-{kind}", LOCAL_SCHEME, f"Hole {meaning}"),
                                                    value))
    return diameters


def _hole_groups(ctx: _ReportContext, class_names: Sequence[str], layout: RasterLayout) -> list:
    """One TID 1410 planar group per B-scan a hole diameter was measured on, referencing that SEG frame."""
    from pydicom.sr.codedict import codes

    hd, seg, source, groups = ctx.hd, ctx.seg, ctx.source, []
    holes = hole_classes(class_names)
    for frame, values in (_hole_diameters(ctx.record, layout) if holes else {}).items():
        segment = next((h for h in holes if _seg_frame(seg, frame, h) is not None), holes[0])
        seg_frame = _seg_frame(seg, frame, segment)
        if seg_frame is None:
            continue  # no hole pixels on that frame: cannot happen for a diameter measured there
        name = class_names[segment - 1]
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(hd.UID(), f"{name} of {ctx.record['file']}, "
                                                                   f"B-scan {frame - 1}"),
            referenced_segment=hd.sr.ReferencedSegmentationFrame(
                seg.SOPClassUID, seg.SOPInstanceUID, seg_frame, segment,
                hd.sr.SourceImageForSegmentation(source.SOPClassUID, source.SOPInstanceUID, [frame])),
            finding_type=class_code(name, ctx.given).codes()[0],
            finding_sites=[_finding_site(hd, ctx.laterality, None)], algorithm_id=ctx.algorithm,
            measurements=[hd.sr.Measurement(name=codes.SCT.Diameter, value=value, unit=codes.UCUM.Micrometer,
                                            method=method, algorithm_id=ctx.algorithm) for method, value in values]))
    return groups


def build_measurement_report(source, seg, record: Mapping[str, str], class_names: Sequence[str],
                             layout: RasterLayout, given: Mapping[str, ClassCode] | None = None):
    """A Comprehensive SR with the TID 1500 Measurement Report of one volume's ``etdrs.csv`` ``record`` (module
    docstring); ``layout`` maps the record's superior-first B-scan numbers back to the source's frames. Subfields
    the scan covers only in part are coded as such (:func:`_area_code`). None where the record holds no number to
    report (a read-out in pixels: no fluid volume, no hole diameter)."""
    from pydicom.sr.codedict import codes

    hd = _highdicom(str(source.SOPInstanceUID))
    laterality = {"OD": codes.SCT.Right, "OS": codes.SCT.Left}.get(record.get("eye", ""))
    ctx = _ReportContext(hd, source, seg, record, laterality,
                         hd.sr.AlgorithmIdentification(name="gctxseg", version=__version__), given)
    groups = _fluid_groups(ctx, class_names, layout.placed) + _hole_groups(ctx, class_names, layout)
    if not groups:  # TID 1500 needs at least one measurement group
        return None
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="gctxseg", manufacturer_name=_MANUFACTURER, model_name="gctxseg predict"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.DCM.OpticalCoherenceTomography, imaging_measurements=groups)
    return hd.sr.ComprehensiveSR(
        evidence=[source, seg], content=report[0], series_instance_uid=hd.UID(), series_number=901,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=_MANUFACTURER, is_complete=True,
        series_description="gctxseg retina read-out (ETDRS fluid, hole diameters)")


def write_dicom_objects(volume: OctVolume, labels: np.ndarray, record: Mapping[str, str],
                        class_names: Sequence[str], layout: RasterLayout, folder: Path, name: str,
                        given: Mapping[str, ClassCode] | None = None) -> tuple[list[Path], list[str]]:
    """``folder/NAME_seg.dcm`` and ``NAME_sr.dcm`` (and ``NAME_opt.dcm`` for a source that is not DICOM) of one
    predicted volume; returns the files written and notes (an SR left out
    because the read-out has no number in nL or µm).

    Raises:
        DatasetError: highdicom missing; :class:`NoDicomImage` where the file has no pixel spacing.
    """
    _highdicom(str(volume.path))
    source, new = source_image(volume)
    seg = build_segmentation(source, labels, class_names, given)
    sr = build_measurement_report(source, seg, record, class_names, layout, given)
    folder.mkdir(parents=True, exist_ok=True)
    objects = [("opt", source)] if new else []
    objects += [("seg", seg)] + ([("sr", sr)] if sr is not None else [])
    written = []
    for suffix, dataset in objects:
        written.append(folder / f"{name}_{suffix}.dcm")
        dataset.save_as(written[-1], enforce_file_format=True)  # into predict's staging folder
    notes = [] if sr is not None else [f"{volume.path}: no fluid volume or hole diameter in mm (read-out in pixels); "
                                       f"{name}_seg.dcm written, no measurement report"]
    if sr is not None and not layout.placed:
        notes.append(f"{volume.path}: no B-scan positions in the file; {name}_sr.dcm holds the central subfield, "
                     "the circles and the whole scan, not the quadrants (their sides would be the file's order)")
    return written, notes
