"""Reading images and masks from disk into numpy arrays, with one-line errors for bad files.

Three kinds of file are read:

- pictures (``.jpg .png .bmp .tif``): scaled to [0, 1] by their type's maximum (kind ``natural``);
- DICOM slices (``.dcm``, single frame, via pydicom): stored values through RescaleSlope/Intercept, i.e.
  Hounsfield units for CT (kind ``ct``; other modalities ``scan``);
- NIfTI volumes (``.nii``, ``.nii.gz``, via nibabel): raw scaled voxel values (kind ``scan``), read as a
  stack of 2D slices along the voxel axis closest to the body's head-foot axis (the axial slices of a
  CT; the third axis when the affine does not say).

Scanner values are returned as they are, never rescaled: :class:`~gctxseg.data.intensity.IntensityMapping`
turns them into network input (CT windowing, or percentile scaling).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from .errors import DatasetError
from .spacing import validate_spacing

__all__ = [
    "IMAGE_SUFFIXES",
    "DICOM_SUFFIXES",
    "NIFTI_SUFFIXES",
    "READABLE_SUFFIXES",
    "ImageInfo",
    "file_stem",
    "is_scan",
    "is_picture_dicom",
    "read_picture_dicom",
    "read_info",
    "read_image",
    "read_mask",
    "read_mask_with_encoding",
    "turned_by_exif",
    "read_volume",
    "write_volume_mask",
    "image_size",
    "is_grey_colour",
    "fit_channels",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm",)
NIFTI_SUFFIXES = (".nii", ".nii.gz")
READABLE_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES


def _has_suffix(path: str | Path, suffixes: tuple[str, ...]) -> bool:
    return Path(path).name.lower().endswith(suffixes)


def is_scan(path: str | Path) -> bool:
    """True for DICOM and NIfTI files (scanner values), False for pictures."""
    return _has_suffix(path, DICOM_SUFFIXES + NIFTI_SUFFIXES)


def file_stem(path: str | Path) -> str:
    """File name without its suffix, ``.nii.gz`` counted as one suffix."""
    path = Path(path)
    return path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem


@dataclass(frozen=True, eq=False)
class ImageInfo:
    """What a file's header says.

    Attributes:
        kind: ``natural`` (picture, read in [0, 1]), ``ct`` (DICOM of modality CT, read in HU) or ``scan``
            (other DICOM, NIfTI: raw scanner values).
        size: (H, W) of one image or slice.
        depth: number of slices of a volume (NIfTI); None for a 2D file.
        spacing: (row, column) pixel spacing in mm, when the file says.
        affine: NIfTI voxel-to-world matrix (4 x 4), else None.
        shape: the volume's voxel shape (NIfTI), else ``size``.
        slice_axis: the voxel axis slices are taken along (NIfTI).
    """

    kind: str
    size: tuple[int, int]
    depth: int | None = None
    spacing: tuple[float, float] | None = None
    affine: np.ndarray | None = None
    shape: tuple[int, ...] = ()
    slice_axis: int = 2

    @property
    def is_volume(self) -> bool:
        return self.depth is not None


# ---------------------------------------------------------------- pictures


# EXIF orientation -> the transposition that shows the picture as viewers do (phones store JPEGs unturned and say
# how to turn them). Every picture is read turned, so images, masks drawn on them and predictions share one grid.
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = (5, 6, 7, 8)


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation its header states (1 = as stored). Read from the header only, never by decoding the
    pixels, so :func:`image_size` and the pixel readers agree (a PNG's eXIf after its pixels is not looked for)."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        return int(img.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # a damaged EXIF block: the picture is shown as stored, as viewers do
        return 1


def _bomb(path: Path, err: Exception) -> DatasetError:
    return DatasetError(f"{path}: {type(err).__name__}, refused as a possible decompression bomb "
                        f"({str(err).rstrip('.')}); re-export the picture at its real size, or remove it")


def _open(path: Path) -> Image.Image:
    """A picture decoded (truncated files fail here, not inside a worker) and turned as its EXIF says."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found; check the path")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: empty file (0 bytes); re-export or remove it")
    try:
        img = Image.open(path)
        turn = _EXIF_TRANSPOSE.get(_orientation(img))
        img.load()
    except Image.DecompressionBombError as err:  # not an OSError: it escaped as a traceback
        raise _bomb(path, err) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"{path}: unreadable or corrupt image ({err}); re-export or remove it") from None
    _check_one_page(path, img)
    return img.transpose(turn) if turn is not None else img


