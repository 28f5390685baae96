"""nnU-Net's 2D network, built by MONAI's ``DynUNet`` (Isensee et al., Nature Methods 2021; ResEnc, 2024).

nnU-Net does not fix an architecture: it plans one from the input (patch) size. :func:`plan_stages` is that
rule for 2D with isotropic pixels (nnU-Net v2's ``get_pool_and_conv_props``): starting at full resolution, each
further stage halves every axis whose map is still at least ``2 * MIN_FEATURE_MAP`` pixels, until no axis can
be halved or ``MAX_STAGES`` stages are reached; 3x3 kernels everywhere; 32 features in the first stage, doubled
per stage, capped at 512 (nnU-Net's 2D cap). The blocks are MONAI's: instance norm, leaky ReLU (0.01),
transposed-convolution up-sampling, deep supervision heads, and with ``res_block`` residual blocks as in the
residual-encoder U-Net (nnU-Net ResEnc stacks 1-6 residual blocks per encoder stage; DynUNet has one per stage,
in the encoder and the decoder).

The network is built for a planned size (``patch_size``, the training ``--base-size``), as nnU-Net builds its
network for its patch size; it still takes any H x W: the input is padded (reflect) to the multiple of the
strides on each axis and the logits are cropped back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import DynUNet
from torch import nn

from .registry import register_model

__all__ = ["NNUNet2D", "plan_stages", "nnunet"]

MIN_FEATURE_MAP = 4  # nnU-Net: an axis is no longer halved once its map would fall below 4 pixels
MAX_STAGES = 7  # nnU-Net v2's 2D plans on 512x512 patches reach 7-8 stages; 7 bounds the depth at any size
MAX_FEATURES = 512  # nnU-Net's cap for 2D networks
DEFAULT_PATCH = (256, 256)
MAX_HEADS = 3


def plan_stages(patch_size: Sequence[int]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """nnU-Net's 2D topology for ``patch_size``: (kernel size per stage, stride per stage).

    The first stage has stride 1; each later stage halves the axes whose current map is >= 8 pixels.
    """
    if len(patch_size) != 2 or min(patch_size) < 1:
        raise ValueError(f"patch_size must be (H, W) with positive sizes, got {tuple(patch_size)}")
    current = list(patch_size)
    strides: list[tuple[int, int]] = [(1, 1)]
    while len(strides) < MAX_STAGES:
        stride = tuple(2 if s >= 2 * MIN_FEATURE_MAP else 1 for s in current)
        if stride == (1, 1):
            break
        strides.append(stride)
        current = [math.ceil(s / st) for s, st in zip(current, stride)]
    return [(3, 3)] * len(strides), strides


class NNUNet2D(nn.Module):
    """nnU-Net's planned 2D U-Net as MONAI's ``DynUNet``, padded to its strides and cropped back.

    Args:
        in_channels: input channels.
        num_classes: output logits (background included).
        patch_size: the (H, W) the topology is planned for (the training size).
        base_width: first-stage features (nnU-Net: 32), doubled per stage up to ``MAX_FEATURES``.
        res_block: residual blocks (nnU-Net ResEnc) instead of plain double convolutions.
        deep_supervision: side outputs at the lower decoder resolutions in training (nnU-Net's default).

    Shapes: ``N x in_channels x H x W`` -> ``N x num_classes x H x W``; in training with deep supervision a tuple,
    the full-resolution logits first, then the side outputs up-sampled to full resolution (MONAI's DynUNet).
    """

    def __init__(self, in_channels: int, num_classes: int, *, patch_size: Sequence[int] = DEFAULT_PATCH,
                 base_width: int = 32, res_block: bool = True, deep_supervision: bool = True) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        kernels, strides = plan_stages(tuple(int(s) for s in patch_size))
        if len(strides) < 3:
            raise ValueError(f"patch_size {tuple(patch_size)} is too small for a U-Net: at least 16 px per side")
        self.patch_size = tuple(int(s) for s in patch_size)
        self.strides = strides
        self.axis_multiple = tuple(math.prod(s[axis] for s in strides) for axis in (0, 1))
        self.size_multiple = max(self.axis_multiple)  # what the planner rounds sizes to
        filters = [min(base_width * 2**i, MAX_FEATURES) for i in range(len(strides))]
        # nnU-Net supervises every decoder resolution but the lowest; here at most the three highest: each head is
        # up-sampled to full resolution and scored there (DynUNet), and the lower ones carry 1/16 of the weight or
        # less, so on a CPU they would cost steps for almost no gradient
        self.num_heads = min(MAX_HEADS, len(strides) - 2) if deep_supervision else 0
        self.net = DynUNet(
            spatial_dims=2, in_channels=in_channels, out_channels=num_classes, kernel_size=kernels, strides=strides,
            upsample_kernel_size=strides[1:], filters=filters, norm_name=("INSTANCE", {"affine": True}),
            act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}), deep_supervision=deep_supervision,
            deep_supr_num=max(1, self.num_heads), res_block=res_block,
        )
        # nnU-Net's weights: halved per resolution step down, normalised to sum to 1
        raw = [0.5**i for i in range(self.num_heads + 1)]
        self.deep_supervision_weights = [w / sum(raw) for w in raw]

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        h, w = x.shape[-2:]
        # to a multiple of the strides, and to at least 2 strides' worth, so that an image smaller than the planned
        # size still leaves the bottleneck 2x2 (instance norm needs more than one pixel)
        target = [max(2 * m, math.ceil(s / m) * m) for s, m in zip((h, w), self.axis_multiple)]
        pad_h, pad_w = target[0] - h, target[1] - w
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        out = self.net(x)
        if out.dim() == 5:  # training with deep supervision: N x (1 + heads) x K x H x W
            return tuple(o[..., :h, :w] for o in out.unbind(1))
        return out[..., :h, :w]


@register_model(aliases=("dynunet", "nnunet_resenc"))
def nnunet(in_channels: int, num_classes: int, **options) -> NNUNet2D:
    """nnU-Net's 2D network planned from the input size (MONAI DynUNet: instance norm, leaky ReLU, residual
    encoder blocks, deep supervision)."""
    return NNUNet2D(in_channels, num_classes, **options)
