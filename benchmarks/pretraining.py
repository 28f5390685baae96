"""Pre-training benchmark (issue 17): GCtx-UNet fine-tuned from each offline start on the same patient-wise folds.

Starts, each fine-tuned with every setting planned under the same wall-time budget per fold (``--minutes``):

- ``scratch``: no start (the planned ``gctx_unet`` of ``gctxseg cv``);
- ``phantom``: ``gctxseg pretrain --task phantom`` (a fresh stream of phantom B-scans, supervised), once for all
  folds: it sees no real scan;
- ``mim``: ``gctxseg pretrain --task mim`` on each fold's own training scans only (never its held-out patients);
- ``phantom+mim``: the phantom start, then each fold's masked-image pre-training from it.

Pre-training time, steps and images seen are printed apart from fine-tuning's. Scores are pooled out-of-fold
fluid Dice from each fold's final weights (crossval.summarize_cv), raw and post-processed, beside the
configurations of a ``gctxseg cv`` folder (``--cv``) trained on the same folds. Prints figures; asserts nothing.
Resumable: finished pre-trainings and folds are kept. Example::

    python benchmarks/pretraining.py --data /data/duke/images --folds 5 --minutes 4 --phantom-minutes 12 \\
        --mim-minutes 2 --starts phantom mim --out /data/bench_pretrain --cv /data/cv
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from gctxseg.crossval.folds import summarize_cv, train_fold
from gctxseg.data.splits import fold_files
from gctxseg.runs.checkpoint import load_checkpoint
from gctxseg.training import TrainConfig
from gctxseg.training.loop import cpu_model
from gctxseg.training.pretrain import PretrainConfig, pretrain

STARTS = ("scratch", "phantom", "mim", "phantom+mim")


def _pretrained(cfg: PretrainConfig) -> dict:
    """Run (or keep) one pre-training; its weights and record with the wall and CPU time it took."""
    weights = Path(cfg.out) / "pretrained.pt"
    timing = Path(cfg.out) / "timing.json"
    if not weights.is_file():
        wall, cpu = time.perf_counter(), time.process_time()
        last = Path(cfg.out) / "last.pt"
        pretrain(PretrainConfig(resume=str(last), device=cfg.device) if last.is_file() else cfg)
        timing.write_text(json.dumps({"wall s": time.perf_counter() - wall, "cpu s": time.process_time() - cpu}))
    record = load_checkpoint(weights)["pretraining"]
    return {"weights": str(weights), **record, **json.loads(timing.read_text())}


def _fold_scans(data: str, folds: int, fold: int, out: Path) -> str:
    """A folder of links to the fold's training scans: masked-image pre-training never sees its held-out ones."""
    train_pairs, _, _ = fold_files(data, ".png", ".png", folds, fold)
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for pair in train_pairs:
        link = folder / pair.image.name
        if not link.exists():
            os.symlink(pair.image.resolve(), link)
    return str(folder)


def starts_for(start: str, args, out: Path) -> list[dict | None]:
    """Per fold: the pre-training record (with its weights) that fold's fine-tuning starts from, or None."""
    if start == "scratch":
        return [None] * args.folds
    common = dict(model="gctx_unet", base_size=tuple(args.pretrain_size), seed=args.seed, batch_size=4)
    phantom = None
    if "phantom" in start:
        phantom = _pretrained(PretrainConfig(task="phantom", out=str(out / "pretrain_phantom"), epochs=100,
                                             images_per_epoch=256, time_budget=args.phantom_minutes, **common))
    if "mim" not in start:
        return [phantom] * args.folds
    records = []
    for fold in range(args.folds):
        where = out / f"pretrain_{start}_fold_{fold}"
        scans = _fold_scans(args.data, args.folds, fold, where)
        record = _pretrained(PretrainConfig(task="mim", images=(scans,), out=str(where / "run"), epochs=100,
                                            time_budget=args.mim_minutes,
                                            init=phantom["weights"] if phantom else None, **common))
        records.append({**record, "after": phantom})  # the sequence's cost is both tasks', the phantom's once
    return records


