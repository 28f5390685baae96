"""CT and medical formats: DICOM HU conversion, NIfTI volumes as slices, windows, training and prediction."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from gctxseg.data import (
    WINDOW_PRESETS,
    CTWindow,
    DatasetError,
    DataWarning,
    IntensityMapping,
    SegmentationDataset,
    expand_slices,
    find_pairs,
    fingerprint_dataset,
    read_image,
    read_info,
    read_mask,
    resolve_windows,
    window_ct,
)
from gctxseg.training import TrainConfig, load_checkpoint, train
from gctxseg.workflows.predict_folder import predict_folder

AIR, FAT, SOFT_TISSUE, BONE = -1000, -100, 40, 700
AFFINE = np.array([[0.8, 0, 0, -20.0], [0, 0.8, 0, -30.0], [0, 0, 2.5, 100.0], [0, 0, 0, 1]])


def ct_phantom(depth: int = 5, size: int = 48, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """HU volume and labels (``D x H x W``): air around a fat body holding a soft-tissue organ (label 1) and a
    bone (label 2) in the middle slices; the first and last slices hold no foreground."""
    yy, xx = np.mgrid[:size, :size]
    r = size / 2
    body = (yy - r) ** 2 + (xx - r) ** 2 < (0.45 * size) ** 2
    organ = (yy - r + 6 + shift) ** 2 + (xx - r + 6) ** 2 < 64
    bone = (yy - r - 8) ** 2 + (xx - r - 8 - shift) ** 2 < 25
    hu = np.full((depth, size, size), AIR, np.float32)
    labels = np.zeros((depth, size, size), np.uint8)
    hu[:, body] = FAT
    for k in range(1, depth - 1):
        hu[k][organ], labels[k][organ] = SOFT_TISSUE, 1
        hu[k][bone], labels[k][bone] = BONE, 2
    return hu, labels


def write_nifti(path, volume: np.ndarray, affine=AFFINE, dtype=np.int16) -> None:
    """Save a ``D x H x W`` stack as a NIfTI volume with slices along the third voxel axis."""
    nib.save(nib.Nifti1Image(np.moveaxis(volume, 0, 2).astype(dtype), affine), str(path))


def write_dicom(path, hu: np.ndarray, slope: float = 1.0, intercept: float = -1024.0, pixels: bool = True):
    """Save one HU slice as a CT DICOM file, stored as ``(hu - intercept) / slope`` in uint16."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = hu.shape
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if pixels:
        ds.PixelData = np.round((hu - intercept) / slope).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture
def nifti_split(tmp_path):
    """``name/images/case_i.nii.gz`` + ``name/masks/case_i.nii.gz`` phantom volumes; returns the images folder."""

    def make(name: str = "train", n: int = 2) -> object:
        for folder in ("images", "masks"):
            (tmp_path / name / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            hu, labels = ct_phantom(shift=i)
            write_nifti(tmp_path / name / "images" / f"case_{i}.nii.gz", hu)
            write_nifti(tmp_path / name / "masks" / f"case_{i}.nii.gz", labels, dtype=np.uint8)
        return tmp_path / name / "images"

    return make


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


# ---------------------------------------------------------------- readers


def test_dicom_applies_rescale_slope_and_intercept(tmp_path):
    hu = ct_phantom()[0][2]
    write_dicom(tmp_path / "s.dcm", hu, slope=2.0, intercept=-1024.0)
    image = read_image(tmp_path / "s.dcm")
    assert image.shape == (48, 48, 1) and image.dtype == np.float32
    np.testing.assert_array_equal(image[..., 0], hu)  # HU, not [0, 1]
    info = read_info(tmp_path / "s.dcm")
    assert info.kind == "ct" and info.size == (48, 48) and info.spacing == (0.7, 0.7) and not info.is_volume


def test_dicom_without_pixel_data_is_one_clear_line(tmp_path):
    write_dicom(tmp_path / "report.dcm", np.zeros((8, 8)), pixels=False)
    with pytest.raises(DatasetError) as err:
        read_image(tmp_path / "report.dcm")
    assert "report.dcm: DICOM without pixel data" in _one_line(err)


def test_nifti_slices_along_the_head_foot_axis(tmp_path):
    hu, labels = ct_phantom()
    write_nifti(tmp_path / "v.nii.gz", hu)
    info = read_info(tmp_path / "v.nii.gz")
    assert info.depth == 5 and info.size == (48, 48) and info.slice_axis == 2 and info.spacing == (0.8, 0.8)
    np.testing.assert_array_equal(read_image(tmp_path / "v.nii.gz", 2)[..., 0], hu[2])
    # a volume stored head-foot first (as some public datasets do): the affine says which axis is axial
    swapped = AFFINE[:, [2, 1, 0, 3]]
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), swapped), str(tmp_path / "k.nii"))
    assert read_info(tmp_path / "k.nii").slice_axis == 0
    np.testing.assert_array_equal(read_mask(tmp_path / "k.nii", 3), labels[3])


