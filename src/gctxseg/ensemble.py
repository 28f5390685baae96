"""Fold ensembles: several checkpoints (or a cross-validation folder) averaged in softmax, then post-processed.

``load_predictor`` is what ``gctxseg predict`` and ``evaluate`` call with their ``--weights``: one checkpoint
gives a :class:`~gctxseg.predict.Predictor`; several, or a ``gctxseg cv`` folder (``fold_*/best.pt`` plus the
``postprocessing.json`` chosen on its out-of-fold predictions), give an :class:`EnsemblePredictor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .postprocess import PostProcessing
from .predict import Predictor

__all__ = ["EnsemblePredictor", "load_predictor", "ensemble_members"]


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
        pred = self.predict_proba(image, source).argmax(0).numpy()
        return self.postprocess(pred) if self.postprocess is not None else pred


def ensemble_members(weights: str | Path | Sequence[str | Path]) -> tuple[list[Path], Path | None]:
    """Checkpoint files named by ``weights`` and the post-processing file that goes with them (or None).

    A folder of ``gctxseg cv`` gives its folds' final weights (``fold_*/last.pt``, the ones its out-of-fold
    score and post-processing were measured with) and ``postprocessing.json``; a run folder its ``best.pt``;
    files are taken as they are.
    """
    items = [weights] if isinstance(weights, (str, Path)) else list(weights)
    files, postprocessing = [], None
    for item in map(Path, items):
        if item.is_dir():
            folds = sorted(item.glob("fold_*/last.pt"))
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


def load_predictor(weights: str | Path | Sequence[str | Path], device: str = "auto", amp: str = "auto",
                   **options) -> Predictor | EnsemblePredictor:
    """A Predictor for one checkpoint, an EnsemblePredictor for several (``options`` go to each Predictor)."""
    files, postprocessing = ensemble_members(weights)
    postprocess = PostProcessing.load(postprocessing) if postprocessing else None
    members = [Predictor(f, device, amp, **options) for f in files]
    if len(members) == 1:
        members[0].postprocess = postprocess
        return members[0]
    return EnsemblePredictor(members, files, postprocess)
