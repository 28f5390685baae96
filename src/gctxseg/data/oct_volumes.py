"""OCT volumes as devices write them: HEYEX VOL / E2E / XML (through eyepy) and DICOM Ophthalmic Tomography.

One value type, :class:`OctVolume`: the B-scans (``S x H x W`` uint8, in the file's order), the geometry the
retina read-out needs (:class:`VolumeGeometry`: A-scan and axial spacing, each B-scan's start and end on the
localizer, the distance between B-scans, each with where it came from), the eye and the localizer picture.

Readers (the field's libraries, no hand-written parsers):

- ``.vol`` (Heidelberg HEYEX raw export), ``.e2e``, HEYEX XML (``.xml`` with its images) and Topcon ``.fda``
  (eyepy through ``oct-converter``): ``eyepy``, an optional extra (``pip install "gctxseg[oct]"``); from its
  ``EyeVolume``: ``scale_x`` (mm per A-scan),
  ``scale_y`` (mm per axial pixel), ``scale_z`` (mm between B-scans), each B-scan's ``start_pos``/``end_pos``
  (mm on the localizer), ``laterality`` and the localizer with its ``scale_x``/``scale_y``;
- DICOM "Ophthalmic Tomography Image" (one multi-frame file per volume): ``pydicom``; per-frame (else shared)
  functional groups: ``PixelMeasuresSequence`` (``PixelSpacing`` = axial, lateral mm; ``SliceThickness``),
  ``PlanePositionSequence``/``PlaneOrientationSequence`` (frame positions, mm), ``OphthalmicFrameLocationSequence``
  (``ReferenceCoordinates``: row/column pairs of the B-scan's first and last A-scan on the localizer),
  ``SpacingBetweenSlices``; ``ImageLaterality`` (else ``Laterality``) R/L; the localizer, an Ophthalmic
  Photography object the file references (``ReferencedImageSequence`` or the frame locations'
  ``ReferencedSOPInstanceUID``), where it lies in the same folder.

:func:`volume_truth` pairs a volume's B-scans with their true masks (``evaluate``): a mask folder in the layout
``gctxseg convert oct-volumes`` writes, or a DICOM SEG beside the source that references its frames.

:func:`raster_layout` turns the positions into what the ETDRS read-out may use: evenly spaced parallel B-scans
(their distance, which of them is superior, which way the columns run) or a one-line reason why not. A geometry
that is missing or implausible (outside :mod:`gctxseg.data.spacing`'s bounds) is never replaced by a guess: the
field stays None and the reason is in ``notes``, so the read-out is left blank (pixels only) with that note.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .spacing import SpacingError, validate_slice_spacing, validate_spacing

__all__ = [
    "OCT_INSTALL",
    "VOLUME_FILE_SUFFIXES",
    "OPT_SOP_CLASS",
    "VolumeGeometry",
    "OctVolume",
    "RasterLayout",
    "VolumeTruth",
    "bscan_input",
    "heyex_xml_images",
    "is_volume_file",
    "read_oct_volume",
    "raster_layout",
    "volume_truth",
]

OCT_INSTALL = 'pip install "gctxseg[oct]"'
FDA_INSTALL = 'pip install "gctxseg[fda]"'  # a separate extra: oct-converter pulls opencv and ffmpeg
EYEPY_SUFFIXES = (".vol", ".e2e", ".xml", ".fda")
VOLUME_FILE_SUFFIXES = EYEPY_SUFFIXES + (".dcm",)  # a .dcm is a volume file when it has several frames
OPT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.5.4"  # Ophthalmic Tomography Image Storage
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
_OP_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.77.1.5."  # Ophthalmic Photography 8/16 bit (.1/.2), OPT is .4
_LATERALITY = {"OD": "OD", "R": "OD", "RIGHT": "OD", "OS": "OS", "L": "OS", "LEFT": "OS"}
# B-scans whose directions differ by more than this are not one raster (radial, mixed, a rotated follow-up)
PARALLEL_TOLERANCE_DEG = 1.0
# gaps between B-scans that differ from their median by more than this share are not "evenly spaced"
EVEN_TOLERANCE = 0.05


@dataclass(frozen=True)
class VolumeGeometry:
    """Where the B-scans lie and how big their pixels are; None where the file does not say (or says nonsense).

    Attributes:
        ascan_mm: lateral distance between A-scans (columns), mm.
        axial_mm: axial pixel size (rows), mm.
        bscan_distance_mm: distance between neighbouring B-scans the file states, mm.
        positions: per B-scan ``(start_x, start_y, end_x, end_y)`` on the localizer (x to the right, y down).
        position_unit: ``mm`` or ``localizer pixel`` (empty without positions).
        plane_offsets_mm: per B-scan offset along the frames' normal (DICOM plane positions), mm.
        sources: field -> where its value came from (shown on the run's geometry line and in the JSON).
        notes: why a field is None or a read-out must be left blank (one line each).
        distance_note: why the stated distance between B-scans is None (moot where positions measure it).
    """

    ascan_mm: float | None
    axial_mm: float | None
    bscan_distance_mm: float | None = None
    positions: tuple[tuple[float, float, float, float], ...] = ()
    position_unit: str = ""
    plane_offsets_mm: tuple[float, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    distance_note: str = ""

    def to_dict(self) -> dict:
        return {"ascan_mm": self.ascan_mm, "axial_mm": self.axial_mm, "bscan_distance_mm": self.bscan_distance_mm,
                "positions": [list(p) for p in self.positions], "position_unit": self.position_unit,
                "plane_offsets_mm": list(self.plane_offsets_mm), "sources": dict(self.sources),
                "notes": list(self.notes), "distance_note": self.distance_note}


@dataclass
class OctVolume:
    """One OCT volume file: B-scans (``S x H x W`` uint8, file order), geometry, eye, localizer."""

    path: Path
    format: str  # HEYEX VOL | HEYEX E2E | HEYEX XML | Topcon FDA | DICOM OPT
    bscans: np.ndarray
    geometry: VolumeGeometry
    eye: str | None  # OD | OS, None where the file does not say
    eye_source: str = ""
    localizer: np.ndarray | None = None  # H x W uint8 (infrared fundus picture)
    localizer_mm: tuple[float, float] | None = None  # (row, column) mm per localizer pixel

    @property
    def name(self) -> str:
        return self.path.name


def is_volume_file(path: str | Path) -> bool:
    """True for a file :func:`read_oct_volume` reads: ``.vol``/``.e2e``/``.xml``/``.fda``, or a DICOM of several frames
    that is not a Segmentation (a single-frame OPT B-scan stays a picture; see io)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(EYEPY_SUFFIXES):
        return True
    if not name.endswith(".dcm"):
        return False
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["NumberOfFrames", "SOPClassUID"])
        seg = str(getattr(ds, "SOPClassUID", "")) == SEG_SOP_CLASS  # a SEG beside its source is its truth
        return int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 and not seg
    except Exception:  # unreadable: the single-file reader names it
        return False


