"""Model size: parameter count and multiply-adds measured with torch's own FLOP counter."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

__all__ = ["count_parameters", "count_macs"]


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch counts the CUDA attention kernels but not the fused CPU one that eval-mode SDPA runs on CPU
_EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def count_parameters(model: nn.Module) -> int:
    """Total number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, in_channels: int, size: tuple[int, int], batch: int = 1) -> int:
    """Multiply-adds of one eval-mode forward pass on a ``batch x in_channels x H x W`` input.

    torch's ``FlopCounterMode`` counts a multiply-add as 2 FLOPs (convolutions, matmuls, attention);
    we halve it so the figure compares with papers' "GFLOPs" measured by fvcore/thop, which count
    a multiply-add once. Element-wise ops, norms and interpolation are not counted (as in fvcore).
    """
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        x = torch.zeros(batch, in_channels, *size, device=param.device, dtype=param.dtype)
        counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)
        with counter:
            model(x)
        return counter.get_total_flops() // 2 // batch
    finally:
        model.train(was_training)
