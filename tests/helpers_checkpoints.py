"""Tiny gctxseg checkpoints built in memory, for the tests of what reads one (no training)."""

from __future__ import annotations

from pathlib import Path

import torch

from gctxseg.models import create_model

SMALL = {  # tiny but genuine options of every registered model
    "unet": {"base_width": 2},
    "gct_unet": {"base_width": 2},
    "gctx_unet": {"embed_dim": 8, "img_size": 32, "window_sizes": [2, 2, 2, 1]},
    "nnunet": {"base_width": 2, "patch_size": [32, 32]},
    "unet3_plus": {"widths": [2, 4, 8, 16, 32], "cat_channels": 2},
    "unet_plus_plus": {"widths": [2, 4, 8, 16, 32]},
}
UNET = {"base_width": 4}


def checkpoint_of(name: str = "unet", **changes) -> dict:
    """The fields a checkpoint of ``name`` (at its ``SMALL`` options) holds to build its model, with ``changes``."""
    torch.manual_seed(0)
    model = create_model(name, 1, 3, **SMALL[name])
    ckpt = {"model_name": name, "model_kwargs": dict(SMALL[name]), "model": model.state_dict(),
            "value_map": {"0": 0, "128": 1, "255": 2}, "fingerprint": {"channels": 1}}  # fmt: skip
    return {**ckpt, **changes}


def serving_checkpoint(**changes) -> dict:
    """A serving checkpoint of a tiny unet (1 channel, classes 0/128/255 at 16x16), as train writes one."""
    torch.manual_seed(0)
    model = create_model("unet", 1, 3, **UNET)
    ckpt = {"model_name": "unet", "model_kwargs": dict(UNET), "model": model.state_dict(),
            "value_map": {"0": 0, "128": 1, "255": 2}, "fingerprint": {"channels": 1}, "base_size": [16, 16],
            "normalization": {"mean": [0.5], "std": [0.25]}}  # fmt: skip
    return {**ckpt, **changes}


def saved_checkpoint(path: Path, base: int = 16) -> Path:
    """A serving checkpoint of an untrained unet of width 2 at ``base`` x ``base``, saved to ``path``."""
    torch.manual_seed(0)
    model = create_model("unet", 1, 3, base_width=2)
    torch.save({"model_name": "unet", "model_kwargs": {"base_width": 2}, "model": model.state_dict(),
                "value_map": {"0": 0, "128": 1, "255": 2}, "fingerprint": {"channels": 1},
                "base_size": [base, base], "normalization": {"mean": [0.5], "std": [0.25]}}, path)
    return path
