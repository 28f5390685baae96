"""A trained model applied to one image: class indices at the image's original size (original mask values).

``load_predictor`` is what ``gctxseg predict`` and ``evaluate`` call with their ``--weights``: one checkpoint
gives a :class:`Predictor`; several, or a ``gctxseg cv`` folder (its folds' final weights plus the
``postprocessing.json`` chosen on their out-of-fold predictions), give an :class:`EnsemblePredictor`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from torchvision.transforms.v2 import functional as TF

from ..core.precision import autocast_context, autocast_dtype
from ..core.runtime import compile_model, keep_freed_memory, resolve_device
from ..data import IntensityMapping, MaskValueMap
from ..data.io import fit_channels
from ..data.splits import SPLITS_FINAL, load_splits
from ..runs.checkpoint import check_inference_fields, checkpoint_channels, load_checkpoint, model_from_checkpoint
from ..runs.cvfolder import fold_weights
from .postprocess import PostProcessing

__all__ = ["INFER_MODES", "PREDICT_BATCH", "Predictor", "at_own_size", "predicted_batches", "KeptPrediction",
           "EnsemblePredictor", "load_predictor",
           "ensemble_members"]


INFER_MODES = ("resize", "sliding")
PREDICT_BATCH = 8  # images predicted in one forward pass where many are: faster per image on a CPU (docs/speed.md)


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
        amp: ``auto``, ``bf16``, ``fp16`` or ``off`` (see :func:`gctxseg.core.precision.autocast_dtype`).
        tta: average over horizontal flips.
        tta_vflip: also average over vertical flips (implies ``tta``).
        infer_mode: ``resize`` or ``sliding``.
        overlap: sliding-window overlap fraction in [0, 1) (default 0.5).
        sw_batch_size: windows per forward pass in ``sliding`` mode.
        compile: ``torch.compile`` the model with frozen weights (one-off compile time; eager where it cannot).
        model: the network as it is in memory, weights and all (a training run's, set to eval mode by its caller),
            instead of the one ``weights`` holds; ``weights`` is then the checkpoint's fields as a mapping (what
            its ``last.pt`` will hold but the weights), so a fold's final validation predicts what its ``last.pt``
            predicts without reading it back.

    Raises:
        ValueError: unreadable checkpoint, weights not fitting the architecture, unknown ``infer_mode``.
    """

    def __init__(
        self,
        weights: str | Path | Mapping,
        device: str = "auto",
        amp: str = "auto",
        *,
        tta: bool = False,
        tta_vflip: bool = False,
        infer_mode: str = "resize",
        overlap: float = 0.5,
        sw_batch_size: int = 4,
        compile: bool = False,
        model: torch.nn.Module | None = None,
    ) -> None:
        if infer_mode not in INFER_MODES:
            raise ValueError(f"infer_mode must be one of {', '.join(INFER_MODES)}, got {infer_mode!r}")
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        onnx_model = None
        if model is not None:
            ckpt, weights = dict(weights), "the model in memory"
        elif Path(weights).suffix.lower() == ".onnx":  # exported model: ONNX Runtime on the CPU, metadata in the file
            from .export import OnnxModel  # local: onnxruntime is an optional extra

            onnx_model = OnnxModel(weights)
            ckpt = onnx_model.metadata
            device, amp = "cpu", "off"
        else:
            ckpt = load_checkpoint(weights)
        check_inference_fields(ckpt, weights)  # sizes and normalisation: refused once here, not per image
        keep_freed_memory()  # each batch reuses the last one's memory instead of faulting it in again (as training)
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
        self.training_range = picture_range(ckpt, self.intensity)
        self.infer_mode, self.overlap, self.sw_batch_size = infer_mode, overlap, sw_batch_size
        self.postprocess = None  # a gctxseg.inference.postprocess.PostProcessing chosen on cross-validation, if any
        # flip dims of a N x C x H x W batch averaged by test-time augmentation ([] = identity only)
        self.flips: list[tuple[int, ...]] = [(3,)] if tta or tta_vflip else []
        if tta_vflip:
            self.flips += [(2,), (2, 3)]
        if onnx_model is not None or model is not None:
            self.model = onnx_model if model is None else model
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

    def batch_probabilities(self, x: torch.Tensor) -> torch.Tensor:
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
                predictor=self.batch_probabilities,
                overlap=self.overlap,
                mode="gaussian",
            )
        else:
            probs = self.batch_probabilities(self._to_input(image, source)[None].to(self.device))
            probs = at_own_size(probs[0], size)[None]
        return torch.as_tensor(probs)[0].float().cpu()

    @torch.no_grad()
    def predict_proba_many(self, images: Sequence[np.ndarray], sources: Sequence[str | Path]) -> list[torch.Tensor]:
        """:meth:`predict_proba` of each image, those of ``resize`` mode in one forward pass (a batch computes the
        same as one image at a time, to rounding, in a fraction of the time on a CPU; ``sliding`` windows are
        already batched)."""
        if self.infer_mode == "sliding" or not isinstance(self.model, torch.nn.Module) or len(images) < 2:
            return [self.predict_proba(image, source) for image, source in zip(images, sources)]
        probs = self.probabilities_at_training_size(images, sources)
        return [at_own_size(p, tuple(image.shape[:2])) for p, image in zip(probs, images)]

    @torch.no_grad()
    def probabilities_at_training_size(self, images: Sequence[np.ndarray],
                                       sources: Sequence[str | Path]) -> torch.Tensor:
        """Class probabilities ``N x K x h x w`` (float32, on the CPU) of ``images`` resized to the training size,
        in one forward pass: ``resize`` mode before :func:`at_own_size` brings each back to its image's size."""
        batch = torch.stack([self._to_input(image, source) for image, source in zip(images, sources)])
        return self.batch_probabilities(batch.to(self.device)).float().cpu()

    def predict_image(self, image: np.ndarray, source: str | Path = "image") -> np.ndarray:
        """Class indices (``H x W`` int64) at the image's own size (post-processed where a rule was chosen)."""
        return _labels(self.predict_proba(image, source), self.postprocess)

    def predict_images(self, images: Sequence[np.ndarray], sources: Sequence[str | Path]) -> list[np.ndarray]:
        """:meth:`predict_image` of each image, through :meth:`predict_proba_many`."""
        return [_labels(probs, self.postprocess) for probs in self.predict_proba_many(images, sources)]


