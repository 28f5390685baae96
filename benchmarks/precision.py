"""bf16 autocast against fp32: the same model, data, seed and budget trained twice; prints both val mean Dice.

The phantom is written once; each run is a normal ``gctxseg train`` (``--amp bf16`` then ``--amp off``) with the
same seed, so the two runs see the same images, augmentations and initial weights and differ only in precision.
Prints figures and the difference; asserts nothing. Example (the demo budget)::

    python benchmarks/precision.py --size 224 224 --n 400 --epochs 6
"""

from __future__ import annotations

import argparse

from phantom_runs import add_budget_arguments, prepare_phantom, train_on_phantom

from gctxseg.reporting.report import summarize_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gctx_unet")
    parser.add_argument("--seed", type=int, default=0)
    add_budget_arguments(parser)
    args = parser.parse_args()
    root = prepare_phantom(args, "gctxseg-precision-")
    results = {}
    for amp in ("bf16", "off"):
        run, wall = train_on_phantom(root, args, f"{args.model}-{amp}", model=args.model, seed=args.seed, amp=amp)
        summary = summarize_run(run)
        results[amp] = (summary.best_val.mean_dice, wall)
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
