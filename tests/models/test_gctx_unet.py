"""GCtx-UNet: published size, any input size, timm-equivalent encoder, checkpoint loading, training."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from timm.models.gcvit import GlobalContextVit

from gctxseg.models import create_model
from gctxseg.models.complexity import count_macs, count_parameters
from gctxseg.models.gctx_unet import GCtxUNet, WindowAttention
from gctxseg.models.pretrained import load_pretrained

PUBLISHED_PARAMS = 12.34e6
PUBLISHED_MACS = 3.02e9


def _timm_gcvit(depths=(2, 2, 2, 1), num_classes: int = 0) -> GlobalContextVit:
    """timm GC ViT with the xxtiny widths; depths (2, 2, 6, 2) is ImageNet's gcvit_xxtiny."""
    return GlobalContextVit(
        img_size=224,
        embed_dim=64,
        depths=depths,
        num_heads=(2, 4, 8, 16),
        window_ratio=(32, 32, 16, 32),
        mlp_ratio=3.0,
        num_classes=num_classes,
    )


def _dice_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prob = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    inter = (prob * onehot).sum((0, 2, 3))
    dice = (2 * inter + 1e-5) / (prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1e-5)
    return F.cross_entropy(logits, target) + 1 - dice.mean()


def _upsize_in_published_order(block, x):
    """The paper's UpSize: x2 bicubic, then the 1x1 conv (ours convolves first, on a quarter of the pixels)."""
    y = block.conv_block(block.norm1(x))
    return block.norm2(block.expansion(F.interpolate(y, scale_factor=2.0, mode="bicubic", align_corners=False)))


def test_published_size_at_224(monkeypatch):
    from gctxseg.models.gctx_unet import UpSize

    model = GCtxUNet(3, 3)
    params = count_parameters(model)
    macs = count_macs(model, 3, (224, 224))
    with monkeypatch.context() as patch:  # the published order (its interpolation is not counted, as published)
        patch.setattr(UpSize, "forward", _upsize_in_published_order)
        published_order_macs = count_macs(model, 3, (224, 224))
    print(
        f"\nGCtx-UNet 224x224, 3 in, 3 classes: {params / 1e6:.3f} M params (published 12.34), "
        f"{macs / 1e9:.3f} G multiply-adds ({published_order_macs / 1e9:.3f} in the published order, published 3.02)"
    )
    assert abs(params / PUBLISHED_PARAMS - 1) < 0.02
    assert abs(published_order_macs / PUBLISHED_MACS - 1) < 0.02
    assert macs < 0.95 * published_order_macs  # the 1x1 convs run before the up-sampling
    assert count_parameters(model.encoder) == count_parameters(_timm_gcvit())  # 6,589,324


def test_upsize_is_the_published_block():
    """UpSize with our transposed-conv bicubic x2 == the paper's block with ``F.interpolate``, gradients included."""
    from gctxseg.models.gctx_unet import UpSize

    torch.manual_seed(0)
    block = UpSize(16, 8).eval()
    x = torch.randn(2, 16, 7, 9, requires_grad=True)
    ours = block(x)
    published = _upsize_in_published_order(block, x)
    assert ours.shape == (2, 8, 14, 18)
    assert torch.allclose(ours, published, atol=1e-5)
    g_ours, g_pub = (torch.autograd.grad(out.square().sum(), x)[0] for out in (ours, published))
    assert torch.allclose(g_ours, g_pub, atol=1e-4)


def test_encoder_is_timm_gcvit_at_224():
    model, ref = GCtxUNet(3, 3).eval(), _timm_gcvit().eval()
    model.encoder.load_state_dict(ref.state_dict())  # same keys, strict
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model.encoder(x)[-1], ref.forward_features(x), atol=1e-5)


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", [(64, 64), (200, 300)])
def test_forward_backward_any_size(in_channels, size):
    model = create_model("gctx_unet", in_channels=in_channels, num_classes=4)
    x = torch.randn(2, in_channels, *size)
    logits = model(x)
    assert logits.shape == (2, 4, *size)
    logits.float().square().mean().backward()
    no_grad = {n for n, p in model.named_parameters() if p.grad is None}
    # only the depth-1 stages' global-query generators are idle (as in the published network)
    assert no_grad and all(re.match(r"(encoder\.stages\.3|decoder\.stages\.0)\.global_block\.", n) for n in no_grad)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_large_oct_bscan_forward():
    model = GCtxUNet(1, 3).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 1, 496, 512))
    assert logits.shape == (1, 3, 496, 512) and torch.isfinite(logits).all()


