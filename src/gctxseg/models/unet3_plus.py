"""UNet 3+ (Huang, Lin, Tong, Hu, Zhang, Iwamoto, Han, Chen & Wu, ICASSP 2020, arXiv 2004.08790).

A five-level encoder (widths 64/128/256/512/1024, double 3x3 conv + BN + ReLU) and four decoder stages
with full-scale skip connections: every decoder stage gathers all five scales -- shallower encoder maps
max-pooled down, the same-scale encoder map as is, deeper decoder maps and the bottleneck bilinearly
up-sampled -- each through a 3x3 conv + BN + ReLU to ``cat_channels`` (64), concatenates them (5 x 64 = 320
channels) and fuses them with one more 3x3 conv + BN + ReLU. Full-scale deep supervision: a 3x3 conv side
output on every decoder stage and on the bottleneck, bilinearly up-sampled to the input size.

Classification-guided module (``cgm=True``): dropout, 1x1 conv, adaptive max-pool on the bottleneck give one
"image has foreground" logit per sample. The paper multiplies the side outputs by the arg-maxed score; for
K-class softmax logits we do the equivalent in eval mode only: where ``sigmoid(score) < 0.5`` the foreground
logits are lowered below the background logit (by ``CGM_MARGIN``) so every pixel predicts background (with
``num_classes == 1``, a sigmoid output, the single logit is capped at ``-CGM_MARGIN``). In training the
segmentation logits are left untouched and the classification logit (``N x 1``) is kept in
``model.last_cls_logit``; :meth:`UNet3Plus.auxiliary_loss` turns it into the BCE term the training loss adds
(``BCEWithLogits(last_cls_logit, UNet3Plus.classification_target(target))``), so the loop stays generic.

How we differ from the authors' code: convolutions before BatchNorm carry no bias, bilinear up-sampling uses
``align_corners=False``, the CGM is reworked for multi-class logits as above, and any input size is accepted
(reflect-padded to a multiple of 16, logits cropped back).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvNormAct, DoubleConv, crop_to, pad_to_multiple
from .registry import register_model

__all__ = ["UNet3Plus"]

CGM_MARGIN = 10.0  # logit gap that makes a suppressed foreground class lose to background (softmax < 5e-5)


class FullScaleBranch(nn.Sequential):
    """Bring one source scale to the decoder stage's scale (max-pool, identity or up-sample) then 3x3 CBR."""

    def __init__(self, in_channels: int, out_channels: int, steps: int) -> None:
        # steps = target level - source level: > 0 the source is shallower (pool down), < 0 deeper (up-sample)
        if steps > 0:
            resample: nn.Module = nn.MaxPool2d(2**steps, 2**steps, ceil_mode=True)
        elif steps < 0:
            resample = nn.Upsample(scale_factor=2**-steps, mode="bilinear", align_corners=False)
        else:
            resample = nn.Identity()
        super().__init__(resample, ConvNormAct(in_channels, out_channels))


class FullScaleDecoderStage(nn.Module):
    """Decoder node at ``level``: five full-scale branches to ``cat_channels``, concatenated, then fused."""

    def __init__(self, level: int, source_channels: list[int], cat_channels: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            FullScaleBranch(c, cat_channels, steps=level - s) for s, c in enumerate(source_channels)
        )
        fused = cat_channels * len(source_channels)
        self.fuse = ConvNormAct(fused, fused)

    def forward(self, sources: list[torch.Tensor]) -> torch.Tensor:
        """``sources[s]``: encoder maps for scales <= level, decoder/bottleneck maps for deeper scales."""
        return self.fuse(torch.cat([branch(t) for branch, t in zip(self.branches, sources, strict=True)], dim=1))