def _check_one_page(path: Path, img: Image.Image) -> None:
    """A multi-page TIFF (a stack of B-scans) would be read as its first page alone: refused instead."""
    pages = int(getattr(img, "n_frames", 1) or 1)
    if pages > 1:
        raise DatasetError(f"{path}: {pages} pages in one picture file (a stack); gctxseg reads one B-scan per "
                           "picture: save one file per page, or the stack as a NIfTI volume")


def turned_by_exif(path: str | Path) -> bool:
    """True for a picture whose EXIF orientation swaps its height and width (read as viewers show it)."""
    try:
        with Image.open(path) as img:
            return _orientation(img) in _SWAPS_SIDES
    except Exception:
        return False


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image (of one slice for a volume) as it is read (turned by its EXIF), reading only its header."""
    if is_scan(path):
        return read_info(path).size
    try:
        with Image.open(path) as img:
            _check_one_page(Path(path), img)
            return (img.width, img.height) if _orientation(img) in _SWAPS_SIDES else (img.height, img.width)
    except Image.DecompressionBombError as err:
        raise _bomb(Path(path), err) from None
    except (UnidentifiedImageError, OSError) as err:
        raise DatasetError(f"{path}: unreadable or corrupt image ({err}); re-export or remove it") from None


def _read_picture(path: Path) -> np.ndarray:
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        # one scale for every file: chosen per file from its own maximum, one value read 256x apart in two files
        if img.mode == "I" and arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DatasetError(f"{path}: 32-bit integer values {arr.min():g}..{arr.max():g}, outside 0..65535; "
                               "save it as a 16-bit PNG or TIFF, or as a NIfTI volume")
        return (arr / 65535.0)[..., None]
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        return ((arr - lo) / max(hi - lo, 1e-12))[..., None]
    if img.mode in ("L", "LA", "1"):
        img = img.convert("L")
    elif img.mode != "RGB":
        img = img.convert("RGB")  # RGBA, P, CMYK, YCbCr ...: colour without alpha
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr


# ---------------------------------------------------------------- DICOM


def _read_dicom(path: Path, pixels: bool):
    import pydicom  # lazy: only DICOM users pay for the import
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise DatasetError(f"{path}: file not found; check the path")
    try:
        # large values (the pixel data) stay on disk until used: cheap header reads
        ds = pydicom.dcmread(path, defer_size=None if pixels else 1024)
    except (InvalidDicomError, OSError, EOFError, ValueError, AttributeError) as err:
        line = str(err).replace(" Use force=True to force reading.", "")  # pydicom's advice, not the user's fix
        raise DatasetError(f"{path}: not a readable DICOM file ({line}); re-export or remove it") from None
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DatasetError(f"{path}: DICOM without pixel data (a report or other non-image object); remove it")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DatasetError(f"{path}: multi-frame DICOM ({frames} frames); export one file per slice or a NIfTI")
    if int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
        raise DatasetError(f"{path}: colour DICOM; only grayscale (MONOCHROME) DICOM images are supported")
    return ds


def _dicom_pixels(ds, path: Path) -> np.ndarray:
    try:
        return ds.pixel_array
    except Exception as err:  # missing decoders, truncated data ...: pydicom raises many types
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise DatasetError(
            f"{path}: pixel data not decodable ({type(err).__name__}, transfer syntax {syntax}); "
            f"install pylibjpeg/gdcm or decompress the file"
        ) from None


def _dicom_spacing(ds, path: Path) -> tuple[float, float] | None:
    """The header's PixelSpacing checked as every spacing is (a negative or nan one gave wrong areas): at the top
    level, else in the functional groups' PixelMeasuresSequence, where an Ophthalmic Tomography image keeps it."""
    spacing, where = getattr(ds, "PixelSpacing", None), "DICOM PixelSpacing"
    if spacing is None:
        spacing, where = _functional_group_spacing(ds), "DICOM PixelMeasuresSequence PixelSpacing"
    if spacing is None or (not isinstance(spacing, (int, float)) and len(spacing) == 0):
        return None  # absent or empty: the pictures' sources (--pixel-spacing, spacing.json) apply
    fix = "fix the header, or remove PixelSpacing and pass --pixel-spacing ROW_MM COL_MM"
    return validate_spacing(spacing, f"{path}: {where}", fix)


