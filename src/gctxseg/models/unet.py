"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015, arXiv 1505.04597).

Four down-sampling and four up-sampling steps of double 3x3 conv + BN + ReLU, base width 64, with
bilinear (default) or transposed-convolution up-sampling. Any input size: the input is padded to a
multiple of 16 and the logits are cropped back.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import DoubleConv, crop_to, pad_to_multiple
from .registry import register_model

__all__ = ["UNet"]


class Down(nn.Sequential):
    """Max-pool x2 then a double conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))


class Up(nn.Module):
    """Up-sample x2, concatenate the skip, double conv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, bilinear: bool) -> None:
        super().__init__()
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            up_channels = in_channels
        else:
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
            up_channels = in_channels // 2
        self.conv = DoubleConv(up_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """Classic U-Net.

    Args:
        in_channels: image channels (1 for grayscale OCT, 3 for colour).
        num_classes: output logits K (background included).
        base_width: channels of the first stage; doubled at each of the 4 down steps.
        bilinear: bilinear up-sampling (True) or transposed convolutions (False).

    Shapes: ``N x in_channels x H x W`` -> ``N x num_classes x H x W`` for any H, W.
    """

    size_multiple = 16

    def __init__(self, in_channels: int, num_classes: int, *, base_width: int = 64, bilinear: bool = True) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        w = [base_width * 2**i for i in range(5)]
        # with bilinear up-sampling the bottleneck keeps 8w channels so concatenations stay balanced
        bottom = w[4] // 2 if bilinear else w[4]
        self.conv_0 = DoubleConv(in_channels, w[0])
        self.down_1 = Down(w[0], w[1])
        self.down_2 = Down(w[1], w[2])
        self.down_3 = Down(w[2], w[3])
        self.down_4 = Down(w[3], bottom)
        f = 2 if bilinear else 1
        self.upcat_4 = Up(bottom, w[3], w[3] // f, bilinear)
        self.upcat_3 = Up(w[3] // f, w[2], w[2] // f, bilinear)
        self.upcat_2 = Up(w[2] // f, w[1], w[1] // f, bilinear)
        self.upcat_1 = Up(w[1] // f, w[0], w[0], bilinear)
        self.final_conv = nn.Conv2d(w[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = pad_to_multiple(x, self.size_multiple, mode="reflect")
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        x4 = self.down_4(x3)
        u4 = self.upcat_4(x4, x3)
        u3 = self.upcat_3(u4, x2)
        u2 = self.upcat_2(u3, x1)
        u1 = self.upcat_1(u2, x0)
        return crop_to(self.final_conv(u1), size)


@register_model
def unet(in_channels: int, num_classes: int, **options) -> UNet:
    """U-Net (Ronneberger 2015): 4 down/4 up double-conv stages, base width 64, bilinear up-sampling."""
    return UNet(in_channels, num_classes, **options)
