"""GCT-UNet: a U-Net with Global Context Transform modules, as specified by the gctxseg seed document.

The Global Context Transform (GCT) re-weights a feature map ``X`` (``N x C x H x W``) by a channel and a
spatial attention and adds it back:

    z   = GAP(X)                               (N x C)
    a_c = sigmoid(W_c z + b_c)                 (N x C x 1 x 1; W_c a C -> C linear map)
    a_s = sigmoid(conv_k(W_s * X))             (N x 1 x H x W; W_s a 1x1 conv C -> 1, conv_k a k x k conv)
    Y   = X * a_c * a_s + X

Channel attention after squeeze-and-excitation (Hu, Shen & Sun, CVPR 2018, arXiv 1709.01507), spatial
attention after CBAM (Woo, Park, Lee & Kweon, ECCV 2018, arXiv 1807.06521); the residual form keeps the
identity path open. The network around it follows U-Net (Ronneberger, Fischer & Brox, MICCAI 2015,
arXiv 1505.04597):

- encoder stage: two 3x3 conv + BN + ReLU, a GCT, then 2x2 max-pool (the pre-pool map is the skip);
- bottleneck: depthwise 3x3 conv + BN + ReLU, a GCT, a regular 3x3 conv + BN + ReLU doubling the channels;
- improved skip: 1x1 conv + BN + ReLU aligning the encoder map to the decoder's channels, a GCT, and
  optionally an additive attention gate (Oktay et al., MIDL 2018, arXiv 1804.03999) driven by the
  up-sampled decoder map;
- decoder stage: up-sample x2 (bilinear then 1x1 conv + BN + ReLU, or a 2x2 transposed conv), concatenate
  with the skip, two 3x3 conv + BN + ReLU, a GCT.

There is no published reference code; the seed document is the specification. Any input size: the input
is reflect-padded to a multiple of 16 and the logits are cropped back.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvNormAct, DoubleConv, crop_to, pad_to_multiple
from .registry import register_model

__all__ = ["GCTUNet"]


class GlobalContextTransform(nn.Module):
    """GCT: ``Y = X * sigmoid(W_c GAP(X) + b_c) * sigmoid(conv_k(W_s X)) + X``.

    Args:
        channels: C, the channels of ``X``.
        kernel_size: k of the spatial conv (odd); default 7.

    Attributes:
        channel_fc: ``Linear(C, C)``, ``W_c`` and ``b_c``.
        spatial_proj: 1x1 ``Conv2d(C, 1)`` without bias, ``W_s`` (the spatial conv's bias covers it).
        spatial_conv: k x k ``Conv2d(1, 1)`` with bias.
    """

    def __init__(self, channels: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel_fc = nn.Linear(channels, channels)
        self.spatial_proj = nn.Conv2d(channels, 1, kernel_size=1, bias=False)
        self.spatial_conv = nn.Conv2d(1, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.mean(dim=(2, 3))  # (N, C)
        a_c = torch.sigmoid(self.channel_fc(z))[:, :, None, None]  # (N, C, 1, 1)
        a_s = torch.sigmoid(self.spatial_conv(self.spatial_proj(x)))  # (N, 1, H, W)
        return x * a_c * a_s + x


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay 2018): ``x * sigmoid(psi(relu(W_x x + W_g g)))``, g at x's size."""

    def __init__(self, channels: int, gate_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.w_x = nn.Sequential(nn.Conv2d(channels, inter_channels, 1, bias=False), nn.BatchNorm2d(inter_channels))
        self.w_g = nn.Sequential(
            nn.Conv2d(gate_channels, inter_channels, 1, bias=False), nn.BatchNorm2d(inter_channels)
        )
        self.psi = nn.Sequential(nn.Conv2d(inter_channels, 1, 1, bias=False), nn.BatchNorm2d(1), nn.Sigmoid())
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return x * self.psi(self.act(self.w_x(x) + self.w_g(gate)))  # (N, C, H, W) * (N, 1, H, W)


class EncoderStage(nn.Module):
    """Double conv then GCT; returns the skip map (the caller max-pools it for the next stage)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels, out_channels)
        self.gct = GlobalContextTransform(out_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gct(self.conv(x))


class Bottleneck(nn.Module):
    """Depthwise 3x3 conv + BN + ReLU, GCT, then a regular 3x3 conv + BN + ReLU to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.dw_conv = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
        )
        self.gct = GlobalContextTransform(in_channels, kernel_size)
        self.conv = ConvNormAct(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.gct(self.dw_conv(x)))


class SkipConnection(nn.Module):
    """1x1 conv + BN + ReLU channel alignment, GCT, optional attention gate driven by the decoder map."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, attention_gate: bool) -> None:
        super().__init__()
        self.align = ConvNormAct(in_channels, out_channels, kernel_size=1)
        self.gct = GlobalContextTransform(out_channels, kernel_size)
        self.gate = AttentionGate(out_channels, out_channels, max(1, out_channels // 2)) if attention_gate else None

    def forward(self, skip: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
        skip = self.gct(self.align(skip))
        return self.gate(skip, decoder) if self.gate is not None else skip


class DecoderStage(nn.Module):
    """Up-sample x2, improved skip, concatenate, double conv, GCT."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        kernel_size: int,
        bilinear: bool,
        attention_gate: bool,
    ) -> None:
        super().__init__()
        if bilinear:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                ConvNormAct(in_channels, out_channels, kernel_size=1),
            )
        else:
            self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.skip = SkipConnection(skip_channels, out_channels, kernel_size, attention_gate)
        self.conv = DoubleConv(2 * out_channels, out_channels)
        self.gct = GlobalContextTransform(out_channels, kernel_size)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up(x)
        return self.gct(self.conv(torch.cat([self.skip(skip, up), up], dim=1)))


