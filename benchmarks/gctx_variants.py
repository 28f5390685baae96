"""gctx_unet's training step against variants of it, and its full-resolution tail part by part.

Each variant is the same network changed in one place (same weights; the eval fp32 logits difference is printed).
The current model and the variant run in one process, whole training steps alternated (batch 8, 224x224, 1
channel, ``--amp auto``, the engine's AdamW and allocator setting), and the median ratio is printed with each
round's. ``--tail`` prints, from module hooks in ordinary steps, the forward and backward milliseconds of the last
UpSize's parts and the head (no ``torch.profiler``: it overstates operators on large tensors). Asserts nothing.
Example::

    python benchmarks/gctx_variants.py --variant fp32-tail --rounds 20
    python benchmarks/gctx_variants.py --tail
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import types

import torch
import torch.nn.functional as F
from gctx_profile import hook_timers
from timing import amp_context
from timm.models.gcvit import window_partition, window_reverse

from gctxseg.core.runtime import compile_model, keep_freed_memory
from gctxseg.losses import DiceCELoss
from gctxseg.models import create_model
from gctxseg.models.gctx_unet import GlobalContextBlock, _clamp_window
from gctxseg.training.loop import adamw


def _linear_head(model: torch.nn.Module) -> torch.nn.Module:
    """The 1x1 head as ``F.linear`` on the channels-last view."""
    def forward(self, x):
        return F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1)).permute(0, 3, 1, 2)

    model.head.forward = types.MethodType(forward, model.head)
    return model


def _fp32_tail(model: torch.nn.Module) -> torch.nn.Module:
    """The last bicubic's output left in fp32, so its LayerNorm and the head run in fp32 (no casts at 224)."""
    def upsample(self, x):
        with torch.autocast(x.device.type, enabled=False):
            x = F.pad(x.float(), (2, 2, 2, 2), mode="replicate")
            return F.conv_transpose2d(x, self.weight, stride=2, padding=7, groups=x.shape[1])

    def head(self, x):
        with torch.autocast(x.device.type, enabled=False):
            return F.conv2d(x.float(), self.weight)

    last = model.decoder.final_up[-1].upsample
    last.forward = types.MethodType(upsample, last)
    model.head.forward = types.MethodType(head, model.head)
    return model


def _timm_windows(model: torch.nn.Module) -> torch.nn.Module:
    """Attention as before 2026-12-07: windows cut from the normed map first (timm's ``window_partition``), then
    ``qkv`` on them and q, k, v split by views; heads merged, ``proj``, windows put back; the bias gathered by
    indexing (no padding: the 224x224 maps are multiples of their windows)."""
    def window_attn(self, x, q_global=None):
        b, h, w, c = x.shape
        window = _clamp_window(self.window_size, h, w)
        x_win = window_partition(x, window).view(-1, window[0] * window[1], c)
        attn, (b_win, n, _) = self.attn, x_win.shape
        heads, d = attn.num_heads, attn.head_dim
        if attn.use_global and q_global is not None:
            k, v = attn.qkv(x_win).view(b_win, n, 2, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
            q = q_global.reshape(b, 1, n, heads, d).transpose(2, 3)
            q = q.expand(-1, b_win // b, -1, -1, -1).reshape(b_win, heads, n, d)
        else:
            q, k, v = attn.qkv(x_win).view(b_win, n, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
        table, index = attn.rel_pos.relative_position_bias_table, attn.rel_pos.relative_position_index
        bias = table[index.view(-1)].view(n, n, -1).permute(2, 0, 1).unsqueeze(0).to(q.dtype)
        out = attn._attend(q, k, v, bias).transpose(1, 2).reshape(b_win, n, c)
        return window_reverse(attn.proj_drop(attn.proj(out)), window, (h, w))

    for module in model.modules():
        if isinstance(module, GlobalContextBlock):
            module._window_attn = types.MethodType(window_attn, module)
    return model


def _compiled_blocks(model: torch.nn.Module) -> torch.nn.Module:
    """Each GC ViT block compiled on its own (``nn.Module.compile``); the rest of the step eager."""
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = 256  # one graph per block and shape
    for module in model.modules():
        if isinstance(module, GlobalContextBlock):
            module.compile(dynamic=False)
    return model


VARIANTS = {
    "timm-windows": _timm_windows,
    "linear-head": _linear_head,
    "fp32-tail": _fp32_tail,
    "compile": lambda model: compile_model(model, torch.device("cpu")),
    "compile-blocks": _compiled_blocks,
}


def _step(model, x, y, ctx):
    optimizer, loss_fn = adamw(model, 1e-4, 1e-4, torch.device("cpu")), DiceCELoss()

    def step() -> float:
        start = time.perf_counter()
        with ctx():
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def compare(variant: str, rounds: int, x, y, ctx) -> None:
    ours = create_model("gctx_unet", 1, 3).to(memory_format=torch.channels_last)
    other = VARIANTS[variant](copy.deepcopy(ours))
    with torch.no_grad():
        diff = (ours.eval()(x) - other.eval()(x)).abs().max().item()
    print(f"variant {variant}: eval fp32 max |logit diff| {diff:.1e}")
    steps = [_step(m.train(), x, y, ctx) for m in (ours, other)]
    for _ in range(2):
        for step in steps:
            step()
    times = [[], []]
    for _ in range(rounds):
        for spent, step in zip(times, steps):
            spent.append(step())
    ratios = " ".join(f"{a / b:.2f}" for a, b in zip(*times))
    print(f"current {1000 * statistics.median(times[0]):.0f} ms, {variant} {1000 * statistics.median(times[1]):.0f}"
          f" ms per step: {statistics.median(times[0]) / statistics.median(times[1]):.3f}x (rounds: {ratios})")


def tail(steps: int, x, y, ctx) -> None:
    model = create_model("gctx_unet", 1, 3).to(memory_format=torch.channels_last).train()
    last = model.decoder.final_up[-1]
    parts = {"MBConv": last.conv_block, "bicubic x2": last.upsample, "LayerNorm after": last.norm2,
             "1x1 conv": last.expansion, "LayerNorm before": last.norm1, "head": model.head}
    spent, _ = hook_timers({name: [module] for name, module in parts.items()})
    step = _step(model, x.requires_grad_(), y, ctx)  # an input gradient: the first block's hooks fire too
    for _ in range(2):
        step()
    spent.clear()
    total = sum(step() for _ in range(steps)) / steps
    print(f"{1000 * total:.0f} ms per step; the last UpSize's parts and the head (ms per step):\n"
          "| part | forward ms | backward ms |\n|---|---:|---:|")
    for name in parts:
        print(f"| {name} | {1000 * spent[name, 'fwd'] / steps:.1f} | {1000 * spent[name, 'bwd'] / steps:.1f} |")
    share = sum(spent.values()) / steps / total
    print(f"together {1000 * sum(spent.values()) / steps:.0f} ms, {100 * share:.1f}% of the step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--tail", action="store_true", help="the last UpSize's parts and the head, by hooks")
    parser.add_argument("--steps", type=int, default=5, help="--tail: timed steps")
    args = parser.parse_args()
    if not args.variant and not args.tail:
        parser.error("give --variant NAME and/or --tail")
    keep_freed_memory()  # as `gctxseg train` runs
    torch.manual_seed(0)
    x = torch.randn(8, 1, 224, 224).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (8, 224, 224))
    ctx = amp_context("auto", torch.device("cpu"))
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    if args.variant:
        compare(args.variant, args.rounds, x, y, ctx)
    if args.tail:
        tail(args.steps, x, y, ctx)


if __name__ == "__main__":
    main()