def test_eval_is_deterministic():
    model = GCtxUNet(1, 3).eval()
    x = torch.randn(2, 1, 96, 160)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_fused_attention_matches_matmul(monkeypatch):
    model = GCtxUNet(1, 3).eval()
    x = torch.randn(1, 1, 200, 300)  # pads windows (masked keys) and clamps none; 64x64 below clamps
    y = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        ref = model(x), model(y)
        monkeypatch.setattr(WindowAttention, "fused_attn", True)
        fused = model(x), model(y)
    for a, b in zip(ref, fused):
        assert torch.allclose(a, b, atol=1e-4)


def _windows_first(attn: WindowAttention, x: torch.Tensor, q_global: torch.Tensor | None) -> torch.Tensor:
    """The attention in timm's order: the normed map zero-padded and cut into windows, ``qkv`` on the windows,
    padded keys masked, heads merged, ``proj``, windows put back and cropped."""
    b, h, w, c = x.shape
    wh, ww = min(attn.window_size[0], h), min(attn.window_size[1], w)
    pad_h, pad_w = (-h) % wh, (-w) % ww
    xp = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    rows, cols, n, heads, d = (h + pad_h) // wh, (w + pad_w) // ww, wh * ww, attn.num_heads, attn.head_dim
    win = xp.view(b, rows, wh, cols, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, n, c)
    if q_global is None:
        q, k, v = attn.qkv(win).view(-1, n, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
    else:
        k, v = attn.qkv(win).view(-1, n, 2, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
        q = q_global.reshape(b, 1, n, heads, d).transpose(2, 3).expand(-1, rows * cols, -1, -1, -1)
        q = q.reshape(-1, heads, n, d)
    pad = F.pad(torch.zeros(1, h, w, 1), (0, 0, 0, pad_w, 0, pad_h), value=1.0).bool()
    pad = pad.view(1, rows, wh, cols, ww).permute(0, 1, 3, 2, 4).reshape(rows * cols, 1, 1, n).repeat(b, 1, 1, 1)
    bias = attn.relative_position_bias((wh, ww)).unsqueeze(0).masked_fill(pad, float("-inf"))
    out = ((q * attn.scale) @ k.transpose(-2, -1) + bias).softmax(-1) @ v
    out = attn.proj(out.transpose(1, 2).reshape(-1, n, c))
    out = out.view(b, rows, cols, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h + pad_h, w + pad_w, c)
    return out[:, :h, :w]


@pytest.mark.parametrize("size", [(14, 14), (17, 23), (5, 9)])  # windows that fit, padded, clamped
def test_attention_on_the_map_is_timms_windows_first(size):
    torch.manual_seed(0)
    stage = GCtxUNet(1, 3).encoder.stages[0].eval()  # 64 channels, 2 heads, window 7
    for block in stage.blocks:  # a local block, then a global-query one
        x = torch.randn(2, *size, 64)
        window = (min(7, size[0]), min(7, size[1]))
        q_global = torch.randn(2, *window, 64) if block.attn.use_global else None
        with torch.no_grad():
            ours, ref = block.attn(x, q_global), _windows_first(block.attn, x, q_global)
        assert ours.shape == ref.shape and torch.allclose(ours, ref, atol=1e-5)


def test_cpu_attention_is_fused_unless_the_bias_needs_a_gradient(monkeypatch):
    calls, sdpa = [], F.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting_sdpa)
    model = GCtxUNet(1, 3)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        model.eval()(x)
    assert calls and not any(calls)  # every attention of the eval forward went through SDPA
    calls.clear()
    model.train()(x).sum().backward()  # on CPU SDPA has no attn_mask gradient: the explicit path runs
    assert calls == []
    assert model.encoder.stages[0].blocks[0].attn.rel_pos.relative_position_bias_table.grad.abs().sum() > 0


def test_load_timm_checkpoint_one_channel(tmp_path):
    ref = _timm_gcvit(depths=(2, 2, 6, 2), num_classes=1000)  # ImageNet gcvit_xxtiny layout, with a head
    path = tmp_path / "gcvit_xxtiny.pth"
    torch.save({"state_dict": ref.state_dict()}, path)
    model = GCtxUNet(1, 3)
    loaded = load_pretrained(model, path)
    missing, unexpected = loaded.encoder_missing, loaded.unused
    assert missing == []
    # GCtx-UNet uses depths 2-2-2-1: the extra ImageNet blocks are reported, the classifier head dropped
    assert unexpected and all(re.match(r"stages\.(2\.blocks\.[2-5]|3\.blocks\.1)\.", k) for k in unexpected)
    enc = model.encoder.state_dict()
    assert torch.allclose(enc["stem.conv1.weight"], ref.stem.conv1.weight.sum(1, keepdim=True))
    for key, value in ref.state_dict().items():
        if key in enc and key != "stem.conv1.weight":
            assert torch.equal(enc[key], value), key


def _to_nvlabs(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm GC ViT names -> the NVlabs release's names (patch_embed, levels.i, q_global_gen, SE Linears)."""
    mbconv = (
        (".conv_dw.", ".conv.0."),
        (".se.fc1.", ".conv.2.fc.0."),
        (".se.fc2.", ".conv.2.fc.2."),
        (".conv_pw.", ".conv.3."),
    )
    out = {}
    for key, value in state.items():
        if ".se.fc" in key:
            value = value.flatten(1)  # NVlabs SE layers are Linear
        key = key.replace(".conv_block.", ".")
        key = re.sub(
            r"^stages\.(\d+)\.global_block\.blocks\.conv(\d+)\.",
            lambda m: f"levels.{m[1]}.q_global_gen.to_q_global.{int(m[2]) - 1}.",
            key,
        )
        for old, new in mbconv:
            key = key.replace(old, new)
        key = key.replace("stem.conv1.", "patch_embed.proj.").replace("stem.down.", "patch_embed.conv_down.")
        key = re.sub(r"^stages\.3\.norm\.", "norm.", key)
        key = re.sub(r"^stages\.(\d+)\.downsample\.", lambda m: f"levels.{int(m[1]) - 1}.downsample.", key)
        key = re.sub(r"^stages\.", "levels.", key).replace(".attn.rel_pos.", ".attn.")
        out[key] = value
    return out


def test_load_nvlabs_checkpoint_and_mirror_decoder(tmp_path):
    ref = _timm_gcvit()
    nv = _to_nvlabs(ref.state_dict())
    assert any(k.startswith("levels.0.q_global_gen.to_q_global.2.conv.2.fc.0") for k in nv)
    path = tmp_path / "gcvit_nvlabs.pth"
    torch.save({"model": nv}, path)
    model = GCtxUNet(3, 2)
    loaded = load_pretrained(model, path, decoder_init="mirror")
    missing, unexpected = loaded.encoder_missing, loaded.unused
    assert (missing, unexpected) == ([], [])
    enc, dec = model.encoder.state_dict(), model.decoder.state_dict()
    for key, value in ref.state_dict().items():
        assert torch.equal(enc[key], value), key
    # the decoder stage of each scale starts from the encoder stage of that scale (deepest first)
    for i in range(4):
        for key in [k for k in enc if k.startswith(f"stages.{i}.blocks.") or k.startswith(f"stages.{i}.global_block.")]:
            assert torch.equal(dec[key.replace(f"stages.{i}.", f"stages.{3 - i}.", 1)], enc[key]), key


@pytest.mark.slow
def test_adamw_steps_lower_dice_ce():
    torch.manual_seed(0)
    model = GCtxUNet(1, 3, drop_path_rate=0.0)
    x = torch.randn(2, 1, 64, 64)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    target = ((yy - 32) ** 2 + (xx - 32) ** 2 < 200).long() + (xx > 52).long()  # disc + stripe, 3 classes
    target = target.expand(2, -1, -1)
    x = x + target.unsqueeze(1).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    losses = []
    for _ in range(8):
        loss = _dice_ce(model(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(f"\nDice+CE over 8 AdamW steps: {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert losses[-1] < 0.8 * losses[0]


def test_bad_options_raise():
    with pytest.raises(ValueError, match="heads"):
        GCtxUNet(1, 2, embed_dim=48, num_heads=(5, 4, 8, 16))
    with pytest.raises(ValueError, match="same length"):
        GCtxUNet(1, 2, depths=(2, 2, 2))
