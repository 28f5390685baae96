"""How a run feeds its data: per-sample seeded augmentation, epoch-tagged and sharded samplers, loader workers.

Every random choice of an epoch is a function of ``(seed, epoch)``: the shuffling order and each sample's
augmentation (seeded from ``(seed, epoch, sample index)``, so the number of loader workers does not matter),
so a run resumed from ``last.pt`` continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import os
import signal

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

__all__ = ["sample_seed", "EpochTaggedSampler", "SeededAugmentDataset", "ShardSampler", "num_workers",
           "ignore_stop_signals", "shutdown_workers", "loader_options"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + index) % 2**63


class EpochTaggedSampler(Sampler[int]):
    """Wraps a ``DistributedSampler`` and tags each index with the epoch: yields ``epoch * N + index``.

    The dataset splits the tag back and seeds the sample's augmentation from ``(seed, epoch, index)``,
    which works the same in the main process and in persistent loader workers.
    """

    def __init__(self, sampler: DistributedSampler, dataset_len: int) -> None:
        self.sampler, self.dataset_len, self.epoch = sampler, dataset_len, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        return (self.epoch * self.dataset_len + i for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class SeededAugmentDataset(torch.utils.data.Dataset):
    """Training view of a dataset (segmentation or pre-training): augmentation seeded per ``(seed, epoch, index)``."""

    def __init__(self, base: torch.utils.data.Dataset, seed: int) -> None:
        self.base, self.seed = base, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, tagged: int):
        epoch, index = divmod(tagged, len(self.base))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return self.base[index]


class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank r takes indices r, r + world, ...; no padding, so no sample counts twice."""

    def __init__(self, length: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, length, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# ---------------------------------------------------------------- setup helpers



def num_workers(requested: int) -> int:
    return min(4, (os.cpu_count() or 2) // 2) if requested < 0 else requested


def ignore_stop_signals(_worker_id: int) -> None:
    """Loader workers ignore Ctrl-C/SIGTERM sent to the whole process group: the main process stops after
    the current step and shuts them down itself (:func:`shutdown_workers`); a worker killed first would
    abort the run from inside the loader instead."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def shutdown_workers(*loaders: DataLoader) -> None:
    """Stop persistent loader workers now (they ignore SIGTERM, so the interpreter's exit could not)."""
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None)  # persistent workers live in the loader's iterator
        if iterator is not None and hasattr(iterator, "shutdown_workers"):
            iterator.shutdown_workers()
        loader._iterator = None


def loader_options(workers: int, device: torch.device) -> dict:
    """``DataLoader`` keywords of every training loader: persistent workers that ignore stop signals."""
    return dict(
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=ignore_stop_signals if workers > 0 else None,
    )
