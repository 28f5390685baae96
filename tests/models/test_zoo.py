"""Model zoo: UNet++, UNet3+, GCT-UNet, and every registered model at tiny size.

Run with ``-s`` to see the parameter counts at default widths.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gctxseg.core.runtime import cxx_compiler
from gctxseg.models import create_model, list_models
from gctxseg.models.complexity import count_parameters
from gctxseg.models.gct_unet import GCTUNet, GlobalContextTransform
from gctxseg.models.unet3_plus import UNet3Plus
from gctxseg.models.unet_plus_plus import UNetPlusPlus

torch.set_num_threads(min(2, torch.get_num_threads()))

# small variants of the architectures tested here: (name, options, deep-supervision outputs or 0)
SMALL = {
    "unet_plus_plus": ({"width": 0.25}, 4),
    "unet3_plus": ({"width": 0.125, "cat_channels": 8}, 5),
    "gct_unet": ({"base_width": 8}, 0),
    "nnunet": ({"base_width": 4, "patch_size": (64, 64)}, 4),  # 5 stages: the full-size output and 3 heads
}
# options that make any registered model tiny; models not listed run with their defaults
TINY = {
    "unet": {"base_width": 8},
    "unet_plus_plus": {"width": 0.25},
    "unet3_plus": {"width": 0.125, "cat_channels": 8},
    "gct_unet": {"base_width": 8},
    "nnunet": {"base_width": 4},
}


def _as_tuple(out: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def _ds_loss(out: torch.Tensor | tuple[torch.Tensor, ...], target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the deep-supervision tuple, as the engine does."""
    outs = _as_tuple(out)
    return sum(F.cross_entropy(o, target) for o in outs) / len(outs)