# ---------------------------------------------------------------- windows


@pytest.mark.parametrize("name", sorted(WINDOW_PRESETS))
def test_each_preset_maps_its_range_to_0_1(name):
    window = WINDOW_PRESETS[name]
    hu = np.array([-3000, window.low, window.level, window.high, 3000], np.float32)
    out = window_ct(hu, window)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0, 0, 0.5, 1, 1], atol=1e-6)


def test_phantom_tissues_under_the_abdomen_window():
    out = window_ct(np.array([AIR, FAT, SOFT_TISSUE, BONE], np.float32), WINDOW_PRESETS["abdomen"])
    np.testing.assert_allclose(out, [0, 0.15, 0.5, 1], atol=1e-6)  # abdomen: L40/W400 spans -160..240


def test_window_options_resolve_or_fail_clearly():
    assert resolve_windows() == ("auto",)
    assert resolve_windows(window="lung") == (WINDOW_PRESETS["lung"],)
    assert resolve_windows(level=50, width=350) == (CTWindow(50, 350),)
    assert resolve_windows(windows=("lung", "mediastinum", "auto", "-600/1500")) == (
        WINDOW_PRESETS["lung"], WINDOW_PRESETS["mediastinum"], "auto", CTWindow(-600, 1500))  # fmt: skip
    with pytest.raises(ValueError, match="did you mean 'lung'"):
        resolve_windows(window="lungs")
    with pytest.raises(ValueError, match="both choose"):
        resolve_windows(window="lung", level=40, width=400)
    with pytest.raises(ValueError, match="go together"):
        resolve_windows(level=40)
    with pytest.raises(ValueError, match="needs --ct"):
        TrainConfig(window="lung")


# ---------------------------------------------------------------- pairing, slicing, fingerprint


def test_volumes_split_into_slices_with_and_without_empty_slice_sampling(nifti_split):
    pairs = find_pairs(nifti_split(n=2), ".nii.gz", ".nii.gz")
    assert [p.name for p in pairs] == ["case_0", "case_1"]
    every = expand_slices(pairs)
    assert len(every) == 10 and [p.slice_index for p in every[:5]] == [0, 1, 2, 3, 4]
    assert every[3].name == "case_0_003"
    assert len(expand_slices(pairs, empty_slice_fraction=0.0)) == 6  # 3 slices with foreground per volume
    half = expand_slices(pairs, empty_slice_fraction=0.5, seed=1)
    assert len(half) == 6 + 2 and half == expand_slices(pairs, empty_slice_fraction=0.5, seed=1)


def test_mask_volume_off_the_image_grid_is_one_line(nifti_split):
    images = nifti_split(n=2)
    write_nifti(images.parent / "masks" / "case_0.nii.gz", ct_phantom(depth=4)[1], dtype=np.uint8)
    shifted = AFFINE.copy()
    shifted[0, 3] += 5
    write_nifti(images.parent / "masks" / "case_1.nii.gz", ct_phantom()[1], affine=shifted, dtype=np.uint8)
    with pytest.raises(DatasetError) as err:
        expand_slices(find_pairs(images, ".nii.gz", ".nii.gz"))
    text = _one_line(err)
    assert "masks/case_0.nii.gz: volume 48x48x4 but its image is 48x48x5" in text and "(and 1 more)" in text
    write_nifti(images.parent / "masks" / "case_0.nii.gz", ct_phantom()[1], dtype=np.uint8)
    with pytest.raises(DatasetError, match=r"case_1\.nii\.gz: affine differs from its image's by up to 5 mm"):
        expand_slices(find_pairs(images, ".nii.gz", ".nii.gz"))


def test_fingerprint_derives_the_ct_window_from_foreground_hu(nifti_split):
    pairs = expand_slices(find_pairs(nifti_split(n=2), ".nii.gz", ".nii.gz"))
    fp = fingerprint_dataset(pairs, ct=True)
    assert fp.kinds == {"scan": 10} and fp.spacing == [0.8, 0.8] and fp.channels == 1
    assert fp.foreground_percentile_00_5 == [SOFT_TISSUE] and fp.foreground_percentile_99_5 == [BONE]
    assert fp.percentile_00_5 == [AIR]
    window = fp.intensity_mapping.windows[0]
    assert fp.intensity_mapping.mode == "window" and (window.low, window.high) == (SOFT_TISSUE, BONE)
    stacked = fingerprint_dataset(pairs, ct=True, windows=resolve_windows(windows=("auto", "lung")))
    assert stacked.channels == 2 and len(stacked.mean) == 2
    assert stacked.intensity_mapping.windows == (window, WINDOW_PRESETS["lung"])


