"""The foreground top-up sampler."""

from __future__ import annotations

import numpy as np

from gctxseg.data.sampling import ForegroundTopUpSampler


def test_top_up_sampler_puts_a_rare_class_in_every_batch_and_is_deterministic():
    presence = np.zeros((40, 3), bool)
    presence[:, 0] = True
    presence[:2, 2] = True  # class 2 in 2 of 40 images
    presence[::2, 1] = True  # class 1 in half of them
    sampler = ForegroundTopUpSampler(presence, batch_size=6, share=1 / 3, seed=3)
    sampler.set_epoch(1)
    order = list(sampler)
    assert len(order) == 40
    for start in range(0, 36, 6):
        batch = order[start:start + 6]
        assert presence[batch, 2].sum() >= 2 and presence[batch, 1].sum() >= 2
    assert list(sampler) == order
    sampler.set_epoch(2)
    assert list(sampler) != order
    plain = ForegroundTopUpSampler(presence, batch_size=6, share=0.0, seed=3)
    assert sorted(plain) == list(range(40))  # share 0: a permutation, nothing replaced
    ranks = [list(ForegroundTopUpSampler(presence, 6, 0.0, seed=3, rank=r, world=2)) for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1]) and len(ranks[0]) == 20
