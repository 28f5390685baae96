"""Training: the loop segmentation training and pre-training share, and the two runs built on it.

- ``config``: :class:`TrainConfig`, what a resumed run may change, the loop's errors;
- ``data``: seeded per-sample augmentation, epoch-tagged and sharded samplers, loader workers;
- ``schedule``: warm-up and cosine decay per optimiser step; a time budget's deadline and the clock's revisions;
- ``distributed``: ranks under ``torchrun`` and the agreements they reach together;
- ``loop``: one pass of optimiser steps (accumulation, agreed stops, fp16 scaler), stop signals, AdamW groups;
- ``segmentation``: :func:`train`, a run folder from a :class:`TrainConfig`;
- ``pretrain``: :func:`pretrain`, a GCtx-UNet start made offline (phantom B-scans, masked images).
"""

from ..core.precision import autocast_dtype
from ..runs.checkpoint import load_checkpoint
from .config import NonFiniteLossError, TrainConfig, TrainingInterrupted
from .loop import optimizer_param_groups
from .schedule import lr_at
from .segmentation import evaluate, train, train_one_epoch

__all__ = [
    "TrainConfig",
    "train",
    "train_one_epoch",
    "evaluate",
    "load_checkpoint",
    "lr_at",
    "autocast_dtype",
    "TrainingInterrupted",
    "NonFiniteLossError",
    "optimizer_param_groups",
]
