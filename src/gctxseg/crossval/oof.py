"""Out-of-fold probabilities kept on disk: each fold writes its held-out scans' as it ends, every summary reads them.

nnU-Net keeps each validation case's softmax as a compressed ``.npz`` beside the fold so that ensembles and
post-processing are chosen without predicting again; so does ``gctxseg cv``. A configuration's folder holds
``oof/NAME.npz`` per held-out scan with

- ``probabilities``: ``K x H x W`` uint8 (probability x 255) at the scan's own size: the argmax of the stored
  array is what every score of the cv is computed on, at the size its mask has, and an ensemble of configurations
  trained at different sizes averages arrays of one shape (docs/time-budget.md weighs the other forms);
- ``fold``: the fold that held the scan out, and ``weights``: the digest of that fold's ``last.pt``, so arrays of
  weights since replaced (a fold trained again, fold 0 topped up after the race) are never read as its.

A fold's arrays are read back checked (every held-out scan present, fold and weights its, uint8 of the mask's
shape with one plane per class; uint8 holds no NaN or inf); a fold whose arrays are missing or unreadable is
predicted again with one line saying so.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..core.files import atomic_write_bytes
from ..data import MaskValueMap, read_mask
from ..data.splits import run_fold_files
from ..inference.predictor import KeptPrediction, Predictor, at_own_size, predicted_batches
from ..runs.checkpoint import load_checkpoint

__all__ = ["OOF_FOLDER", "HeldOutPrediction", "fold_oof", "fold_scans", "oof_probabilities", "predict_fold_oof",
           "read_fold_oof", "stored_probabilities", "weights_digest"]

OOF_FOLDER = "oof"


class _Unreadable(ValueError):
    """A fold's stored arrays cannot be used (the message says why)."""