def _synthetic_batch(
    n: int, in_channels: int, size: tuple[int, int], num_classes: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose intensity encodes a disc (class 1) and a box (class 2), plus noise."""
    g = torch.Generator().manual_seed(0)
    h, w = size
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    target = torch.zeros(n, h, w, dtype=torch.long)
    for i in range(n):
        cy, cx = h // 3 + 3 * i, w // 3 + 2 * i
        target[i][(yy - cy) ** 2 + (xx - cx) ** 2 < (min(h, w) // 5) ** 2] = 1
        if num_classes > 2:
            target[i, h // 2 + 2 : h - 4, w // 2 + 2 : w - 4] = 2
    image = target[:, None].float().repeat(1, in_channels, 1, 1) / 2
    image = image + 0.3 * torch.randn(n, in_channels, h, w, generator=g)
    return image, target


# --- the three architectures ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 64), (50, 70)])
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_backward(name: str, in_channels: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    options, n_ds = SMALL[name]
    model = create_model(name, in_channels, 3, **options)
    x, target = _synthetic_batch(2, in_channels, size)
    model.train()
    out = model(x)
    outs = _as_tuple(out)
    assert len(outs) == max(n_ds, 1)
    assert all(o.shape == (2, 3, *size) for o in outs)
    _ds_loss(out, target).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 3, *size)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_deep_supervision_only_in_training(name: str) -> None:
    options, n_ds = SMALL[name]
    x = torch.randn(1, 1, 40, 56)
    model = create_model(name, 1, 2, **options).train()
    out = model(x)
    if n_ds:
        assert isinstance(out, tuple) and len(out) == n_ds
        assert all(o.shape == (1, 2, 40, 56) for o in out)
        plain = create_model(name, 1, 2, deep_supervision=False, **options).train()
        assert isinstance(plain(x), torch.Tensor)
    else:
        assert isinstance(out, torch.Tensor)
    assert isinstance(model.eval()(x), torch.Tensor)


def test_aliases_resolve() -> None:
    for alias in ("unet++", "unetpp", "unet_plus_plus"):
        assert isinstance(create_model(alias, 1, 3, width=0.125), UNetPlusPlus)
    for alias in ("unet3+", "unet3p", "unet3_plus"):
        assert isinstance(create_model(alias, 1, 3, width=0.125, cat_channels=4), UNet3Plus)
    assert isinstance(create_model("gct_unet", 1, 3, base_width=4), GCTUNet)
    assert {"unet_plus_plus", "unet3_plus", "gct_unet", "unet"} <= set(list_models())
    assert {"unet++", "unetpp", "unet3+", "unet3p"} <= set(list_models(with_aliases=True))


@pytest.mark.parametrize(("typo", "suggestion"), [("gct-unet", "gct_unet"), ("unet3_pluss", "unet3_plus")])
def test_unknown_model_suggests(typo: str, suggestion: str) -> None:
    with pytest.raises(ValueError, match=f"unknown model '{typo}'; did you mean '{suggestion}'"):
        create_model(typo, 1, 3)


@pytest.mark.parametrize(
    ("name", "options", "got"),
    [
        ("unet++", {"ds_head": "best"}, "'best'"),
        ("unet++", {"width": 0.0}, "0.0"),
        ("unet++", {"ds_head": "mean", "deep_supervision": False}, "deep_supervision"),
        ("unet3+", {"cat_channels": 0}, "got 0"),
        ("unet3+", {"cgm_dropout_rate": 1.5}, "1.5"),
        ("gct_unet", {"gct_kernel_size": 4}, "got 4"),
        ("gct_unet", {"base_width": 0}, "got 0"),
    ],
)
def test_bad_options_raise(name: str, options: dict, got: str) -> None:
    with pytest.raises(ValueError, match=got):
        create_model(name, 1, 3, **options)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_adam_steps_lower_loss(name: str) -> None:
    torch.manual_seed(0)
    options, _ = SMALL[name]
    model = create_model(name, 1, 3, **options).train()
    x, target = _synthetic_batch(2, 1, (40, 56))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        optimizer.zero_grad(set_to_none=True)
        loss = _ds_loss(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_parameter_counts_at_default_widths() -> None:
    """Default widths; reference counts: UNet++ ~9.0M (authors' code 9.16M), UNet3+ 26.97M (3 in, 1 class)."""
    cases = [
        ("unet_plus_plus", 1, 1, (9.0e6, 9.3e6)),
        ("unet3_plus", 3, 1, (26.9e6, 27.1e6)),
        ("gct_unet", 1, 3, (20e6, 22.5e6)),
    ]
    for name, in_channels, num_classes, (low, high) in cases:
        model = create_model(name, in_channels, num_classes).eval()
        with torch.no_grad():
            logits = model(torch.randn(1, in_channels, 32, 32))
        assert logits.shape == (1, num_classes, 32, 32)
        n = count_parameters(model)
        print(f"\n{name} ({in_channels} in, {num_classes} out): {n:,} parameters")
        assert low < n < high


def test_global_context_transform_matches_formula() -> None:
    """Y = X * sigmoid(W_c GAP(X) + b_c) * sigmoid(conv7x7(W_s X)) + X on a hand-built tensor."""
    n, c, h, w, k = 2, 3, 4, 5, 7
    x = torch.linspace(-1.5, 2.0, n * c * h * w).reshape(n, c, h, w)
    x[1] = x[1].flip(-1) * 0.5
    w_c = torch.tensor([[0.5, -1.0, 0.25], [0.0, 2.0, -0.5], [1.0, 1.0, 1.0]])
    b_c = torch.tensor([0.1, -0.2, 0.3])
    w_s = torch.tensor([1.0, -0.5, 2.0])
    kernel = torch.linspace(-0.3, 0.5, k * k).reshape(k, k)
    b_s = 0.05

    gct = GlobalContextTransform(c, kernel_size=k)
    with torch.no_grad():
        gct.channel_fc.weight.copy_(w_c)
        gct.channel_fc.bias.copy_(b_c)
        gct.spatial_proj.weight.copy_(w_s.view(1, c, 1, 1))
        gct.spatial_conv.weight.copy_(kernel.view(1, 1, k, k))
        gct.spatial_conv.bias.fill_(b_s)
        got = gct(x)

    # expected, element by element with plain loops (no conv or linear layers)
    expected = torch.empty_like(x)
    r = k // 2
    for b in range(n):
        z = [x[b, ch].sum().item() / (h * w) for ch in range(c)]
        a_c = [
            torch.sigmoid(torch.tensor(sum(w_c[o, i].item() * z[i] for i in range(c)) + b_c[o].item()))
            for o in range(c)
        ]
        s = [[sum(w_s[ch].item() * x[b, ch, i, j].item() for ch in range(c)) for j in range(w)] for i in range(h)]
        for i in range(h):
            for j in range(w):
                acc = b_s
                for di in range(-r, r + 1):
                    for dj in range(-r, r + 1):
                        if 0 <= i + di < h and 0 <= j + dj < w:  # zero padding
                            acc += kernel[di + r, dj + r].item() * s[i + di][j + dj]
                a_s = torch.sigmoid(torch.tensor(acc))
                for ch in range(c):
                    expected[b, ch, i, j] = x[b, ch, i, j] * a_c[ch] * a_s + x[b, ch, i, j]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_gct_unet_variants() -> None:
    x, target = _synthetic_batch(2, 1, (40, 56))
    for options in ({"attention_gate": True}, {"bilinear": False}, {"attention_gate": True, "bilinear": False}):
        model = create_model("gct_unet", 1, 3, base_width=4, **options).train()
        F.cross_entropy(model(x), target).backward()
        assert model.eval()(x).shape == (2, 3, 40, 56)


def test_unet_plus_plus_mean_head() -> None:
    torch.manual_seed(0)
    model = create_model("unet++", 1, 3, width=0.25, ds_head="mean").eval()
    x = torch.randn(1, 1, 40, 56)
    with torch.no_grad():
        heads = model.forward_heads(x)
        assert len(heads) == 4
        torch.testing.assert_close(model(x), torch.stack(heads).mean(0))
        model.ds_head = "final"
        torch.testing.assert_close(model(x), heads[0])


@pytest.mark.parametrize("num_classes", [1, 3])
def test_unet3_plus_classification_guided_module(num_classes: int) -> None:
    torch.manual_seed(0)
    model = create_model("unet3+", 1, num_classes, width=0.125, cat_channels=8, cgm=True)
    x, target = _synthetic_batch(2, 1, (40, 56))
    out = model.train()(x)
    assert len(out) == 5 and model.last_cls_logit.shape == (2, 1)
    cls_target = UNet3Plus.classification_target(target)
    assert cls_target.tolist() == [[1.0], [1.0]]
    F.binary_cross_entropy_with_logits(model.last_cls_logit, cls_target).backward()

    model.eval()
    conv = model.cls_head[1]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(5.0)  # "has foreground": logits untouched
        kept = model(x)
        cls_head, model.cls_head = model.cls_head, None
        assert torch.equal(kept, model(x))
        model.cls_head = cls_head
        conv.bias.fill_(-5.0)  # "no foreground": every pixel background
        suppressed = model(x)
    assert suppressed.shape == kept.shape and torch.isfinite(suppressed).all()
    if num_classes == 1:
        assert (suppressed < 0).all()
    else:
        assert (suppressed.argmax(1) == 0).all()


# --- every registered model -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_models())
def test_registered_model_tiny(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 1, 3, **TINY.get(name, {})).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        first, second = model(x), model(x)
    assert isinstance(first, torch.Tensor) and first.shape == (2, 3, 64, 64)
    assert torch.equal(first, second)


# --- every registered model at the sizes (narrow widths keep it cheap; sizes are what matter) ----------
NARROW = {**TINY, "gctx_unet": {"embed_dim": 16, "drop_path_rate": 0.0}}


@pytest.mark.parametrize("size", [(224, 224), (200, 300)])
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_backward_at_224_and_200x300(name: str, in_channels: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = create_model(name, in_channels, 3, **NARROW.get(name, {})).train()
    x, target = _synthetic_batch(1, in_channels, size)
    out = model(x)
    assert all(o.shape == (1, 3, *size) for o in _as_tuple(out))
    _ds_loss(out, target).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (1, 3, *size)


@pytest.mark.slow
def test_engine_trains_the_unet3_plus_classification_head(phantom_dir, tmp_path, monkeypatch) -> None:
    from conftest import tiny_config

    from gctxseg.training import train

    bce_targets = []
    real_bce = F.binary_cross_entropy_with_logits

    def recording_bce(logit, target, *args, **kwargs):
        bce_targets.append(target.detach().clone())
        return real_bce(logit, target, *args, **kwargs)

    monkeypatch.setattr(F, "binary_cross_entropy_with_logits", recording_bce)
    options = {"width": 0.125, "cat_channels": 8, "cgm": True}
    train(tiny_config(phantom_dir, tmp_path, model="unet3_plus", model_options=options, epochs=1))
    assert len(bce_targets) == 3  # one BCE term per training step (14 images, batch 4)
    assert all(t.shape == (4, 1) and set(t.unique().tolist()) <= {0.0, 1.0} for t in bce_targets)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (7, 9), (16, 16)])
def test_bicubic_upsample_x2_is_interpolate(size: tuple[int, int]) -> None:
    from gctxseg.models.layers import bicubic_upsample_x2

    x = torch.randn(2, 3, *size)
    expected = F.interpolate(x, scale_factor=2.0, mode="bicubic", align_corners=False)
    assert torch.allclose(bicubic_upsample_x2(x), expected, atol=1e-5)
    x_bf16 = x.bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bicubic_upsample_x2(x_bf16)
    assert out.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=torch.channels_last) or min(size) == 1  # 1x1: both layouts alike
    assert torch.allclose(out.float(), F.interpolate(x_bf16.float(), scale_factor=2.0, mode="bicubic"), atol=0.05)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (7, 9)])