class UNet3Plus(nn.Module):
    """UNet 3+: full-scale skips, full-scale deep supervision, optional classification-guided module.

    Args:
        in_channels: image channels (1 for grayscale OCT, 3 for colour).
        num_classes: output logits K (background is class 0 when K > 1).
        widths: encoder channels of levels 0..4 before ``width`` scaling; default (64, 128, 256, 512, 1024).
        width: multiplier applied to ``widths`` (rounded, at least 1 channel); default 1.0.
        cat_channels: channels of each full-scale branch (a decoder stage has 5 x as many); default 64.
        deep_supervision: side outputs on decoder stages 1-3 and the bottleneck; in training mode the forward
            returns a tuple of five logits (finest, main, first); default True.
        cgm: add the classification-guided module (see module docstring); default False.
        cgm_dropout_rate: dropout before the CGM's 1x1 conv; default 0.5.

    Attributes:
        last_cls_logit: with ``cgm=True`` the ``N x 1`` "has foreground" logit of the last forward, else None.

    Shapes: ``N x in_channels x H x W`` -> ``N x num_classes x H x W`` for any H, W.

    Raises:
        ValueError: channels < 1, ``width`` <= 0, ``widths`` not five positive ints, ``cat_channels`` < 1 or a
            dropout rate outside [0, 1).
    """

    size_multiple = 16

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        widths: tuple[int, ...] = (64, 128, 256, 512, 1024),
        width: float = 1.0,
        cat_channels: int = 64,
        deep_supervision: bool = True,
        cgm: bool = False,
        cgm_dropout_rate: float = 0.5,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        if len(widths) != 5 or any(int(c) < 1 for c in widths):
            raise ValueError(f"widths must be five positive channel counts, got {tuple(widths)}")
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        if cat_channels < 1:
            raise ValueError(f"cat_channels must be >= 1, got {cat_channels}")
        if not 0.0 <= cgm_dropout_rate < 1.0:
            raise ValueError(f"cgm_dropout_rate must be in [0, 1), got {cgm_dropout_rate}")
        self.num_classes = num_classes
        self.deep_supervision = deep_supervision
        w = [max(1, round(c * width)) for c in widths]
        self.widths = tuple(w)
        up_channels = cat_channels * 5

        self.pool = nn.MaxPool2d(2)
        self.encoder = nn.ModuleList(DoubleConv(in_channels if i == 0 else w[i - 1], w[i]) for i in range(5))
        # decoder[k] builds level 3 - k; deeper sources are decoder stages (5 * cat) or the bottleneck
        self.decoder = nn.ModuleList(
            FullScaleDecoderStage(
                level,
                [w[s] if s <= level else (w[4] if s == 4 else up_channels) for s in range(5)],
                cat_channels,
            )
            for level in (3, 2, 1, 0)
        )
        self.final_conv = nn.Conv2d(up_channels, num_classes, kernel_size=3, padding=1)  # on level 0
        # side outputs on levels 1, 2, 3 and the bottleneck (level 4)
        self.side_heads = (
            nn.ModuleList(
                nn.Conv2d(up_channels if level < 4 else w[4], num_classes, kernel_size=3, padding=1)
                for level in (1, 2, 3, 4)
            )
            if deep_supervision
            else None
        )
        self.cls_head = (
            nn.Sequential(nn.Dropout(cgm_dropout_rate), nn.Conv2d(w[4], 1, kernel_size=1), nn.AdaptiveMaxPool2d(1))
            if cgm
            else None
        )
        self.last_cls_logit: torch.Tensor | None = None

    @staticmethod
    def classification_target(target: torch.Tensor) -> torch.Tensor:
        """``N x H x W`` class indices -> ``N x 1`` float: 1 where the image has any class > 0 pixel."""
        return (target > 0).flatten(1).any(dim=1, keepdim=True).float()

    def auxiliary_loss(self, target: torch.Tensor) -> torch.Tensor | None:
        """The CGM's "does this image hold any foreground?" BCE for the last forward pass (None without a CGM).

        Added to the segmentation loss by :func:`gctxseg.losses.training_loss`; ``target`` is ``N x H x W``.
        """
        if self.cls_head is None or self.last_cls_logit is None:
            return None
        return F.binary_cross_entropy_with_logits(self.last_cls_logit.float(), self.classification_target(target))

    def _suppress_foreground(self, logits: torch.Tensor, has_foreground: torch.Tensor) -> torch.Tensor:
        """Make samples whose ``has_foreground`` (``N`` bool) is False predict background everywhere."""
        keep = has_foreground.view(-1, 1, 1, 1)
        if self.num_classes == 1:  # sigmoid output: background is a negative logit
            return torch.where(keep, logits, logits.clamp(max=-CGM_MARGIN))
        background, foreground = logits[:, :1], logits[:, 1:]
        lowered = torch.minimum(foreground, background - CGM_MARGIN)
        return torch.cat([background, torch.where(keep, foreground, lowered)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        size = x.shape[-2:]
        x = pad_to_multiple(x, self.size_multiple, mode="reflect")
        enc = [self.encoder[0](x)]
        for i in range(1, 5):
            enc.append(self.encoder[i](self.pool(enc[-1])))
        deep = {4: enc[4]}  # level -> decoder map (bottleneck at level 4)
        for level, stage in zip((3, 2, 1, 0), self.decoder, strict=True):
            deep[level] = stage([enc[s] if s <= level else deep[s] for s in range(5)])

        logits = [self.final_conv(deep[0])]
        if self.side_heads is not None and self.training:
            for level, head in zip((1, 2, 3, 4), self.side_heads, strict=True):
                side = head(deep[level])
                logits.append(F.interpolate(side, size=x.shape[-2:], mode="bilinear", align_corners=False))
        logits = [crop_to(t, size) for t in logits]

        if self.cls_head is not None:
            self.last_cls_logit = self.cls_head(enc[4]).flatten(1)  # (N, 1)
            if not self.training:
                logits[0] = self._suppress_foreground(logits[0], self.last_cls_logit[:, 0] >= 0.0)
        if self.training and self.deep_supervision:
            return tuple(logits)  # finest (main) first
        return logits[0]


@register_model(aliases=("unet3+", "unet3p"))
def unet3_plus(in_channels: int, num_classes: int, **options) -> UNet3Plus:
    """UNet 3+ (Huang 2020): full-scale skips (5 x 64 channels), full-scale deep supervision, optional CGM."""
    return UNet3Plus(in_channels, num_classes, **options)
