"""Real OCT benchmark: K-fold cross-validation by patient on a converted set (Duke DME), three recipes, one budget.

Recipes, each given the same wall-time budget per fold (``--minutes``) on this machine, or the same number of
epochs (``--epochs``: no clock in the schedule, so a rerun with ``--seed`` gives the same figures):

- ``gctx_unet`` and ``unet``: ``gctxseg`` with every setting planned (``--time-budget`` only: no tuned flags);
- ``peer``: the recipe of a user who knows the field — MONAI ``BasicUNet`` (2D, default features), MONAI
  ``DiceCELoss``, AdamW 1e-3 with a cosine schedule, horizontal flips, batch 2, every image channel, at gctxseg's
  planned input size (the median image within its pixel budget, thin structures at the images' own resolution, no
  time-budget shrinking: ``planning.planned_input_size``), for as many steps as a measured step time fits in the
  budget.

``--cv FOLDER`` adds the configurations of a ``gctxseg cv`` folder (trained on the same folds) and the one it
chose, so the peer and the planned configurations are printed in one table, each with its optimiser steps.

Every recipe is scored out of fold with its final weights (no checkpoint chosen on the held-out patients), at
the images' own size, as any user's masks are: written as mask files and scored against the truth by
``gctxseg.evaluation.evaluate.score_prediction_folder`` (``gctxseg evaluate --predictions``, no model): per-fold
and pooled fluid Dice (pooled = summed confusion over all held-out scans),
gctxseg's post-processed score, and the configuration ensemble of gctx_unet + unet (their out-of-fold softmax
averaged, as nnU-Net ensembles configurations). Prints figures; asserts nothing. Resumable: finished folds are
kept. Example::

    gctxseg convert duke-dme SRC /data/duke
    python benchmarks/real_oct.py --data /data/duke/images --folds 5 --minutes 5 --out /data/bench
    python benchmarks/real_oct.py --data /data/duke/images --folds 5 --epochs 20 --seed 0 --out /data/bench_e20
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import re
import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gctxseg.crossval.folds import summarize_cv, train_fold
from gctxseg.data import MaskValueMap, fingerprint_dataset, read_image, read_mask
from gctxseg.data.convert import DUKE_STEM
from gctxseg.data.splits import fold_files
from gctxseg.evaluation.evaluate import score_prediction_folder
from gctxseg.metrics import agreement_summary, scores_from_confusion
from gctxseg.runs.checkpoint import load_checkpoint
from gctxseg.training import TrainConfig
from gctxseg.training.planning import planned_input_size

GRADER_2_POOLED_DICE = 0.70  # Duke DME, grader 2 vs grader 1 on the 73 scans both graded (reference-figures.md)


def _load(pairs, size=None):
    """Images as C x H x W floats in [0, 1] (every channel: DRIVE's vessels show best in green), masks 0/1."""
    images, masks = [], []
    for pair in pairs:
        image = torch.from_numpy(read_image(pair.image).astype(np.float32) / 255.0).permute(2, 0, 1)
        mask = torch.from_numpy((read_mask(pair.mask) > 0).astype(np.int64))
        if size is not None:
            image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0]
            mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
        images.append(image)
        masks.append(mask)
    return images, masks


