"""Learning-rate probe behind ``planning.FAMILY_OPTIMISER``: one fold of a real set, one schedule for every run.

Trains each model at each peak AdamW learning rate on fold ``--fold`` (patient-wise) of ``--data`` at one fixed
size, batch and epoch count (every other setting planned) and prints the best validation foreground Dice of each
run. Prints figures; asserts nothing. Example (Duke DME converted by ``gctxseg convert duke-dme``)::

    python benchmarks/lr_probe.py --data /data/duke/images --models gctx_unet unet --lrs 1e-4 5e-4 2e-3

``--as-cv IMAGES``: instead, ``gctxseg cv``'s own probe (``gctxseg.crossval.lr_probe``: fold 0, the folds' planned
size and batch, IMAGES training images per candidate, the planned rate always a candidate)
and the rate it would choose::

    python benchmarks/lr_probe.py --data /data/drive/train/images --models gctx_unet --lrs 1e-4 2e-3 --as-cv 300

DRIVE (``gctxseg convert drive``), trained on its training set and scored on its test set::

    python benchmarks/lr_probe.py --data /data/drive/train/images --data-val /data/drive/test/images \\
        --size 576 560 --batch-size 2 --epochs 10 --models unet gctx_unet --lrs 1e-4 5e-4 2e-3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from gctxseg.training import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="images folder (masks beside it; splits.json above it)")
    parser.add_argument("--data-val", default=None,
                        help="held-out images folder (e.g. DRIVE's test set); without it, fold --fold of --data")
    parser.add_argument("--img-f", default=".png")
    parser.add_argument("--models", nargs="+", default=["gctx_unet", "unet"])
    parser.add_argument("--lrs", type=float, nargs="+", default=[2e-4, 5e-4, 1e-3, 2e-3])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--size", type=int, nargs=2, default=[192, 288], help="input size, fixed for all runs")
    parser.add_argument("--epochs", type=int, default=8, help="epochs, fixed for all runs (default 8)")
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--results", default=None, help="run folders (default: a temporary folder)")
    parser.add_argument("--as-cv", type=int, default=None, metavar="IMAGES",
                        help="run gctxseg cv's probe instead, IMAGES training images per candidate")
    args = parser.parse_args()
    results = Path(args.results or tempfile.mkdtemp(prefix="lr_probe_"))
    if args.as_cv:
        as_cv(args, results)
        return
    rows = []
    held_out = ({"data_val": args.data_val} if args.data_val else {"folds": args.folds, "fold": args.fold})
    for model in args.models:
        for lr in args.lrs:
            t0 = time.perf_counter()
            run = train(TrainConfig(
                data_train=args.data, img_f=args.img_f, mask_f=".png", **held_out,
                model=model, lr=lr, base_size=tuple(args.size), epochs=args.epochs, batch_size=args.batch_size,
                results=str(results), name=f"{model}_lr{lr:g}",
                num_samples=0,
            ))
            log = json.loads((run / "log.json").read_text())
            epochs = [v["val log:"]["info"] for k, v in log.items() if k.startswith("epoch:")]
            fg = [e["Dice"][-1] for e in epochs]
            rows.append((model, lr, max(fg), fg[-1], len(epochs), time.perf_counter() - t0,
                         log["train parameters"]["input size"]))
            print(f"{model} lr {lr:g}: best val fg Dice {max(fg):.4f}, last {fg[-1]:.4f}, {len(epochs)} epochs",
                  flush=True)
    print(f"\n{'model':<12}{'lr':>8}{'best Dice':>11}{'last Dice':>11}{'epochs':>8}{'wall s':>8}  size")
    for model, lr, best, last, n, wall, size in rows:
        print(f"{model:<12}{lr:>8g}{best:>11.4f}{last:>11.4f}{n:>8}{wall:>8.0f}  {size[0]}x{size[1]}")


def as_cv(args, results: Path) -> None:
    """``gctxseg cv``'s probe of each model on fold ``0`` of ``--data``, as cv runs it, at ``--as-cv`` images."""
    from gctxseg.crossval import lr_probe

    lr_probe.PROBE_IMAGES = args.as_cv
    for model in args.models:
        lr_probe.PROBE_CANDIDATES[lr_probe.model_family(model)] = tuple(args.lrs)
        cfg = TrainConfig(data_train=args.data, img_f=args.img_f, mask_f=".png", folds=args.folds)
        t0 = time.perf_counter()
        probe = lr_probe.plan_probe(cfg, model, None)
        result = lr_probe.probe_learning_rate(cfg, results / model, probe)
        print(f"{model}: {probe.steps} steps, {probe.images} images per candidate at "
              f"{probe.plan.base_size[0]}x{probe.plan.base_size[1]}, batch {probe.plan.batch_size}; held-out Dice "
              f"{result.record['held-out dice']}; chosen {result.lr:g}; {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
