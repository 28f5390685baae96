"""Every operator of a gctx_unet training step, timed one call at a time with its shapes, dtypes and layouts.

``torch.profiler`` overstates operators on large tensors (docs/speed.md); this times each dispatched ATen call with
``perf_counter`` inside a ``TorchDispatchMode`` (forward, backward and optimiser alike), grouped by operator and by
operator + arguments. A 4-D tensor is tagged ``CL`` (channels-last), ``C`` (contiguous) or its strides, so an
operator paying for mixed layouts (e.g. a channels-last gradient added to a contiguous one) shows as its own row.
The step as the engine runs it: 224x224, batch 8, 1 channel, 3 classes, ``--amp auto``, Dice+CE, the engine's AdamW
and allocator setting. Asserts nothing. Example::

    python benchmarks/gctx_ops.py --steps 2 --top 40
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict

import torch
from authors_speed import train_step
from timing import amp_context
from torch.utils._python_dispatch import TorchDispatchMode

from gctxseg.core.runtime import keep_freed_memory
from gctxseg.models import create_model
from gctxseg.training.loop import adamw


def _describe(value) -> str | None:
    if not isinstance(value, torch.Tensor):
        return None
    if value.dim() == 4 and value.is_contiguous(memory_format=torch.channels_last) and not value.is_contiguous():
        layout = "CL"
    else:
        layout = "C" if value.is_contiguous() else f"S{value.stride()}"
    return f"{tuple(value.shape)}{str(value.dtype).removeprefix('torch.')}:{layout}"


class OperatorTimer(TorchDispatchMode):
    """Seconds and calls per (operator, arguments, result)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: dict[tuple, float] = defaultdict(float)
        self.calls: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        spent = time.perf_counter() - start
        described = " ".join(d for d in map(_describe, args) if d)
        key = (func.overloadpacket.__name__, described, _describe(out) or "")
        self.seconds[key] += spent
        self.calls[key] += 1
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="timed steps (after 3 untimed)")
    parser.add_argument("--top", type=int, default=40, help="rows of the operator + arguments table")
    args = parser.parse_args()
    keep_freed_memory()  # as `gctxseg train` runs
    torch.manual_seed(0)
    model = create_model("gctx_unet", 1, 3).to(memory_format=torch.channels_last).train()
    x = torch.randn(8, 1, 224, 224).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (8, 224, 224))
    optimizer = adamw(model, 1e-4, 1e-4, torch.device("cpu"))
    step = train_step(model, optimizer, x, y, amp_context("auto", torch.device("cpu")))
    for _ in range(3):
        step()
    timer, start = OperatorTimer(), time.perf_counter()
    with timer:
        for _ in range(args.steps):
            step()
    per_step = (time.perf_counter() - start) / args.steps
    timed = sum(timer.seconds.values()) / args.steps
    print(f"{torch.get_num_threads()} threads: {1000 * per_step:.0f} ms a step under the timer, "
          f"{sum(timer.calls.values()) // args.steps} calls, {1000 * timed:.0f} ms inside them")
    by_operator = defaultdict(float)
    for key, seconds in timer.seconds.items():
        by_operator[key[0]] += seconds
    print("\n| operator | ms a step |\n|---|---:|")
    for name, seconds in sorted(by_operator.items(), key=lambda kv: -kv[1])[:25]:
        print(f"| {name} | {1000 * seconds / args.steps:.1f} |")
    print("\n| ms a step | calls | operator | arguments -> result |\n|---:|---:|---|---|")
    for key, seconds in sorted(timer.seconds.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"| {1000 * seconds / args.steps:.1f} | {timer.calls[key] // args.steps} | {key[0]} | "
              f"{key[1]} -> {key[2]} |")


if __name__ == "__main__":
    main()
