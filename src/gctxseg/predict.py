"""Inference on a folder: index masks at each image's original size (original mask values) and overlays."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from .data import DatasetError, MaskValueMap, read_image
from .data.io import IMAGE_SUFFIXES
from .engine import autocast_dtype, load_checkpoint
from .models import create_model
from .utils import resolve_device
from .visualize import overlay

__all__ = ["Predictor", "PredictionSummary", "predict_folder"]


class Predictor:
    """A trained model with everything needed to segment new images (from a gctxseg checkpoint).

    Args:
        weights: ``best.pt`` / ``last.pt`` of a run folder.
        device: ``auto``, ``cpu``, ``cuda``...
        amp: ``auto``, ``bf16``, ``fp16`` or ``off`` (see :func:`gctxseg.engine.autocast_dtype`).
    """

    def __init__(self, weights: str | Path, device: str = "auto", amp: str = "auto") -> None:
        ckpt = load_checkpoint(weights)
        self.device = resolve_device(device)
        self.amp_dtype = autocast_dtype(amp, self.device)
        self.value_map = MaskValueMap.from_dict(ckpt["value_map"])
        self.base_size = tuple(ckpt["base_size"])
        self.channels = int(ckpt["fingerprint"]["channels"])
        self.mean = ckpt["normalization"]["mean"]
        self.std = ckpt["normalization"]["std"]
        model = create_model(ckpt["model_name"], self.channels, self.value_map.num_classes, **ckpt["model_kwargs"])
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise ValueError(f"{weights}: weights do not fit {ckpt['model_name']} ({first})") from None
        self.model = model.to(self.device).eval()

    def _to_input(self, image: np.ndarray, source: str | Path) -> torch.Tensor:
        """``H x W x C`` float [0, 1] -> normalised ``C x h x w`` at the training size."""
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if x.shape[0] != self.channels:
            if self.channels == 3 and x.shape[0] == 1:
                x = x.expand(3, -1, -1)
            elif self.channels == 1 and x.shape[0] == 3 and torch.equal(x[0], x[1]) and torch.equal(x[0], x[2]):
                x = x[:1]  # grayscale saved as RGB
            else:
                raise DatasetError(
                    f"{source}: {x.shape[0]}-channel image but the model takes {self.channels}; "
                    f"convert the image or use weights trained on such images"
                )
        x = TF.resize(x, list(self.base_size), antialias=True)
        return TF.normalize(x, self.mean, self.std)

    @torch.no_grad()
    def predict_image(self, image: np.ndarray, source: str | Path = "image") -> np.ndarray:
        """Class indices (``H x W`` int64) at the image's own size."""
        x = self._to_input(image, source)[None].to(self.device)
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()
        )
        with autocast:
            logits = self.model(x)
        # resize logits, not labels, so class borders are interpolated smoothly at the original size
        logits = F.interpolate(logits.float(), size=image.shape[:2], mode="bilinear", align_corners=False)
        return logits.argmax(1)[0].cpu().numpy()


@dataclass
class PredictionSummary:
    """What a folder prediction did."""

    written: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # one line per bad file


def predict_folder(
    weights: str | Path,
    source: str | Path = "inference/img",
    out: str | Path = "inference/out",
    device: str = "auto",
    amp: str = "auto",
    suffixes: tuple[str, ...] = IMAGE_SUFFIXES,
) -> PredictionSummary:
    """Segment every image in ``source``; write ``out/masks/NAME.png`` and ``out/overlays/NAME.png``.

    Masks hold the dataset's original values (e.g. 0/128/255). A bad image is reported and skipped; the
    others are still processed.

    Raises:
        DatasetError: ``source`` missing or holding no images.
        ValueError: unreadable checkpoint.
    """
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise DatasetError(f"{source}: folder not found; pass --source DIR with images to segment")
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise DatasetError(f"{source}: no images ({', '.join(suffixes)}); put images there or pass --source DIR")
    predictor = Predictor(weights, device, amp)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    summary = PredictionSummary()
    for path in files:
        try:
            image = read_image(path)
            pred = predictor.predict_image(image, path)
        except DatasetError as err:
            summary.failed.append(str(err))
            continue
        mask_path = out / "masks" / f"{path.stem}.png"
        Image.fromarray(predictor.value_map.decode(pred)).save(mask_path)
        Image.fromarray(overlay(image, pred)).save(out / "overlays" / f"{path.stem}.png")
        summary.written.append(mask_path)
    return summary