def test_replicate_pad_by_concat_is_f_pad(size: tuple[int, int]) -> None:
    from gctxseg.models.layers import replicate_pad_by_concat

    x = torch.randn(2, 3, *size).contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(2, 3, size[0] + 4, size[1] + 4)
    expected = F.pad(x, (2, 2, 2, 2), mode="replicate")
    (expected_grad,) = torch.autograd.grad(expected, x, grad)
    out = replicate_pad_by_concat(x, 2)
    (out_grad,) = torch.autograd.grad(out, x, grad)
    assert torch.equal(out, expected) and torch.allclose(out_grad, expected_grad, atol=1e-6)


@pytest.mark.skipif(cxx_compiler() is None, reason="torch.compile needs a C++ compiler on CPU")
def test_compiled_bicubic_upsample_x2_trains_on_channels_last() -> None:
    """The compiled form (inductor: concatenated-edge pad) gives eager's values and gradients."""
    from gctxseg.models.layers import bicubic_upsample_x2

    x = torch.randn(2, 4, 6, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(2, 4, 12, 10)
    eager = bicubic_upsample_x2(x)
    (eager_grad,) = torch.autograd.grad(eager, x, grad)
    compiled = torch.compile(bicubic_upsample_x2, dynamic=False, fullgraph=True)(x)
    (compiled_grad,) = torch.autograd.grad(compiled, x, grad)
    assert torch.allclose(compiled, eager, atol=1e-5) and torch.allclose(compiled_grad, eager_grad, atol=1e-5)
