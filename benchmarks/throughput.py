"""Per registry model: parameters, multiply-adds, CPU/GPU inference images/s (batch 1 and 8) and training images/s.

Training images/s is AdamW steps (forward, Dice+CE, backward, update) at ``--train-batch``. ``--compile`` measures
``torch.compile``d models as ``gctxseg`` runs them: inference with frozen weights (``gctxseg predict --compile``),
training without (``gctxseg train --compile``); compile time is excluded (the first call of each shape is a
warm-up) and printed. Prints figures; asserts nothing. Example::

    python benchmarks/throughput.py --size 224 224 --models unet gctx_unet --amp auto
"""

from __future__ import annotations

import argparse
import time

import torch
from timing import amp_context, timed

from gctxseg.core.runtime import compile_model, resolve_device
from gctxseg.losses import DiceCELoss, deep_supervision_loss
from gctxseg.models import create_model, list_models
from gctxseg.models.complexity import count_macs, count_parameters


def measure(
    name: str, size, in_channels: int, num_classes: int, device, amp: str, repeats: int, train_batch: int, compile: bool
) -> dict:
    model = create_model(name, in_channels, num_classes)
    params, macs = count_parameters(model), count_macs(model, in_channels, size)
    model = model.to(device, memory_format=torch.channels_last)
    parameters = list(model.parameters())
    eager = model
    model = compile_model(eager, device, freeze=True) if compile else eager
    ctx = amp_context(amp, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    row = {"model": name, "params M": params / 1e6, "G mult-adds": macs / 1e9}
    model.eval()
    for batch in (1, 8):
        x = torch.randn(batch, in_channels, *size, device=device).contiguous(memory_format=torch.channels_last)

        def infer(x=x):
            with torch.no_grad(), ctx():
                model(x)
            sync()

        start = time.perf_counter()
        infer()  # compiles when compiling
        row[f"first b{batch} s"] = time.perf_counter() - start
        row[f"infer b{batch} img/s"] = batch / timed(infer, repeats)
    model = compile_model(eager, device) if compile else eager  # frozen graphs never see weight updates
    model.train()
    loss_fn = DiceCELoss()
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, fused=device.type == "cuda")
    batch = train_batch
    x = torch.randn(batch, in_channels, *size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch, *size), device=device)

    def step():
        with ctx():
            loss = deep_supervision_loss(loss_fn, model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()

    start = time.perf_counter()
    step()  # compiles when compiling
    row["first train s"] = time.perf_counter() - start
    row["train img/s"] = batch / timed(step, max(1, repeats // 2))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    parser.add_argument("--size", type=int, nargs=2, default=[224, 224])
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="off", choices=["auto", "bf16", "fp16", "off"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-batch", type=int, default=8, help="training batch size (default 8)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models")
    args = parser.parse_args()
    device = resolve_device(args.device)
    names = args.models or list_models()
    print(
        f"device {device}, {torch.get_num_threads()} threads, amp {args.amp}, compile {args.compile}, "
        f"input {args.size}, {args.in_channels} channel(s), {args.num_classes} classes, torch {torch.__version__}"
    )
    train_column = f"train b{args.train_batch}"
    header = f"{'model':<16}{'params M':>9}{'G MACs':>8}{'infer b1':>10}{'infer b8':>10}{train_column:>10}  (img/s)"
    if args.compile:
        header += "  first calls b1 / b8 / train (s, compiling)"
    print(header)
    for name in names:
        r = measure(
            name, tuple(args.size), args.in_channels, args.num_classes, device, args.amp, args.repeats,
            args.train_batch, args.compile,
        )  # fmt: skip
        line = (
            f"{r['model']:<16}{r['params M']:>9.2f}{r['G mult-adds']:>8.2f}{r['infer b1 img/s']:>10.1f}"
            f"{r['infer b8 img/s']:>10.1f}{r['train img/s']:>10.1f}"
        )
        if args.compile:
            line += f"  {r['first b1 s']:.0f} / {r['first b8 s']:.0f} / {r['first train s']:.0f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
