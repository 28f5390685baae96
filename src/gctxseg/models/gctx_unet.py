"""GCtx-UNet (Alrfou & Zhao 2024, arXiv 2406.05891): a U-shaped Global Context Vision Transformer.

Encoder: GC ViT "xxtiny" (Hatamizadeh et al. 2022, arXiv 2206.09959) with depths 2-2-2-1: a 3x3 stride-2 conv
and a ReduceSize to 1/4 resolution (64 channels), then four stages (64/128/256/512 channels, heads 2-4-8-16,
windows 7-7-14-7, MLP ratio 3) whose blocks alternate local window self-attention and global-query attention
(queries are window-sized tokens that a FeatExtract chain - fused MBConv + 3x3 stride-2 max-pool - squeezes out
of the whole feature map; keys/values from each window). Both attention kinds carry a relative position bias;
there are no shifted windows. Decoder: the mirror image, deepest scale first - at each scale a GC ViT stage
(depths 1-2-2-2, the encoder's heads and windows, its own global-query generator), then an ``UpSize`` (norm,
MBConv, x2 bicubic, 1x1 conv halving the channels, norm); the encoder feature entering the GC ViT blocks of the
same scale is concatenated and a Linear maps 2C back to C. After the last stage: LayerNorm, two channel-keeping
``UpSize`` blocks (x4 back to the input resolution) and a bias-free 1x1 conv head. At 224x224 with 3 input
channels and 3 classes: 12.34 M parameters as published; 2.80 G multiply-adds (published 3.02 G, which leaves
out the bicubic up-sampling; UpSize's 1x1 conv runs before the bicubic here, on a quarter of the pixels).

Built on timm's GC ViT (``timm.models.gcvit``, Apache-2.0): ``Stem``, ``Downsample2d`` (ReduceSize),
``FeatureBlock`` (FeatExtract chain), ``MbConvBlock``, ``GlobalContextVitBlock``, ``WindowAttentionGlobal``,
``window_partition`` (of the padding mask), ``RelPosBias``. The encoder keeps timm's attribute names, so a timm
GC ViT checkpoint loads into ``model.encoder`` key for key (``models.pretrained.load_pretrained``). Written here: the
stage wiring that runs at any input size, the decoder (stages, ``UpSize``, skip fusion) and the head.

How we differ from the authors' code (written from the paper and timm, none of the authors' code, which is
under a non-commercial licence, is used):

* **Any input size.** The authors' network runs only at the one resolution it was built for (224). Here the
  input is reflect-padded to a multiple of 32 (the total stride) and the logits are cropped back. Inside each
  stage a window larger than the feature map is clamped to it (the relative position bias of the smaller window
  is the matching sub-block of the full table, so no new parameters); otherwise the map is zero-padded to a
  multiple of the window after ``norm1`` (as in Swin) and the padded keys are masked out of the softmax. The
  global queries come from the FeatExtract chain, whose max-pools are skipped once the map would shrink below
  the window; if the result is not exactly window-sized, adaptive average pooling brings it there. At 224 none
  of this triggers: the published network exactly (at multiples of 224 only the adaptive pooling does). A
  496x512 B-scan is padded to 512x512 (+3%), then, for attention only, the stage maps 128/64/32/16 to
  133/70/42/21 (+8/+20/+72/+72% tokens); padding the input to 672x672, the next multiple of 224, would add
  78% to every layer, convolutions and the full-resolution decoder included.
* **Batch-safe global queries** (timm's ``repeat_interleave``): every window attends with the global tokens of
  its own image (the original GC ViT code's ``repeat`` pairs windows with other images' tokens when the batch
  is > 1).
* **Attention** is batched over all windows through ``F.scaled_dot_product_attention``, except when training
  on CPU: there PyTorch's fused CPU kernel cannot return the gradient of the relative position bias (passed as
  ``attn_mask``), so SDPA falls back to its unfused math path plus NaN guards; the explicit ``q @ k^T + bias
  -> softmax -> @ v`` is the same computation without the guards, and faster (docs/speed.md). CPU inference runs
  the fused kernel. The per-token ``qkv`` and ``proj`` Linears run on the whole map, before the windows are cut
  and after they are merged, so cutting the windows and splitting the heads is one copy (timm cuts the windows
  first and copies again to split and merge the heads).
* **The deepest stage's global-query generator** (encoder and decoder, depth 1, so only a local-attention
  block) is never used by the network: the authors compute and discard it (26 M multiply-adds at 224), we skip
  it. Its 0.8 M parameters are kept (they are part of the published 12.34 M and of ImageNet checkpoints) but
  get no gradient, so DistributedDataParallel needs ``find_unused_parameters=True``.
* **UpSize's bicubic x2** is an exact fixed-weight transposed conv (:func:`~gctxseg.models.layers.
  bicubic_upsample_x2`): the same function as ``F.interpolate``, 2-5x faster on CPU, and visible to the FLOP
  counter (+0.09 G multiply-adds that the published count, which leaves interpolation out, does not have; in
  the authors' order, up-sampling before the 1x1 conv, ours would count 3.06 G).
* The channel-halving ``UpSize`` conv is bias-free like ReduceSize's; the LayerNorms of conv-side blocks are
  timm's ``LayerNorm2d`` (same parameters as the authors' channels-last LayerNorm). Tensors stay
  channels-last in memory throughout, so the NCHW <-> NHWC permutes are views.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d, trunc_normal_
from timm.models import adapt_input_conv
from timm.models.gcvit import (
    Downsample2d,
    FeatureBlock,
    GlobalContextVitBlock,
    MbConvBlock,
    Stem,
    WindowAttentionGlobal,
    window_partition,
)
from torch import nn

from .layers import BicubicUpsampleX2, crop_to, pad_to_multiple
from .registry import register_model

__all__ = ["GCtxUNet", "encoder_state", "mirror_into_decoder"]

_NORM_EPS = 1e-5  # timm GlobalContextVit's norm_eps (the authors' nn.LayerNorm default)


def _clamp_window(window_size: tuple[int, int], height: int, width: int) -> tuple[int, int]:
    """The window used on a ``height x width`` map: the stage's window, clamped to the map."""
    return min(window_size[0], height), min(window_size[1], width)