def test_scans_without_ct_are_percentile_scaled_not_windowed(nifti_split):
    pairs = expand_slices(find_pairs(nifti_split(n=1), ".nii.gz", ".nii.gz"))
    mapping = fingerprint_dataset(pairs).intensity_mapping
    assert mapping.mode == "range" and (mapping.windows[0].low, mapping.windows[0].high) == (AIR, BONE)
    assert mapping.apply(np.array([[[AIR]], [[BONE]]], np.float32)).ravel().tolist() == [0.0, 1.0]


def test_ct_on_8bit_pictures_warns_and_uses_them_as_read(make_split):
    pairs = find_pairs(make_split(n=2), ".png", ".png")
    with pytest.warns(DataWarning, match=r"case_0\.png: --ct on picture files .* not Hounsfield units"):
        fp = fingerprint_dataset(pairs, ct=True)
    assert fp.intensity_mapping == IntensityMapping()


# ---------------------------------------------------------------- training and prediction


@pytest.mark.slow
def test_ct_training_end_to_end_then_predict_volume_and_dicom(nifti_split, tmp_path):
    cfg = TrainConfig(
        data_train=str(nifti_split("train", n=2)),
        data_val=str(nifti_split("val", n=1)),
        img_f=".nii.gz",
        mask_f=".nii.gz",
        ct=True,
        windows=("auto", "lung"),
        empty_slice_fraction=0.5,
        model="unet",
        model_options={"base_width": 4},
        base_size=(32, 32),
        epochs=1,
        batch_size=4,
        workers=0,
        amp="off",
        device="cpu",
        results=str(tmp_path / "runs"),
        num_samples=1,
    )
    run = train(cfg)
    params = json.loads((run / "log.json").read_text())["train parameters"]
    assert params["ct"] is True and params["in channels"] == 2 and params["intensity"]["mode"] == "window"
    assert params["intensity"]["windows"] == [[370.0, 660.0], [-600.0, 1500.0]]
    fingerprint = json.loads((run / "dataset_fingerprint.json").read_text())
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["intensity"] == fingerprint["intensity"]  # recorded in the run folder and the checkpoint
    assert fingerprint["intensity"]["windows"] == params["intensity"]["windows"]
    assert IntensityMapping.from_dict(ckpt["intensity"]).windows[0] == CTWindow(370, 660)

    source = tmp_path / "inference"
    source.mkdir()
    hu, _ = ct_phantom(depth=3)
    affine = AFFINE.copy()
    affine[:3, 3] = [5.0, -7.0, 42.0]
    write_nifti(source / "patient.nii.gz", hu, affine=affine)
    write_dicom(source / "slice.dcm", hu[1])
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(source / "export.png")
    summary = predict_folder(run / "last.pt", source, tmp_path / "out", device="cpu", amp="off")
    assert sorted(p.name for p in summary.written) == ["patient.nii.gz", "slice.png"]
    assert len(summary.failed) == 1 and "export.png: picture file but this model" in summary.failed[0]
    mask = nib.load(tmp_path / "out" / "masks" / "patient.nii.gz")
    np.testing.assert_allclose(mask.affine, affine)
    assert mask.shape == (48, 48, 3) and mask.header.get_zooms() == (0.8, 0.8, 2.5)
    assert set(np.unique(np.asanyarray(mask.dataobj)).tolist()) <= {0, 1, 2}
    assert (tmp_path / "out" / "overlays" / "patient.png").is_file()


def test_disk_cache_decodes_each_volume_once_and_keys_the_window(nifti_split, tmp_path, monkeypatch):
    from gctxseg.data import dataset as dataset_module

    pairs = expand_slices(find_pairs(nifti_split(n=2), ".nii.gz", ".nii.gz"))  # 2 volumes x 5 slices
    fp = fingerprint_dataset(pairs, ct=True)
    reads, real_read = [], dataset_module.read_image
    monkeypatch.setattr(dataset_module, "read_image", lambda path, *a: reads.append(path.name) or real_read(path, *a))

    def dataset(windows: str | None = None) -> SegmentationDataset:
        mapping = IntensityMapping("window", resolve_windows(windows=(windows,))) if windows else fp.intensity_mapping
        return SegmentationDataset(pairs, fp.value_map, (16, 16), 1, intensity=mapping, cache_dir=tmp_path / "c")

    in_memory = SegmentationDataset(pairs, fp.value_map, (16, 16), 1, intensity=fp.intensity_mapping)
    expected = [in_memory[i][0] for i in range(10)]
    reads.clear()
    on_disk = dataset()
    for i in (7, 2, 9, 0):  # shuffled order: the first slice of each volume decodes all five at once
        assert torch.equal(on_disk[i][0], expected[i])
    assert reads == ["case_1.nii.gz"] * 5 + ["case_0.nii.gz"] * 5
    reads.clear()
    assert all(torch.equal(dataset()[i][0], expected[i]) for i in range(10)) and reads == []
    dataset("lung")[0]  # another window is another entry
    assert reads == ["case_0.nii.gz"] * 5
