"""UNet++ (Zhou, Rahman Siddiquee, Tajbakhsh & Liang, DLMIA 2018, arXiv 1807.10165).

A U-Net whose encoder and decoder meet through nested, dense skip pathways: node ``X^{i,j}`` (depth ``i``,
column ``j``) is a VGG-style double conv over the concatenation of every earlier node at its depth,
``X^{i,0..j-1}``, and the bilinearly up-sampled ``X^{i+1,j-1}``. Widths 32/64/128/256/512 as in the
authors' code (times ``width``). Deep supervision puts a 1x1 head on each top-level node ``X^{0,1..4}``; in
training the four logits come back as a tuple (``X^{0,4}`` first), in eval either the ``X^{0,4}`` head or the
mean of all four ("accurate" mode of the paper).

How we differ from the authors' code: convolutions carry no bias (BatchNorm follows), up-sampling is bilinear
with ``align_corners=False``, and any input size is accepted (reflect-padded to a multiple of 16, logits
cropped back). The paper's "fast" mode (pruning to a shallower head) is not offered.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DoubleConv, crop_to, pad_to_multiple
from .registry import register_model

__all__ = ["UNetPlusPlus"]

_DS_HEADS = ("final", "mean")


class UNetPlusPlus(nn.Module):
    """UNet++ with nested dense skip pathways and optional deep supervision.

    Args:
        in_channels: image channels (1 for grayscale OCT, 3 for colour).
        num_classes: output logits K (background included).
        widths: channels of depths 0..4 before ``width`` scaling; default (32, 64, 128, 256, 512).
        width: multiplier applied to ``widths`` (rounded, at least 1 channel); default 1.0.
        deep_supervision: build heads on ``X^{0,1..4}`` and, in training mode, return their four logits as a
            tuple whose first element is the ``X^{0,4}`` (main) head; default True.
        ds_head: eval-mode output, ``"final"`` (the ``X^{0,4}`` head, default) or ``"mean"`` (mean of the four
            heads' logits; needs ``deep_supervision=True``).

    Shapes: ``N x in_channels x H x W`` -> ``N x num_classes x H x W`` for any H, W (a tuple of four such
    tensors in training mode with deep supervision).

    Raises:
        ValueError: channels < 1, ``width`` <= 0, ``widths`` not five positive ints, unknown ``ds_head``, or
            ``ds_head="mean"`` without deep supervision.
    """

    size_multiple = 16

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        widths: tuple[int, ...] = (32, 64, 128, 256, 512),
        width: float = 1.0,
        deep_supervision: bool = True,
        ds_head: str = "final",
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        if len(widths) != 5 or any(int(c) < 1 for c in widths):
            raise ValueError(f"widths must be five positive channel counts, got {tuple(widths)}")
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        if ds_head not in _DS_HEADS:
            raise ValueError(f"ds_head must be one of {_DS_HEADS}, got {ds_head!r}")
        if ds_head == "mean" and not deep_supervision:
            raise ValueError("ds_head='mean' averages the deep-supervision heads; set deep_supervision=True")
        self.deep_supervision = deep_supervision
        self.ds_head = ds_head
        w = [max(1, round(c * width)) for c in widths]
        self.widths = tuple(w)

        self.pool = nn.MaxPool2d(2)
        # nodes["x{i}_{j}"] is X^{i,j}; column 0 is the encoder
        nodes: dict[str, nn.Module] = {}
        for i in range(5):
            nodes[f"x{i}_0"] = DoubleConv(in_channels if i == 0 else w[i - 1], w[i])
        for j in range(1, 5):
            for i in range(5 - j):
                nodes[f"x{i}_{j}"] = DoubleConv(w[i] * j + w[i + 1], w[i])
        self.nodes = nn.ModuleDict(nodes)
        self.final_conv = nn.Conv2d(w[0], num_classes, kernel_size=1)  # on X^{0,4}
        # heads on X^{0,1}, X^{0,2}, X^{0,3}
        self.aux_heads = (
            nn.ModuleList(nn.Conv2d(w[0], num_classes, kernel_size=1) for _ in range(3)) if deep_supervision else None
        )

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)

    def forward_heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every head, cropped to the input size: ``[X^{0,4}]`` or ``[X^{0,4}, X^{0,1..3}]``."""
        size = x.shape[-2:]
        x = pad_to_multiple(x, self.size_multiple, mode="reflect")
        grid: list[list[torch.Tensor]] = [[] for _ in range(5)]  # grid[i][j] = X^{i,j}
        for i in range(5):
            grid[i].append(self.nodes[f"x{i}_0"](x if i == 0 else self.pool(grid[i - 1][0])))
        for j in range(1, 5):
            for i in range(5 - j):
                inputs = [*grid[i][:j], self._up(grid[i + 1][j - 1])]
                grid[i].append(self.nodes[f"x{i}_{j}"](torch.cat(inputs, dim=1)))
        logits = [self.final_conv(grid[0][4])]
        if self.aux_heads is not None:
            logits += [head(grid[0][j + 1]) for j, head in enumerate(self.aux_heads)]
        return [crop_to(t, size) for t in logits]

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        logits = self.forward_heads(x)
        if self.training and self.deep_supervision:
            return tuple(logits)  # main (X^{0,4}) first
        if self.ds_head == "mean":
            return torch.stack(logits).mean(dim=0)
        return logits[0]


@register_model(aliases=("unet++", "unetpp"))
def unet_plus_plus(in_channels: int, num_classes: int, **options) -> UNetPlusPlus:
    """UNet++ (Zhou 2018): nested dense skips, widths 32-512, deep supervision on X^{0,1..4}."""
    return UNetPlusPlus(in_channels, num_classes, **options)