def weights_digest(weights: Path) -> str:
    """SHA-256 of a fold's weights file (first 16 hex digits): which weights an array was predicted with."""
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _quantise(probs: torch.Tensor) -> np.ndarray:
    return (probs.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def fold_scans(config_dir: Path, fold: int) -> tuple[Path, dict, list]:
    """(the fold's ``last.pt``, the checkpoint, its held-out pairs)."""
    weights = config_dir / f"fold_{fold}" / "last.pt"
    ckpt = load_checkpoint(weights, mmap=True)  # its config and classes are wanted: the weights stay on disk
    return weights, ckpt, run_fold_files(ckpt["config"], weights.parent)[1]


def predict_fold_oof(config_dir: str | Path, fold: int, device: str = "auto", amp: str = "auto") -> dict[str, dict]:
    """Predict ``fold``'s held-out scans with its final weights and write ``oof/NAME.npz`` for each.

    The final (``last.pt``) weights, as nnU-Net scores ``checkpoint_final``: ``best.pt`` was chosen on these same
    held-out scans, so its score would be optimistic.

    Returns:
        name -> {"fold", "target" (class indices), "probs" (uint8 K x H x W)}.
    """
    config_dir = Path(config_dir)
    weights = config_dir / f"fold_{fold}" / "last.pt"
    predictor = Predictor(weights, device, amp)
    val = run_fold_files(predictor.config, weights.parent)[1]
    return _store_fold(config_dir, fold, predictor.value_map, predicted_batches(predictor, val))  # written as predicted


class HeldOutPrediction(KeptPrediction):
    """A cv fold's final validation, predicted as :func:`predict_fold_oof` predicts its held-out scans.

    The probabilities it keeps (:class:`~gctxseg.inference.predictor.KeptPrediction`) become the fold's out-of-fold
    arrays through :meth:`write` once ``last.pt`` holds those weights. So the held-out scans are predicted once, not
    validated and then predicted again (nnU-Net's final validation is its export of them too), and the arrays are
    those predicting ``last.pt`` gives (its fields in memory, the same model, the same batches).
    """

    def write(self, config_dir: str | Path, fold: int) -> dict[str, dict] | None:
        """The fold's out-of-fold arrays from its final validation (:func:`predict_fold_oof`'s form), written; None
        where this run predicted none (a fold kept, or validated otherwise: predict it)."""
        kept, self.kept = self.kept, None
        if kept is None or self.value_map is None:
            return None
        return _store_fold(Path(config_dir), fold, self.value_map, kept)


def _store_fold(config_dir: Path, fold: int, value_map: MaskValueMap, batches: Iterable) -> dict[str, dict]:
    """Write each scan's array of ``batches`` (``predicted_batches``') at its own size, marked with the fold and the
    digest of its ``last.pt``; returns :func:`predict_fold_oof`'s form."""
    digest = weights_digest(config_dir / f"fold_{fold}" / "last.pt")
    (config_dir / OOF_FOLDER).mkdir(exist_ok=True)
    out: dict[str, dict] = {}
    for pairs, sizes, probabilities in batches:
        for pair, size, probs in zip(pairs, sizes, probabilities):
            probs = _quantise(at_own_size(probs, size))
            buffer = io.BytesIO()
            np.savez_compressed(buffer, probabilities=probs, fold=np.int64(fold), weights=np.str_(digest))
            atomic_write_bytes(config_dir / OOF_FOLDER / f"{pair.name}.npz", buffer.getvalue())
            target = value_map.encode(read_mask(pair.mask), source=pair.mask)
            out[pair.name] = {"fold": fold, "target": target, "probs": probs}
    return out


def read_fold_oof(config_dir: str | Path, fold: int) -> dict[str, dict]:
    """``fold``'s stored out-of-fold arrays, checked, in the form :func:`predict_fold_oof` returns.

    Raises:
        ValueError: one line naming the scan whose array is missing, unreadable, of other weights or of a shape
            that does not fit its mask.
    """
    config_dir = Path(config_dir)
    weights, ckpt, val = fold_scans(config_dir, fold)
    digest = weights_digest(weights)
    value_map = MaskValueMap.from_dict(ckpt["value_map"])
    out: dict[str, dict] = {}
    for pair in val:
        path = config_dir / OOF_FOLDER / f"{pair.name}.npz"
        if not path.is_file():
            raise _Unreadable(f"{path.name} is missing")
        try:
            with np.load(path, allow_pickle=False) as stored:
                probs, stored_fold = stored["probabilities"], int(stored["fold"])
                stored_weights = str(stored["weights"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise _Unreadable(f"{path.name} is unreadable ({type(err).__name__})") from None
        if stored_fold != fold or stored_weights != digest:
            raise _Unreadable(f"{path.name} was predicted by other weights (fold {stored_fold}, {stored_weights})")
        target = value_map.encode(read_mask(pair.mask), source=pair.mask)
        expected = (value_map.num_classes, *target.shape)
        if probs.dtype != np.uint8 or probs.shape != expected:
            raise _Unreadable(f"{path.name} holds {probs.dtype} {probs.shape}, not uint8 {expected}")
        out[pair.name] = {"fold": fold, "target": target, "probs": probs}
    return out


def fold_oof(config_dir: str | Path, fold: int, device: str = "auto", amp: str = "auto") -> tuple[dict, bool]:
    """(``fold``'s out-of-fold arrays, whether they were predicted again): read back when stored and sound, else
    predicted again (and written) with one line saying why."""
    try:
        return read_fold_oof(config_dir, fold), False
    except _Unreadable as err:
        print(f"{Path(config_dir) / OOF_FOLDER}: fold {fold}'s out-of-fold arrays cannot be used ({err}); "
              "predicting them again", flush=True)
        return predict_fold_oof(config_dir, fold, device, amp), True


def oof_probabilities(cv_dir: str | Path, device: str = "auto", amp: str = "auto",
                      folds: Sequence[int] | None = None) -> dict[str, dict]:
    """Each trained fold's (or only ``folds``') out-of-fold arrays: read back, or predicted where they cannot be.

    Returns:
        name -> {"fold", "target" (class indices), "probs" (uint8 K x H x W), "predicted" (True where the fold
        was predicted again here)}.
    """
    cv_dir = Path(cv_dir)
    trained = sorted(int(w.parent.name.split("_")[1]) for w in cv_dir.glob("fold_*/last.pt"))
    trained = [f for f in trained if folds is None or f in folds]
    if not trained:
        raise ValueError(f"{cv_dir}: no fold_*/last.pt; train the folds first (gctxseg cv DATA --folds K)")
    out: dict[str, dict] = {}
    for fold in trained:
        arrays, predicted = fold_oof(cv_dir, fold, device, amp)
        out.update({name: {**entry, "predicted": predicted} for name, entry in arrays.items()})
    return out


def stored_probabilities(config_dir: str | Path, names: Sequence[str]) -> list[np.ndarray]:
    """The stored arrays of ``names`` (each ``K x H x W`` uint8), as a summary that has just checked them reads
    them again to average configurations.

    Raises:
        ValueError: one line naming the first scan with no readable array."""
    folder = Path(config_dir) / OOF_FOLDER
    arrays = []
    for name in names:
        try:
            with np.load(folder / f"{name}.npz", allow_pickle=False) as stored:
                arrays.append(stored["probabilities"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{folder / name}.npz: no readable out-of-fold prediction ({type(err).__name__}); run "
                             "gctxseg cv again to finish its folds") from None
    return arrays
