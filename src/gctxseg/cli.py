"""Command line: ``gctxseg train|predict|synth|demo|models``. Parsing only; the work is done elsewhere."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .data import DatasetError
from .engine import NonFiniteLossError, TrainingInterrupted

__all__ = ["main", "build_parser"]


def _model_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .engine import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a segmentation model on a folder of images and masks")
    p.add_argument("--model", default=d.model, help=f"architecture (default {d.model}); see 'gctxseg models'")
    p.add_argument("--base-size", type=int, nargs=2, metavar=("H", "W"), default=list(d.base_size),
                   help="training input size in pixels (default 224 224)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"images per step (default {d.batch_size})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs (default {d.epochs})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak AdamW learning rate (default {d.lr})")
    p.add_argument("--lrf", type=float, default=d.lrf, help=f"cosine decay to lr*lrf (default {d.lrf})")
    p.add_argument("--ct", action="store_true", help="CT input: window HU intensities before normalisation")
    p.add_argument("--img_f", default=d.img_f, help=f"image file suffix (default {d.img_f})")
    p.add_argument("--mask_f", default=d.mask_f, help=f"mask file suffix (default {d.mask_f})")
    p.add_argument("--results", default=d.results, help=f"folder of run folders (default {d.results})")
    p.add_argument("--name", default=d.name, help=f"run folder name; exp, exp2, ... (default {d.name})")
    p.add_argument("--exist-ok", action="store_true", help="reuse an existing run folder of that name")
    p.add_argument("--data-train", default=d.data_train, help=f"training images (default {d.data_train})")
    p.add_argument("--data-val", default=d.data_val, help=f"validation images (default {d.data_val})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--workers", type=int, default=d.workers, help="data loader processes (default: min(4, cpus/2))")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1 ... (default auto)")
    p.add_argument("--amp", default=d.amp, choices=["auto", "bf16", "fp16", "off"],
                   help="mixed precision: auto = bf16/fp16 on GPUs, bf16 on CPUs with native bf16 (default auto)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"AdamW (default {d.weight_decay})")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs,
                   help=f"linear warm-up length, capped at 10%% of the schedule (default {d.warmup_epochs})")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm when run under torchrun")
    p.add_argument("--model-option", type=_model_option, action="append", default=[], metavar="KEY=VALUE",
                   help="extra architecture argument, e.g. base_width=32 (repeatable)")
    p.add_argument("--resume", default=None, metavar="LAST_PT", help="continue a run from its last.pt")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment a folder of images with a trained model")
    p.add_argument("--weights", required=True, help="best.pt or last.pt of a run folder")
    p.add_argument("--source", default="inference/img", help="folder of images (default inference/img)")
    p.add_argument("--out", default="inference/out", help="output folder (default inference/out)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default auto)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"], help="precision (default auto)")


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write the synthetic OCT phantom dataset (train/val split 7:3)")
    p.add_argument("--out", default="data", help="output folder (default data)")
    p.add_argument("--n", type=int, default=400, help="number of B-scans (default 400)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=[224, 224], help="(default 224 224)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gctxseg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_predict(sub)
    _add_synth(sub)
    demo = sub.add_parser("demo", help="phantom data -> train the default model -> predict (CPU friendly)")
    demo.add_argument("--epochs", type=int, default=None, help="override the demo's epoch count")
    demo.add_argument("--model", default=None, help="override the default model")
    sub.add_parser("models", help="list the architectures with parameters and multiply-adds").add_argument(
        "--base-size", type=int, nargs=2, default=[224, 224], metavar=("H", "W"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            from .engine import TrainConfig, train

            train(TrainConfig(
                data_train=args.data_train, data_val=args.data_val, img_f=args.img_f, mask_f=args.mask_f,
                ct=args.ct, base_size=tuple(args.base_size), model=args.model,
                model_options=dict(args.model_option), epochs=args.epochs, batch_size=args.batch_size,
                lr=args.lr, lrf=args.lrf, warmup_epochs=args.warmup_epochs, weight_decay=args.weight_decay,
                device=args.device, amp=args.amp, workers=args.workers, seed=args.seed, sync_bn=args.sync_bn,
                results=args.results, name=args.name, exist_ok=args.exist_ok, resume=args.resume,
            ))
        elif args.command == "predict":
            from .predict import predict_folder

            summary = predict_folder(args.weights, args.source, args.out, args.device, args.amp)
            print(f"wrote {len(summary.written)} masks and overlays to {args.out}")
            if summary.failed:
                print(f"{len(summary.failed)} image(s) failed:", *summary.failed, sep="\n  ", file=sys.stderr)
                return 1
        elif args.command == "synth":
            from .data.phantom import synthesize_dataset

            counts = synthesize_dataset(args.out, n=args.n, size=tuple(args.size), seed=args.seed)
            print(f"wrote {counts['train']} train and {counts['val']} val phantom B-scans to {args.out}")
        elif args.command == "demo":
            from .demo import run_demo

            run_demo(epochs=args.epochs, model=args.model)
        elif args.command == "models":
            from .models import create_model, list_models, model_description
            from .models.complexity import count_macs, count_parameters

            size = tuple(args.base_size)
            print(f"{'model':<16}{'params (M)':>12}{'G mult-adds':>13}  description (1 channel in, 3 classes, {size})")
            for name in list_models():
                model = create_model(name, 1, 3)
                print(f"{name:<16}{count_parameters(model) / 1e6:>12.2f}{count_macs(model, 1, size) / 1e9:>13.2f}  "
                      f"{model_description(name)}")
    except (DatasetError, ValueError) as err:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
