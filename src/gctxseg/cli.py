"""Command line: ``gctxseg train|predict|evaluate|report|compare|export|convert-checkpoint|synth|demo|models``.
Parsing only; the work is done elsewhere."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__
from .core.precision import AMP_CHOICES
from .data import DatasetError
from .data.transforms import AUGMENTATIONS
from .training import NonFiniteLossError, TrainingInterrupted

__all__ = ["main", "build_parser"]

# what `gctxseg --help` opens with: what the tool does, then every command with one example
DESCRIPTION = """\
gctxseg trains, evaluates and serves 2D medical image segmentation models (GCtx-UNet, U-Net, UNet++,
UNet3+, GCT-UNet) on a folder of images and masks: retinal OCT B-scans (edema, macular holes), CT slices
(DICOM, NIfTI). Predictions come with fluid areas (mm2) and volumes (mm3) per image and a gallery."""

COMMANDS = """\
commands (gctxseg COMMAND --help for all options):
  demo      phantom data -> train -> predict, CPU friendly      gctxseg demo
  synth     write the synthetic OCT phantom                    gctxseg synth --out data --n 400
  train     train on images + masks                            gctxseg train --data-train data/train/images \\
                                                                 --data-val data/val/images --epochs 50
  predict   masks, overlays, measurements.csv, index.html      gctxseg predict --source inference/img \\
                                                                 --pixel-spacing 0.0039 0.0117
  evaluate  Dice, HD95, NSD, area/volume agreement             gctxseg evaluate --weights runs/exp/best.pt \\
                                                                 --data data/val/images
  report    a run's report.html                                gctxseg report runs/exp
  compare   runs side by side                                  gctxseg compare runs/exp runs/exp2
  export    ONNX for CPU serving                               gctxseg export --weights runs/exp/best.pt
  models    architectures, parameters, multiply-adds           gctxseg models --base-size 224 224
  plan      the settings train would plan for a folder         gctxseg plan data/duke/images
  cv        K-fold CV by patient, out-of-fold scores           gctxseg cv data/duke/images --folds 5
  convert   public sets to images/masks + splits.json          gctxseg convert duke-dme SRC data/duke
  pretrain  an offline start for GCtx-UNet                     gctxseg pretrain --task phantom mim \\
                                                                 --images data/duke/images
  convert-checkpoint  old checkpoint -> safe format            gctxseg convert-checkpoint --trust old.pt new.pt"""


def _model_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _architecture_options(args: argparse.Namespace) -> dict:
    """``--model-option`` pairs plus the named architecture flags that were given."""
    options = dict(args.model_option)
    named = {"width": args.width, "ds_head": args.ds_head, "attention_gate": args.attention_gate or None}
    options.update({k: v for k, v in named.items() if v is not None})
    return options


_ARCHITECTURE_FLAGS = ("model_option", "width", "ds_head", "attention_gate")  # all become TrainConfig.model_options


def _given_train_settings(argv: Sequence[str]) -> set[str]:
    """The TrainConfig settings named on a ``gctxseg train`` command line (not left at their defaults).

    Parsed a second time with every default suppressed, so ``--epochs 300`` counts as given although 300 is
    the default (a resumed run then shortens to it), and abbreviations and ``--flag=value`` count too.
    """
    parser = argparse.ArgumentParser(prog="gctxseg", add_help=False)
    train_parser = _add_train(parser.add_subparsers(dest="command"))
    for action in train_parser._actions:
        action.default = argparse.SUPPRESS
    given = set(vars(parser.parse_args(list(argv))).keys()) - {"command"}
    renamed = {"fg_share": "foreground_share"}
    return {"model_options" if name in _ARCHITECTURE_FLAGS else renamed.get(name, name) for name in given}


def _add_train(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a segmentation model on a folder of images and masks")
    _add_train_arguments(p)
    p.add_argument("--schedule-from", default=None, metavar="RUN",
                   help="replay a run's recorded steps, schedule revisions and planned settings (its folder or "
                        "log.json): with its seed, a --time-budget run's weights exactly (docs/time-budget.md)")
    return p


def _add_cv(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cv", help="K-fold cross-validation by patient: train every fold, score out-of-fold, "
                                  "choose post-processing")
    p.add_argument("data", help="labelled images folder (masks in the sibling 'masks' folder)")
    p.add_argument("--summary-only", action="store_true", help="only (re)write the summary of a trained CV folder")
    p.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                   help="configurations to cross-validate and choose among (default: gctx_unet unet nnunet, or "
                        "--model alone when given); --time-budget is for all of them together")
    p.add_argument("--no-race", action="store_true",
                   help="under --time-budget, train every configuration on every fold (by default those more "
                        "than 0.10 Dice behind the best after fold 0 stop, and their time goes to the others)")
    _add_train_arguments(p)
    p.set_defaults(folds=5, name="cv")


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    from .training import TrainConfig

    d = TrainConfig()
    p.add_argument("--model", default=d.model, help=f"architecture (default {d.model}); see 'gctxseg models'")
    p.add_argument("--base-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="training input size in pixels (default: planned from the images' median size, aspect "
                        "kept; the seed project used 224 224)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default: planned)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: planned; with --resume: the run's)")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="train exactly N optimiser steps instead of --epochs (the last epoch may be partial)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak AdamW learning rate (default: planned per architecture family)")
    p.add_argument("--lrf", type=float, default=d.lrf, help=f"cosine decay to lr*lrf (default {d.lrf})")
    p.add_argument("--ct", action="store_true",
                   help="CT input (DICOM/NIfTI in HU): window intensities before normalisation; without a window "
                        "option the window spans the 0.5-99.5th HU percentiles inside the training masks")
    p.add_argument("--window", default=None, metavar="PRESET",
                   help="CT window preset: abdomen, lung, bone, brain, liver, mediastinum, or LEVEL/WIDTH in HU "
                        "(default: derived from the training set)")
    p.add_argument("--window-level", type=float, default=None, metavar="HU", help="CT window centre in HU")
    p.add_argument("--window-width", type=float, default=None, metavar="HU", help="CT window width in HU")
    p.add_argument("--windows", type=lambda t: tuple(w for w in t.split(",") if w.strip()), default=(),
                   metavar="W1,W2", help="CT windows stacked as input channels, e.g. lung,mediastinum "
                                         "(presets, LEVEL/WIDTH or auto)")
    p.add_argument("--empty-slice-fraction", type=float, default=d.empty_slice_fraction, metavar="F",
                   help="share of training slices (or images) without foreground to keep, drawn at random; "
                        "e.g. 0.1 for CT volumes (default 1 = all)")
    p.add_argument("--img_f", default=d.img_f,
                   help=f"image file suffix: .jpg, .png, .tif, .dcm, .nii.gz ... (default {d.img_f})")
    p.add_argument("--mask_f", default=d.mask_f, help=f"mask file suffix (default {d.mask_f})")
    p.add_argument("--results", default=d.results, help=f"folder of run folders (default {d.results})")
    p.add_argument("--name", default=d.name, help=f"run folder name; exp, exp2, ... (default {d.name})")
    p.add_argument("--exist-ok", action="store_true", help="reuse an existing run folder of that name")
    p.add_argument("--data-train", default=d.data_train, help=f"training images (default {d.data_train})")
    p.add_argument("--data-val", default=d.data_val, help=f"validation images (default {d.data_val})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--workers", type=int, default=d.workers, help="data loader processes (default: min(4, cpus/2))")
    p.add_argument("--cache-dir", default=d.cache_dir, metavar="DIR",
                   help="keep decoded samples as memory-mapped .npy files in DIR, shared by loader workers, ranks "
                        "and later runs on the same data (default: in memory, per worker)")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1 ... (default auto)")
    p.add_argument("--amp", default=d.amp, choices=AMP_CHOICES,
                   help="mixed precision: auto = bf16/fp16 on GPUs, bf16 on CPUs with native bf16 (default auto)")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum, metavar="N",
                   help="average the gradients of N batches per optimiser step: effective batch = N x "
                        "--batch-size (default 1)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (eager fallback if it fails); meant for GPUs - on a 2-core CPU "
                        "training measured no faster than eager bf16 (docs/speed.md)")
    p.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default: planned)")
    p.add_argument("--warmup-epochs", type=float, default=None,
                   help="linear warm-up length, capped at 10%% of the schedule (default: planned)")
    p.add_argument("--fg-share", type=float, default=None, metavar="F",
                   help="top up each batch so each foreground class is in at least this share of its images "
                        "(default: planned, 1/3 where a class is missing from some images; 0 = plain shuffling)")
    p.add_argument("--augment", choices=AUGMENTATIONS, default=None,
                   help="augmentation strength: standard (small affine and jitter on half the images) or strong "
                        "(wider, most images, blur and noise); default: planned per architecture (docs/real-oct.md)")
    p.add_argument("--val-every", type=int, default=None, metavar="N",
                   help="validate every N epochs and the last (default: planned so that validation takes at most "
                        "a tenth of the training time)")
    p.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                   help="minutes the run may take: the input size planned from a measured step time, and, "
                        "unless --epochs/--steps fix them, the steps follow the clock to the deadline")
    _add_fold_options(p)
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm when run under torchrun")
    p.add_argument("--model-option", type=_model_option, action="append", default=[], metavar="KEY=VALUE",
                   help="extra architecture argument, e.g. base_width=32 (repeatable)")
    p.add_argument("--width", type=float, default=None, help="width multiplier of unet++ / unet3+ (default 1.0)")
    p.add_argument("--ds-head", choices=["final", "mean"], default=None,
                   help="unet++ inference output: the final head or the mean of the four (default final)")
    p.add_argument("--attention-gate", action="store_true", help="gct_unet: attention gates on the skips")
    p.add_argument("--encoder-weights", default=None, metavar="PATH|imagenet",
                   help="gctx_unet: ImageNet GC ViT-xxtiny checkpoint (timm or NVlabs keys) for the encoder, or "
                        "'imagenet': timm's gcvit_xxtiny weights through timm's download and cache")
    p.add_argument("--decoder-init", default=d.decoder_init, choices=["none", "mirror"],
                   help="gctx_unet with --encoder-weights: 'mirror' starts each decoder stage from the encoder "
                        "stage of the same scale, as the authors do (default none)")
    p.add_argument("--init-weights", default=None, metavar="PT|none",
                   help="start the whole network from a gctxseg pretrain pretrained.pt (or a run's best.pt) of the "
                        "same architecture; a head of another class count starts fresh; 'none': from scratch "
                        "(default: gctx_unet starts from the start gctxseg pretrain --install put in the cache)")
    p.add_argument("--resume", default=None, metavar="LAST_PT",
                   help="continue a run from its last.pt with its own settings; --epochs (extends or shortens), "
                        "--device and --workers may change, other flags given are named as ignored")


def _add_fold_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--folds", type=int, default=None, required=required, metavar="K",
                   help="K-fold cross-validation by patient on --data-train (then --data-val is not used)")
    p.add_argument("--fold", type=int, default=0, help="the fold to train, 0..K-1 (default 0)")
    p.add_argument("--group-regex", default=None, metavar="RE",
                   help="patient/eye id from the file name, first capture group, e.g. '^(p\\d+)_' (default: "
                        "splits.json or groups.json beside the images folder, else every image its own group)")
    p.add_argument("--splits", default=None, metavar="JSON",
                   help="folds as nnU-Net's splits_final.json: [{\"train\": [stems], \"val\": [stems]}, ...]")


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    from .training.pretrain import PRETRAIN_TASKS, PretrainConfig

    d = PretrainConfig()
    p = sub.add_parser("pretrain", help="pre-train a whole-network start offline: phantom B-scans and/or masked "
                                        "rebuilding of your own scans (then: train --init-weights)")
    p.add_argument("--task", nargs="+", choices=PRETRAIN_TASKS, default=[d.task],
                   help="phantom: segment a fresh stream of phantom B-scans; mim: rebuild blanked patches of "
                        "--images/--unlabeled; both: one after the other (default phantom)")
    p.add_argument("--images", nargs="+", default=[], metavar="DIR", help="mim: folders of your labelled scans")
    p.add_argument("--unlabeled", nargs="+", default=[], metavar="DIR", help="mim: folders of scans without masks")
    p.add_argument("--model", default=d.model, help=f"architecture (default {d.model}); the later run's")
    p.add_argument("--model-option", type=_model_option, action="append", default=[], metavar="KEY=VALUE",
                   help="architecture argument, as the later run's (repeatable)")
    p.add_argument("--in-channels", type=int, default=d.in_channels, help="input channels (default 1)")
    p.add_argument("--base-size", type=int, nargs=2, default=list(d.base_size), metavar=("H", "W"),
                   help=f"pre-training input size (default {d.base_size[0]} {d.base_size[1]})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs (default {d.epochs})")
    p.add_argument("--images-per-epoch", type=int, default=d.images_per_epoch,
                   help=f"phantom: new scans rendered each epoch (default {d.images_per_epoch})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"(default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak AdamW learning rate (default {d.lr:g})")
    p.add_argument("--mask-ratio", type=float, default=d.mask_ratio,
                   help=f"mim: share of patches blanked (default {d.mask_ratio})")
    p.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                   help="minutes for each task: the steps follow the clock to the deadline (--epochs: the first "
                        "estimate)")
    p.add_argument("--init-weights", default=None, metavar="PT", help="start from this pretrained.pt")
    p.add_argument("--install", action="store_true",
                   help="make the result the start of every later train/cv run of its architecture with the same "
                        "--model-option (in $GCTXSEG_CACHE, default ~/.cache/gctxseg/starts); train --init-weights "
                        "none still starts from scratch")
    p.add_argument("--out", default=d.out, help=f"run folder, one sub-folder per task (default {d.out})")
    p.add_argument("--resume", default=None, metavar="LAST_PT", help="continue a stopped task from its last.pt")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda ... (default auto)")
    p.add_argument("--amp", default=d.amp, choices=AMP_CHOICES, help="mixed precision (default auto)")
    p.add_argument("--workers", type=int, default=d.workers, help="data loader processes")


def _run_pretrain(args: argparse.Namespace) -> None:
    from .training.pretrain import PretrainConfig, pretrain, pretrain_sequence

    cfg = PretrainConfig(
        task=args.task[0], images=tuple(args.images) + tuple(args.unlabeled), model=args.model,
        model_options=dict(args.model_option), in_channels=args.in_channels, base_size=tuple(args.base_size),
        init=args.init_weights, epochs=args.epochs, images_per_epoch=args.images_per_epoch,
        batch_size=args.batch_size, lr=args.lr, mask_ratio=args.mask_ratio, time_budget=args.time_budget,
        device=args.device, amp=args.amp, workers=args.workers, seed=args.seed, out=args.out, resume=args.resume,
    )
    if args.resume:
        weights = pretrain(cfg)
    elif "mim" in args.task and not cfg.images:
        raise ValueError("--task mim rebuilds your own scans: give --images DIR (and --unlabeled DIR)")
    else:
        weights = pretrain_sequence(cfg, args.task)
    if args.install:
        from .training.start import install_start, installed_start_users

        installed = install_start(weights)  # as the architecture the file holds (a resumed run's, not --model's)
        print(f"installed {installed}: {installed_start_users(installed)}")
    else:
        print(f"pre-trained start: {weights}; use it with gctxseg train --init-weights {weights}, or install it "
              "with --install")


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="print the training plan gctxseg derives for a labelled folder")
    p.add_argument("data", help="images folder (masks in the sibling 'masks' folder)")
    p.add_argument("--model", default=None, help="architecture (default gctx_unet)")
    p.add_argument("--img_f", default=".png", help="image file suffix (default .png)")
    p.add_argument("--mask_f", default=".png", help="mask file suffix (default .png)")
    p.add_argument("--device", default="auto", help="device the plan is for (default auto)")
    p.add_argument("--val-every", type=int, default=None, metavar="N",
                   help="validate every N epochs and the last (default: planned so that validation takes at most "
                        "a tenth of the training time)")
    p.add_argument("--time-budget", type=float, default=None, metavar="MIN", help="minutes a run may take")


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a public dataset to images/masks + splits.json by patient")
    p.add_argument("dataset", choices=["duke-dme", "drive", "oct-volumes"],
                   help="duke-dme: Duke DME 2015 (.mat files or the PNG copy); drive: DRIVE retinal vessels "
                        "(training/ and test/ as it ships; written as OUT/train and OUT/test); oct-volumes: a folder "
                        "of HEYEX .vol/.e2e/.xml or OCT DICOM files (B-scans, geometry/NAME.json, groups.json)")
    p.add_argument("src", help="folder holding the downloaded files")
    p.add_argument("out", help="output folder (images/, masks/, splits.json, groups.json)")
    p.add_argument("--folds", type=int, default=5, help="folds by patient in splits.json (default 5)")
    p.add_argument("--grader", type=int, default=1, choices=[1, 2], help="Duke DME grader (default 1)")
    p.add_argument("--force", action="store_true", help="replace a non-empty OUT (else it is refused)")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment a folder of images with a trained model")
    p.add_argument("--weights", default=None, nargs="+",
                   help="best.pt or last.pt of a run folder, or a model.onnx from 'gctxseg export' (ONNX Runtime, "
                        "CPU); several checkpoints or a 'gctxseg cv' folder = an ensemble (softmax averaged, then "
                        "the CV's post-processing); default: best.pt of the newest run under --results")
    p.add_argument("--results", default="runs", help="folder of run folders searched without --weights (default runs)")
    p.add_argument("--source", default="inference/img", help="folder of images (default inference/img)")
    p.add_argument("--out", default="inference/out", help="output folder (default inference/out)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default auto)")
    p.add_argument("--amp", default="auto", choices=AMP_CHOICES, help="precision (default auto)")
    _add_inference_options(p)
    _add_measurement_options(p)
    p.add_argument("--class-codes", default=None, metavar="JSON",
                   help="codes of the DICOM SEG segments of OCT volume files, e.g. {\"hole\": {\"value\": ..., "
                        "\"scheme\": \"SCT\", \"meaning\": ...}} (default: SNOMED CT for edema/cyst, else a "
                        "private 99GCTX code; docs/clinic-files.md)")


def _add_measurement_options(p: argparse.ArgumentParser) -> None:
    """Pixel/slice spacing, B-scan grouping and class names of measurements.csv (gctxseg.clinical.measurements)."""
    p.add_argument("--pixel-spacing", type=float, nargs=2, default=None, metavar=("ROW_MM", "COL_MM"),
                   help="pixel size in mm of PNG/JPEG B-scans for areas in mm2 (DICOM/NIfTI: from the header; "
                        "default: spacing.json in the images folder, else areas are left blank)")
    p.add_argument("--slice-spacing", type=float, default=None, metavar="MM",
                   help="distance in mm between the B-scans of a --group-regex volume (or DICOM slices without "
                        "positions), for volumes in mm3")
    p.add_argument("--group-regex", default=None, metavar="REGEX",
                   help="join B-scans into volumes by this regex on the file stem: its (?P<volume>...) group, "
                        "else its first group, names the volume, e.g. '(.+)_bscan\\d+$'")
    p.add_argument("--class-names", nargs="+", default=[], metavar="NAME",
                   help="names of the foreground classes in measurements.csv, e.g. edema hole (default class1 ...); "
                        "a class named *hole* gets the macular hole's diameters in etdrs.csv")
    p.add_argument("--eye", choices=["OD", "OS"], default=None,
                   help="right (OD) or left (OS) eye: names the ETDRS quadrants nasal/temporal in etdrs.csv (default: "
                        "by image side, said in the file)")
    p.add_argument("--fovea", type=int, nargs=2, default=None, metavar=("SLICE", "COLUMN"),
                   help="the ETDRS grid's centre in every volume (default: found: the hole's centre, else the "
                        "deepest point of the inner retinal surface near the middle; docs/measurements.md)")


def _measurement_options(args: argparse.Namespace):
    from .clinical.measurements import MeasurementOptions

    return MeasurementOptions(
        pixel_spacing=tuple(args.pixel_spacing) if args.pixel_spacing else None, slice_spacing=args.slice_spacing,
        group_regex=args.group_regex, class_names=tuple(args.class_names), eye=args.eye,
        fovea=tuple(args.fovea) if args.fovea else None,
    )


def _add_inference_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average softmax over the image and its horizontal mirror (2x time)")
    p.add_argument("--tta-vflip", action="store_true",
                   help="also average over vertical mirrors (4x time; off by default: OCT is not up-down symmetric)")
    p.add_argument("--infer-mode", default="resize", choices=["resize", "sliding"],
                   help="resize: whole image to the training size and back (default); sliding: windows of the "
                        "training size over the image at full resolution, overlap 0.5, Gaussian blending")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model with frozen weights: about a minute of compiling first, then "
                        "faster on many images (docs/speed.md); eager with a message where it cannot")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a trained model, or a folder of predicted masks, on a labelled folder "
                                        "(Dice, IoU, HD95, NSD ...)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", nargs="+",
                        help="best.pt or last.pt of a run folder; several, or a 'gctxseg cv' folder = an ensemble")
    source.add_argument("--predictions", default=None, metavar="DIR",
                        help="score these predicted masks instead of a model's (no model needed): NAME.png per image "
                             "NAME of --data, with the truth masks' values, as 'gctxseg predict' writes them")
    p.add_argument("--data", required=True, help="images folder, masks in the sibling 'masks' folder; or a folder of "
                                                 "OCT volume files (.vol, OPT .dcm, HEYEX .xml: docs/clinic-files.md)")
    p.add_argument("--masks", default=None, metavar="DIR",
                   help="true masks of OCT volume files, named as 'convert oct-volumes' names the B-scans "
                        "(NAME_b000.png ...; default: the sibling 'masks' folder; else a DICOM SEG beside the source)")
    p.add_argument("--img_f", default=".jpg", help="image file suffix (default .jpg)")
    p.add_argument("--mask_f", default=".png", help="mask file suffix (default .png)")
    p.add_argument("--out", default=None,
                   help="output folder (default: eval_<split> beside the weights, e.g. runs/exp/eval_val; with "
                        "--predictions DIR, DIR_eval_<split>)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default auto)")
    p.add_argument("--amp", default="auto", choices=AMP_CHOICES, help="precision (default auto)")
    _add_inference_options(p)
    p.add_argument("--nsd-tolerance", type=float, default=2.0,
                   help="normalised surface Dice tolerance in pixels (in the --spacing unit if given; default 2)")
    p.add_argument("--spacing", type=float, nargs=2, default=None, metavar=("ROW", "COL"),
                   help="pixel size, e.g. in mm, for HD95 and NSD in that unit (default: pixels)")
    p.add_argument("--worst-k", type=int, default=4, help="images in the worst/best case grids (default 4)")
    _add_measurement_options(p)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="evaluate a run's best.pt on its val set and write RUN_DIR/report.html")
    p.add_argument("run_dir", help="run folder written by 'gctxseg train'")
    p.add_argument("--data", default=None, help="images folder to evaluate on (default: the run's val folder)")
    p.add_argument("--no-eval", action="store_true", help="do not evaluate; reuse RUN_DIR/eval if it exists")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default auto)")
    p.add_argument("--amp", default="auto", choices=AMP_CHOICES, help="precision (default auto)")
    p.add_argument("--tta", action="store_true", help="horizontal-flip test-time augmentation")
    p.add_argument("--infer-mode", default="resize", choices=["resize", "sliding"], help="(default resize)")


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="best val metrics, size and speed of several runs side by side")
    p.add_argument("run_dirs", nargs="+", help="run folders")
    p.add_argument("--out", default="compare.png", help="combined curves plot (default compare.png)")
    p.add_argument("--force", action="store_true", help="replace an existing --out that is not a gctxseg plot")
    p.add_argument("--device", default="auto", help="where to time inference: auto, cpu, cuda ... (default auto)")
    p.add_argument("--amp", default="off", choices=AMP_CHOICES,
                   help="precision of the timing (default off = fp32)")
    p.add_argument("--timing-seconds", type=float, default=1.0,
                   help="seconds of inference timed per run, batch 1 at its training size (default 1)")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained model to ONNX (runs with 'gctxseg predict --weights X.onnx')")
    p.add_argument("--weights", required=True, help="best.pt or last.pt of a run folder")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format (default onnx)")
    p.add_argument("--out", default=None, help="file to write (default: the weights' path with suffix .onnx)")
    p.add_argument("--force", action="store_true", help="replace an existing --out that gctxseg export did not write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")


def _add_convert_checkpoint(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert-checkpoint",
                       help="rewrite an older gctxseg checkpoint (pickled objects) as plain data that loads safely")
    p.add_argument("old", help="the old checkpoint (best.pt / last.pt)")
    p.add_argument("new", help="where to write the converted checkpoint (a new file)")
    p.add_argument("--force", action="store_true", help="replace NEW if it exists")
    p.add_argument("--trust", action="store_true",
                   help="required: reading the old file unpickles it, which runs any code it holds; only for files "
                        "from a source you trust")


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write the synthetic OCT phantom dataset (train/val split 7:3)")
    p.add_argument("--out", default="data", help="output folder (default data)")
    p.add_argument("--n", type=int, default=400, help="number of B-scans (default 400)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=[224, 224], help="(default 224 224)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--volumes", type=int, default=None, metavar="N",
                   help="instead: N phantom eyes as stacks of --slices B-scans of --size (OUT/images, OUT/masks, "
                        "OUT/truth.json with the true ETDRS fluid in nL and hole diameters; docs/measurements.md)")
    p.add_argument("--slices", type=int, default=64, help="B-scans per phantom eye, over 6 mm (default 64)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gctxseg", usage="gctxseg [-h] [--version] COMMAND ...",
                                     description=f"{DESCRIPTION}\n\n{COMMANDS}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gctxseg {__version__}")
    # the commands are listed with examples in the description: not a second time from their help strings
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help=argparse.SUPPRESS)
    _add_train(sub)
    _add_predict(sub)
    _add_evaluate(sub)
    _add_report(sub)
    _add_compare(sub)
    _add_export(sub)
    _add_convert_checkpoint(sub)
    _add_synth(sub)
    _add_plan(sub)
    _add_convert(sub)
    _add_cv(sub)
    _add_pretrain(sub)
    demo = sub.add_parser("demo", help="phantom data -> train the default model -> predict (CPU friendly)")
    demo.add_argument("--epochs", type=int, default=None,
                      help="train this many epochs at 224x224 instead of the demo's 6-minute budget (epochs fitted "
                           "to a measured step time)")
    demo.add_argument("--model", default=None, help="override the default model")
    sub.add_parser("models", help="list the architectures with parameters and multiply-adds").add_argument(
        "--base-size", type=int, nargs=2, default=[224, 224], metavar=("H", "W"))
    return parser


def _train_config(args: argparse.Namespace, **overrides):
    from .training import TrainConfig

    settings = dict(
        data_train=args.data_train, data_val=args.data_val, img_f=args.img_f, mask_f=args.mask_f,
        ct=args.ct, window=args.window, window_level=args.window_level, window_width=args.window_width,
        windows=args.windows, empty_slice_fraction=args.empty_slice_fraction,
        base_size=tuple(args.base_size) if args.base_size else None, cache_dir=args.cache_dir, model=args.model,
        model_options=_architecture_options(args), encoder_weights=args.encoder_weights, decoder_init=args.decoder_init,
        init_weights=args.init_weights, epochs=args.epochs, batch_size=args.batch_size, grad_accum=args.grad_accum,
        steps=args.steps, schedule_from=getattr(args, "schedule_from", None),
        compile=args.compile,
        lr=args.lr, lrf=args.lrf, warmup_epochs=args.warmup_epochs, weight_decay=args.weight_decay,
        foreground_share=args.fg_share, augment=args.augment, val_every=args.val_every, time_budget=args.time_budget,
        folds=args.folds,
        fold=args.fold, group_regex=args.group_regex, splits=args.splits,
        device=args.device, amp=args.amp, workers=args.workers, seed=args.seed, sync_bn=args.sync_bn,
        results=args.results, name=args.name, exist_ok=args.exist_ok, resume=args.resume,
    )
    return TrainConfig(**{**settings, **overrides})


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            from .workflows.train_report import train_and_report

            if args.decoder_init != "none" and not args.encoder_weights:
                raise ValueError(f"--decoder-init {args.decoder_init} mirrors ImageNet encoder weights into the "
                                 "decoder; add --encoder-weights imagenet (or PATH)")
            train_and_report(_train_config(args), given=_given_train_settings(argv))
        elif args.command == "cv":
            from dataclasses import replace
            from pathlib import Path

            from .crossval.configurations import cv_models, run_cv, summarize_folder

            model_given = any(a == "--model" or a.startswith("--model=") for a in argv)
            models = cv_models(args.models, args.model if model_given else None)
            if args.summary_only:
                from .core.outputs import plain_name

                cv_dir = Path(args.results) / plain_name(args.name, "--name", args.results)
                summarize_folder(cv_dir, device=args.device, amp=args.amp)
            else:
                cfg = _train_config(args, data_train=args.data, model=models[0])
                for other in models[1:]:  # every configuration's --model-option checked before any fold trains
                    replace(cfg, model=other)
                cv_dir = run_cv(cfg, models, race=not args.no_race)
                print(f"cross-validation folder: {cv_dir}; predict with: gctxseg predict --weights {cv_dir}")
        elif args.command == "pretrain":
            _run_pretrain(args)
        elif args.command == "plan":
            from .training.planning import plan_for_folder

            plan = plan_for_folder(args.data, args.img_f, args.mask_f, args.model, args.device, args.time_budget)
            print(plan.format())
        elif args.command == "convert":
            from .data.convert import CONVERTERS

            options = {"grader": args.grader} if args.dataset == "duke-dme" else {}
            done = CONVERTERS[args.dataset](args.src, args.out, folds=args.folds, force=args.force, **options)
            if args.dataset == "oct-volumes":
                print(f"wrote {done['scans']} B-scans of {done['volumes']} volumes to {args.out}/images, their "
                      f"geometry to {args.out}/geometry and groups.json (no masks: device files carry no fluid or "
                      "hole annotations; annotate the B-scans and put masks in masks/)")
            elif args.dataset == "drive":
                print(f"wrote {done['photographs']} photographs to {args.out}/train (training) and {args.out}/test "
                      f"(test), {done['folds']} folds of the training images in {args.out}/train/splits.json")
            else:
                print(f"wrote {done['scans']} scans of {done['patients']} patients ({done['with fluid']} with fluid) "
                      f"to {args.out}/images and masks, {done['folds']} folds by patient in {args.out}/splits.json")
        elif args.command == "predict":
            from .workflows.predict_folder import predict_folder

            measure = _measurement_options(args)
            measure.check()  # bad spacing flags fail before the weights are looked for
            if args.weights is None:
                from .runs.runfinder import newest_best_weights

                args.weights = str(newest_best_weights(args.results))
                print(f"using {args.weights} (best.pt of the newest run under {args.results}; --weights picks another)")
            summary = predict_folder(args.weights, args.source, args.out, args.device, args.amp,
                                     tta=args.tta, tta_vflip=args.tta_vflip, infer_mode=args.infer_mode,
                                     compile=args.compile, measure=measure, class_codes=args.class_codes)
            print(f"wrote {len(summary.written)} masks and overlays to {args.out}, measurements.csv and index.html")
            if summary.failed:
                print(f"{len(summary.failed)} image(s) failed:", *summary.failed, sep="\n  ", file=sys.stderr)
                return 1
        elif args.command == "evaluate":
            from pathlib import Path

            from .evaluation.evaluate import evaluate_folder, score_prediction_folder
            from .evaluation.volume_files import evaluate_volume_folder, volume_files_in
            from .reporting.report import format_table

            split = Path(args.data).resolve().parent.name
            scoring = dict(nsd_tolerance=args.nsd_tolerance, spacing=tuple(args.spacing) if args.spacing else None,
                           worst_k=args.worst_k, measure=_measurement_options(args))
            volumes = bool(volume_files_in(args.data))
            if args.masks is not None and not volumes:
                raise ValueError(f"--masks {args.masks}: only for a folder of OCT volume files; the masks of an "
                                 "images folder are its sibling 'masks' folder")
            if args.predictions:
                if volumes:
                    raise ValueError(f"--predictions with --data {args.data}: a folder of OCT volume files is scored "
                                     "with --weights (its truth is matched to the B-scans the model predicts)")
                folder = Path(args.predictions)
                out = args.out or folder.parent / f"{folder.name}_eval_{split}"
                result = score_prediction_folder(folder, args.data, args.img_f, args.mask_f, out, **scoring)
            else:
                first = Path(args.weights[0])
                out = args.out or (first if first.is_dir() else first.parent) / f"eval_{split}"
                model = dict(device=args.device, amp=args.amp, tta=args.tta, tta_vflip=args.tta_vflip,
                             infer_mode=args.infer_mode, compile=args.compile)
                if volumes:  # device exports: each file's own geometry, truth from masks or a SEG
                    result = evaluate_volume_folder(args.weights, args.data, out, masks=args.masks,
                                                    mask_f=args.mask_f, **model, **scoring)
                else:
                    result = evaluate_folder(args.weights, args.data, args.img_f, args.mask_f, out, **model, **scoring)
            s = result.record
            print(format_table([c.to_json() for c in s.per_class], ["name", "dice", "iou", "precision", "recall",
                                                                    "mean image dice", "hd95 mean", "hd95 median",
                                                                    "nsd mean", "missed", "false alarms"]))
            print(f"{s.images} images: pixel accuracy {s.pooled.pixel_accuracy:.4f}, mean dice "
                  f"{s.pooled.mean_dice:.4f}, mean iou {s.pooled.mean_iou:.4f}, mean hd95 {s.mean_hd95:.2f} "
                  f"{s.distance_unit}, mean nsd {s.mean_nsd:.4f}; wrote {out}/summary.json, metrics_per_image.csv "
                  "and plots")
            from .clinical.agreement import format_agreement

            print(format_agreement(s.agreement) + f"\n(amounts_per_image.csv, bland_altman.png in {out})")
            if s.etdrs_agreement:
                from .clinical.etdrs_rows import format_etdrs_agreement

                print(format_etdrs_agreement(s.etdrs_agreement)
                      + f"\n(grader_etdrs.csv, predicted_etdrs.csv, enface/ in {out})")
        elif args.command == "report":
            from .workflows.train_report import write_run_report

            path = write_run_report(args.run_dir, data=args.data, device=args.device, amp=args.amp, tta=args.tta,
                                    infer_mode=args.infer_mode, evaluate=not args.no_eval)
            print(f"wrote {path}")
        elif args.command == "compare":
            from .reporting.compare import compare_runs

            _, table = compare_runs(args.run_dirs, args.out, device=args.device, amp=args.amp,
                                    timing_seconds=args.timing_seconds, force=args.force)
            print(table)
            print(f"curves: {args.out}")
        elif args.command == "export":
            from .inference.export import export_onnx

            result = export_onnx(args.weights, args.out, args.opset, force=args.force)
            print(f"wrote {result.path}; max abs logit difference ONNX Runtime vs PyTorch: {result.max_abs_diff:.2e}")
        elif args.command == "convert-checkpoint":
            from .runs.checkpoint import convert_checkpoint

            written = convert_checkpoint(args.old, args.new, trust=args.trust, force=args.force)
            print(f"wrote {written}; it loads without unpickling code")
        elif args.command == "synth":
            from .data.phantom import phantom_pixel_spacing, synthesize_dataset

            if args.volumes is not None:
                from .data.phantom_volume import synthesize_volumes

                done = synthesize_volumes(args.out, n=args.volumes, shape=(args.slices, *args.size), seed=args.seed)
                print(f"wrote {done['volumes']} phantom eyes ({done['bscans']} B-scans) to {args.out}, truth in "
                      f"{args.out}/truth.json; measure with --group-regex '(eye\\d+)_b\\d+' --slice-spacing "
                      f"{done['slice_mm']:g}")
                return 0
            counts = synthesize_dataset(args.out, n=args.n, size=tuple(args.size), seed=args.seed)
            row_mm, col_mm = phantom_pixel_spacing(tuple(args.size))
            print(f"wrote {counts['train']} train and {counts['val']} val phantom B-scans to {args.out}; pixel spacing "
                  f"{row_mm * 1000:.1f} x {col_mm * 1000:.1f} um (6 mm wide, 2 mm deep) in {args.out}/spacing.json")
        elif args.command == "demo":
            from .workflows.demo import run_demo

            run_demo(epochs=args.epochs, model=args.model)
        elif args.command == "models":
            from .core.limits import check_input_size
            from .models import create_model, list_models, model_description
            from .models.complexity import count_macs, count_parameters

            size = check_input_size(args.base_size)  # before any model is built at it
            print(f"{'model':<16}{'params (M)':>12}{'G mult-adds':>13}  description (1 channel in, 3 classes, {size})")
            from .training.planning import size_options

            for name in list_models():
                model = create_model(name, 1, 3, **size_options(name, size))  # nnunet: its topology for this size
                print(f"{name:<16}{count_parameters(model) / 1e6:>12.2f}{count_macs(model, 1, size) / 1e9:>13.2f}  "
                      f"{model_description(name)}")
    except DatasetError as err:  # the data is wrong (images, masks, grouping or spacing files): exit 1
        print(f"error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # a flag or a file named by one (weights, settings) is wrong: exit 2, as argparse
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingInterrupted as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 130
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    except OSError as err:  # read-only folder, disk full, ...: the path and the reason, not a traceback
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}; check free space and write permission there", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
