"""bf16 autocast against fp32: the same model, data, seed and budget trained twice; prints both val mean Dice.

The phantom is written once; each run is a normal ``gctxseg train`` (``--amp bf16`` then ``--amp off``) with the
same seed, so the two runs see the same images, augmentations and initial weights and differ only in precision.
Prints figures and the difference; asserts nothing. Example (the demo budget)::

    python benchmarks/precision.py --size 224 224 --n 400 --epochs 6
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from gctxseg.data.phantom import synthesize_dataset
from gctxseg.engine import TrainConfig, train
from gctxseg.report import summarize_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gctx_unet")
    parser.add_argument("--size", type=int, nargs=2, default=[224, 224], help="phantom and training size")
    parser.add_argument("--n", type=int, default=400, help="phantom B-scans (split 7:3)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="gctxseg-precision-"))
    data = root / "data"
    if not (data / "train").is_dir():
        synthesize_dataset(data, n=args.n, size=tuple(args.size), seed=0)
    results = {}
    for amp in ("bf16", "off"):
        start = time.perf_counter()
        run = train(TrainConfig(
            data_train=str(data / "train" / "images"), data_val=str(data / "val" / "images"), model=args.model,
            base_size=tuple(args.size), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lrf=0.01,
            seed=args.seed, amp=amp, results=str(root / "runs"), name=f"{args.model}-{amp}", exist_ok=True,
        ))  # fmt: skip
        summary = summarize_run(run)
        results[amp] = (summary["best val"]["mean dice"], time.perf_counter() - start)
    print(
        f"\n{args.model}, phantom {args.n} B-scans at {args.size[0]}x{args.size[1]}, {args.epochs} epochs, "
        f"batch {args.batch_size}, lr {args.lr}, seed {args.seed}"
    )
    print(f"{'precision':<12}{'best val mean Dice':>20}{'wall s':>10}")
    for amp, (dice, wall) in results.items():
        print(f"{'bf16' if amp == 'bf16' else 'fp32':<12}{dice:>20.4f}{wall:>10.0f}")
    print(f"difference bf16 - fp32: {results['bf16'][0] - results['off'][0]:+.4f}")


if __name__ == "__main__":
    main()