def _functional_group_spacing(ds):
    """PixelSpacing of the first frame's, else the shared, functional group (None where neither has one)."""
    for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        items = getattr(ds, groups, None) or []
        measures = getattr(items[0], "PixelMeasuresSequence", None) if len(items) else None
        if measures and "PixelSpacing" in measures[0]:
            return measures[0].PixelSpacing
    return None


def _dicom_info(path: Path) -> ImageInfo:
    ds = _read_dicom(path, pixels=False)
    kind = "ct" if str(getattr(ds, "Modality", "")).upper() == "CT" else "scan"
    size = (int(ds.Rows), int(ds.Columns))
    return ImageInfo(kind, size, spacing=_dicom_spacing(ds, path), shape=size)


OPT_MODALITY = "OPT"  # DICOM Modality of Ophthalmic Tomography (OCT)


def is_picture_dicom(path: str | Path) -> bool:
    """True for a single-frame, 8-bit, grey OCT DICOM (Modality OPT): a B-scan picture in a DICOM wrapper, which a
    model trained on PNG exports reads as the picture it is (values / 255), not as scanner values or HU."""
    if not _has_suffix(path, DICOM_SUFFIXES):
        return False
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # unreadable: the reader says why
        return False
    return (str(getattr(ds, "Modality", "")).upper() == OPT_MODALITY
            and int(getattr(ds, "BitsStored", 0) or 0) <= 8 == int(getattr(ds, "BitsAllocated", 0) or 0)
            and int(getattr(ds, "SamplesPerPixel", 1) or 1) == 1
            and str(getattr(ds, "PhotometricInterpretation", "")) in ("MONOCHROME1", "MONOCHROME2")
            and int(getattr(ds, "NumberOfFrames", 1) or 1) == 1
            and float(getattr(ds, "RescaleSlope", 1) or 1) == 1 and float(getattr(ds, "RescaleIntercept", 0) or 0) == 0)


def read_picture_dicom(path: str | Path) -> np.ndarray:
    """An OCT DICOM B-scan (:func:`is_picture_dicom`) as ``H x W x 1`` float32 in [0, 1], as a PNG B-scan reads."""
    path = Path(path)
    ds = _read_dicom(path, pixels=True)
    values = np.asarray(_dicom_pixels(ds, path), dtype=np.float32) / 255.0
    if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        values = 1.0 - values  # stored white-is-low: shown as any B-scan is
    return values[..., None]


# ---------------------------------------------------------------- NIfTI


def _nifti(path: Path):
    import nibabel as nib  # lazy: only NIfTI users pay for the import

    if not path.is_file():
        raise DatasetError(f"{path}: file not found; check the path")
    try:
        return nib.load(path)
    except Exception as err:  # nibabel raises ImageFileError, OSError, EOFError, ValueError ...
        raise DatasetError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err}); re-export it") from None


def _nifti_info(path: Path) -> ImageInfo:
    import nibabel as nib

    img = _nifti(path)
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise DatasetError(f"{path}: {len(shape)}D volume {'x'.join(map(str, shape))}; save each 3D volume "
                           f"(each time point or channel) as its own file")
    if len(shape) == 2:
        shape, axis = (*shape, 1), 2
    else:
        codes = nib.aff2axcodes(img.affine)
        axis = next((i for i, c in enumerate(codes) if c in ("S", "I")), 2)
    zooms = [round(float(z), 6) for z in img.header.get_zooms()[:3]] + [1.0] * 3  # float32 in the header
    rows, cols = (i for i in range(3) if i != axis)
    return ImageInfo(
        "scan",
        (shape[rows], shape[cols]),
        depth=shape[axis],
        spacing=(zooms[rows], zooms[cols]),
        affine=np.asarray(img.affine, dtype=np.float64),
        shape=shape,
        slice_axis=axis,
    )


