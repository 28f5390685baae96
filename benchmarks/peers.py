"""Our models beside peer implementations: train and inference images/s and peak memory at one size, one run.

Ours: every registry model. Peers, at our widths so that the comparison is of implementations: MONAI
``BasicUNet`` with features 64-128-256-512-512 (our ``unet``: base 64, bilinear, so a 512-channel bottleneck) and
``BasicUNetPlusPlus`` with 32-64-128-256-512 (our ``unet_plus_plus``), and segmentation_models_pytorch ``Unet`` /
``UnetPlusPlus`` (resnet34, random weights) when it is installed (it is not a gctxseg dependency; skipped with a
note otherwise). 1 channel in, 3 classes, channels-last, all models under the same precision (``--amp``: ``auto``
is what ``gctxseg train`` uses here, bf16 on a CPU with native bf16).

Each model is measured in a fresh process, so its peak memory is its own: ``resource`` ``ru_maxrss`` after the
model is built, then after inference (batch 1 and 8: "infer MB") and after training steps (AdamW: "train MB"),
as increases over the built model. Prints figures and ours/peer ratios; asserts nothing. Example::

    python benchmarks/peers.py --size 224 224
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import resource
import sys
from concurrent.futures import ProcessPoolExecutor

import torch
from timing import amp_context, timed

from gctxseg.models import list_models

PEERS = ("monai BasicUNet", "monai BasicUNet++", "smp Unet r34", "smp Unet++ r34")
PAIRS = (  # (ours, peer) compared in the ratio table
    ("unet", "monai BasicUNet"),
    ("unet", "smp Unet r34"),
    ("unet_plus_plus", "monai BasicUNet++"),
    ("unet_plus_plus", "smp Unet++ r34"),
    ("gctx_unet", "monai BasicUNet"),
    ("gctx_unet", "smp Unet r34"),
)
HAS_SMP = importlib.util.find_spec("segmentation_models_pytorch") is not None


def build(name: str) -> torch.nn.Module:
    """A model by its table name (1 channel in, 3 classes)."""
    if name in list_models():
        from gctxseg.models import create_model

        return create_model(name, 1, 3)
    if name.startswith("monai"):
        from monai.networks.nets import BasicUNet, BasicUNetPlusPlus

        if name.endswith("++"):
            return BasicUNetPlusPlus(2, 1, 3, features=(32, 64, 128, 256, 512, 32))
        return BasicUNet(2, 1, 3, features=(64, 128, 256, 512, 512, 64))
    import segmentation_models_pytorch as smp

    cls = smp.UnetPlusPlus if "++" in name else smp.Unet
    return cls("resnet34", encoder_weights=None, in_channels=1, classes=3)


def _main_output(out) -> torch.Tensor:
    """Logits of a model that may return a tuple or list (deep supervision, MONAI's BasicUNetPlusPlus)."""
    return out if isinstance(out, torch.Tensor) else out[0]


def _maxrss_mb() -> float:
    scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 2**10  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def measure(name: str, size: tuple[int, int], repeats: int, threads: int, amp: str, train_batch: int) -> dict:
    """Images/s and peak memory of one model; meant to run in a fresh process."""
    from gctxseg.losses import DiceCELoss, deep_supervision_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(name).to(memory_format=torch.channels_last)
    precision = amp_context(amp, torch.device("cpu"))
    row = {"model": name, "params M": sum(p.numel() for p in model.parameters()) / 1e6}
    built = _maxrss_mb()
    model.eval()
    for batch in (1, 8):
        x = torch.randn(batch, 1, *size).contiguous(memory_format=torch.channels_last)

        def infer(x=x) -> None:
            with torch.no_grad(), precision():
                model(x)

        row[f"infer b{batch}"] = batch / timed(infer, repeats)
    row["infer MB"] = _maxrss_mb() - built
    model.train()
    loss_fn, optimizer = DiceCELoss(), torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(train_batch, 1, *size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (train_batch, *size))

    def step() -> None:
        with precision():
            out = model(x)
            # deep supervision: ours averages over its heads; MONAI's BasicUNet++ returns a list, first = final
            loss = deep_supervision_loss(loss_fn, out, y) if name in list_models() else loss_fn(_main_output(out), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    row["train"] = train_batch / timed(step, repeats)
    row["train MB"] = _maxrss_mb() - built
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=[224, 224], help="input H W (default 224 224)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per figure (default 2)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"], help="precision of every model")
    parser.add_argument("--train-batch", type=int, default=8, help="training batch size (default 8)")
    parser.add_argument("--models", nargs="*", default=None, help="table names to run (default: all)")
    args = parser.parse_args()
    names = args.models or [*list_models(), *(p for p in PEERS if HAS_SMP or not p.startswith("smp"))]
    height, width = args.size
    print(
        f"torch {torch.__version__}, CPU, {args.threads} threads, amp {args.amp}, channels-last, "
        f"input 1x{height}x{width}, 3 classes, training batch {args.train_batch}, images/s"
    )
    if not HAS_SMP:
        print("note: segmentation_models_pytorch is not installed; its Unet/UnetPlusPlus are skipped")
    train_column = f"train b{args.train_batch}"
    columns = (train_column, "infer b1", "infer b8", "train MB", "infer MB")
    print(f"{'model':<20}{'params M':>9}" + "".join(f"{c:>10}" for c in columns))
    rows = {}
    context = multiprocessing.get_context("spawn")
    for name in names:
        with ProcessPoolExecutor(1, mp_context=context) as pool:  # fresh process: its own peak memory
            r = rows[name] = pool.submit(
                measure, name, tuple(args.size), args.repeats, args.threads, args.amp, args.train_batch
            ).result()
        print(
            f"{name:<20}{r['params M']:>9.2f}{r['train']:>10.2f}{r['infer b1']:>10.2f}{r['infer b8']:>10.2f}"
            f"{r['train MB']:>10.0f}{r['infer MB']:>10.0f}",
            flush=True,
        )
    print("\nours / peer (speed > 1: ours faster; memory > 1: ours needs more)")
    print(f"{'ours':<16}{'peer':<20}{train_column:>10}{'infer b1':>10}{'infer b8':>10}{'train MB':>10}")
    for ours, peer in PAIRS:
        if ours in rows and peer in rows:
            a, b = rows[ours], rows[peer]
            print(
                f"{ours:<16}{peer:<20}{a['train'] / b['train']:>10.2f}{a['infer b1'] / b['infer b1']:>10.2f}"
                f"{a['infer b8'] / b['infer b8']:>10.2f}{a['train MB'] / max(b['train MB'], 1):>10.2f}"
            )


if __name__ == "__main__":
    main()
