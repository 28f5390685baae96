"""Inference on a folder: index masks at each image's original size (original mask values) and overlays.

``load_predictor`` is what ``gctxseg predict`` and ``evaluate`` call with their ``--weights``: one checkpoint
gives a :class:`Predictor`; several, or a ``gctxseg cv`` folder (its folds' final weights plus the
``postprocessing.json`` chosen on their out-of-fold predictions), give an :class:`EnsemblePredictor`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from .checkpoint import check_inference_fields, checkpoint_channels, load_checkpoint, model_from_checkpoint
from .cvfolder import fold_weights
from .data import DatasetError, IntensityMapping, MaskValueMap
from .data.io import NIFTI_SUFFIXES, READABLE_SUFFIXES, file_stem, fit_channels, read_volume, write_volume_mask
from .data.splits import SPLITS_FINAL, load_splits
from .gallery import write_folder_measurements
from .measurements import MeasurementOptions, class_names_for, describe_spacing, plan_measurements
from .outputs import check_output_folder as check_outputs
from .outputs import is_disk_error, staged_output
from .postprocess import PostProcessing
from .precision import autocast_context, autocast_dtype
from .utils import compile_model, resolve_device
from .visualize import overlay
from .volume_readout import (
    LISTED_VOLUME_SUFFIXES,
    plan_volume_files,
    predict_volume_files,
    say_geometry,
    split_volume_files,
    volume_columns_eye,
)

__all__ = ["INFER_MODES", "Predictor", "PredictionSummary", "predict_folder", "output_names",
           "EnsemblePredictor", "load_predictor",
           "ensemble_members"]


INFER_MODES = ("resize", "sliding")


class Predictor:
    """A trained model with everything needed to segment new images (from a gctxseg checkpoint).

    Two ways to bring an image of any size to the network:

    - ``resize`` (default): resize the whole image to the training size, predict, and resize the
      class probabilities back to the image's size (bilinear), so borders are interpolated smoothly.
    - ``sliding``: MONAI's ``sliding_window_inference`` at the image's own resolution with windows of the
      training size (``base_size``), overlap 0.5 and Gaussian blending, so a 1024x496 OCT B-scan is not
      squashed. Right when the model was trained on images at (about) that resolution; an image smaller
      than a window is padded.

    Test-time augmentation (``tta``) averages the softmax probabilities of the image and its horizontal
    mirror (and, with ``tta_vflip``, the vertical mirror too: off by default, OCT B-scans are not
    symmetric top to bottom). With ``sliding`` it is applied inside each window.

    Args:
        weights: ``best.pt`` / ``last.pt`` of a run folder, or an ONNX file from ``gctxseg export`` (run with
            ONNX Runtime on the CPU in fp32; ``device`` and ``amp`` are then ignored).
        device: ``auto``, ``cpu``, ``cuda``...
        amp: ``auto``, ``bf16``, ``fp16`` or ``off`` (see :func:`gctxseg.precision.autocast_dtype`).
        tta: average over horizontal flips.
        tta_vflip: also average over vertical flips (implies ``tta``).
        infer_mode: ``resize`` or ``sliding``.
        overlap: sliding-window overlap fraction in [0, 1) (default 0.5).
        sw_batch_size: windows per forward pass in ``sliding`` mode.
        compile: ``torch.compile`` the model with frozen weights (one-off compile time; eager where it cannot).

    Raises:
        ValueError: unreadable checkpoint, weights not fitting the architecture, unknown ``infer_mode``.
    """

    def __init__(
        self,
        weights: str | Path,
        device: str = "auto",
        amp: str = "auto",
        *,
        tta: bool = False,
        tta_vflip: bool = False,
        infer_mode: str = "resize",
        overlap: float = 0.5,
        sw_batch_size: int = 4,
        compile: bool = False,
    ) -> None:
        if infer_mode not in INFER_MODES:
            raise ValueError(f"infer_mode must be one of {', '.join(INFER_MODES)}, got {infer_mode!r}")
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        onnx_model = None
        if Path(weights).suffix.lower() == ".onnx":  # exported model: ONNX Runtime on the CPU, metadata in the file
            from .export import OnnxModel  # local: onnxruntime is an optional extra

            onnx_model = OnnxModel(weights)
            ckpt = onnx_model.metadata
            device, amp = "cpu", "off"
        else:
            ckpt = load_checkpoint(weights)
        check_inference_fields(ckpt, weights)  # sizes and normalisation: refused once here, not per image
        self.device = resolve_device(device)
        self.amp_dtype = autocast_dtype(amp, self.device)
        self.value_map = MaskValueMap.from_dict(ckpt["value_map"])
        self.config: dict = ckpt.get("config") or {}  # the run's TrainConfig (data, folds) where the file has it
        self.base_size = tuple(ckpt["base_size"])
        self.channels = checkpoint_channels(ckpt)
        self.mean = ckpt["normalization"]["mean"]
        self.std = ckpt["normalization"]["std"]
        # values as read -> [0, 1] exactly as in training (CT windows, scan percentile range; pictures as read)
        self.intensity = IntensityMapping.from_dict(ckpt.get("intensity"))
        self.infer_mode, self.overlap, self.sw_batch_size = infer_mode, overlap, sw_batch_size
        self.postprocess = None  # a gctxseg.postprocess.PostProcessing chosen on cross-validation, if any
        # flip dims of a N x C x H x W batch averaged by test-time augmentation ([] = identity only)
        self.flips: list[tuple[int, ...]] = [(3,)] if tta or tta_vflip else []
        if tta_vflip:
            self.flips += [(2,), (2, 3)]
        if onnx_model is not None:
            self.model = onnx_model
            return
        model = model_from_checkpoint(ckpt, weights)
        model = model.to(self.device, memory_format=torch.channels_last)  # oneDNN/cuDNN's fast layout
        self.model = compile_model(model, self.device, freeze=True) if compile else model

    @property
    def num_classes(self) -> int:
        return self.value_map.num_classes

    def read(self, path: str | Path, slice_index: int | None = None) -> np.ndarray:
        """Read an image (or a volume's slice) as the network's ``H x W x C`` [0, 1] input, as in training.

        Raises:
            DatasetError: unreadable file, or a picture for a model trained on DICOM/NIfTI (and back).
        """
        return self.intensity.read(path, slice_index)

    def _to_tensor(self, image: np.ndarray, source: str | Path) -> torch.Tensor:
        """``H x W x C`` float [0, 1] -> normalised ``C x H x W`` at the image's own size."""
        image = fit_channels(image, self.channels, source)
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return TF.normalize(x.float(), self.mean, self.std)

    def _to_input(self, image: np.ndarray, source: str | Path) -> torch.Tensor:
        """``H x W x C`` float [0, 1] -> normalised ``C x h x w`` at the training size."""
        x = self._to_tensor(image, source)
        return TF.resize(x, list(self.base_size), antialias=True)

    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``N x K x H x W`` (float32) of a batch, averaged over the TTA flips."""
        if isinstance(self.model, torch.nn.Module):
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(self.device, self.amp_dtype):
            probs = self.model(x).float().softmax(1)
            for dims in self.flips:
                probs += self.model(x.flip(dims)).float().softmax(1).flip(dims)
        return probs / (1 + len(self.flips))

    @torch.no_grad()
    def predict_proba(self, image: np.ndarray, source: str | Path = "image") -> torch.Tensor:
        """Class probabilities ``K x H x W`` (float32, on the CPU) at the image's own size.

        Args:
            image: ``H x W x C`` float32 in [0, 1], as :func:`gctxseg.data.read_image` returns.
            source: the image's path, named in errors.

        Raises:
            DatasetError: the image's channels do not fit the model.
        """
        size = tuple(image.shape[:2])
        if self.infer_mode == "sliding":
            x = self._to_tensor(image, source)[None].to(self.device)
            probs = sliding_window_inference(
                x,
                roi_size=self.base_size,
                sw_batch_size=self.sw_batch_size,
                predictor=self._probabilities,
                overlap=self.overlap,
                mode="gaussian",
            )
        else:
            probs = self._probabilities(self._to_input(image, source)[None].to(self.device))
            # resize probabilities, not labels, so class borders are interpolated smoothly at the original size
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
        return torch.as_tensor(probs)[0].float().cpu()

    def predict_image(self, image: np.ndarray, source: str | Path = "image") -> np.ndarray:
        """Class indices (``H x W`` int64) at the image's own size (post-processed where a rule was chosen)."""
        return _labels(self.predict_proba(image, source), self.postprocess)


def _labels(probs: torch.Tensor, postprocess: PostProcessing | None) -> np.ndarray:
    """Class probabilities ``K x H x W`` -> class indices, post-processed where a rule was chosen."""
    pred = probs.argmax(0).numpy()
    return postprocess(pred) if postprocess is not None else pred


@dataclass
class PredictionSummary:
    """What a folder prediction did."""

    written: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # one line per bad file
    measurements: list = field(default_factory=list)  # measurements.Measurement rows of measurements.csv
    class_names: list[str] = field(default_factory=list)  # foreground classes, as in the CSV header


def _predict_volume(predictor: Predictor, path: Path, out: Path, name: str) -> Path:
    """Segment a NIfTI volume slice by slice; write its mask volume on the input's grid and one overlay."""
    predictor.intensity.check(path)
    volume, _ = read_volume(path)  # D x H x W, values as read
    slices = [predictor.intensity.apply(s[..., None]) for s in volume]
    pred = np.stack([predictor.predict_image(s, f"{path} (slice {k})") for k, s in enumerate(slices)])
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    mask_path = out / "masks" / f"{name}{suffix}"
    write_volume_mask(mask_path, predictor.value_map.decode(pred), like=path)
    shown = int((pred > 0).reshape(len(pred), -1).sum(1).argmax())  # the slice with the most foreground
    Image.fromarray(overlay(slices[shown], pred[shown])).save(out / "overlays" / f"{name}.png")
    return mask_path


def predict_folder(
    weights: str | Path | list[str | Path],
    source: str | Path = "inference/img",
    out: str | Path = "inference/out",
    device: str = "auto",
    amp: str = "auto",
    suffixes: tuple[str, ...] = READABLE_SUFFIXES,
    *,
    tta: bool = False,
    tta_vflip: bool = False,
    infer_mode: str = "resize",
    compile: bool = False,
    measure: MeasurementOptions | None = None,
    class_codes: str | Path | None = None,
) -> PredictionSummary:
    """Segment every image in ``source``; write ``out/masks/NAME.png`` and ``out/overlays/NAME.png``.

    Masks hold the dataset's original values (e.g. 0/128/255). Each DICOM slice gets its own mask; a
    NIfTI volume is segmented slice by slice into ``out/masks/NAME.nii.gz`` (or ``.nii``) with the
    input's affine and voxel sizes, and its overlay shows the slice with the most foreground. Intensities
    are mapped as in training (the checkpoint's CT window). Files whose stems collide (``a.png`` and
    ``a.jpg``) are written under their whole names (``a.png.png``, ``a.jpg.png``). A file that fails for
    any reason is listed in the summary's ``failed`` (one line each) and the others are still processed.
    ``weights`` may name several checkpoints or a ``gctxseg cv`` folder (:func:`load_predictor`).
    ``tta``, ``tta_vflip``, ``infer_mode`` and ``compile`` are those of :class:`Predictor`.
    ``out/measurements.csv`` and ``out/index.html`` (the gallery) hold each image's amounts per class, in
    mm² / mm³ where ``measure`` or the files give the spacing (:mod:`gctxseg.measurements`).
    OCT volume files (``.vol``, ``.e2e``, multi-frame DICOM) are measured on their own geometry
    (:mod:`gctxseg.volume_readout`) and, where highdicom is installed, get a DICOM SEG and a TID 1500 report in
    ``out/dicom/`` (:mod:`gctxseg.dicom_out`; ``class_codes`` is a JSON of the segments' codes).

    Raises:
        DatasetError: ``source`` missing or holding no images; slices of one volume differing in size.
        ValueError: unreadable checkpoint; bad ``measure`` options.
    """
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise DatasetError(f"{source}: folder not found; pass --source DIR with images to segment")
    check_output_folder(source, out)  # before the weights are read: a wrong --out costs nothing
    suffixes = tuple(suffixes) + LISTED_VOLUME_SUFFIXES  # OCT volume files (.vol, .e2e) beside the pictures
    listed = sorted(p for p in source.iterdir() if p.is_file() and p.name.lower().endswith(suffixes))
    unnamed = [_undecodable_name(p) for p in listed if not _is_text_name(p)]  # each fails alone, in one line
    files = [p for p in listed if _is_text_name(p)]
    if not files:
        raise DatasetError(unnamed[0] if unnamed else
                           f"{source}: no images ({', '.join(suffixes)}); put images there or pass --source DIR")
    names = output_names(files)
    files, volume_files = split_volume_files(files)  # each volume file is measured on its own geometry
    measure = measure or MeasurementOptions()
    plan = plan_measurements(files, measure, source)  # bad spacing or grouping stops here, before any prediction
    volumes, unread = plan_volume_files(volume_files, names)
    dicom_codes = _dicom_codes(class_codes, volumes)  # a bad --class-codes stops here, before the weights are read
    if files:
        print(f"pixel spacing: {describe_spacing(files, measure, source)}")
    say_geometry(volumes)
    predictor = load_predictor(weights, device, amp, tta=tta, tta_vflip=tta_vflip, infer_mode=infer_mode,
                               compile=compile)
    class_names = class_names_for(measure, predictor.num_classes)
    check_class_codes(class_codes, dicom_codes, class_names)
    with staged_output(out, "predict", OUTPUT_ENTRIES, **_output_rules(source)) as staging:
        summary = _predict_into(staging, predictor, files, names, volumes, plan, measure, class_names,
                                failed=unnamed + unread, dicom_codes=dicom_codes)
    summary.written = [out / path.relative_to(staging) for path in summary.written]
    return summary


def _predict_into(staging: Path, predictor: Predictor | EnsemblePredictor, files: list[Path],
                  names: dict[Path, str], volumes: list, plan, measure, class_names: list[str],
                  failed: list[str], dicom_codes: dict | None = None) -> PredictionSummary:
    """Masks, overlays, measurements and gallery of ``files`` and volume files into ``staging`` (swapped in for
    --out later); ``failed`` are the lines of files that failed before prediction."""
    (staging / "masks").mkdir()
    (staging / "overlays").mkdir()
    summary, masks = PredictionSummary(failed=list(failed)), {}
    for path in files:
        name = names[path]
        try:
            masks[path] = _predict_file(predictor, path, staging, name)
            summary.written.append(masks[path])
        except KeyboardInterrupt:
            raise
        except DatasetError as err:
            summary.failed.append(str(err))
        except Exception as err:  # any other failure of one file (a decompression bomb, a PIL bug): the rest go on
            if is_disk_error(err):  # ... but a full disk fails every file: stop, the previous output stays
                raise
            summary.failed.append(f"{path}: {type(err).__name__}: {err}".splitlines()[0])
    columns_eye = volume_columns_eye(volumes, measure.eye, any(r.kind in ("group", "series") for r in plan))
    done, lost = predict_volume_files(predictor, volumes, staging, class_names, columns_eye, overlay, dicom_codes)
    summary.failed += lost
    summary.written += [r.masks for r in done]
    summary.measurements = write_folder_measurements(plan, masks, predictor.value_map, staging, class_names,
                                                     measure.eye, measure.fovea, volumes=done,
                                                     columns_eye=columns_eye)
    summary.class_names = class_names
    return summary


# What `predict` writes into --out. The rule (gctxseg.outputs, docs/reliability.md): --out is a new or empty
# folder, or one holding only a previous prediction (these entries and gctxseg's marker), which is then replaced
# whole once the new one is complete, so no stale mask or row of an earlier run sits beside the new ones. Anything
# else in it, or an --out that would overlap the source or write over the masks beside it, is refused.
OUTPUT_ENTRIES = frozenset({"masks", "overlays", "measurements.csv", "index.html", "etdrs.csv", "enface", "dicom"})


def _dicom_codes(class_codes: str | Path | None, volumes: list) -> dict | None:
    """The segments' codes of the run's DICOM SEG/SR (empty: the defaults), None where none is written: no volume
    file, or highdicom not installed (one line says so; with ``--class-codes`` that is a refusal).

    Raises:
        ValueError: ``class_codes`` unreadable, or given without highdicom.
    """
    from .dicom_out import DICOM_INSTALL, have_highdicom, read_class_codes

    if not have_highdicom():
        if class_codes is not None:
            raise ValueError(f"--class-codes {class_codes}: writing DICOM SEG/SR needs highdicom; {DICOM_INSTALL}")
        if volumes:
            print(f"note: DICOM SEG/SR not written (highdicom is not installed; {DICOM_INSTALL})", file=sys.stderr)
        return None
    codes = read_class_codes(class_codes) if class_codes is not None else {}
    return codes if volumes else None


def check_class_codes(class_codes: str | Path | None, codes: dict | None, class_names: Sequence[str]) -> None:
    """Refuse a ``--class-codes`` key that is not one of the run's classes (a typo would leave a class uncoded)."""
    unknown = [name for name in codes or {} if name not in class_names]
    if unknown:
        raise ValueError(f"{class_codes}: key {unknown[0]!r} is not a class of this run ({', '.join(class_names)}); "
                         "name the classes as --class-names does")


def _output_rules(source: Path) -> dict:
    """The inputs ``predict`` never writes into, and the advice of its refusals (:mod:`gctxseg.outputs`)."""
    fix = f"pass a new folder, e.g. --out {source.parent / (source.name + '_predictions')}"
    return dict(noun="predictions", fix=fix,
                protected=[(source, "the source folder"),
                           (source.parent / "masks", "the masks beside the source (ground truth)")])


def check_output_folder(source: Path, out: Path) -> None:
    """Refuse an ``out`` that would overwrite the source, its sibling ``masks/`` or files ``predict`` did not write.

    Raises:
        ValueError: one line naming the folder and the fix (a flag, not the data: exit 2).
    """
    check_outputs(out, "predict", OUTPUT_ENTRIES, **_output_rules(source))


def output_names(files: Sequence[Path]) -> dict[Path, str]:
    """The one owner of "input -> output names": each input's stem for ``masks/`` and ``overlays/``, or its whole
    name where stems collide (``a.png``, ``a.jpg``); measurements and the gallery look masks up by input.
    Collisions are found case-blind (a case-insensitive disk would merge ``A.png`` and ``a.png``)."""
    stems = [file_stem(p).casefold() for p in files]
    names = {p: p.name if stems.count(stem) > 1 else file_stem(p) for p, stem in zip(files, stems)}
    taken: set[str] = set()
    for path, name in names.items():  # a whole name may still meet another's stem (a.jpg and a.jpg.png)
        unique, k = name, 2
        while unique.casefold() in taken:
            unique, k = f"{name}_{k}", k + 1
        names[path] = unique
        taken.add(unique.casefold())
    return names


def _is_text_name(path: Path) -> bool:
    """False for a file name that is not UTF-8 (``scan\\xff.png`` on Linux: Python holds it with surrogates, which
    no CSV, web page or terminal line can carry)."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _undecodable_name(path: Path) -> str:
    shown = os.fsencode(path).decode("utf-8", "backslashreplace")  # the bytes as \xff escapes: one printable line
    return f"{shown}: the file name is not UTF-8 text, so no CSV or page can name it; rename it and predict again"


def _predict_file(predictor: Predictor, path: Path, out: Path, name: str) -> Path:
    """Segment one file into ``out/masks`` and ``out/overlays`` under ``name``; returns the mask's path."""
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        return _predict_volume(predictor, path, out, name)
    image = predictor.read(path)
    pred = predictor.predict_image(image, path)
    mask_path = out / "masks" / f"{name}.png"
    Image.fromarray(predictor.value_map.decode(pred)).save(mask_path)
    Image.fromarray(overlay(image, pred)).save(out / "overlays" / f"{name}.png")
    return mask_path


# ---------------------------------------------------------------- fold ensembles


class EnsemblePredictor:
    """Members' class probabilities averaged (each member normalises the image as it was trained).

    Raises:
        ValueError: members of different class maps, input channels or intensity mappings.
    """

    def __init__(self, members: Sequence[Predictor], sources: Sequence[str | Path],
                 postprocess: PostProcessing | None = None) -> None:
        first = members[0]
        for member, source in zip(members[1:], sources[1:]):
            for what, mine, theirs in (
                ("classes (mask value -> class)", member.value_map.to_dict(), first.value_map.to_dict()),
                ("input channels", member.channels, first.channels),
                ("intensity mapping", member.intensity.to_dict(), first.intensity.to_dict()),
            ):
                if mine != theirs:
                    raise ValueError(f"{source}: {what} {mine} but {sources[0]} has {theirs}; an ensemble needs "
                                     "checkpoints trained on the same classes and inputs")
        self.members, self.sources, self.postprocess = list(members), [str(s) for s in sources], postprocess
        self.value_map, self.channels, self.intensity = first.value_map, first.channels, first.intensity
        self.device, self.base_size, self.infer_mode = first.device, first.base_size, first.infer_mode

    @property
    def num_classes(self) -> int:
        return self.value_map.num_classes

    def read(self, path: str | Path, slice_index: int | None = None) -> np.ndarray:
        return self.members[0].read(path, slice_index)

    @torch.no_grad()
    def predict_proba(self, image: np.ndarray, source: str | Path = "image") -> torch.Tensor:
        total = self.members[0].predict_proba(image, source)
        for member in self.members[1:]:
            total += member.predict_proba(image, source)
        return total / len(self.members)

    def predict_image(self, image: np.ndarray, source: str | Path = "image") -> np.ndarray:
        return _labels(self.predict_proba(image, source), self.postprocess)


def ensemble_members(weights: str | Path | Sequence[str | Path]) -> tuple[list[Path], Path | None]:
    """Checkpoint files named by ``weights`` and the post-processing file that goes with them (or None).

    A folder of ``gctxseg cv`` gives its folds' final weights (``fold_*/last.pt``, the ones its out-of-fold
    score and post-processing were measured with) and ``postprocessing.json``; a run folder its ``best.pt``;
    files are taken as they are.
    """
    items = [weights] if isinstance(weights, (str, Path)) else list(weights)
    files, postprocessing = [], None
    for item in map(Path, items):
        chosen = _chosen_configuration(item) if item.is_dir() else None
        if chosen is not None:
            files += chosen[0]
            postprocessing = chosen[1]
        elif item.is_dir():
            folds = fold_weights(item) if any(item.glob("fold_*/last.pt")) else []
            if folds:
                files += folds
                postprocessing = item / "postprocessing.json" if (item / "postprocessing.json").is_file() else None
            elif (item / "best.pt").is_file():
                files.append(item / "best.pt")
            else:
                raise ValueError(f"{item}: no best.pt and no fold_*/last.pt; pass a run or 'gctxseg cv' folder")
        else:
            files.append(item)
    return files, postprocessing


def _chosen_configuration(cv_dir: Path) -> tuple[list[Path], Path | None] | None:
    """The fold checkpoints and post-processing file of the configuration ``gctxseg cv`` chose (``"chosen"`` in
    its ``cv_summary.json``: one architecture or an ensemble of several), or None for a folder without a choice."""
    summary_path = cv_dir / "cv_summary.json"
    if not summary_path.is_file():
        return None
    try:
        summary = json.loads(summary_path.read_text())
        chosen = summary.get("chosen")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError) as err:
        raise ValueError(f"{summary_path}: unreadable ({err}); write it again with gctxseg cv --summary-only") from None
    if chosen is None:
        return None
    members = chosen.get("members") if isinstance(chosen, dict) else None
    if not isinstance(members, list) or not members or not all(
            isinstance(m, str) and m and Path(m).name == m and m not in (".", "..") for m in members):
        raise ValueError(f"{summary_path}: 'chosen' names no configuration folders; write it again with "
                         "gctxseg cv --summary-only")
    missing = [m for m in members if not any((cv_dir / m).glob("fold_*/last.pt"))]
    if missing:
        raise ValueError(f"{cv_dir}: the chosen configuration {'+'.join(members)} has no {missing[0]}/fold_*/last.pt; "
                         "finish it with gctxseg cv")
    folds = {m: fold_weights(cv_dir / m) for m in members}  # every fold, or refused: never a part-ensemble
    counted = summary.get("folds")
    wrong = next((m for m in members if len(folds[m]) != counted), None)
    if wrong is not None:
        raise ValueError(f"{summary_path}: 'folds' is {str(counted)[:20]}, but {wrong} has {len(folds[wrong])} folds; "
                         "write it again with gctxseg cv --summary-only")
    _check_fold_contract(cv_dir, folds)
    files = [f for m in members for f in folds[m]]
    post = cv_dir / "postprocessing.json"
    return files, post if post.is_file() else None


