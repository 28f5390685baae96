"""Foreground sampling: every batch holds each rare class (fluid, holes) in at least a given share of its images.

nnU-Net forces a third of each batch's patches to be centred on foreground. With whole B-scans the unit is
the image: :class:`ForegroundTopUpSampler` shuffles the images as usual, then, batch by batch, replaces
randomly chosen images of the batch with images holding a class that the batch has too few of. Batches that
already hold enough are left as they are, so a class present in most images is sampled as before and a class
in 5% of the images is seen in every batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["ForegroundTopUpSampler", "class_presence"]


def class_presence(dataset, num_classes: int) -> np.ndarray:
    """``N x num_classes`` booleans: which classes each sample's (decoded, resized) mask holds."""
    presence = np.zeros((len(dataset), num_classes), dtype=bool)
    for i in range(len(dataset)):
        _, mask = dataset.load_untransformed(i)
        counts = torch.bincount(mask.flatten().long(), minlength=num_classes)[:num_classes]
        presence[i] = (counts > 0).numpy()
    return presence


class ForegroundTopUpSampler(Sampler[int]):
    """Shuffled indices, per rank, with each batch topped up to hold every foreground class in ``share`` of it.

    Deterministic in ``(seed, epoch, rank)`` (``set_epoch`` as for ``DistributedSampler``); each rank draws
    ``len(presence) // world`` indices from its own slice of one shared permutation, so ranks see disjoint
    images apart from the top-ups.

    Args:
        presence: ``N x K`` booleans from :func:`class_presence` (column 0 = background, never topped up).
        batch_size: the loader's batch size (top-ups are counted per batch of this size).
        share: minimum share of each batch holding each foreground class (0 = plain shuffling).
        seed, rank, world: as for ``DistributedSampler``.
    """

    def __init__(self, presence: np.ndarray, batch_size: int, share: float, seed: int = 0, rank: int = 0,
                 world: int = 1) -> None:
        if not 0 <= share <= 1:
            raise ValueError(f"foreground share must be in [0, 1], got {share}")
        self.presence, self.batch_size, self.share = np.asarray(presence, bool), batch_size, share
        self.seed, self.rank, self.world, self.epoch = seed, rank, world, 0
        self.per_rank = len(self.presence) // world
        self.holders = [np.flatnonzero(self.presence[:, k]) for k in range(self.presence.shape[1])]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.presence))
        mine = order[self.rank * self.per_rank:(self.rank + 1) * self.per_rank].copy()
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 1])
        for start in range(0, len(mine) - self.batch_size + 1, self.batch_size):
            self._top_up(mine[start:start + self.batch_size], rng)
        return iter(int(i) for i in mine)

    def _top_up(self, batch: np.ndarray, rng: np.random.Generator) -> None:
        """Replace images of ``batch`` (in place) until each foreground class is in ``share`` of it."""
        need = math.ceil(self.share * len(batch))
        protected = np.zeros(len(batch), bool)  # slots holding a class that was topped up stay
        for k in rng.permutation(np.arange(1, self.presence.shape[1])):
            if len(self.holders[k]) == 0:
                continue
            has = self.presence[batch, k]
            protected |= has
            missing = need - int(has.sum())
            free = np.flatnonzero(~protected)
            for slot in rng.permutation(free)[:max(0, missing)]:
                batch[slot] = rng.choice(self.holders[k])
                protected[slot] = True
