"""Train every registry model on the OCT phantom with the same budget; print val mean Dice, wall time and speed.

Prints figures; asserts nothing. Example (a CPU-sized budget)::

    python benchmarks/zoo.py --size 96 96 --n 200 --epochs 4 --batch-size 8
"""

from __future__ import annotations

import argparse
import json

from phantom_runs import add_budget_arguments, prepare_phantom, train_on_phantom

from gctxseg.models import list_models
from gctxseg.reporting.report import summarize_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    add_budget_arguments(parser)
    args = parser.parse_args()
    root = prepare_phantom(args, "gctxseg-zoo-")
    rows = []
    for name in args.models or list_models():
        run, wall = train_on_phantom(root, args, name, model=name, amp=args.amp)
        summary = summarize_run(run)
        log = json.loads((run / "log.json").read_text())
        n_train = int(args.n - round(args.n * 0.3))
        rows.append((name, summary.parameters / 1e6, log["model"]["flops"] / 1e9, summary.best_val.mean_dice,
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