class GCTUNet(nn.Module):
    """U-Net with Global Context Transform modules in every encoder/decoder stage, bottleneck and skip.

    Args:
        in_channels: image channels (1 for grayscale OCT, 3 for colour).
        num_classes: output logits K (background included).
        base_width: channels of the first stage, doubled at each of the 4 down steps; default 64.
        bilinear: up-sample bilinearly then 1x1 conv (True, default) or with 2x2 transposed convolutions.
        attention_gate: add an additive attention gate on each skip (Oktay 2018); default False.
        gct_kernel_size: kernel of the GCT's spatial conv, odd; default 7.

    Shapes: ``N x in_channels x H x W`` -> ``N x num_classes x H x W`` for any H, W.

    Raises:
        ValueError: channels < 1, ``base_width`` < 1 or an even / non-positive ``gct_kernel_size``.
    """

    size_multiple = 16

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        base_width: int = 64,
        bilinear: bool = True,
        attention_gate: bool = False,
        gct_kernel_size: int = 7,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        if base_width < 1:
            raise ValueError(f"base_width must be >= 1, got {base_width}")
        if gct_kernel_size < 1 or gct_kernel_size % 2 == 0:
            raise ValueError(f"gct_kernel_size must be a positive odd int, got {gct_kernel_size}")
        w = [base_width * 2**i for i in range(5)]
        k = gct_kernel_size
        self.pool = nn.MaxPool2d(2)
        self.encoder = nn.ModuleList(EncoderStage(in_channels if i == 0 else w[i - 1], w[i], k) for i in range(4))
        self.bottleneck = Bottleneck(w[3], w[4], k)
        # decoder[j] outputs level 3 - j: w[3], w[2], w[1], w[0]
        self.decoder = nn.ModuleList(
            DecoderStage(w[i + 1], w[i], w[i], k, bilinear, attention_gate) for i in (3, 2, 1, 0)
        )
        self.final_conv = nn.Conv2d(w[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = pad_to_multiple(x, self.size_multiple, mode="reflect")
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for stage, skip in zip(self.decoder, reversed(skips), strict=True):
            x = stage(x, skip)
        return crop_to(self.final_conv(x), size)


@register_model
def gct_unet(in_channels: int, num_classes: int, **options) -> GCTUNet:
    """GCT-UNet (seed document): U-Net, base width 64, Global Context Transform in every stage and skip."""
    return GCTUNet(in_channels, num_classes, **options)
