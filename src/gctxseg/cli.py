"""Command line: ``gctxseg train|cv|pretrain|plan|convert|predict|evaluate|report|compare|export|convert-checkpoint|
synth|demo|models``.

Parsing only. Each command has an ``_add_<command>`` that builds its parser and a ``run_<command>`` that turns the
parsed arguments into the typed call of the function doing the work (in the stage packages) and prints what it
returned; :func:`main` dispatches (``_COMMANDS``) and answers each error with one line and an exit code. The train
flags are one table keyed by TrainConfig setting, :data:`TRAIN_FLAGS`: it builds the parser of ``train`` and ``cv``
(and lends its flags to ``pretrain``, ``plan``, ``demo`` and ``models``) and, through :func:`train_config`, the
TrainConfig.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

from . import IMPORTED_AT, __version__
from .core.console import flag_name
from .core.precision import AMP_CHOICES
from .data import DatasetError, DataWarning
from .data.transforms import AUGMENTATIONS
from .runs.evalsummary import EvaluationSummary
from .training import NonFiniteLossError, TrainConfig, TrainingInterrupted

__all__ = ["main", "build_parser", "train_config", "TRAIN_FLAGS", "ARCHITECTURE_FLAGS", "INTERNAL_SETTINGS"]

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


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(w for w in text.split(",") if w.strip())


# the flags that each set one entry of TrainConfig.model_options: dest -> argparse's add_argument keywords
ARCHITECTURE_FLAGS: dict[str, dict] = {
    "model_option": dict(type=_model_option, action="append", default=[], metavar="KEY=VALUE",
                         help="extra architecture argument, e.g. base_width=32 (repeatable)"),
    "width": dict(type=float, default=None, help="width multiplier of unet++ / unet3+ (default 1.0)"),
    "ds_head": dict(choices=["final", "mean"], default=None,
                    help="unet++ inference output: the final head or the mean of the four (default final)"),
    "attention_gate": dict(action="store_true", help="gct_unet: attention gates on the skips"),
}

# TrainConfig setting -> argparse's add_argument keywords for its flag. The flag is core.console.flag_name(setting),
# its dest the setting and its default the setting's default (%(default)s in a help says it); the order is
# `gctxseg train --help`'s. model_options is set by several flags (ARCHITECTURE_FLAGS). A new TrainConfig setting
# gets an entry here or in INTERNAL_SETTINGS (tests/cli/test_train_flags.py holds the two to TrainConfig).
TRAIN_FLAGS: dict[str, dict] = {
    "model": dict(help="architecture (default %(default)s); see 'gctxseg models'"),
    "base_size": dict(type=int, nargs=2, metavar=("H", "W"),
                      help="training input size in pixels (default: planned from the images' median size, aspect "
                           "kept; the seed project used 224 224)"),
    "batch_size": dict(type=int, help="images per step (default: planned)"),
    "epochs": dict(type=int, help="epochs (default: planned; with --resume: the run's)"),
    "steps": dict(type=int, metavar="N",
                  help="train exactly N optimiser steps instead of --epochs (the last epoch may be partial)"),
    "lr": dict(type=float, help="peak AdamW learning rate (default: planned per architecture family)"),
    "lrf": dict(type=float, help="cosine decay to lr*lrf (default %(default)s)"),
    "ct": dict(action="store_true",
               help="CT input (DICOM/NIfTI in HU): window intensities before normalisation; without a window option "
                    "the window spans the 0.5-99.5th HU percentiles inside the training masks"),
    "window": dict(metavar="PRESET",
                   help="CT window preset: abdomen, lung, bone, brain, liver, mediastinum, or LEVEL/WIDTH in HU "
                        "(default: derived from the training set)"),
    "window_level": dict(type=float, metavar="HU", help="CT window centre in HU"),
    "window_width": dict(type=float, metavar="HU", help="CT window width in HU"),
    "windows": dict(type=_comma_list, metavar="W1,W2",
                    help="CT windows stacked as input channels, e.g. lung,mediastinum (presets, LEVEL/WIDTH or auto)"),
    "empty_slice_fraction": dict(type=float, metavar="F",
                                 help="share of training slices (or images) without foreground to keep, drawn at "
                                      "random; e.g. 0.1 for CT volumes (default 1 = all)"),
    "img_f": dict(help="image file suffix: .jpg, .png, .tif, .dcm, .nii.gz ... (default %(default)s)"),
    "mask_f": dict(help="mask file suffix (default %(default)s)"),
    "results": dict(help="folder of run folders (default %(default)s)"),
    "name": dict(help="run folder name; exp, exp2, ... (default %(default)s)"),
    "exist_ok": dict(action="store_true", help="reuse an existing run folder of that name"),
    "data_train": dict(help="training images (default %(default)s)"),
    "data_val": dict(help="validation images (default %(default)s)"),
    "seed": dict(type=int, help="random seed (default %(default)s)"),
    "workers": dict(type=int, help="data loader processes (default: min(4, cpus/2))"),
    "cpu_threads": dict(type=int, metavar="N",
                        help="torch's CPU threads (default: the machine's; under --time-budget on a CPU, planned: "
                             "fewer when a step measures faster with fewer, as beside another busy program)"),
    "cache_dir": dict(metavar="DIR",
                      help="keep decoded samples as memory-mapped .npy files in DIR, shared by loader workers, ranks "
                           "and later runs on the same data (default: in memory, per worker)"),
    "device": dict(help="auto, cpu, cuda, cuda:1 ... (default auto)"),
    "amp": dict(choices=AMP_CHOICES,
                help="mixed precision: auto = bf16/fp16 on GPUs, bf16 on CPUs with native bf16 (default auto)"),
    "grad_accum": dict(type=int, metavar="N",
                       help="average the gradients of N batches per optimiser step: effective batch = N x "
                            "--batch-size (default 1)"),
    "compile": dict(action="store_true",
                    help="torch.compile the model (eager fallback if it fails); meant for GPUs - on a 2-core CPU "
                         "training measured no faster than eager bf16 (docs/speed.md)"),
    "weight_decay": dict(type=float, help="AdamW weight decay (default: planned)"),
    "warmup_epochs": dict(type=float, help="linear warm-up length, capped at 10%% of the schedule (default: planned)"),
    "foreground_share": dict(type=float, metavar="F",
                             help="top up each batch so each foreground class is in at least this share of its "
                                  "images (default: planned, 1/3 where a class is missing from some images; 0 = "
                                  "plain shuffling)"),
    "augment": dict(choices=AUGMENTATIONS,
                    help="augmentation strength: standard (small affine and jitter on half the images) or strong "
                         "(wider, most images, blur and noise); default: planned per architecture (docs/real-oct.md)"),
    "val_every": dict(type=int, metavar="N",
                      help="validate every N epochs and the last (default: planned so that validation takes at most "
                           "a tenth of the training time)"),
    "time_budget": dict(type=float, metavar="MIN",
                        help="minutes the run may take: the input size planned from a measured step time, and, "
                             "unless --epochs/--steps fix them, the steps follow the clock to the deadline"),
    "folds": dict(type=int, metavar="K",
                  help="K-fold cross-validation by patient on --data-train (then --data-val is not used)"),
    "fold": dict(type=int, help="the fold to train, 0..K-1 (default 0)"),
    "group_regex": dict(metavar="RE",
                        help="patient/eye id from the file name, first capture group, e.g. '^(p\\d+)_' (default: "
                             "splits.json or groups.json beside the images folder, else every image its own group)"),
    "splits": dict(metavar="JSON",
                   help="folds as nnU-Net's splits_final.json: [{\"train\": [stems], \"val\": [stems]}, ...]"),
    "sync_bn": dict(action="store_true", help="SyncBatchNorm when run under torchrun"),
    "model_options": ARCHITECTURE_FLAGS,
    "encoder_weights": dict(metavar="PATH|imagenet",
                            help="gctx_unet: ImageNet GC ViT-xxtiny checkpoint (timm or NVlabs keys) for the encoder, "
                                 "or 'imagenet': timm's gcvit_xxtiny weights through timm's download and cache"),
    "decoder_init": dict(choices=["none", "mirror"],
                         help="gctx_unet with --encoder-weights: 'mirror' starts each decoder stage from the encoder "
                              "stage of the same scale, as the authors do (default none)"),
    "init_weights": dict(metavar="PT|none",
                         help="start the whole network from a gctxseg pretrain pretrained.pt (or a run's best.pt) of "
                              "the same architecture; a head of another class count starts fresh; 'none': from "
                              "scratch (default: gctx_unet starts from the start gctxseg pretrain --install put in "
                              "the cache)"),
    "resume": dict(metavar="LAST_PT",
                   help="continue a run from its last.pt with its own settings; --epochs (extends or shortens), "
                        "--device and --workers may change, other flags given are named as ignored"),
    "schedule_from": dict(metavar="RUN",
                          help="replay a run's recorded steps, schedule revisions and planned settings (its folder or "
                               "log.json): with its seed, a --time-budget run's weights exactly (docs/time-budget.md)"),
}

# the TrainConfig settings no flag sets: loss weights and clipping fixed by the recipe, the validation samples drawn,
# and what callers other than a user set (cv's lr probe says why it chose lr, its later folds whose plan they keep;
# a replayed run's schedule revisions come from --schedule-from)
INTERNAL_SETTINGS = ("lambda_dice", "lambda_ce", "dice_background", "grad_clip", "num_samples", "lr_reason",
                     "schedule", "plan_reasons")


@cache
def _train_defaults() -> TrainConfig:
    return TrainConfig()


def _add_train_flag(p: argparse.ArgumentParser, name: str, **changes) -> None:
    """The flag of TrainConfig setting ``name`` from TRAIN_FLAGS; ``changes`` replace its keywords (the default
    or help of another command that shares the flag)."""
    options = {"default": getattr(_train_defaults(), name), **TRAIN_FLAGS[name], **changes}
    p.add_argument(flag_name(name), dest=name, **options)


def _add_architecture_flag(p: argparse.ArgumentParser, dest: str, **changes) -> None:
    p.add_argument("--" + dest.replace("_", "-"), dest=dest, **{**ARCHITECTURE_FLAGS[dest], **changes})


def _add_train_flags(p: argparse.ArgumentParser, leave_out: Sequence[str] = ()) -> None:
    """Every flag of TRAIN_FLAGS but those of the settings in ``leave_out``, in the table's order."""
    for name in TRAIN_FLAGS:
        if name == "model_options":
            for dest in ARCHITECTURE_FLAGS:
                _add_architecture_flag(p, dest)
        elif name not in leave_out:
            _add_train_flag(p, name)