def peer_fold(data: str, folds: int, fold: int, minutes: float, out: Path, seed: int = 0,
              epochs: int | None = None) -> dict:
    """Train MONAI BasicUNet on one fold for ``minutes`` (or ``epochs`` epochs); write its out-of-fold
    probabilities."""
    from monai.losses import DiceCELoss
    from monai.networks.nets import BasicUNet

    done = out / f"fold_{fold}.json"
    if done.is_file():
        return json.loads(done.read_text())
    torch.manual_seed(seed + fold)
    t0, cpu0 = time.perf_counter(), time.process_time()
    train_pairs, val_pairs, _ = fold_files(data, ".png", ".png", folds, fold)
    # gctxseg's planned size before any time budget, thin structures kept at the images' resolution as it keeps them
    fingerprint = fingerprint_dataset(train_pairs)
    size = list(planned_input_size(fingerprint.sizes, 16, fingerprint.structure_width))
    images, masks = _load(train_pairs, size)
    x_all, y_all = torch.stack(images), torch.stack(masks)
    mean, std = x_all.mean().item(), x_all.std().item()
    model = BasicUNet(spatial_dims=2, in_channels=x_all.shape[1], out_channels=2).to(
        memory_format=torch.channels_last)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = 2

    def step(idx: torch.Tensor) -> None:
        x, y = (x_all[idx] - mean) / std, y_all[idx][:, None]
        flip = torch.rand(len(idx)) < 0.5
        x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
        loss = loss_fn(model(x.contiguous(memory_format=torch.channels_last)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()

    # the epoch count is fixed from a measured step time, as gctxseg's planner does for --time-budget, so that
    # other load on the machine later changes the wall time, not the training
    model.train()
    schedule = None
    steps_per_epoch = len(x_all) // batch
    if epochs is None:
        step_s = []
        for _ in range(3):
            s0 = time.perf_counter()
            step(torch.randint(0, len(x_all), (batch,)))
            step_s.append(time.perf_counter() - s0)
        epochs = max(1, int((minutes * 60 * 0.9 - (time.perf_counter() - t0)) // (min(step_s[1:]) * steps_per_epoch)))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    for _ in range(epochs):
        order = torch.randperm(len(x_all))
        for start in range(0, steps_per_epoch * batch, batch):
            step(order[start:start + batch])
    model.eval()
    (out / "oof").mkdir(parents=True, exist_ok=True)
    val_images, _ = _load(val_pairs)
    with torch.no_grad():
        for pair, image in zip(val_pairs, val_images):
            x = F.interpolate(image[None], size=size, mode="bilinear", antialias=True)
            probs = model((x - mean) / std).softmax(1)
            probs = F.interpolate(probs, size=image.shape[1:], mode="bilinear", align_corners=False)[0]
            np.save(out / "oof" / f"{pair.name}.npy", (probs * 255).round().to(torch.uint8).numpy())
    result = {"fold": fold, "epochs": epochs, "steps": epochs * steps_per_epoch, "size": size,
              "wall s": time.perf_counter() - t0,
              "cpu s": time.process_time() - cpu0, "val": [p.name for p in val_pairs]}
    done.write_text(json.dumps(result))
    return result


def ours_fold(recipe: str, data: str, folds: int, fold: int, minutes: float, out: Path, seed: int = 0,
              epochs: int | None = None) -> dict:
    """One fold of gctxseg: ``recipe`` is ``MODEL[@HxW][,KEY=VALUE...]``: a model name (every setting planned),
    optionally the input size (the epochs then fill the budget at that size) and settings given as a user would
    (``lr=2e-4``, ``augment=strong``: TrainConfig fields; any other key is an architecture option). With
    ``epochs``, that many epochs and no time budget."""
    done = out / f"fold_{fold}_time.json"
    if done.is_file():
        return json.loads(done.read_text())
    head, *settings = recipe.split(",")
    model, _, size = head.partition("@")
    base_size = tuple(int(s) for s in size.split("x")) if size else None
    given, model_options = _recipe_settings(settings)
    t0, cpu0 = time.perf_counter(), time.process_time()
    run = train_fold(TrainConfig(data_train=data, img_f=".png", mask_f=".png", folds=folds, fold=fold, model=model,
                                 base_size=base_size, num_samples=0, model_options=model_options, seed=seed,
                                 **_length(minutes, epochs), **given), out, fold)
    log = json.loads((run / "log.json").read_text())
    params = log["train parameters"]
    steps = int(load_checkpoint(run / "last.pt")["scheduler"]["last_epoch"])
    result = {"fold": fold, "epochs": params["epochs"], "steps": steps, "size": params["input size"],
              "lr": params["lr"], "batch": params["batch size"], "wall s": time.perf_counter() - t0,
              "cpu s": time.process_time() - cpu0}
    done.write_text(json.dumps(result))
    return result


def _length(minutes: float, epochs: int | None) -> dict:
    """TrainConfig's length of a run: ``epochs`` when given, else the time budget."""
    return {"time_budget": minutes} if epochs is None else {"epochs": epochs}


def _recipe_settings(settings: list[str]) -> tuple[dict, dict]:
    """``KEY=VALUE`` strings -> (TrainConfig fields, architecture options); values are read as Python literals
    where they are one (numbers), else kept as strings."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    given: dict = {}
    model_options: dict = {}
    for setting in settings:
        key, _, text = setting.partition("=")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        (given if key in fields else model_options)[key] = value
    return given, model_options


def _oof(out: Path, names: list[str]) -> dict[str, np.ndarray]:
    return {n: np.load(out / "oof" / f"{n}.npy") for n in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="images folder of a converted set (splits.json above it)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-time budget per fold and recipe")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train every recipe this many epochs instead of for --minutes (gctxseg recipes: "
                             "TrainConfig epochs; the peer: epochs x its steps per epoch)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every recipe (the peer's fold k: seed + k)")
    parser.add_argument("--recipes", nargs="+", default=["gctx_unet", "unet", "peer"],
                        help="model names (planned), MODEL@HxW (size given, rest planned), either with "
                             ",KEY=VALUE settings (gctx_unet,augment=strong), or peer")
    parser.add_argument("--out", default="real_oct_bench", help="working folder (resumable)")
    parser.add_argument("--cv", default=None, metavar="FOLDER",
                        help="a gctxseg cv folder trained on the same folds: its configurations and its choice join "
                             "the table")
    args = parser.parse_args()
    out = Path(args.out)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    length = f"{args.minutes} min" if args.epochs is None else f"{args.epochs} epochs"
    print(f"{args.folds}-fold CV by patient on {args.data}; {length} per fold and recipe, seed {args.seed}; "
          f"CPU {cpu}, {torch.get_num_threads()} threads", flush=True)
    timings: dict[str, list[dict]] = {}
    for recipe in args.recipes:
        timings[recipe] = []
        for fold in range(args.folds):
            fold_of = peer_fold if recipe == "peer" else partial(ours_fold, recipe)
            timings[recipe].append(fold_of(args.data, args.folds, fold, args.minutes, out / recipe, args.seed,
                                           args.epochs))
            print(f"{recipe} fold {fold}: {timings[recipe][-1]}", flush=True)
    report(args, out, timings)


def report(args, out: Path, timings: dict[str, list[dict]]) -> None:
    held_out = {f: fold_files(args.data, ".png", ".png", args.folds, f)[1] for f in range(args.folds)}
    names = sorted(p.name for val in held_out.values() for p in val)
    scoring = Scoring(held_out, out / "scored")
    rows, probs = [], {}
    for recipe, times in timings.items():
        extra = {}
        if recipe != "peer":
            summary = summarize_cv(out / recipe)
            extra["post-processed"] = summary.pooled_out_of_fold_post_processed["dice"][0]
        probs[recipe] = _oof(out / recipe, names)
        rows.append(_row(recipe, scoring(recipe, probs[recipe]), args.folds, times, extra))
    if args.cv:
        rows += _cv_rows(Path(args.cv), names, scoring, args.folds, probs)
    if {"gctx_unet", "unet"} <= set(probs):
        mean = {n: (probs["gctx_unet"][n].astype(np.float32) + probs["unet"][n]) / 2 for n in names}
        rows.append(_row("gctx_unet+unet", scoring("gctx_unet+unet", mean), args.folds,
                         timings["gctx_unet"] + timings["unet"], {}))
    header = "".join(f"{'fold ' + str(f):>8}" for f in range(args.folds))
    print(f"\n{'recipe':<22}{header}{'pooled OOF':>12}{'post-proc':>11}  {'epochs':<16}{'steps':<26}{'size':>9}"
          f"{'wall min':>10}{'cpu min':>9}")
    for r in rows:
        folds = "".join(f"{d:>8.4f}" for d in r["folds"])
        pp = f"{r['post-processed']:>11.4f}" if "post-processed" in r else f"{'':>11}"
        print(f"{r['recipe']:<22}{folds}{r['pooled']:>12.4f}{pp}  {r['epochs']:<16}{r['steps']:<26}{r['size']:>9}"
              f"{r['wall']:>10.1f}{r['cpu']:>9.1f}")
    if all(DUKE_STEM.fullmatch(n) for n in names):  # the reference belongs to Duke DME, not to any other set
        print(f"{'grader 2 vs 1':<16}{'':>{8 * args.folds}}{GRADER_2_POOLED_DICE:>12.2f}  (73 scans both graded)")
    print("fluid Dice pooled over each fold's held-out scans (fold columns) and over all scans (pooled OOF); "
          "wall/cpu: all folds")
    print_area_agreement({recipe: scoring.scored[recipe] for recipe in probs}, names)


class Scoring:
    """Scores out-of-fold predictions as any user's masks are scored: each fold's written as mask files (the truth
    masks' values) into ``folder/LABEL/fold_k``, then ``score_prediction_folder`` against that fold's truth."""

    def __init__(self, held_out: dict[int, list], folder: Path) -> None:
        self.held_out, self.folder = held_out, folder
        truth = {int(v) for val in held_out.values() for p in val for v in np.unique(read_mask(p.mask))}
        if len(truth) != 2:
            raise SystemExit(f"{folder}: the truth masks hold the values {sorted(truth)}; this benchmark scores "
                             "one foreground class (fluid): convert the set with two mask values")
        self.value_map = MaskValueMap(truth)
        self.scored: dict[str, list] = {}  # label -> each fold's EvaluationResult

    def __call__(self, label: str, probs: dict[str, np.ndarray]) -> list:
        """Each fold's ``EvaluationResult`` of the predictions ``probs`` (name -> class probabilities)."""
        results = []
        for fold, pairs in self.held_out.items():
            masks = self.folder / re.sub(r"[^A-Za-z0-9._+-]+", "_", label) / f"fold_{fold}"
            shutil.rmtree(masks, ignore_errors=True)  # the masks of this run only
            masks.mkdir(parents=True)
            for pair in pairs:
                Image.fromarray(self.value_map.decode(probs[pair.name].argmax(0))).save(masks / f"{pair.name}.png")
            results.append(score_prediction_folder(masks, pairs, worst_k=0, mask_values=self.value_map.values))
        self.scored[label] = results
        return results


def print_area_agreement(scored: dict[str, list], names: list[str]) -> None:
    """Fluid area per B-scan, out of fold against grader 1 (what a clinic reads), through gctxseg.metrics.agreement.

    In pixels: the Duke set ships no pixel spacing (Spectralis, ~3.9 um axial, ~11 um lateral)."""
    print(f"\nfluid area per scan vs grader 1, out of fold ({len(names)} scans; px)")
    print(f"{'recipe':<34}{'mean true':>10}{'mean pred':>10}{'MAE':>8}{'bias':>8}{'95% LoA':>18}{'r':>7}")
    for recipe, results in scored.items():
        pixels = {Path(r["file"]).stem: r for result in results for r in result.rows}
        rows = []
        for name in names:
            truth, predicted = pixels[name]["truth_pixels"], pixels[name]["pred_pixels"]
            rows.append({"file": name, "kind": "image", "class": "fluid", "unit": "px", "truth": truth,
                         "predicted": predicted, "difference": predicted - truth})
        (stats,) = agreement_summary(rows, ["fluid"])
        r = np.corrcoef([row["truth"] for row in rows], [row["predicted"] for row in rows])[0, 1]
        low, high = stats["limits of agreement"]
        print(f"{recipe:<34}{stats['mean truth']:>10.0f}{stats['mean predicted']:>10.0f}"
              f"{stats['mean absolute error']:>8.0f}{stats['bias']:>8.0f}{f'{low:.0f} to {high:.0f}':>18}{r:>7.3f}")


def _cv_rows(cv_dir: Path, names, scoring: Scoring, folds, probs) -> list[dict]:
    """Rows of a ``gctxseg cv`` folder: each configuration (its OOF probabilities, steps and times), then the
    chosen one with the post-processed pooled Dice that chose it."""
    summary = json.loads((cv_dir / "cv_summary.json").read_text())
    rows = []
    for model, config in summary["configurations"].items():
        times = []
        for f in range(folds):
            log = json.loads((cv_dir / model / f"fold_{f}" / "log.json").read_text())["train parameters"]
            times.append({"epochs": log["epochs"], "steps": config["steps per fold"][f], "size": log["input size"],
                          "wall s": config["wall s"] / folds, "cpu s": config["cpu s"] / folds})
        probs[f"cv:{model}"] = _oof(cv_dir / model, names)
        extra = {"post-processed": config["pooled out-of-fold post-processed"]["dice"][0]}
        rows.append(_row(f"cv:{model}", scoring(f"cv:{model}", probs[f"cv:{model}"]), folds, times, extra))
    chosen = summary["chosen"]
    members = [probs[f"cv:{m}"] for m in chosen["members"]]
    mean = {n: np.mean([m[n].astype(np.float32) for m in members], axis=0) for n in names}
    # one entry, not one per fold: the ensemble's epochs and sizes are its members' (rows above)
    times = [{"wall s": sum(summary["configurations"][m]["wall s"] for m in chosen["members"]),
              "cpu s": sum(summary["configurations"][m]["cpu s"] for m in chosen["members"])}]
    rows.append(_row(f"cv chose {chosen['name']}", scoring(f"cv chose {chosen['name']}", mean), folds, times,
                     {"post-processed": chosen["post-processed dice"][0]}))
    return rows


def _row(recipe, results, folds, times, extra) -> dict:
    """One line of the table: fluid Dice per fold (its held-out scans' summed confusion) and pooled over all."""
    fold_dice = [result.summary["Dice"][0] for result in results]
    pooled = scores_from_confusion(sum(result.confusion for result in results))["Dice"][0]
    epochs = "/".join(str(t["epochs"]) for t in times) if len(times) == folds else "-"
    steps = "/".join(str(t.get("steps", "?")) for t in times) if len(times) == folds else "-"
    size = "x".join(map(str, times[0]["size"])) if len(times) == folds else "-"
    return {"recipe": recipe, "folds": fold_dice, "pooled": pooled, "epochs": epochs, "steps": steps, "size": size,
            "wall": sum(t["wall s"] for t in times) / 60, "cpu": sum(t["cpu s"] for t in times) / 60, **extra}


if __name__ == "__main__":
    main()