@functools.lru_cache(maxsize=2)  # an image volume and its mask: slice-by-slice reads decode each file once
def _nifti_slices(path: str, _stamp: tuple[int, int], labels: bool) -> np.ndarray:
    info = _nifti_info(Path(path))
    img = _nifti(Path(path))
    try:
        data = np.asanyarray(img.dataobj) if labels else img.get_fdata(dtype=np.float32)
    except Exception as err:
        raise DatasetError(f"{path}: voxel data unreadable ({type(err).__name__}); the file may be truncated") from None
    data = data.reshape(info.shape)
    slices = np.moveaxis(data, info.slice_axis, 0)  # (D, H, W)
    if labels:
        rounded = np.rint(slices)
        if not np.array_equal(rounded, slices):
            raise DatasetError(f"{path}: mask holds non-integer values; save labels as an integer volume")
        slices = rounded.astype(np.int64)
    slices = np.ascontiguousarray(slices)
    slices.setflags(write=False)  # shared by the cache: callers copy what they change
    return slices


def _volume_slices(path: Path, labels: bool) -> np.ndarray:
    stat = path.stat() if path.is_file() else None
    if stat is None:
        raise DatasetError(f"{path}: file not found; check the path")
    return _nifti_slices(str(path), (stat.st_mtime_ns, stat.st_size), labels)


def _slice_of(volume: np.ndarray, path: Path, slice_index: int | None) -> np.ndarray:
    if slice_index is None:
        if volume.shape[0] != 1:
            raise DatasetError(f"{path}: volume of {volume.shape[0]} slices read as one image; pair it as a volume")
        slice_index = 0
    if not 0 <= slice_index < volume.shape[0]:
        raise DatasetError(f"{path}: slice {slice_index} out of range (volume has {volume.shape[0]}); check the pairs")
    return np.array(volume[slice_index])


# ---------------------------------------------------------------- public readers


def read_info(path: str | Path) -> ImageInfo:
    """Kind, size, depth, spacing and affine of an image or volume, from its header.

    Raises:
        DatasetError: missing or unreadable file, DICOM without pixel data, multi-frame or colour DICOM,
            a DICOM PixelSpacing that is not two plausible numbers (a SpacingError), a 4D NIfTI.
    """
    path = Path(path)
    if _has_suffix(path, NIFTI_SUFFIXES):
        return _nifti_info(path)
    if _has_suffix(path, DICOM_SUFFIXES):
        return _dicom_info(path)
    size = image_size(path)
    return ImageInfo("natural", size, shape=size)


def read_image(path: str | Path, slice_index: int | None = None) -> np.ndarray:
    """Read an image (or one slice of a volume) as ``H x W x C`` float32.

    Pictures are scaled to [0, 1] by their type's maximum (8-bit and 16-bit; an alpha channel is dropped,
    palette images are converted to RGB). DICOM and NIfTI keep their scanner values (C = 1): a DICOM's
    stored values go through RescaleSlope/RescaleIntercept (Hounsfield units for CT); a NIfTI's through
    its scl_slope/scl_inter.

    Args:
        path: the file.
        slice_index: slice of a NIfTI volume (None for 2D files and one-slice volumes).

    Raises:
        DatasetError: missing, empty, corrupt or unsupported file; slice out of range.
    """
    path = Path(path)
    if _has_suffix(path, NIFTI_SUFFIXES):
        return _slice_of(_volume_slices(path, labels=False), path, slice_index).astype(np.float32)[..., None]
    if _has_suffix(path, DICOM_SUFFIXES):
        from pydicom.pixels import apply_modality_lut

        ds = _read_dicom(path, pixels=True)
        return np.asarray(apply_modality_lut(_dicom_pixels(ds, path), ds), dtype=np.float32)[..., None]
    return _read_picture(path)


def is_grey_colour(image: np.ndarray) -> bool:
    """True for an ``H x W x 3`` image whose three channels are equal: a grey scan saved as RGB, as public OCT
    sets often ship them."""
    return image.ndim == 3 and image.shape[2] == 3 and bool(
        np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
    )


