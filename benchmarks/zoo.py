"""Train every registry model on the OCT phantom with the same budget; print val mean Dice, wall time and speed.

Prints figures; asserts nothing. Example (a CPU-sized budget)::

    python benchmarks/zoo.py --size 96 96 --n 200 --epochs 4 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from gctxseg.data.phantom import synthesize_dataset
from gctxseg.engine import TrainConfig, train
from gctxseg.models import list_models
from gctxseg.report import summarize_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    parser.add_argument("--size", type=int, nargs=2, default=[224, 224], help="phantom and training size")
    parser.add_argument("--n", type=int, default=400, help="phantom B-scans (split 7:3)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="gctxseg-zoo-"))
    data = root / "data"
    if not (data / "train").is_dir():
        synthesize_dataset(data, n=args.n, size=tuple(args.size), seed=0)
    rows = []
    for name in args.models or list_models():
        start = time.perf_counter()
        run = train(TrainConfig(
            data_train=str(data / "train" / "images"), data_val=str(data / "val" / "images"), model=name,
            base_size=tuple(args.size), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            lrf=0.01, amp=args.amp, results=str(root / "runs"), name=name, exist_ok=True,
        ))  # fmt: skip
        wall = time.perf_counter() - start
        summary = summarize_run(run)
        log = json.loads((run / "log.json").read_text())
        n_train = int(args.n - round(args.n * 0.3))
        rows.append((name, summary["parameters"] / 1e6, log["model"]["flops"] / 1e9, summary["best val"]["mean dice"],
                     wall, n_train * args.epochs / wall))  # fmt: skip
    print(
        f"\nphantom {args.n} B-scans at {args.size[0]}x{args.size[1]}, {args.epochs} epochs, batch {args.batch_size},"
        f" amp {args.amp}; wall time includes validation and the report"
    )
    print(f"{'model':<16}{'params M':>9}{'G MACs':>8}{'val mean Dice':>15}{'wall s':>9}{'train img/s (incl. val)':>25}")
    for name, params, macs, dice, wall, speed in rows:
        print(f"{name:<16}{params:>9.2f}{macs:>8.2f}{dice:>15.4f}{wall:>9.0f}{speed:>25.1f}")
    print("inference images/s: python benchmarks/throughput.py")


if __name__ == "__main__":
    main()