def _architecture_options(args: argparse.Namespace) -> dict:
    """``--model-option`` pairs plus the named architecture flags that were given."""
    options = dict(args.model_option)
    named = {"width": args.width, "ds_head": args.ds_head, "attention_gate": args.attention_gate or None}
    options.update({k: v for k, v in named.items() if v is not None})
    return options


def train_config(args: argparse.Namespace, **overrides) -> TrainConfig:
    """The TrainConfig of parsed train flags (a command's TRAIN_FLAGS); ``overrides`` replace settings."""
    parsed = vars(args)
    settings = {name: parsed[name] for name in TRAIN_FLAGS if name in parsed}
    settings["model_options"] = _architecture_options(args)
    return TrainConfig(**{**settings, **overrides})


def _given_options(add_command: Callable, argv: Sequence[str]) -> set[str]:
    """The dests of the options typed on ``argv``, a command line of the command ``add_command`` builds.

    Parsed a second time with every default suppressed, so ``--epochs 300`` counts as given although 300 is
    the default (a resumed run then shortens to it), and abbreviations and ``--flag=value`` count too.
    """
    parser = argparse.ArgumentParser(prog="gctxseg", add_help=False)
    command_parser = add_command(parser.add_subparsers(dest="command"))
    for action in command_parser._actions:
        action.default = argparse.SUPPRESS
    command_parser._defaults.clear()  # set_defaults values (cv's --folds 5) are not typed either
    return set(vars(parser.parse_args(list(argv)))) - {"command"}