def _check_shape(path: Path, bscans: np.ndarray) -> np.ndarray:
    if bscans.ndim != 3 or min(bscans.shape) < 1:
        raise DatasetError(f"{path}: B-scans of shape {bscans.shape}, not B-scans x rows x columns; re-export it")
    return bscans


def _as_uint8(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    if np.issubdtype(values.dtype, np.integer) and values.min() >= 0 and values.max() <= 255:
        return values.astype(np.uint8)
    values = np.nan_to_num(values.astype(np.float64))
    if values.min() >= 0 and values.max() <= 1:  # eyepy's [0, 1] floats
        return np.round(values * 255).astype(np.uint8)
    low, high = float(values.min()), float(values.max())
    return np.round(255 * (values - low) / max(high - low, 1e-12)).astype(np.uint8)


def _checked_pixel(values, source: str, fix: str, notes: list[str]) -> tuple[float, float] | tuple[None, None]:
    try:
        return validate_spacing(values, source, fix)
    except SpacingError as err:
        notes.append(str(err))
        return None, None


def _checked_distance(value, source: str) -> tuple[float | None, str]:
    """The stated distance between B-scans, or None and why (B-scan positions may still measure it)."""
    if value is None:
        return None, ""
    try:
        return validate_slice_spacing(value, source, "fluid volumes need the B-scans' positions; re-export the "
                                      "volume"), ""
    except SpacingError as err:
        return None, str(err)


def read_oct_volume(path: str | Path) -> OctVolume:
    """Read a volume file (see the module docstring for the formats and fields).

    Raises:
        DatasetError: missing, corrupt, truncated or unsupported file (one line naming it); ``eyepy`` missing for
            a HEYEX file (the line says ``pip install "gctxseg[oct]"``).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found; check the path")
    if path.name.lower().endswith(EYEPY_SUFFIXES):
        return _read_with_eyepy(path)
    return _read_dicom_opt(path)


# ---------------------------------------------------------------- HEYEX through eyepy


def _eyepy(path: Path):
    try:
        import eyepy
    except ImportError:
        what = "Topcon FDA" if path.suffix.lower() == ".fda" else "HEYEX"
        install = FDA_INSTALL if path.suffix.lower() == ".fda" else OCT_INSTALL
        raise DatasetError(f"{path}: reading {what} files needs eyepy; {install}") from None
    return eyepy


def _read_with_eyepy(path: Path) -> OctVolume:
    eyepy = _eyepy(path)
    suffix = path.suffix.lower()
    reader, kind = {".vol": (eyepy.import_heyex_vol, "HEYEX VOL"), ".e2e": (eyepy.import_heyex_e2e, "HEYEX E2E"),
                    ".xml": (eyepy.import_heyex_xml, "HEYEX XML"),
                    ".fda": (eyepy.import_topcon_fda, "Topcon FDA")}[suffix]
    quiet = logging.getLogger("eyepy")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # eyepy warns about layer counts the read-out does not use
    try:
        volume = reader(path)
        bscans = _check_shape(path, _as_uint8(np.asarray(volume.data)))
        meta = volume.meta
    except DatasetError:
        raise
    except ImportError as err:  # eyepy reads .fda through oct-converter, an extra of its own
        raise DatasetError(f"{path}: reading {kind} files needs {err.name or 'oct-converter'}; {FDA_INSTALL}") from None
    except Exception as err:  # construct's StreamError for a truncated file, ValueError for a radial scan ...
        line = str(err).replace("\n", " ").strip()[:160]
        raise DatasetError(f"{path}: not a readable {kind} file ({type(err).__name__}: {line}); re-export it "
                           "from the device software") from None
    finally:
        quiet.setLevel(level)
    return OctVolume(path, kind, bscans, _eyepy_geometry(path, meta, kind), *_eye(meta.get("laterality"),
                     f"{kind} laterality"), *_eyepy_localizer(volume))


def _eyepy_geometry(path: Path, meta, kind: str) -> VolumeGeometry:
    notes: list[str] = []
    unit = str(meta.get("scale_unit", "")).lower()
    if unit != "mm":
        notes.append(f"{path}: {kind} scale unit {unit or 'missing'!r}, not mm; the read-out is left in pixels")
        return VolumeGeometry(None, None, notes=tuple(notes))
    axial, ascan = _checked_pixel([meta["scale_y"], meta["scale_x"]], f"{path}: {kind} scale_y/scale_x",
                                  "the read-out is left in pixels; re-export the volume", notes)
    distance, distance_note = _checked_distance(meta.get("scale_z"), f"{path}: {kind} B-scan distance (scale_z)")
    positions, position_unit = (), ""
    bscan_meta = meta.get("bscan_meta") or []
    if bscan_meta and all(str(b.get("pos_unit", "")).lower() == "mm" for b in bscan_meta):
        positions = tuple((*map(float, b["start_pos"]), *map(float, b["end_pos"])) for b in bscan_meta)
        position_unit = "mm"
    sources = {"ascan_mm": f"{kind} scale_x", "axial_mm": f"{kind} scale_y",
               "bscan_distance_mm": f"{kind} scale_z (distance)", "positions": f"{kind} B-scan start/end (mm)"}
    return VolumeGeometry(ascan, axial, distance, positions, position_unit, (), sources, tuple(notes), distance_note)


def _eyepy_localizer(volume) -> tuple[np.ndarray | None, tuple[float, float] | None]:
    try:
        enface = volume.localizer
        picture = _as_uint8(np.asarray(enface.data))
        scale = (float(enface.scale_y), float(enface.scale_x)) if str(enface.scale_unit) == "mm" else None
        return (picture if picture.ndim == 2 else picture[..., 0]), scale
    except Exception:  # a volume without a localizer is still a volume
        return None, None


def _eye(value, source: str) -> tuple[str | None, str]:
    eye = _LATERALITY.get(str(value or "").strip().upper())
    return (eye, source) if eye else (None, "")


# ---------------------------------------------------------------- DICOM Ophthalmic Tomography


def _frame_item(ds, frame: int, sequence: str):
    """The item of a functional group ``sequence`` for ``frame``: per-frame, else shared (None where neither)."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = getattr(ds, groups, None)
        if items is not None and len(items) > index and sequence in items[index]:
            found = getattr(items[index], sequence)
            if len(found):
                return found[0]
    return None


def _read_dicom_opt(path: Path) -> OctVolume:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        if int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
            raise DatasetError(f"{path}: colour DICOM; OCT B-scans are grey (MONOCHROME2): re-export the volume")
        pixels = np.asarray(ds.pixel_array)
    except DatasetError:
        raise
    except (InvalidDicomError, OSError, EOFError, ValueError, AttributeError, KeyError, TypeError) as err:
        line = str(err).replace(" Use force=True to force reading.", "").replace("\n", " ")[:160]
        raise DatasetError(f"{path}: not a readable DICOM volume ({type(err).__name__}: {line}); "
                           "re-export it") from None
    bscans = pixels.reshape(frames, *pixels.shape[-2:])
    if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        bscans = bscans.max() - bscans  # white is low: as shown, not as stored
    bscans = _check_shape(path, _as_uint8(bscans))
    eye, eye_source = _eye(getattr(ds, "ImageLaterality", None), "DICOM ImageLaterality")
    if eye is None:
        eye, eye_source = _eye(getattr(ds, "Laterality", None), "DICOM Laterality")
    return OctVolume(path, "DICOM OPT", bscans, _dicom_geometry(path, ds, frames), eye, eye_source,
                     *_dicom_localizer(path, ds, frames))


def _localizer_uid(ds, frames: int) -> str | None:
    """The SOP Instance UID of the picture the frame locations are on: the frames' own reference, else the
    image's ``ReferencedImageSequence`` (its first Ophthalmic Photography item, else its first item)."""
    item = _frame_item(ds, 0, "OphthalmicFrameLocationSequence")
    uid = getattr(item, "ReferencedSOPInstanceUID", None) if item is not None else None
    if uid:
        return str(uid)
    referenced = list(getattr(ds, "ReferencedImageSequence", None) or [])
    photos = [r for r in referenced if str(getattr(r, "ReferencedSOPClassUID", "")).startswith(_OP_SOP_PREFIX)]
    chosen = (photos or referenced or [None])[0]
    return str(chosen.ReferencedSOPInstanceUID) if chosen is not None and "ReferencedSOPInstanceUID" in chosen else None


def _dicom_localizer(path: Path, ds, frames: int) -> tuple[np.ndarray | None, tuple[float, float] | None]:
    """The localizer the OPT references, where a DICOM file of that SOP Instance UID lies beside it: its picture
    (grey; a colour photograph's mean) and its ``PixelSpacing`` (None where it has none or an implausible one)."""
    import pydicom

    uid = _localizer_uid(ds, frames)
    if uid is None:
        return None, None
    for other in _dicom_files_beside(path):
        try:
            head = pydicom.dcmread(other, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            if str(getattr(head, "SOPInstanceUID", "")) != uid:
                continue
            photo = pydicom.dcmread(other)
            picture = np.asarray(photo.pixel_array)
        except Exception:  # an unreadable neighbour is not this volume's problem: the map is then drawn without it
            continue
        picture = picture.mean(axis=-1) if picture.ndim == 3 else picture
        spacing = getattr(photo, "PixelSpacing", None)
        try:
            scale = validate_spacing(list(spacing), f"{other}: PixelSpacing", "") if spacing is not None else None
        except SpacingError:
            scale = None
        return _as_uint8(picture), scale
    return None, None


def _dicom_files_beside(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.iterdir() if p.is_file() and p != path and p.suffix.lower() == ".dcm")


def _dicom_geometry(path: Path, ds, frames: int) -> VolumeGeometry:
    notes, sources = [], {}
    measures = _frame_item(ds, 0, "PixelMeasuresSequence")
    spacing, where = getattr(measures, "PixelSpacing", None), "DICOM PixelMeasuresSequence PixelSpacing"
    if spacing is None:  # some exports keep it at the top level, as single-frame images do
        spacing, where = getattr(ds, "PixelSpacing", None), "DICOM PixelSpacing"
    axial = ascan = None
    if spacing is None:
        notes.append(f"{path}: no PixelSpacing (PixelMeasuresSequence or top level); the read-out is left in pixels")
    else:
        axial, ascan = _checked_pixel(list(spacing), f"{path}: {where}",
                                      "the read-out is left in pixels; fix the export", notes)
        sources.update(axial_mm=f"{where}[0]", ascan_mm=f"{where}[1]")
    stated, stated_from = getattr(ds, "SpacingBetweenSlices", None), "DICOM SpacingBetweenSlices"
    if stated is None and measures is not None:
        stated = getattr(measures, "SpacingBetweenSlices", None)
        stated_from = "DICOM PixelMeasures SpacingBetweenSlices"
    if stated is None and measures is not None and getattr(measures, "SliceThickness", None) is not None:
        stated, stated_from = measures.SliceThickness, "DICOM PixelMeasures SliceThickness"
    distance, distance_note = _checked_distance(float(stated) if stated is not None else None,
                                                f"{path}: {stated_from}")
    if distance is not None:
        sources["bscan_distance_mm"] = stated_from
    offsets = _plane_offsets(ds, frames)
    if offsets:
        sources["plane_offsets_mm"] = "DICOM PlanePositionSequence ImagePositionPatient along the frame normal"
    positions = _frame_locations(ds, frames)
    if positions:
        sources["positions"] = "DICOM OphthalmicFrameLocationSequence ReferenceCoordinates (localizer pixels)"
    return VolumeGeometry(ascan, axial, distance, positions, "localizer pixel" if positions else "", offsets,
                          sources, tuple(notes), distance_note)


def _plane_offsets(ds, frames: int) -> tuple[float, ...]:
    offsets = []
    for k in range(frames):
        position = _frame_item(ds, k, "PlanePositionSequence")
        orientation = _frame_item(ds, k, "PlaneOrientationSequence")
        ipp = getattr(position, "ImagePositionPatient", None) if position is not None else None
        iop = getattr(orientation, "ImageOrientationPatient", None) if orientation is not None else None
        if ipp is None or iop is None or len(ipp) != 3 or len(iop) != 6:
            return ()
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        offsets.append(float(np.dot(normal, np.asarray(ipp, float))))
    return tuple(offsets)


def _frame_locations(ds, frames: int) -> tuple[tuple[float, float, float, float], ...]:
    """(start x, start y, end x, end y) in localizer pixels from ReferenceCoordinates (row/column pairs)."""
    locations = []
    for k in range(frames):
        item = _frame_item(ds, k, "OphthalmicFrameLocationSequence")
        coordinates = getattr(item, "ReferenceCoordinates", None) if item is not None else None
        if coordinates is None or len(coordinates) < 4:
            return ()
        r0, c0, r1, c1 = (float(v) for v in (*coordinates[:2], *coordinates[-2:]))
        locations.append((c0, r0, c1, r1))
    return tuple(locations)


# ---------------------------------------------------------------- the raster the read-out may use


@dataclass(frozen=True)
class RasterLayout:
    """What the ETDRS read-out may use of a volume's geometry.

    ``slice_mm`` is None (read-out in pixels, ``note`` says why) unless the B-scans are parallel, evenly spaced
    and their distance is known; ``order`` lists the file's B-scan indices from superior to inferior;
    ``flip_columns`` is True where the B-scans run right to left on the localizer.
    """

    slice_mm: float | None
    order: tuple[int, ...]
    flip_columns: bool
    source: str
    note: str = ""
    placed: bool = True  # False: no B-scan positions, so superior/inferior and left/right are the file's order


def raster_layout(volume: OctVolume) -> RasterLayout:
    """Check that the B-scans are one raster of parallel, evenly spaced, horizontal lines, and say how to lay
    them out superior-first, left to right (module docstring)."""
    geo, count = volume.geometry, len(volume.bscans)
    order, flip, notes, placed = tuple(range(count)), False, list(geo.notes), True
    slice_mm, source = geo.bscan_distance_mm, geo.sources.get("bscan_distance_mm", "")
    if count < 2:
        return RasterLayout(None, order, flip, "", f"{volume.path}: one B-scan, not a volume; no ETDRS read-out")
    if geo.positions:
        start = np.asarray([p[:2] for p in geo.positions], float)
        end = np.asarray([p[2:] for p in geo.positions], float)
        direction = end - start
        angles = np.degrees(np.arctan2(direction[:, 1], direction[:, 0]))
        spread = np.abs((angles - angles[0] + 180) % 360 - 180)
        if spread.max() > PARALLEL_TOLERANCE_DEG:
            return RasterLayout(None, order, flip, "", f"{volume.path}: B-scans not parallel (directions differ by "
                                f"{spread.max():.1f} degrees: a radial or mixed pattern); fluid volumes not measured")
        along = direction[0] / max(np.linalg.norm(direction[0]), 1e-12)
        if abs(along[1]) > abs(along[0]):
            return RasterLayout(None, order, flip, "", f"{volume.path}: vertical B-scans; the ETDRS read-out "
                                "needs a horizontal raster, fluid volumes not measured")
        flip = bool(along[0] < 0)
        centres = (start + end) / 2
        across = np.asarray([-along[1], along[0]])  # perpendicular, pointing down the localizer (inferior)
        across = across if across[1] > 0 else -across
        offsets = (centres - centres[0]) @ across
        order = tuple(int(i) for i in np.argsort(offsets, kind="stable"))
        if geo.position_unit == "mm":
            measured, problem = _even_gap(np.sort(offsets), volume.path, "B-scan positions")
            if problem:
                return RasterLayout(None, order, flip, "", problem)
            if slice_mm is not None and abs(measured - slice_mm) > EVEN_TOLERANCE * slice_mm:
                return RasterLayout(None, order, flip, "", f"{volume.path}: the file states {slice_mm:g} mm "
                                    f"between B-scans but their positions are {measured:g} mm apart; fluid volumes "
                                    "not measured")
            slice_mm, source = measured, geo.sources.get("positions", "B-scan positions")
    else:
        placed = False
        notes.append("no B-scan positions: B-scan 0 taken as superior, columns as left to right")
    if geo.plane_offsets_mm:
        ranked = np.asarray(geo.plane_offsets_mm)[list(order)]
        measured, problem = _even_gap(ranked, volume.path, "DICOM plane positions")
        if problem:
            return RasterLayout(None, order, flip, "", problem)
        if slice_mm is not None and abs(measured - slice_mm) > EVEN_TOLERANCE * slice_mm:
            return RasterLayout(None, order, flip, "", f"{volume.path}: {source} says {slice_mm:g} mm between B-scans "
                                f"but the plane positions are {measured:g} mm apart; fluid volumes not measured")
        slice_mm, source = measured, geo.sources["plane_offsets_mm"]
    if slice_mm is None:  # the stated distance's problem, else its absence, is the reason
        notes.append(geo.distance_note or f"{volume.path}: the distance between B-scans is not in the file; fluid "
                     "volumes not measured")
    return RasterLayout(slice_mm, order, flip, source, "; ".join(notes), placed)


def _even_gap(offsets: Sequence[float], path: Path, what: str) -> tuple[float, str]:
    """The median gap of ``offsets`` (in B-scan order) and a one-line problem where they are not evenly spaced."""
    gaps = np.diff(np.asarray(offsets, float))
    if np.any(gaps * np.sign(np.median(gaps)) <= 0):
        return 0.0, f"{path}: {what} not in order or two B-scans at one place; fluid volumes not measured"
    gaps = np.abs(gaps)
    median = float(np.median(gaps))
    if gaps.max() - gaps.min() > EVEN_TOLERANCE * median:
        return median, (f"{path}: B-scans not evenly spaced ({what}: {gaps.min():.4g} to {gaps.max():.4g} mm apart); "
                        "fluid volumes not measured as if they were")
    return median, ""


# ---------------------------------------------------------------- B-scans as network inputs, and their truth


def bscan_input(intensity, bscan: np.ndarray) -> np.ndarray:
    """A uint8 B-scan as the network's ``H x W x 1`` input (``intensity``: the checkpoint's
    :class:`~gctxseg.data.intensity.IntensityMapping`): a picture model reads it as a picture ([0, 1])."""
    values = bscan[..., None].astype(np.float32)
    return values / 255.0 if intensity.mode == "as_read" else intensity.apply(values)


def heyex_xml_images(path: str | Path) -> set[Path]:
    """The picture files a HEYEX XML export names (its B-scans and localizer, ``ImageData/ExamURL``), so that a
    folder listing does not take them for pictures of their own; empty where the XML cannot be parsed (the
    volume reader then names the file)."""
    import xml.etree.ElementTree as ElementTree

    path = Path(path)
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError):
        return set()
    names = (e.text.replace("\\", "/").rsplit("/", 1)[-1] for e in root.iter("ExamURL") if e.text)
    return {path.parent / name for name in names if name}


@dataclass(frozen=True)
class VolumeTruth:
    """A volume's true masks: ``labels`` (``S x H x W`` class indices, the file's B-scan order) and ``source``,
    one line saying where they came from."""

    labels: np.ndarray
    source: str


def volume_truth(volume: OctVolume, masks: str | Path | None, value_map, mask_suffix: str = ".png",
                 class_names: Sequence[str] = ()) -> VolumeTruth:
    """Pair each of ``volume``'s B-scans with its true mask: ``masks/NAME_bNNN.png`` (the layout of ``gctxseg
    convert oct-volumes``: NAME the file's stem, NNN its B-scan in file order, at least 3 digits; values mapped
    with ``value_map``, the checkpoint's :class:`~gctxseg.data.fingerprint.MaskValueMap`), else a DICOM SEG beside
    a DICOM source that references its frames (segment number = class, or by segment label where every label is
    one of ``class_names``).

    Raises:
        DatasetError: no masks for the volume, some of its B-scans without one, a mask of another size, or a SEG
            that cannot be decoded (one line naming the file).
    """
    from .io import read_mask

    count, rows, cols = volume.bscans.shape
    width = max(3, len(str(count - 1)))
    stem = volume.path.stem
    files = [Path(masks) / f"{stem}_b{k:0{width}d}{mask_suffix}" for k in range(count)] if masks else []
    found = [f for f in files if f.is_file()]
    if found:
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise DatasetError(f"{missing[0]}: {len(missing)} of {volume.name}'s {count} B-scans have no mask; "
                               "annotate every B-scan of a volume (its fluid volumes need all of them)")
        labels = np.stack([value_map.encode(read_mask(f), source=f) for f in found])
        if labels.shape != volume.bscans.shape:
            raise DatasetError(f"{found[0]}: masks of {labels.shape[1]}x{labels.shape[2]} but {volume.name}'s B-scans "
                               f"are {rows}x{cols}; re-export the masks at the B-scan size")
        pattern = f"{stem}_b{'N' * width}{mask_suffix}"
        return VolumeTruth(labels, f"{Path(masks) / pattern} ({count} masks)")
    seg = _seg_beside(volume)
    if seg is not None:
        return _seg_truth(volume, seg, class_names)
    looked = f"no {files[0]}" if files else "no mask folder"
    raise DatasetError(f"{volume.path}: no true masks ({looked}, no DICOM SEG beside it that references it); put "
                       f"its masks in {masks or 'the masks folder'} as gctxseg convert oct-volumes names its B-scans, "
                       "or its DICOM SEG beside it")


def _sop_instance_uid(path: Path) -> str | None:
    import pydicom

    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
    except Exception:  # not DICOM, or no UID: nothing can reference it
        return None


def _seg_beside(volume: OctVolume) -> Path | None:
    """The DICOM SEG in the source's folder that references the source (DICOM sources only: a SEG of a ``.vol``
    references the DICOM image written from it, not the file itself)."""
    import pydicom

    if volume.format != "DICOM OPT" or (uid := _sop_instance_uid(volume.path)) is None:
        return None
    found = []
    for other in _dicom_files_beside(volume.path):
        try:
            head = pydicom.dcmread(other, stop_before_pixels=True,
                                   specific_tags=["SOPClassUID", "ReferencedSeriesSequence"])
        except Exception:  # not DICOM: not a SEG either
            continue
        if str(getattr(head, "SOPClassUID", "")) != SEG_SOP_CLASS:
            continue
        referenced = {str(i.ReferencedSOPInstanceUID) for series in getattr(head, "ReferencedSeriesSequence", [])
                      for i in getattr(series, "ReferencedInstanceSequence", [])}
        if uid in referenced:
            found.append(other)
    if len(found) > 1:
        raise DatasetError(f"{volume.path}: {len(found)} DICOM SEGs beside it reference it ({found[0].name}, "
                           f"{found[1].name}); keep the one that is the truth")
    return found[0] if found else None


def _seg_truth(volume: OctVolume, seg_path: Path, class_names: Sequence[str]) -> VolumeTruth:
    """Decode ``seg_path`` onto ``volume``'s frames, matched by the SEG's source frame references."""
    try:
        import highdicom as hd
    except ImportError:
        raise DatasetError(f"{seg_path}: reading a DICOM SEG needs highdicom; pip install \"gctxseg[dicom]\"") from None
    count = len(volume.bscans)
    try:
        seg = hd.seg.segread(seg_path)
        labels = seg.get_pixels_by_source_frame(_sop_instance_uid(volume.path), list(range(1, count + 1)),
                                                combine_segments=True, assert_missing_frames_are_empty=True)
    except Exception as err:  # overlapping segments, frames of another image, a broken file
        line = f"{type(err).__name__}: {err}".splitlines()[0][:160]
        raise DatasetError(f"{seg_path}: not a DICOM SEG of {volume.name}'s B-scans ({line}); re-export it") from None
    names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    by_label = bool(class_names) and all(n in class_names for n in names.values())
    lookup = np.arange(max(names, default=0) + 1)
    if by_label:
        for number, label in names.items():
            lookup[number] = list(class_names).index(label) + 1
    labels = lookup[np.asarray(labels, np.int64)]
    if labels.shape != volume.bscans.shape:
        raise DatasetError(f"{seg_path}: segmentation of shape {labels.shape} but {volume.name}'s B-scans are "
                           f"{volume.bscans.shape}; re-export it")
    how = "segments by label" if by_label else "segment number = class"
    return VolumeTruth(labels, f"DICOM SEG {seg_path} ({how}; frames by their source frame references)")