def _check_fold_contract(cv_dir: Path, folds: dict[str, list[Path]]) -> None:
    """Each configuration served holds one fold per fold of the cv's ``splits_final.json`` (the folds its
    out-of-fold score and post-processing were measured on), never an ensemble of another split.

    Raises:
        ValueError: one line naming the split file, the configuration and the fold counts.
    """
    recorded = cv_dir / SPLITS_FINAL
    if not recorded.is_file():  # a cv folder of an older gctxseg: its summary's count was checked above
        return
    k = len(load_splits(recorded))
    wrong = next((m for m, f in folds.items() if len(f) != k), None)
    if wrong is not None:
        raise ValueError(f"{recorded}: holds {k} folds, but {wrong} has {len(folds[wrong])}; finish or retrain its "
                         "folds with the same gctxseg cv command")


def _largest_training_image(weights: Path) -> int | None:
    """Pixels of the largest image a checkpoint's run trained on (its fingerprint's sizes), or None where unknown:
    no post-processing rule chosen on those images removes components larger than that."""
    sizes = (load_checkpoint(weights, mmap=True).get("fingerprint") or {}).get("sizes") or {}
    pixels = [int(h) * int(w) for h, _, w in (size.partition("x") for size in sizes) if h.isdigit() and w.isdigit()]
    return max(pixels, default=None)


def load_predictor(weights: str | Path | Sequence[str | Path], device: str = "auto", amp: str = "auto",
                   **options) -> Predictor | EnsemblePredictor:
    """A Predictor for one checkpoint, an EnsemblePredictor for several (``options`` go to each Predictor)."""
    files, postprocessing = ensemble_members(weights)
    members = [Predictor(f, device, amp, **options) for f in files]
    postprocess = PostProcessing.load(postprocessing, members[0].num_classes, _largest_training_image(files[0])) \
        if postprocessing else None
    if len(members) == 1:
        members[0].postprocess = postprocess
        return members[0]
    return EnsemblePredictor(members, files, postprocess)
