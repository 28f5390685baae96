"""Is training input-bound? Loader images/s (the engine's training dataset and DataLoader) beside training images/s.

Synthesises the 224x224 OCT phantom (``gctxseg synth``) into a temporary folder unless ``--data`` is given,
builds the training set exactly as :func:`gctxseg.training.train` does (fingerprint, ``train_transforms``,
per-sample seeded augmentation, epoch-tagged sampler, default worker count, in-memory or ``--cache-dir`` disk
cache) and times whole passes over it: the first pass decodes, later ones read the cache. Then it times training
steps of each model (``--amp auto``, as the engine) on random batches of the same size. A model whose training
rate is above the loader's is input-bound on this machine. Prints figures; asserts nothing. Example::

    python benchmarks/dataloader.py --models unet gctx_unet --batch-size 8 --cache-dir /tmp/gctxseg-cache
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from timing import amp_context
from torch.utils.data import DataLoader, DistributedSampler

from gctxseg.data import SegmentationDataset, find_pairs, fingerprint_dataset
from gctxseg.data.phantom import synthesize_dataset
from gctxseg.data.transforms import train_transforms
from gctxseg.losses import DiceCELoss, deep_supervision_loss
from gctxseg.models import create_model
from gctxseg.training.data import EpochTaggedSampler, SeededAugmentDataset, num_workers


def build_loader(
    images: Path, size: tuple[int, int], batch_size: int, workers: int, cache_dir: str | None = None
) -> DataLoader:
    """The engine's training loader (one process, no DDP) over ``images``."""
    pairs = find_pairs(images, ".jpg", ".png")
    fingerprint = fingerprint_dataset(pairs)
    base = SegmentationDataset(
        pairs, fingerprint.value_map, size, fingerprint.channels,
        train_transforms(fingerprint.mean, fingerprint.std), intensity=fingerprint.intensity_mapping,
        cache_dir=cache_dir,
    )  # fmt: skip
    dataset = SeededAugmentDataset(base, seed=0)
    sampler = EpochTaggedSampler(DistributedSampler(dataset, 1, 0, shuffle=True, seed=0, drop_last=True), len(dataset))
    return DataLoader(
        dataset, batch_size, sampler=sampler, drop_last=True, num_workers=workers, persistent_workers=workers > 0
    )


def loader_rates(loader: DataLoader, epochs: int) -> tuple[float, float]:
    """Images/s of the first pass (worker start, decoding) and of ``epochs`` later passes (cached samples)."""

    def passes(first: int, count: int) -> float:
        start, seen = time.perf_counter(), 0
        for epoch in range(first, first + count):
            loader.sampler.set_epoch(epoch)
            seen += sum(images.shape[0] for images, _, _ in loader)
        return seen / (time.perf_counter() - start)

    return passes(0, 1), passes(1, epochs)


def train_rate(name: str, size: tuple[int, int], batch_size: int, steps: int) -> float:
    """Training images/s of ``name`` on random batches (CPU, the engine's ``--amp auto`` precision)."""
    amp = amp_context("auto", torch.device("cpu"))
    model = create_model(name, 1, 3).to(memory_format=torch.channels_last).train()
    loss_fn, optimizer = DiceCELoss(), torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, 1, *size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (batch_size, *size))

    def step() -> None:
        with amp():
            loss = deep_supervision_loss(loss_fn, model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch_size * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="training images folder (default: a fresh 224 phantom)")
    parser.add_argument("--n", type=int, default=96, help="phantom B-scans to synthesise (default 96)")
    parser.add_argument("--size", type=int, nargs=2, default=[224, 224], help="training size H W (default 224 224)")
    parser.add_argument("--batch-size", type=int, default=8, help="(default 8)")
    parser.add_argument("--workers", type=int, default=-1, help="loader processes (default: the engine's)")
    parser.add_argument("--epochs", type=int, default=2, help="timed loader passes (default 2)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per model (default 3)")
    parser.add_argument("--models", nargs="*", default=["unet", "unet_plus_plus", "gctx_unet"])
    parser.add_argument("--cache-dir", default=None, help="the engine's --cache-dir (default: in memory)")
    args = parser.parse_args()
    size, workers = tuple(args.size), num_workers(args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(args.data) if args.data else Path(tmp) / "train" / "images"
        if not args.data:
            synthesize_dataset(tmp, n=args.n, size=size, seed=0)
        loader = build_loader(images, size, args.batch_size, workers, args.cache_dir)
        first, rate = loader_rates(loader, args.epochs)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(loader.dataset)} training images at "
        f"{size[0]}x{size[1]}, batch {args.batch_size}, {workers} loader workers, "
        f"cache {args.cache_dir or 'in memory'}"
    )
    print(f"{'':<22}{'img/s':>8}{'loader/model':>14}")
    print(f"{'loader, first pass':<22}{first:>8.1f}")
    print(f"{'loader':<22}{rate:>8.1f}")
    for name in args.models:
        model_rate = train_rate(name, size, args.batch_size, args.steps)
        verdict = "input-bound" if model_rate > rate else "compute-bound"
        print(f"{name + ' train':<22}{model_rate:>8.1f}{rate / model_rate:>14.1f}  {verdict}", flush=True)


if __name__ == "__main__":
    main()