def _train_settings(dests: set[str]) -> set[str]:
    """The TrainConfig settings that the given option dests set."""
    return {"model_options" if dest in ARCHITECTURE_FLAGS else dest for dest in dests}


def _given_train_settings(argv: Sequence[str]) -> set[str]:
    """The TrainConfig settings named on a ``gctxseg train`` command line (not left at their defaults)."""
    return _train_settings(_given_options(_add_train, argv))


# ---------------------------------------------------------------- the parsers, one function per command


def _add_train(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a segmentation model on a folder of images and masks")
    _add_train_flags(p)
    return p


def _add_cv(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
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
    _add_train_flags(p, leave_out=("schedule_from",))
    p.set_defaults(folds=5, name="cv")
    return p


def _add_pretrain(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .training.pretrain import PRETRAIN_TASKS, PretrainConfig

    d = PretrainConfig()
    p = sub.add_parser("pretrain", help="pre-train a whole-network start offline: phantom B-scans and/or masked "
                                        "rebuilding of your own scans (then: train --init-weights)")
    p.add_argument("--task", nargs="+", choices=PRETRAIN_TASKS, default=[d.task],
                   help="phantom: segment a fresh stream of phantom B-scans; mim: rebuild blanked patches of "
                        "--images/--unlabeled; both: one after the other (default phantom)")
    p.add_argument("--images", nargs="+", default=[], metavar="DIR", help="mim: folders of your labelled scans")
    p.add_argument("--unlabeled", nargs="+", default=[], metavar="DIR", help="mim: folders of scans without masks")
    _add_train_flag(p, "model", default=d.model, help=f"architecture (default {d.model}); the later run's")
    _add_architecture_flag(p, "model_option", help="architecture argument, as the later run's (repeatable)")
    p.add_argument("--in-channels", type=int, default=d.in_channels, help="input channels (default 1)")
    _add_train_flag(p, "base_size", default=list(d.base_size),
                    help=f"pre-training input size (default {d.base_size[0]} {d.base_size[1]})")
    _add_train_flag(p, "epochs", default=d.epochs, help=f"epochs (default {d.epochs})")
    p.add_argument("--images-per-epoch", type=int, default=d.images_per_epoch,
                   help=f"phantom: new scans rendered each epoch (default {d.images_per_epoch})")
    _add_train_flag(p, "batch_size", default=d.batch_size, help=f"(default {d.batch_size})")
    _add_train_flag(p, "lr", default=d.lr, help=f"peak AdamW learning rate (default {d.lr:g})")
    p.add_argument("--mask-ratio", type=float, default=d.mask_ratio,
                   help=f"mim: share of patches blanked (default {d.mask_ratio})")
    _add_train_flag(p, "time_budget", help="minutes for each task: the steps follow the clock to the deadline "
                                           "(--epochs: the first estimate)")
    _add_train_flag(p, "init_weights", metavar="PT", help="start from this pretrained.pt")
    p.add_argument("--install", action="store_true",
                   help="make the result the start of every later train/cv run of its architecture with the same "
                        "--model-option (in $GCTXSEG_CACHE, default ~/.cache/gctxseg/starts); train --init-weights "
                        "none still starts from scratch")
    p.add_argument("--out", default=d.out, help=f"run folder, one sub-folder per task (default {d.out})")
    _add_train_flag(p, "resume", help="continue a stopped task from its last.pt")
    _add_train_flag(p, "seed", default=d.seed)
    _add_train_flag(p, "device", default=d.device, help="auto, cpu, cuda ... (default auto)")
    _add_train_flag(p, "amp", default=d.amp, help="mixed precision (default auto)")
    _add_train_flag(p, "workers", default=d.workers, help="data loader processes")
    return p


def _add_plan(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("plan", help="print the training plan gctxseg derives for a labelled folder")
    p.add_argument("data", help="images folder (masks in the sibling 'masks' folder)")
    _add_train_flag(p, "model", default=None, help="architecture (default gctx_unet)")
    _add_train_flag(p, "img_f", default=".png")
    _add_train_flag(p, "mask_f", default=".png")
    _add_train_flag(p, "device", help="device the plan is for (default auto)")
    _add_train_flag(p, "val_every")
    _add_train_flag(p, "time_budget", help="minutes a run may take")
    return p


def _add_convert(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
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
    return p


def _add_predict(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
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
    return p


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


def _add_evaluate(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
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
    return p


def _add_report(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="evaluate a run's best.pt on its val set and write RUN_DIR/report.html")
    p.add_argument("run_dir", help="run folder written by 'gctxseg train'")
    p.add_argument("--data", default=None, help="images folder to evaluate on (default: the run's val folder)")
    p.add_argument("--no-eval", action="store_true", help="do not evaluate; reuse RUN_DIR/eval if it exists")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default auto)")
    p.add_argument("--amp", default="auto", choices=AMP_CHOICES, help="precision (default auto)")
    p.add_argument("--tta", action="store_true", help="horizontal-flip test-time augmentation")
    p.add_argument("--infer-mode", default="resize", choices=["resize", "sliding"], help="(default resize)")
    return p


def _add_compare(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="best val metrics, size and speed of several runs side by side")
    p.add_argument("run_dirs", nargs="+", help="run folders")
    p.add_argument("--out", default="compare.png", help="combined curves plot (default compare.png)")
    p.add_argument("--force", action="store_true", help="replace an existing --out that is not a gctxseg plot")
    p.add_argument("--device", default="auto", help="where to time inference: auto, cpu, cuda ... (default auto)")
    p.add_argument("--amp", default="off", choices=AMP_CHOICES,
                   help="precision of the timing (default off = fp32)")
    p.add_argument("--timing-seconds", type=float, default=1.0,
                   help="seconds of inference timed per run, batch 1 at its training size (default 1)")
    return p


def _add_export(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="export a trained model to ONNX (runs with 'gctxseg predict --weights X.onnx')")
    p.add_argument("--weights", required=True, help="best.pt or last.pt of a run folder")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format (default onnx)")
    p.add_argument("--out", default=None, help="file to write (default: the weights' path with suffix .onnx)")
    p.add_argument("--force", action="store_true", help="replace an existing --out that gctxseg export did not write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    return p


def _add_convert_checkpoint(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("convert-checkpoint",
                       help="rewrite an older gctxseg checkpoint (pickled objects) as plain data that loads safely")
    p.add_argument("old", help="the old checkpoint (best.pt / last.pt)")
    p.add_argument("new", help="where to write the converted checkpoint (a new file)")
    p.add_argument("--force", action="store_true", help="replace NEW if it exists")
    p.add_argument("--trust", action="store_true",
                   help="required: reading the old file unpickles it, which runs any code it holds; only for files "
                        "from a source you trust")
    return p


def _add_synth(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("synth", help="write the synthetic OCT phantom dataset (train/val split 7:3)")
    p.add_argument("--out", default="data", help="output folder (default data)")
    p.add_argument("--n", type=int, default=400, help="number of B-scans (default 400)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=[224, 224], help="(default 224 224)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--volumes", type=int, default=None, metavar="N",
                   help="instead: N phantom eyes as stacks of --slices B-scans of --size (OUT/images, OUT/masks, "
                        "OUT/truth.json with the true ETDRS fluid in nL and hole diameters; docs/measurements.md)")
    p.add_argument("--slices", type=int, default=64, help="B-scans per phantom eye, over 6 mm (default 64)")
    return p


def _add_demo(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="phantom data -> train the default model -> predict (CPU friendly)")
    _add_train_flag(p, "epochs", help="train this many epochs at 224x224 instead of the demo's 6-minute budget "
                                      "(epochs fitted to a measured step time)")
    _add_train_flag(p, "model", default=None, help="override the default model")
    return p


def _add_models(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("models", help="list the architectures with parameters and multiply-adds")
    _add_train_flag(p, "base_size", default=[224, 224], help=None)
    return p


# ---------------------------------------------------------------- the runs, one function per command


def run_train(args: argparse.Namespace) -> int:
    from .workflows.train_report import train_and_report

    if args.decoder_init != "none" and not args.encoder_weights:
        raise ValueError(f"--decoder-init {args.decoder_init} mirrors ImageNet encoder weights into the "
                         "decoder; add --encoder-weights imagenet (or PATH)")
    train_and_report(train_config(args), given=_train_settings(args.given), started=args.started)
    return 0


def run_cv(args: argparse.Namespace) -> int:
    from .core.outputs import plain_name
    from .crossval import configurations

    models = configurations.cv_models(args.models, args.model if "model" in args.given else None)
    if args.summary_only:
        cv_dir = Path(args.results) / plain_name(args.name, "--name", args.results)
        configurations.summarize_folder(cv_dir, device=args.device, amp=args.amp)
        return 0
    cfg = train_config(args, data_train=args.data, model=models[0])
    cv_dir = configurations.run_cv(cfg, models, race=not args.no_race, started=args.started)
    print(f"cross-validation folder: {cv_dir}; predict with: gctxseg predict --weights {cv_dir}")
    return 0


def run_pretrain(args: argparse.Namespace) -> int:
    from .training.pretrain import PretrainConfig, pretrain, pretrain_sequence

    cfg = PretrainConfig(
        task=args.task[0], images=tuple(args.images) + tuple(args.unlabeled), model=args.model,
        model_options=dict(args.model_option), in_channels=args.in_channels, base_size=tuple(args.base_size),
        init=args.init_weights, epochs=args.epochs, images_per_epoch=args.images_per_epoch,
        batch_size=args.batch_size, lr=args.lr, mask_ratio=args.mask_ratio, time_budget=args.time_budget,
        device=args.device, amp=args.amp, workers=args.workers, seed=args.seed, out=args.out, resume=args.resume,
    )
    weights = pretrain(cfg) if args.resume else pretrain_sequence(cfg, args.task)  # a resume continues one task
    if args.install:
        from .training.start import install_start, installed_start_users

        installed = install_start(weights)  # as the architecture the file holds (a resumed run's, not --model's)
        print(f"installed {installed}: {installed_start_users(installed)}")
    else:
        print(f"pre-trained start: {weights}; use it with gctxseg train --init-weights {weights}, or install it "
              "with --install")
    return 0


def run_plan(args: argparse.Namespace) -> int:
    from .training.planning import plan_for_folder

    print(plan_for_folder(args.data, args.img_f, args.mask_f, args.model, args.device, args.time_budget).format())
    return 0


def run_convert(args: argparse.Namespace) -> int:
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
    return 0


def run_predict(args: argparse.Namespace) -> int:
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
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from .evaluation.evaluate import evaluate_folder, score_prediction_folder
    from .evaluation.volume_files import evaluate_volume_folder, volume_files_in

    split = Path(args.data).resolve().parent.name
    scoring = dict(nsd_tolerance=args.nsd_tolerance, spacing=tuple(args.spacing) if args.spacing else None,
                   worst_k=args.worst_k, measure=_measurement_options(args))
    volumes = bool(volume_files_in(args.data))  # device exports: each file's own geometry, truth from masks or a SEG
    if args.masks is not None and not volumes:
        raise ValueError(f"--masks {args.masks}: only for a folder of OCT volume files; the masks of an images folder "
                         "are its sibling 'masks' folder")
    if args.predictions:
        if volumes:
            raise ValueError(f"--predictions with --data {args.data}: a folder of OCT volume files is scored with "
                             "--weights (its truth is matched to the B-scans the model predicts)")
        folder = Path(args.predictions)
        out = args.out or folder.parent / f"{folder.name}_eval_{split}"
        result = score_prediction_folder(folder, args.data, args.img_f, args.mask_f, out, **scoring)
    else:
        first = Path(args.weights[0])
        out = args.out or (first if first.is_dir() else first.parent) / f"eval_{split}"
        model = dict(device=args.device, amp=args.amp, tta=args.tta, tta_vflip=args.tta_vflip,
                     infer_mode=args.infer_mode, compile=args.compile)
        if volumes:
            result = evaluate_volume_folder(args.weights, args.data, out, masks=args.masks, mask_f=args.mask_f,
                                            **model, **scoring)
        else:
            result = evaluate_folder(args.weights, args.data, args.img_f, args.mask_f, out, **model, **scoring)
    _print_evaluation(result.record, out)
    return 0


def _print_evaluation(s: EvaluationSummary, out: str | Path) -> None:
    """An evaluation's summary as ``gctxseg evaluate`` prints it: the per-class table, the means, the agreement."""
    from .clinical.agreement import format_agreement
    from .reporting.report import format_table

    print(format_table([c.to_json() for c in s.per_class], ["name", "dice", "iou", "precision", "recall",
                                                            "mean image dice", "hd95 mean", "hd95 median",
                                                            "nsd mean", "missed", "false alarms"]))
    print(f"{s.images} images: pixel accuracy {s.pooled.pixel_accuracy:.4f}, mean dice {s.pooled.mean_dice:.4f}, "
          f"mean iou {s.pooled.mean_iou:.4f}, mean hd95 {s.mean_hd95:.2f} {s.distance_unit}, "
          f"mean nsd {s.mean_nsd:.4f}; wrote {out}/summary.json, metrics_per_image.csv and plots")
    print(format_agreement(s.agreement) + f"\n(amounts_per_image.csv, bland_altman.png in {out})")
    if s.etdrs_agreement:
        from .clinical.agreement import format_etdrs_agreement

        print(format_etdrs_agreement(s.etdrs_agreement)
              + f"\n(grader_etdrs.csv, predicted_etdrs.csv, enface/ in {out})")


def run_report(args: argparse.Namespace) -> int:
    from .workflows.train_report import write_run_report

    path = write_run_report(args.run_dir, data=args.data, device=args.device, amp=args.amp, tta=args.tta,
                            infer_mode=args.infer_mode, evaluate=not args.no_eval)
    print(f"wrote {path}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from .reporting.compare import compare_runs

    _, table = compare_runs(args.run_dirs, args.out, device=args.device, amp=args.amp,
                            timing_seconds=args.timing_seconds, force=args.force)
    print(table)
    print(f"curves: {args.out}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from .inference.export import export_onnx

    result = export_onnx(args.weights, args.out, args.opset, force=args.force)
    print(f"wrote {result.path}; max abs logit difference ONNX Runtime vs PyTorch: {result.max_abs_diff:.2e}")
    return 0


def run_convert_checkpoint(args: argparse.Namespace) -> int:
    from .runs.checkpoint import convert_checkpoint

    written = convert_checkpoint(args.old, args.new, trust=args.trust, force=args.force)
    print(f"wrote {written}; it loads without unpickling code")
    return 0


def run_synth(args: argparse.Namespace) -> int:
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
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from .workflows.demo import run_demo as demo

    demo(epochs=args.epochs, model=args.model)
    return 0


def run_models(args: argparse.Namespace) -> int:
    from .core.limits import check_input_size
    from .models import create_model, list_models, model_description
    from .models.complexity import count_macs, count_parameters
    from .training.planning import size_options

    size = check_input_size(args.base_size)  # before any model is built at it
    print(f"{'model':<16}{'params (M)':>12}{'G mult-adds':>13}  description (1 channel in, 3 classes, {size})")
    for name in list_models():
        model = create_model(name, 1, 3, **size_options(name, size))  # nnunet: its topology for this size
        print(f"{name:<16}{count_parameters(model) / 1e6:>12.2f}{count_macs(model, 1, size) / 1e9:>13.2f}  "
              f"{model_description(name)}")
    return 0


# ---------------------------------------------------------------- the command table and the dispatcher

# command -> (the function that adds its parser, the function that runs it), in the order argparse lists them
_COMMANDS: dict[str, tuple[Callable, Callable[[argparse.Namespace], int]]] = {
    "train": (_add_train, run_train),
    "predict": (_add_predict, run_predict),
    "evaluate": (_add_evaluate, run_evaluate),
    "report": (_add_report, run_report),
    "compare": (_add_compare, run_compare),
    "export": (_add_export, run_export),
    "convert-checkpoint": (_add_convert_checkpoint, run_convert_checkpoint),
    "synth": (_add_synth, run_synth),
    "plan": (_add_plan, run_plan),
    "convert": (_add_convert, run_convert),
    "cv": (_add_cv, run_cv),
    "pretrain": (_add_pretrain, run_pretrain),
    "demo": (_add_demo, run_demo),
    "models": (_add_models, run_models),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gctxseg", usage="gctxseg [-h] [--version] COMMAND ...",
                                     description=f"{DESCRIPTION}\n\n{COMMANDS}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gctxseg {__version__}")
    # the commands are listed with examples in the description: not a second time from their help strings
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help=argparse.SUPPRESS)
    for add_command, _ in _COMMANDS.values():
        add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, return the exit code.

    The command's run gets the parsed arguments with ``given``, the dests of the options typed (not defaulted), and
    ``started``, where a time budget's clock starts: the process's start (:data:`gctxseg.IMPORTED_AT`) for the
    command line itself (``argv`` None), else this call.
    An error is one line on stderr: 1 the data is wrong (DatasetError), 2 a flag or a file one names (ValueError,
    as argparse's own), 3 the loss became NaN or infinite, 4 the disk or a permission (OSError), 130 interrupted.
    """
    started = IMPORTED_AT if argv is None else time.perf_counter()
    warnings.showwarning = _show_warning
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.started = started
    add_command, run = _COMMANDS[args.command]
    args.given = _given_options(add_command, argv)
    try:
        return run(args)
    except DatasetError as err:  # the data is wrong (images, masks, grouping or spacing files): exit 1
        print(f"error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # a flag or a file named by one (weights, settings) is wrong: exit 2, as argparse
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingInterrupted as err:
        if err.said_by:
            print(f"stopped: {err}", file=sys.stderr)
        return 130
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    except OSError as err:  # read-only folder, disk full, ...: the path and the reason, not a traceback
        print(f"error: {_os_error_line(err)}", file=sys.stderr)
        return 4


_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A data warning as the one line it is (``warning: ...``), without Python's source location; others as usual."""
    if issubclass(category, DataWarning):
        print(f"warning: {message}", file=file or sys.stderr)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def _os_error_line(err: OSError) -> str:
    """The path and the reason of a failed write or read; a file in the way of a folder is named as such."""
    if err.errno == errno.ENOTDIR and err.filename:
        in_the_way = next((p for p in Path(err.filename).parents if p.is_file()), None)
        if in_the_way is not None:
            return f"{in_the_way}: a file, where a folder is needed for {err.filename}; move it, or pass another folder"
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err}; check free space and write permission there"


if __name__ == "__main__":
    sys.exit(main())
