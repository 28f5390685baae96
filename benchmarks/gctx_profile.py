"""Where the milliseconds of a gctx_unet training step go: by module kind and by operator.

One training step as the engine runs it (224x224, channels-last, ``--amp auto``, Dice+CE, the engine's AdamW, freed
memory kept in glibc's heap):
the step's wall time and the optimiser's share; then, per module kind (attention, global-query generation, MLPs,
block norms, UpSize, ReduceSize/stem, skip fusion, head), forward and backward milliseconds from module hooks
(backward from full backward hooks: the time from a module's output gradients to its input gradients); then the
operators with the most self time from ``torch.profiler`` over the same steps. Asserts nothing. Example::

    python benchmarks/gctx_profile.py --batch 8 --steps 3
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from timing import amp_context
from timm.layers import Mlp
from timm.models.gcvit import Downsample2d, Stem
from torch import nn
from torch.profiler import ProfilerActivity, profile

from gctxseg.core.runtime import keep_freed_memory
from gctxseg.losses import DiceCELoss
from gctxseg.models import create_model
from gctxseg.models.gctx_unet import UpSize, WindowAttention
from gctxseg.training.loop import adamw

KINDS = (  # first match wins; a matched module's children are not timed again
    ("attention (qkv, windows, scores, softmax, proj)", lambda name, m: isinstance(m, WindowAttention)),
    # the stage runs the FeatureBlock's layers one by one (skipping pools on small maps): time its children
    ("global-query generation", lambda name, m: ".global_block.blocks." in name),
    ("MLPs", lambda name, m: isinstance(m, Mlp)),
    ("block norms (LayerNorm)", lambda name, m: isinstance(m, nn.LayerNorm) and ".blocks." in name),
    ("UpSize (decoder x2 and final x4)", lambda name, m: isinstance(m, UpSize)),
    ("ReduceSize and stem", lambda name, m: isinstance(m, (Downsample2d, Stem))),
    ("skip fusion Linear", lambda name, m: name.endswith("skip_proj")),
    ("head", lambda name, m: name == "head"),
)


def module_kinds(model: nn.Module) -> dict[str, list[nn.Module]]:
    kinds, taken = defaultdict(list), []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in taken):
            continue
        for kind, matches in KINDS:
            if matches(name, module):
                kinds[kind].append(module)
                taken.append(name)
                break
    return kinds


def hook_timers(kinds: dict[str, list[nn.Module]]) -> tuple[dict[tuple[str, str], float], list]:
    """Hooks adding each kind's forward and backward seconds into the returned dict (and the hook handles)."""
    spent, handles = defaultdict(float), []
    for kind, modules in kinds.items():
        for module in modules:
            starts = {}

            def begin(which, starts=starts):
                return lambda *_: starts.__setitem__(which, time.perf_counter())

            def end(which, kind=kind, starts=starts):
                return lambda *_: spent.__setitem__((kind, which), spent[kind, which] + time.perf_counter()
                                                    - starts.pop(which, time.perf_counter()))

            handles += [module.register_forward_pre_hook(begin("fwd")), module.register_forward_hook(end("fwd")),
                        module.register_full_backward_pre_hook(begin("bwd")),
                        module.register_full_backward_hook(end("bwd"))]
    return spent, handles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--amp", default="auto", choices=["auto", "off"])
    parser.add_argument("--top", type=int, default=25, help="operators listed")
    args = parser.parse_args()
    keep_freed_memory()  # as `gctxseg train` runs: a step reuses the last one's memory
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    model = create_model("gctx_unet", 1, 3).to(memory_format=torch.channels_last).train()
    optimizer, loss_fn, ctx = adamw(model, 1e-4, 1e-4, cpu), DiceCELoss(), amp_context(args.amp, cpu)
    x = torch.randn(args.batch, 1, 224, 224).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (args.batch, 224, 224))
    phases = defaultdict(float)

    def step() -> None:
        t0 = time.perf_counter()
        with ctx():
            loss = loss_fn(model(x), y)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        for phase, seconds in (("forward", t1 - t0), ("backward", t2 - t1), ("optimizer", t3 - t2)):
            phases[phase] += seconds

    step()
    phases.clear()
    for _ in range(args.steps):
        step()
    total = sum(phases.values())
    print(f"batch {args.batch}, {args.steps} steps, {torch.get_num_threads()} threads: "
          f"{1000 * total / args.steps:.0f} ms per step")
    for phase, seconds in phases.items():
        print(f"  {phase:10s} {1000 * seconds / args.steps:7.0f} ms  {100 * seconds / total:5.1f}%")

    spent, handles = hook_timers(module_kinds(model))
    phases.clear()
    for _ in range(args.steps):
        step()
    hooked = sum(phases.values())
    print(f"\nby module kind (hooked steps: {1000 * hooked / args.steps:.0f} ms each)\n"
          "| kind | forward ms | backward ms | share of step |\n|---|---:|---:|---:|")
    for kind, _ in KINDS:
        fwd, bwd = spent[kind, "fwd"] / args.steps, spent[kind, "bwd"] / args.steps
        print(f"| {kind} | {1000 * fwd:.0f} | {1000 * bwd:.0f} | {100 * (fwd + bwd) * args.steps / hooked:.1f}% |")
    timed = sum(spent.values()) / args.steps
    print(f"| everything else (residual adds, drop-path, loss, optimizer) | | | "
          f"{100 * (1 - timed * args.steps / hooked):.1f}% |")
    for handle in handles:
        handle.remove()

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=60))


if __name__ == "__main__":
    main()