class WindowAttention(WindowAttentionGlobal):
    """timm's local / global-query window attention on a whole ``B x H x W x C`` map: windows of any size up to its
    own, the map zero-padded to a multiple of the window and the padded keys masked.

    Parameters (``qkv``, ``rel_pos``, ``proj``) are timm's. ``qkv`` and ``proj`` act on each token alone, so they run
    on the map itself: one copy cuts the projected map into windows and heads, one puts the windows back (timm cuts
    the windows first, then copies again to split the heads and to merge them).
    """

    fused_attn: bool | None = None  # None: F.scaled_dot_product_attention unless it would run unfused (CPU grad)

    def relative_position_bias(self, window_size: tuple[int, int]) -> torch.Tensor:
        """Bias ``heads x N x N`` for a ``window_size`` window (<= ``self.window_size``): a sub-block of the table."""
        n = self.rel_pos.window_area
        index = self.rel_pos.relative_position_index.view(n, n)
        if tuple(window_size) != tuple(self.window_size):
            rows = torch.arange(window_size[0], device=index.device)
            cols = torch.arange(window_size[1], device=index.device)
            keep = (rows[:, None] * self.window_size[1] + cols).flatten()  # token ids of the top-left sub-window
            index = index[keep][:, keep]
        m = index.shape[0]
        # index_select: its backward adds rows (index_add_) where indexing's accumulates one element at a time
        bias = self.rel_pos.relative_position_bias_table.index_select(0, index.reshape(-1)).view(m, m, -1)
        return bias.permute(2, 0, 1)  # (heads, N, N)

    def forward(self, x: torch.Tensor, q_global: torch.Tensor | None = None) -> torch.Tensor:
        """Attention inside every window of ``x``.

        Args:
            x: the map ``(B, H, W, C)`` (after the block's ``norm1``).
            q_global: global query tokens ``(B, wh, ww, C)`` (the window used) for global-query blocks; ignored by
                local ones.

        Returns:
            ``(B, H, W, C)``.
        """
        b, h, w, _ = x.shape
        window = _clamp_window(self.window_size, h, w)
        pad_h, pad_w = (-h) % window[0], (-w) % window[1]
        qkv = self.qkv(x)  # (B, H, W, 2C or 3C)
        if pad_h or pad_w:  # padded tokens: keys masked below, queries whose outputs are cropped
            qkv = F.pad(qkv, (0, 0, 0, pad_w, 0, pad_h))
        q, k, v = self._window_heads(qkv, q_global, window)  # (B*nW, heads, N, d), image-major
        bias = self.relative_position_bias(window).unsqueeze(0)  # (1, heads, N, N)
        if pad_h or pad_w:
            is_pad = torch.ones(1, h + pad_h, w + pad_w, 1, dtype=torch.bool, device=x.device)
            is_pad[:, :h, :w] = False
            key_padding = window_partition(is_pad, window).view(-1, 1, 1, window[0] * window[1])  # (nW, 1, 1, N)
            bias = bias.masked_fill(key_padding, float("-inf")).repeat(b, 1, 1, 1)  # (B*nW, heads, N, N)
        x = self._attend(q, k, v, bias.to(q.dtype))
        x = self._merge_windows(x, b, (h + pad_h, w + pad_w), window)  # (B, Hp, Wp, C)
        if pad_h or pad_w:
            x = x[:, :h, :w]
        return self.proj_drop(self.proj(x))

    def _window_heads(self, qkv: torch.Tensor, q_global: torch.Tensor | None, window: tuple[int, int]
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v ``(B*nW, heads, N, d)`` from the projected map ``(B, Hp, Wp, 2C or 3C)`` in one copy; a
        global-query block's q is its image's global tokens, the same for each of its windows."""
        b, hp, wp, _ = qkv.shape
        rows, cols, heads, d = hp // window[0], wp // window[1], self.num_heads, self.head_dim
        n, b_win = window[0] * window[1], b * rows * cols
        parts = 2 if self.use_global and q_global is not None else 3
        split = qkv.view(b, rows, window[0], cols, window[1], parts, heads, d).permute(5, 0, 1, 3, 6, 2, 4, 7)
        split = split.reshape(parts, b_win, heads, n, d).unbind(0)
        if parts == 3:
            return split
        q = q_global.reshape(b, 1, n, heads, d).transpose(2, 3)  # (B, 1, heads, N, d)
        return q.expand(-1, rows * cols, -1, -1, -1).reshape(b_win, heads, n, d), *split

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        fused = self.fused_attn
        if fused is None:  # the CPU kernel has no attn_mask gradient: with one SDPA takes its slower math path
            fused = not (q.is_cpu and torch.is_grad_enabled() and bias.requires_grad)
        if fused:
            drop = self.attn_drop.p if self.training else 0.0
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop)  # (B*nW, h, N, d)
        attn = (q * self.scale) @ k.transpose(-2, -1) + bias  # (B*nW, h, N, N)
        return self.attn_drop(attn.softmax(dim=-1)) @ v  # (B*nW, h, N, d)

    @staticmethod
    def _merge_windows(x: torch.Tensor, b: int, size: tuple[int, int], window: tuple[int, int]) -> torch.Tensor:
        """``(B*nW, heads, N, d)`` back to the map ``(B, Hp, Wp, heads*d)`` in one copy."""
        rows, cols, heads, d = size[0] // window[0], size[1] // window[1], x.shape[1], x.shape[-1]
        x = x.view(b, rows, cols, heads, window[0], window[1], d).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, size[0], size[1], heads * d)


class GlobalContextBlock(GlobalContextVitBlock):
    """timm's GC ViT block (norm1, attn, ls1, drop_path1, norm2, mlp, ...) whose attention takes the whole map."""

    def _window_attn(self, x: torch.Tensor, q_global: torch.Tensor | None = None) -> torch.Tensor:
        return self.attn(x, q_global)  # (B, H, W, C): the attention cuts and merges its windows


class EncoderStage(nn.Module):
    """One GC ViT stage laid out as timm's ``GlobalContextVitStage`` (same attribute and state-dict names).

    ``downsample`` (timm ``Downsample2d`` = ReduceSize, or identity) -> global query generator ``global_block``
    (timm ``FeatureBlock``) -> ``blocks`` alternating local (even) and global-query (odd) attention -> ``norm``.
    Input and output are ``N x C x H x W`` (channels-last in memory); any H, W.

    Args:
        dim: channels of the blocks.
        depth: number of GC ViT blocks.
        num_heads: attention heads.
        window_size: attention window (square).
        feat_levels: FeatExtract reductions of the global query generator (3, 2, 0, 0 for xxtiny at 224).
        downsample_from: input channels of a ReduceSize (stride 2) in front of the blocks; None: no downsample.
        mlp_ratio: MLP hidden width / dim.
        drop_path: stochastic-depth rate per block.
        stage_norm: LayerNorm after the blocks (timm puts one after the last encoder stage).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        feat_levels: int,
        *,
        downsample_from: int | None = None,
        mlp_ratio: float = 3.0,
        drop_path: Sequence[float] = (),
        stage_norm: bool = False,
    ) -> None:
        super().__init__()
        norm_2d = partial(LayerNorm2d, eps=_NORM_EPS)
        norm_cl = partial(nn.LayerNorm, eps=_NORM_EPS)
        if downsample_from is not None:
            self.downsample = Downsample2d(downsample_from, dim, norm_layer=norm_2d)
        else:
            self.downsample = nn.Identity()
        self.window_size = (window_size, window_size)
        self.global_block = FeatureBlock(dim, feat_levels)
        self.global_norm = nn.Identity()  # timm's global_norm=False
        drop_path = list(drop_path) or [0.0] * depth
        self.blocks = nn.ModuleList(
            GlobalContextBlock(
                dim=dim,
                feat_size=self.window_size,  # timm only derives an unused window count from it
                num_heads=num_heads,
                window_size=window_size,
                mlp_ratio=mlp_ratio,
                use_global=i % 2 == 1,
                drop_path=drop_path[i],
                attn_layer=WindowAttention,
                norm_layer=norm_cl,
            )
            for i in range(depth)
        )
        self.norm = norm_cl(dim) if stage_norm else nn.Identity()

    def global_query(self, x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
        """Global tokens ``(N, wh, ww, C)`` from ``x`` ``(N, C, H, W)`` by the FeatExtract chain.

        A max-pool that would take the map below the window is skipped; a result that is not exactly
        window-sized is adaptive-average-pooled to it (never the case at 224).
        """
        for layer in self.global_block.blocks:
            if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
                h, w = x.shape[-2:]
                if (h + 1) // 2 < window[0] or (w + 1) // 2 < window[1]:
                    continue
            x = layer(x)
        if tuple(x.shape[-2:]) != tuple(window):
            x = adaptive_avg_pool(x, window)
        return self.global_norm(x.permute(0, 2, 3, 1))  # (N, wh, ww, C)

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The GC ViT blocks (and stage norm) on ``x`` ``(N, C, H, W)``, without the downsample."""
        window = _clamp_window(self.window_size, *x.shape[-2:])
        # a one-block stage has only local attention: its global queries would go unused
        q_global = self.global_query(x, window) if len(self.blocks) > 1 else None  # (N, wh, ww, C)
        x = x.permute(0, 2, 3, 1)  # (N, H, W, C)
        for blk in self.blocks:
            x = blk(x, q_global)
        x = self.norm(x)
        return x.permute(0, 3, 1, 2)  # (N, C, H, W), channels-last memory

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_blocks(self.downsample(x))


def _pooling_matrix(size_in: int, size_out: int, like: torch.Tensor) -> torch.Tensor:
    """``size_out x size_in`` weights of adaptive average pooling along one axis: row ``i`` averages the inputs
    ``floor(i * in / out)`` to ``ceil((i + 1) * in / out)``, PyTorch's bins."""
    rows = []
    for i in range(size_out):
        start, end = (i * size_in) // size_out, -((-(i + 1) * size_in) // size_out)
        row = torch.zeros(size_in, dtype=like.dtype, device=like.device)
        row[start:end] = 1.0 / (end - start)
        rows.append(row)
    return torch.stack(rows)


def adaptive_avg_pool(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d`` of ``x`` (N, C, H, W); while exporting to ONNX, the same bins as two matrix
    products: ONNX has no adaptive pooling whose input is not a multiple of its output, which refused every input
    size but 224 for gctx_unet."""
    if not torch.onnx.is_in_onnx_export():
        return F.adaptive_avg_pool2d(x, size)
    rows = _pooling_matrix(x.shape[-2], size[0], x)
    cols = _pooling_matrix(x.shape[-1], size[1], x)
    return rows @ x @ cols.transpose(0, 1)


class GlobalContextEncoder(nn.Module):
    """GC ViT encoder: timm ``Stem`` (conv 3x3/2 + ReduceSize) and ``stages``; state-dict keys as timm's.

    ``forward`` returns, per scale 1/4, 1/8, ..., the feature entering that scale's GC ViT blocks (the skips),
    and last the output of the deepest stage: ``[N x C_i x H/2^(i+2) x W/2^(i+2)] + [N x C_last x H/32 x W/32]``.
    ``feature_info`` lists ``num_chs``/``reduction``/``module`` of each stage, as timm's.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        img_size: int,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_sizes: Sequence[int],
        mlp_ratio: float,
        drop_path_rates: Sequence[Sequence[float]],
    ) -> None:
        super().__init__()
        self.stem = Stem(in_channels, embed_dim, norm_layer=partial(LayerNorm2d, eps=_NORM_EPS))
        stages, self.feature_info = [], []
        for i, (depth, heads, window) in enumerate(zip(depths, num_heads, window_sizes)):
            dim = embed_dim * 2**i
            stages.append(
                EncoderStage(
                    dim,
                    depth,
                    heads,
                    window,
                    _feat_levels(img_size // 2 ** (i + 2), window),
                    downsample_from=dim // 2 if i > 0 else None,
                    mlp_ratio=mlp_ratio,
                    drop_path=drop_path_rates[i],
                    stage_norm=i == len(depths) - 1,
                )
            )
            self.feature_info.append(dict(num_chs=dim, reduction=2 ** (i + 2), module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)  # (N, C0, H/4, W/4)
        features = []
        for stage in self.stages:
            x = stage.downsample(x)
            features.append(x)
            x = stage.forward_blocks(x)
        features[-1] = x  # the deepest scale is no skip: keep the stage output instead
        return features


class UpSize(nn.Module):
    """x2 up-sampling mirror of timm's ``Downsample2d`` (ReduceSize), on ``N x C x H x W``.

    LayerNorm -> MBConv residual (depthwise 3x3, GELU, squeeze-excitation, 1x1) -> x2 bicubic ->
    1x1 conv to ``dim_out`` -> LayerNorm (computed as 1x1 conv, then bicubic: the same function).
    """

    def __init__(self, dim: int, dim_out: int | None = None) -> None:
        super().__init__()
        dim_out = dim_out or dim
        self.norm1 = LayerNorm2d(dim, eps=_NORM_EPS)
        self.conv_block = MbConvBlock(dim)
        self.expansion = nn.Conv2d(dim, dim_out, kernel_size=1, bias=False)
        self.upsample = BicubicUpsampleX2(dim_out)
        self.norm2 = LayerNorm2d(dim_out, eps=_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_block(self.norm1(x))
        # The bias-free 1x1 conv commutes with the bicubic (linear, the same on every channel), so it runs first,
        # on a quarter of the pixels: the published function (the authors' order is up-sample, then conv) with a
        # quarter of the conv's work and, where it halves the channels, half the up-sampling's.
        return self.norm2(self.upsample(self.expansion(x)))


class DecoderStage(EncoderStage):
    """Decoder scale: skip fusion (concat + Linear 2C -> C) -> GC ViT blocks -> ``UpSize`` to ``upsample_to``.

    The deepest decoder stage has no skip (``skip_proj`` is None); the shallowest no ``UpSize`` (identity).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        feat_levels: int,
        *,
        with_skip: bool,
        upsample_to: int | None,
        mlp_ratio: float = 3.0,
        drop_path: Sequence[float] = (),
    ) -> None:
        super().__init__(dim, depth, num_heads, window_size, feat_levels, mlp_ratio=mlp_ratio, drop_path=drop_path)
        self.skip_proj = nn.Linear(2 * dim, dim) if with_skip else None
        self.upsample = UpSize(dim, upsample_to) if upsample_to else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_proj is not None:
            x = torch.cat([x.permute(0, 2, 3, 1), skip.permute(0, 2, 3, 1)], dim=-1)  # (N, H, W, 2C)
            x = self.skip_proj(x).permute(0, 3, 1, 2)  # (N, C, H, W)
        return self.upsample(self.forward_blocks(x))


class GlobalContextDecoder(nn.Module):
    """Mirrored GC ViT decoder, sized from the encoder's ``feature_info``; stages run deepest first.

    ``forward(features)`` takes the encoder's list and returns ``N x C0 x H x W`` (x4 past the shallowest scale).
    """

    def __init__(
        self,
        feature_info: Sequence[dict],
        *,
        img_size: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_sizes: Sequence[int],
        mlp_ratio: float,
        drop_path_rates: Sequence[Sequence[float]],
    ) -> None:
        super().__init__()
        dims = [info["num_chs"] for info in feature_info]
        last = len(dims) - 1
        self.stages = nn.ModuleList(
            DecoderStage(
                dims[i],
                depths[i],
                num_heads[i],
                window_sizes[i],
                _feat_levels(img_size // feature_info[i]["reduction"], window_sizes[i]),
                with_skip=i < last,
                upsample_to=dims[i - 1] if i > 0 else None,
                mlp_ratio=mlp_ratio,
                drop_path=drop_path_rates[i],
            )
            for i in range(last, -1, -1)
        )
        self.norm = LayerNorm2d(dims[0], eps=_NORM_EPS)
        self.final_up = nn.Sequential(UpSize(dims[0]), UpSize(dims[0]))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        skips = [None, *reversed(features[:-1])]
        x = features[-1]
        for stage, skip in zip(self.stages, skips):
            x = stage(x, skip)
        return self.final_up(self.norm(x))


def _feat_levels(feat_size: int, window_size: int) -> int:
    """FeatExtract reductions that bring a ``feat_size`` map to the window (timm's rule)."""
    levels = 0
    while feat_size // 2 >= window_size:
        feat_size //= 2
        levels += 1
    return levels


class GCtxUNet(nn.Module):
    """GCtx-UNet: GC ViT encoder, mirrored GC ViT decoder with UpSize blocks and linear skip fusion.

    Args:
        in_channels: image channels (1 for grayscale OCT, 3 for colour).
        num_classes: output logits K (background included).
        img_size: design resolution, used only to size the global-query FeatExtract chains (224 gives the
            published 3, 2, 0, 0 reductions); any input size runs.
        embed_dim: channels at 1/4 resolution; doubled per stage.
        depths: GC ViT blocks per encoder stage, shallow to deep; the decoder mirrors them (1, 2, 2, 2).
        num_heads: attention heads per stage.
        window_sizes: attention window per stage.
        mlp_ratio: MLP hidden width / channels.
        drop_path_rate: stochastic depth, linear from 0 over the encoder blocks; the decoder mirrors it.

    Shapes: ``N x in_channels x H x W`` -> ``N x num_classes x H x W`` for any H, W (padded to a multiple of
    the total stride, 32, inside; logits cropped back).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        img_size: int = 224,
        embed_dim: int = 64,
        depths: Sequence[int] = (2, 2, 2, 1),
        num_heads: Sequence[int] = (2, 4, 8, 16),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 3.0,
        drop_path_rate: float = 0.2,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        if not len(depths) == len(num_heads) == len(window_sizes) >= 2:
            raise ValueError(
                "depths, num_heads and window_sizes need the same length (>= 2 stages), "
                f"got {depths}, {num_heads}, {window_sizes}"
            )
        for i, heads in enumerate(num_heads):
            if (embed_dim * 2**i) % heads:
                raise ValueError(f"stage {i}: {embed_dim * 2**i} channels do not split into {heads} heads")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.size_multiple = 2 ** (len(depths) + 1)  # stem /4, then /2 per further stage
        dpr = [x.tolist() for x in torch.linspace(0, drop_path_rate, sum(depths)).split(list(depths))]
        common = dict(
            img_size=img_size,
            depths=depths,
            num_heads=num_heads,
            window_sizes=window_sizes,
            mlp_ratio=mlp_ratio,
            drop_path_rates=dpr,
        )
        self.encoder = GlobalContextEncoder(in_channels, embed_dim=embed_dim, **common)
        self.decoder = GlobalContextDecoder(self.encoder.feature_info, **common)
        self.head = nn.Conv2d(embed_dim, num_classes, kernel_size=1, bias=False)
        self.apply(_init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Relative position bias tables, kept out of weight decay (timm's convention)."""
        return {name for name, _ in self.named_parameters() if "relative_position_bias_table" in name}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = pad_to_multiple(x, self.size_multiple, mode="reflect")
        x = x.contiguous(memory_format=torch.channels_last)
        features = self.encoder(x)  # skips at 1/4, 1/8, 1/16 and the 1/32 output
        logits = self.head(self.decoder(features))  # (N, K, H, W)
        return crop_to(logits, size)


def _init_weights(module: nn.Module) -> None:
    """Linear: trunc-normal(0.02), zero bias; LayerNorm: 1 / 0 (convolutions keep torch's default)."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# NVlabs GC ViT names -> timm names, applied in order. Their MBConv (``conv.0`` depthwise, ``conv.2`` SE with
# Linear layers, ``conv.3`` pointwise) is timm's MbConvBlock; timm's ReduceSize of stage i opens stage i+1.
_NVLABS_RENAMES = (
    (r"\.conv\.0\.", ".conv_dw."),
    (r"\.conv\.2\.fc\.0\.", ".se.fc1."),
    (r"\.conv\.2\.fc\.2\.", ".se.fc2."),
    (r"\.conv\.3\.", ".conv_pw."),
    (r"^(patch_embed\.conv_down|levels\.\d+\.downsample)\.(conv_dw|se|conv_pw)\.", r"\1.conv_block.\2."),
    (r"^patch_embed\.proj\.", "stem.conv1."),
    (r"^patch_embed\.conv_down\.", "stem.down."),
    (
        r"^levels\.(\d+)\.(?:q_global_gen\.)?to_q_global\.(\d+)\.",
        lambda m: f"stages.{m[1]}.global_block.blocks.conv{int(m[2]) + 1}.",
    ),
    (r"^levels\.(\d+)\.downsample\.", lambda m: f"stages.{int(m[1]) + 1}.downsample."),
    (r"^levels\.(\d+)\.", r"stages.\1."),
    (r"\.attn\.relative_position_bias_table$", ".attn.rel_pos.relative_position_bias_table"),
    (r"\.gamma([12])$", r".ls\1.gamma"),
)


def _from_nvlabs(state: dict[str, torch.Tensor], num_stages: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key.endswith("relative_position_index"):
            continue  # a buffer timm rebuilds
        key = re.sub(r"^norm\.", f"stages.{num_stages - 1}.norm.", key)
        for pattern, repl in _NVLABS_RENAMES:
            key = re.sub(pattern, repl, key)
        if ".se.fc" in key and value.ndim == 2:
            value = value[:, :, None, None]  # NVlabs SE uses Linear, timm 1x1 convs
        out[key] = value
    return out


def encoder_state(model: GCtxUNet, state: dict, source: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """A GC ViT state dict in the encoder's names: unwrapped, NVlabs keys renamed, head dropped, stem adapted.

    Raises:
        ValueError: a tensor's shape does not match the encoder's (another GC ViT variant).
    """
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    state = {k.removeprefix("module."): v for k, v in state.items()}
    num_stages = len(model.encoder.stages)
    if any(k.startswith(("patch_embed.", "levels.")) for k in state):
        state = _from_nvlabs(state, num_stages)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    if "stem.conv1.weight" in state:
        state["stem.conv1.weight"] = adapt_input_conv(model.in_channels, state["stem.conv1.weight"])
    own = model.encoder.state_dict()
    wrong = [
        f"{k}: {tuple(v.shape)}, encoder has {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if wrong:
        raise ValueError(f"{source}: {len(wrong)} tensors do not fit the encoder, e.g. {wrong[0]}; another variant?")
    return state


def mirror_into_decoder(model: GCtxUNet, state: dict[str, torch.Tensor]) -> list[str]:
    """Copy each encoder stage's blocks and global-query generator (from ``state``, encoder names) into the
    decoder stage of the same scale, as the authors' recipe initialises the decoder; returns the decoder keys
    set. Decoder-only parts (skip fusion, UpSize, the head) keep their initialisation."""
    num_stages = len(model.encoder.stages)
    own, dec = model.encoder.state_dict(), model.decoder.state_dict()
    mirrored = {}
    for key, value in state.items():
        m = re.match(r"stages\.(\d+)\.((?:blocks|global_block)\..*)$", key)
        target = f"stages.{num_stages - 1 - int(m[1])}.{m[2]}" if m else None
        if m and key in own and target in dec and dec[target].shape == value.shape:
            mirrored[target] = value
    model.decoder.load_state_dict(mirrored, strict=False)
    return sorted(mirrored)


@register_model
def gctx_unet(in_channels: int, num_classes: int, **options) -> GCtxUNet:
    """GCtx-UNet (Alrfou & Zhao 2024): GC ViT-xxtiny encoder + mirrored GC ViT decoder, 12.3 M params."""
    return GCtxUNet(in_channels, num_classes, **options)
