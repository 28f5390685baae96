"""Training steps with glibc's default allocator behaviour against ``utils.keep_freed_memory`` (heap only, no trim).

Each mode runs in a fresh process (mallopt must come before the allocations it governs): ``--steps`` AdamW steps
of ``--model`` at ``--size`` and ``--batch`` under the precision gctxseg picks, after 3 warm-up steps (with
``--infer``: batches predicted as ``gctxseg predict`` does, eval mode, no gradients). Prints the seconds per step,
the minor page faults per step and the share of CPU time spent in the kernel. Example::

    python benchmarks/allocator.py --model unet --size 224 384 --batch 2 --steps 20
    python benchmarks/allocator.py --model gctx_unet --size 224 224 --batch 8 --steps 10 --infer
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _run(args) -> dict:
    import torch

    from gctxseg.core.precision import autocast_context, autocast_dtype
    from gctxseg.core.runtime import keep_freed_memory
    from gctxseg.losses import DiceCELoss, training_loss
    from gctxseg.models import create_model
    from gctxseg.training.planning import size_options

    applied = keep_freed_memory()
    device = torch.device("cpu")
    options = {**({"base_width": 32} if args.model == "unet" else {}), **size_options(args.model, args.size)}
    model = create_model(args.model, 1, 2, **options).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn, dtype = DiceCELoss(), autocast_dtype("auto", device)
    x = torch.randn(args.batch, 1, *args.size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (args.batch, *args.size))

    def step() -> None:
        with autocast_context(device, dtype):
            loss = training_loss(loss_fn, model, model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def predict() -> None:
        with torch.no_grad(), autocast_context(device, dtype):
            model(x)

    if args.infer:
        model.eval()
        step = predict

    for _ in range(3):
        step()
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(args.steps):
        step()
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"applied": applied, "s per step": wall / args.steps,
            "faults per step": (after.ru_minflt - before.ru_minflt) / args.steps,
            "kernel share": (after.ru_stime - before.ru_stime) / max(cpu, 1e-9), "precision": str(dtype)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet")
    parser.add_argument("--size", type=int, nargs=2, default=[224, 384])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--infer", action="store_true", help="time batch inference instead of training steps")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_run(args)))
        return
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    what = "inference batches" if args.infer else "training steps"
    print(f"{args.model} {args.size[0]}x{args.size[1]} batch {args.batch}, {args.steps} {what}; CPU {cpu}")
    rows = {}
    for label, keep in (("glibc default", "0"), ("keep_freed_memory", "1")):
        env = {**os.environ, "GCTXSEG_KEEP_FREED_MEMORY": keep}
        out = subprocess.run([sys.executable, __file__, "--child", "--model", args.model, "--size",
                              *map(str, args.size), "--batch", str(args.batch), "--steps", str(args.steps),
                              *(["--infer"] if args.infer else [])],
                             env=env, capture_output=True, text=True, check=True).stdout
        rows[label] = json.loads(out.strip().splitlines()[-1])
    for label, r in rows.items():
        print(f"{label:<20} {r['s per step']:.3f} s/step  {r['faults per step']:>9.0f} minor faults/step  "
              f"kernel {r['kernel share']:.0%} of CPU  (applied: {r['applied']}, {r['precision']})")
    base, kept = rows["glibc default"]["s per step"], rows["keep_freed_memory"]["s per step"]
    print(f"speed-up {base / kept:.2f}x")


if __name__ == "__main__":
    main()