def fine_tune(start: str, records: list[dict | None], args, out: Path) -> dict:
    """Every fold fine-tuned from its start (all settings planned); the configuration's out-of-fold summary."""
    config_dir = out / start
    steps = []
    for fold, record in enumerate(records):
        cfg = TrainConfig(data_train=args.data, img_f=".png", mask_f=".png", folds=args.folds, fold=fold,
                          model="gctx_unet", time_budget=args.minutes, num_samples=0, seed=args.seed,
                          init_weights=record["weights"] if record else None)
        run = train_fold(cfg, config_dir, fold)
        steps.append(int(load_checkpoint(run / "last.pt")["scheduler"]["last_epoch"]))
        print(f"{start} fold {fold}: {steps[-1]} fine-tuning steps", flush=True)
    summary = summarize_cv(config_dir)
    return {"summary": summary, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="images folder of a converted set (splits.json above it)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=4.0, help="fine-tuning wall-time budget per fold")
    parser.add_argument("--phantom-minutes", type=float, default=12.0, help="phantom pre-training budget (once)")
    parser.add_argument("--mim-minutes", type=float, default=2.0, help="masked-image pre-training budget per fold")
    parser.add_argument("--pretrain-size", type=int, nargs=2, default=[128, 224], metavar=("H", "W"))
    parser.add_argument("--starts", nargs="+", choices=STARTS, default=["phantom", "mim"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="pretrain_bench", help="working folder (resumable)")
    parser.add_argument("--cv", default=None, metavar="FOLDER", help="a gctxseg cv folder on the same folds")
    args = parser.parse_args()
    out = Path(args.out)
    print(f"{args.folds}-fold CV by patient on {args.data}; fine-tuning {args.minutes} min per fold; CPU "
          f"{cpu_model()}, {torch.get_num_threads()} threads", flush=True)
    rows = []
    for start in args.starts:
        records = starts_for(start, args, out)
        result = fine_tune(start, records, args, out)
        rows.append((start, records, result))
    print_table(rows, args)


def print_table(rows, args) -> None:
    print(f"\n{'start':<14}{'pooled OOF':>11}{'post-proc':>11}  {'folds':<36}{'fine-tune steps':<26}"
          f"{'pretrain steps':>15}{'images':>9}{'wall min':>10}{'cpu min':>9}")
    for start, records, result in rows:
        s = result["summary"]
        folds = " ".join(f"{fold['dice'][0]:.3f}" for fold in s.per_fold.values())
        done = [r for r in records if r] + [r["after"] for r in records if r and r.get("after")]
        unique = list({r["weights"]: r for r in done}.values())
        steps = sum(r["optimizer steps"] for r in unique) if unique else 0
        images = sum(r["images seen"] for r in unique) if unique else 0
        wall = sum(r["wall s"] for r in unique) / 60 if unique else 0.0
        cpu = sum(r["cpu s"] for r in unique) / 60 if unique else 0.0
        raw, processed = s.pooled_out_of_fold["dice"][0], s.pooled_out_of_fold_post_processed["dice"][0]
        print(f"{start:<14}{raw:>11.4f}{processed:>11.4f}"
              f"  {folds:<36}{'/'.join(map(str, result['steps'])):<26}{steps:>15}{images:>9}{wall:>10.1f}{cpu:>9.1f}")
    if args.cv:
        summary = json.loads((Path(args.cv) / "cv_summary.json").read_text())
        for model, config in summary["configurations"].items():
            print(f"{'cv:' + model:<14}{config['pooled out-of-fold']['dice'][0]:>11.4f}"
                  f"{config['pooled out-of-fold post-processed']['dice'][0]:>11.4f}  "
                  f"{'':<36}{'/'.join(map(str, config['steps per fold'])):<26}")
    print("pretrain steps/images/minutes: pre-training only (phantom once; mim summed over folds), apart from "
          "fine-tuning; fluid Dice pooled over all held-out scans")


if __name__ == "__main__":
    main()