def at_own_size(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Class probabilities ``K x h x w`` at the training size resized (bilinear) to an image's own ``size``:
    probabilities rather than labels, so class borders are interpolated smoothly."""
    return F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0]


def predicted_batches(predictor: Predictor, pairs: Sequence) -> Iterator[tuple[list, list, torch.Tensor]]:
    """``(pairs, their own sizes, probabilities at the training size)`` for each ``PREDICT_BATCH`` of ``pairs``
    (labelled images: ``.image`` paths), as :meth:`Predictor.predict_proba_many` predicts them."""
    for first in range(0, len(pairs), PREDICT_BATCH):
        batch = list(pairs[first:first + PREDICT_BATCH])
        images = [predictor.read(pair.image) for pair in batch]
        probs = predictor.probabilities_at_training_size(images, [str(pair.image) for pair in batch])
        yield batch, [tuple(image.shape[:2]) for image in images], probs


class KeptPrediction:
    """A run's final validation predicted as ``gctxseg predict`` predicts its images, the batches kept.

    ``train(..., final_prediction=this)`` hands it the model after the last step: it yields the probabilities
    training scores that validation from, and keeps them, so what comes after (a run's report, a cv fold's
    out-of-fold arrays) uses them instead of predicting the same images again with the same weights.
    """

    def __init__(self, device: str = "auto", amp: str | None = None) -> None:
        self.device, self.amp = device, amp  # amp None: the precision the run trains with (a resumed run's own)
        self.kept: list | None = None  # every batch, once all were predicted
        self.value_map: MaskValueMap | None = None
        self.timing: dict = {}  # summary.json's "seconds per image" (read and predicted) and "device"

    def __call__(self, model: torch.nn.Module, fields: dict,
                 pairs: Sequence) -> Iterator[tuple[list[int], torch.Tensor]]:
        """``(indices into pairs, N x K x h x w probabilities at the training size)`` of each batch of ``pairs``."""
        amp = self.amp or (fields.get("config") or {}).get("amp") or "auto"
        predictor = Predictor(fields, self.device, amp, model=model)
        self.kept, self.value_map, batches, first, seconds = None, predictor.value_map, [], 0, 0.0
        started = time.perf_counter()
        for batch in predicted_batches(predictor, pairs):
            seconds += time.perf_counter() - started
            batches.append(batch)
            yield list(range(first, first + len(batch[0]))), batch[2]
            first, started = first + len(batch[0]), time.perf_counter()
        self.kept = batches
        self.timing = {"seconds per image": seconds / max(1, first), "device": str(predictor.device)}

    def labelled(self) -> tuple[list, dict[str, np.ndarray]] | None:
        """(the predicted pairs, each one's ``name`` -> class indices at its image's own size, as ``gctxseg
        evaluate`` labels them without post-processing); None where the run predicted none (validated otherwise)."""
        if self.kept is None:
            return None
        pairs = [pair for batch, _, _ in self.kept for pair in batch]
        labels = {pair.name: _labels(at_own_size(probs, size), None)
                  for batch, sizes, batch_probs in self.kept for pair, size, probs in zip(batch, sizes, batch_probs)}
        return pairs, labels


def _labels(probs: torch.Tensor, postprocess: PostProcessing | None) -> np.ndarray:
    """Class probabilities ``K x H x W`` -> class indices, post-processed where a rule was chosen."""
    pred = probs.max(0).indices.numpy()  # argmax's first-index ties, without its slow reduction over dim 0 on a CPU
    return postprocess(pred) if postprocess is not None else pred


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
        self.training_range = first.training_range
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

    def predict_images(self, images: Sequence[np.ndarray], sources: Sequence[str | Path]) -> list[np.ndarray]:
        """Each image's labels: every member's batched probabilities, averaged."""
        totals = self.members[0].predict_proba_many(images, sources)
        for member in self.members[1:]:
            totals = [t + p for t, p in zip(totals, member.predict_proba_many(images, sources))]
        return [_labels(t / len(self.members), self.postprocess) for t in totals]


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
    _check_fold_counts(folds, counted, f"{summary_path}: 'folds' is {str(counted)[:20]}",
                       "write it again with gctxseg cv --summary-only")
    recorded = cv_dir / SPLITS_FINAL  # the split its out-of-fold score and post-processing were measured on
    if recorded.is_file():  # every cv folder with a choice has one; one removed by hand: the count checked above
        k = len(load_splits(recorded))
        _check_fold_counts(folds, k, f"{recorded}: holds {k} folds",
                           "finish or retrain its folds with the same gctxseg cv command")
    files = [f for m in members for f in folds[m]]
    post = cv_dir / "postprocessing.json"
    return files, post if post.is_file() else None


def _check_fold_counts(folds: dict[str, list[Path]], expected: object, where: str, fix: str) -> None:
    """Each configuration served holds ``expected`` folds (never a part-ensemble, nor one of another split).

    Raises:
        ValueError: one line: ``where``, the configuration and its fold count, and ``fix``.
    """
    wrong = next((m for m, f in folds.items() if len(f) != expected), None)
    if wrong is not None:
        raise ValueError(f"{where}, but {wrong} has {len(folds[wrong])} folds; {fix}")


def picture_range(ckpt: Mapping, intensity: IntensityMapping) -> tuple[float, float] | None:
    """The training pictures' 0.5th and 99.5th percentiles as read (mean over channels), or None where the
    checkpoint does not hold them or the model reads scans (their mapping clips to the training range already)."""
    fingerprint = ckpt.get("fingerprint") or {}
    low, high = fingerprint.get("percentile_00_5"), fingerprint.get("percentile_99_5")
    if intensity.mode != "as_read" or not low or not high:
        return None
    low, high = float(np.mean(low)), float(np.mean(high))
    return (low, high) if high > low else None


def intensity_outlier(image: np.ndarray, training_range: tuple[float, float] | None) -> str:
    """Why ``image`` (``H x W x C`` as read) lies far outside the training pictures' intensities, or "": its
    brightest part below the training range's lowest quarter (a 12-bit scan in a 16-bit file, a dark export), or
    its darkest above the highest quarter. A model shown such an image tends to predict nothing, which reads as
    "no fluid"."""
    if training_range is None or image.size == 0:
        return ""
    low, high = training_range
    bright, dark = (float(v) for v in np.percentile(image.mean(axis=-1), (99.5, 0.5)))
    if bright < low + 0.25 * (high - low):
        return f"far darker than the training images (brightest {bright:.3g}, training {low:.3g}..{high:.3g})"
    if dark > low + 0.75 * (high - low):
        return f"far brighter than the training images (darkest {dark:.3g}, training {low:.3g}..{high:.3g})"
    return ""


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
    twice = next((f for i, f in enumerate(files) if Path(f).resolve() in {Path(g).resolve() for g in files[:i]}), None)
    if twice is not None:  # it would weigh twice in the average, unsaid
        raise ValueError(f"{twice}: named twice among the weights; an ensemble averages each checkpoint once")
    items = [weights] if isinstance(weights, (str, Path)) else list(weights)
    if postprocessing is not None and len(items) > 1:  # chosen for one cv's ensemble, not for a mix
        print(f"note: {postprocessing} is not applied: it was chosen on that cross-validation's own ensemble, and "
              f"these weights mix it with others; pass the cv folder alone to apply it", file=sys.stderr)
        postprocessing = None
    members = [Predictor(f, device, amp, **options) for f in files]
    postprocess = PostProcessing.load(postprocessing, members[0].num_classes, _largest_training_image(files[0])) \
        if postprocessing else None
    if len(members) == 1:
        members[0].postprocess = postprocess
        return members[0]
    ensemble = EnsemblePredictor(members, files, postprocess)  # refuses members that do not fit together
    shown = ", ".join(str(f) for f in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    print(f"ensemble: the softmax of {len(files)} checkpoints averaged, each weighing the same ({shown}); "
          f"post-processing: {postprocessing or 'none'}", file=sys.stderr)
    return ensemble
