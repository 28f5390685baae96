"""What the training benchmarks share: the phantom budget options, the phantom itself and one training run on it."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from gctxseg.data.phantom import synthesize_dataset
from gctxseg.training import TrainConfig, train


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """``--size --n --epochs --batch-size --lr --out``: the phantom and the training budget every run gets."""
    parser.add_argument("--size", type=int, nargs=2, default=[224, 224], help="phantom and training size")
    parser.add_argument("--n", type=int, default=400, help="phantom B-scans (split 7:3)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")


def prepare_phantom(args: argparse.Namespace, prefix: str) -> Path:
    """The benchmark's folder (``--out`` or a new temporary one) with the phantom in ``data/``, written once."""
    root = Path(args.out or tempfile.mkdtemp(prefix=prefix))
    if not (root / "data" / "train").is_dir():
        synthesize_dataset(root / "data", n=args.n, size=tuple(args.size), seed=0)
    return root


def train_on_phantom(root: Path, args: argparse.Namespace, name: str, **config) -> tuple[Path, float]:
    """Train on ``root``'s phantom with the budget options and ``config``; the run folder and wall seconds."""
    start = time.perf_counter()
    run = train(TrainConfig(
        data_train=str(root / "data" / "train" / "images"), data_val=str(root / "data" / "val" / "images"),
        base_size=tuple(args.size), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lrf=0.01,
        results=str(root / "runs"), name=name, exist_ok=True, **config,
    ))  # fmt: skip
    return run, time.perf_counter() - start
