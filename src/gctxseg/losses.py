"""Losses: Dice + cross-entropy on index targets, deep-supervision averaging, and the architectures' own terms."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DiceCELoss as MonaiDiceCELoss
from torch import nn

__all__ = ["DiceCELoss", "deep_supervision_loss", "training_loss"]


class DiceCELoss(nn.Module):
    """``lambda_dice * soft Dice + lambda_ce * cross-entropy`` (MONAI's DiceCELoss).

    Dice is computed over the whole batch (``batch=True``) so a class missing from one image does
    not produce an undefined per-image term.

    Args:
        lambda_dice: weight of the Dice term (>= 0).
        lambda_ce: weight of the cross-entropy term (>= 0).
        include_background: include class 0 in the Dice term.

    Shapes: ``logits`` ``N x K x H x W`` float, ``target`` ``N x H x W`` int64 class indices.
    """

    def __init__(self, lambda_dice: float = 1.0, lambda_ce: float = 1.0, include_background: bool = True) -> None:
        super().__init__()
        if lambda_dice < 0 or lambda_ce < 0:
            raise ValueError(f"lambda_dice and lambda_ce must be >= 0, got {lambda_dice}, {lambda_ce}")
        self.loss = MonaiDiceCELoss(
            include_background=include_background,
            to_onehot_y=True,
            softmax=True,
            batch=True,
            lambda_dice=lambda_dice,
            lambda_ce=lambda_ce,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(f"target must be N x H x W for logits {tuple(logits.shape)}, got {tuple(target.shape)}")
        return self.loss(logits.float(), target[:, None])


def deep_supervision_loss(
    loss_fn: nn.Module, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor,
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """The loss of one output, or over a model's deep-supervision outputs their mean (or ``weights``-weighted sum,
    as nnU-Net weights its resolutions)."""
    if isinstance(outputs, torch.Tensor):
        return loss_fn(outputs, target)
    losses = torch.stack([loss_fn(o, target) for o in outputs])
    if weights is None:
        return losses.mean()
    if len(weights) != len(losses):
        raise ValueError(f"{len(weights)} deep-supervision weights for {len(losses)} outputs")
    return (losses * torch.tensor(weights, dtype=losses.dtype, device=losses.device)).sum()


def training_loss(
    loss_fn: nn.Module, model: nn.Module, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor
) -> torch.Tensor:
    """:func:`deep_supervision_loss` plus the architecture's own term, where it has one.

    An architecture with a training objective of its own (UNet3+'s classification-guided module) provides
    ``auxiliary_loss(target)`` (a scalar, or None); ``model`` is the bare module (not a DDP wrapper).
    """
    loss = deep_supervision_loss(loss_fn, outputs, target, getattr(model, "deep_supervision_weights", None))
    auxiliary = getattr(model, "auxiliary_loss", None)
    extra = auxiliary(target) if callable(auxiliary) else None
    return loss if extra is None else loss + extra