def fit_channels(image: np.ndarray, channels: int, source: str | Path) -> np.ndarray:
    """An ``H x W x C`` image with the model's ``channels``: grey repeated for a colour model, a grey scan saved
    as RGB reduced to one channel for a grey model; a colour image for a grey model is an error."""
    have = image.shape[2]
    if have == channels:
        return image
    if have == 1:
        return np.broadcast_to(image, (*image.shape[:2], channels))
    if channels == 1 and is_grey_colour(image):
        return image[..., :1]
    raise DatasetError(
        f"{source}: {have}-channel image but the model takes {channels}; convert the image, or train on images "
        "like it"
    )


def read_mask(path: str | Path, slice_index: int | None = None) -> np.ndarray:
    """Read a label mask (or one slice of a mask volume) as an ``H x W`` int64 array of raw values.

    Colour masks whose three channels are equal are accepted as grayscale; other colour masks are
    rejected, since their colours cannot be ordered into classes unambiguously. A palette PNG gives its
    palette indices. DICOM masks keep their stored values (no rescaling); NIfTI masks must hold integers.
    """
    return read_mask_with_encoding(path, slice_index)[0]


def read_mask_with_encoding(path: str | Path, slice_index: int | None = None) -> tuple[np.ndarray, str | None]:
    """:func:`read_mask` and how the file states its classes: ``"palette"`` (a palette PNG: the class is the
    palette index), ``"grey"`` (the class is the stored value; a palette whose used entries are the grey of their
    index reads the same either way) or None (DICOM, NIfTI). Masks of both encodings in one set give one class
    two numbers (index 1 vs grey 1) and are refused by :func:`~gctxseg.data.fingerprint.fingerprint_dataset`."""
    path = Path(path)
    if _has_suffix(path, NIFTI_SUFFIXES):
        return _slice_of(_volume_slices(path, labels=True), path, slice_index), None
    if _has_suffix(path, DICOM_SUFFIXES):
        return np.asarray(_dicom_pixels(_read_dicom(path, pixels=True), path), dtype=np.int64), None
    img = _open(path)
    if img.mode == "P":
        index = np.asarray(img, dtype=np.int64)  # palette index = class value
        used = int(index.max(initial=0)) + 1
        colours = np.asarray(img.getpalette() or [], dtype=np.int64).reshape(-1, 3)[:used]
        grey = len(colours) == used and bool(np.all(colours == np.arange(used)[:, None]))
        return index, "grey" if grey else "palette"
    return _read_value_mask(img, path), "grey"


def _read_value_mask(img: Image.Image, path: Path) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim == 3:
        rgb = arr[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise DatasetError(
                f"{path}: colour mask with differing channels; save masks as single-channel index images"
            )
        arr = rgb[..., 0]
    return arr.astype(np.int64)


def read_volume(path: str | Path, labels: bool = False) -> tuple[np.ndarray, ImageInfo]:
    """A NIfTI volume as its stack of slices, ``D x H x W`` (float32 values, or int64 labels), and its info."""
    path = Path(path)
    if not _has_suffix(path, NIFTI_SUFFIXES):
        raise DatasetError(f"{path}: not a NIfTI volume (.nii, .nii.gz)")
    return np.array(_volume_slices(path, labels)), _nifti_info(path)


def write_volume_mask(path: str | Path, mask: np.ndarray, like: str | Path) -> None:
    """Write a ``D x H x W`` label stack as a NIfTI volume on the grid of the volume ``like``.

    The slices go back along ``like``'s slice axis; affine, voxel sizes and orientation codes are
    copied from it, intensity scaling is dropped (labels are stored as they are, uint8 or uint16).
    """
    import nibabel as nib

    like = Path(like)
    info, src = _nifti_info(like), _nifti(like)
    if (mask.shape[0], *mask.shape[1:]) != (info.depth, *info.size):
        raise ValueError(f"{path}: mask stack {mask.shape} does not fit {like} ({info.depth} x {info.size})")
    dtype = np.uint8 if mask.max(initial=0) <= 255 else np.uint16
    data = np.moveaxis(mask.astype(dtype), 0, info.slice_axis)
    header = src.header.copy()
    header.set_data_dtype(dtype)
    out = type(src)(data.reshape(src.shape), src.affine, header)
    out.header.set_slope_inter(1.0, 0.0)
    nib.save(out, str(path))
