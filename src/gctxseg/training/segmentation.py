"""Segmentation training: one readable path from a :class:`TrainConfig` to a self-describing run folder.

Run folder (``<results>/<name>``): ``log.json`` (the seed project's format, rewritten atomically after
every epoch), ``dataset_fingerprint.json``, ``plan.json``, ``env.json``, ``preview.png``, ``curves.png``,
``best.pt`` and ``last.pt`` (atomic), ``samples/``. Distributed training is inferred from torchrun's
environment; only rank 0 writes.

Reproducibility: every random choice of an epoch is a function of ``(seed, epoch)`` (training/data.py) and
the model's own randomness (stochastic depth) is reseeded per epoch, so a run resumed from ``last.pt``
continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import sys
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from .. import __version__
from ..core.console import progress
from ..core.files import atomic_write_json, is_temp_file, next_run_dir, remove_stale_temp_files
from ..core.precision import autocast_context, autocast_dtype
from ..core.runtime import compile_model, cpu_threads, keep_freed_memory, resolve_device, seed_everything
from ..data import (
    DatasetError,
    DatasetFingerprint,
    ImagePair,
    SegmentationDataset,
    expand_slices,
    find_pairs,
    fingerprint_dataset,
)
from ..data.folder import shared_images
from ..data.sampling import ForegroundTopUpSampler, class_presence
from ..data.splits import ONE_GROUP_PER_IMAGE, check_fold_classes, fold_files
from ..data.transforms import eval_transforms, train_transforms
from ..losses import DiceCELoss, training_loss
from ..metrics import ConfusionMatrix
from ..models import create_model, resolve_model_name
from ..models.complexity import count_macs, count_parameters
from ..runs.checkpoint import load_checkpoint, save_checkpoint
from ..runs.cvfolder import CV_RECORD
from ..runs.runlog import EpochScores, TimeBudget
from ..visualize.colors import colorize, overlay, save_rows, to_uint8_rgb
from ..visualize.plots import plot_curves, warm_up_figures
from .config import (
    PLANNED_SETTINGS,
    TrainConfig,
    TrainingInterrupted,
    absolute_data_paths,
    resume_config,
)
from .data import (
    EpochTaggedSampler,
    SeededAugmentDataset,
    ShardSampler,
    loader_options,
    num_workers,
    shutdown_workers,
)
from .distributed import Distributed, bare, broadcast_buffers, setup_distributed
from .driver import EpochEnd, budget_record, drive_epochs
from .loop import (
    adamw,
    ddp_wrapped,
    env_info,
    grad_scaler,
    nonfinite_advice,
    run_steps,
)
from .loop import train_loader as make_train_loader
from .planning import TrainingPlan, plan_training, planned_foreground_share
from .schedule import Deadline, ScheduleState, StepSchedule, now, replay_settings, steps_per_epoch
from .start import NO_START, load_start, planned_start

__all__ = ["train", "train_one_epoch", "evaluate", "REPORT_DRAWS"]

# The report written after a budgeted run (workflows/train_report.py: best.pt evaluated on the validation images, its
# figures, report.html) is kept inside the budget as a validation's seconds plus this many curve draws: its forward
# passes are the validation's, its figures and pages cost about this many draws (docs/time-budget.md, measured).
REPORT_DRAWS = 2
# a cv fold's final validation predicted as its out-of-fold arrays are: (model, its checkpoint's fields but the weights,
# the held-out pairs) -> (indices into them, probabilities at the training size) batches
FinalPrediction = Callable[[torch.nn.Module, dict, Sequence[ImagePair]], Iterable[tuple[list[int], torch.Tensor]]]


def train_one_epoch(
    model, loader, loss_fn, optimizer, scheduler, scaler, amp_dtype, device, num_classes, grad_clip, stop, names,
    grad_accum: int = 1, schedule: StepSchedule | None = None,
) -> dict:
    """One pass of segmentation training (:func:`~gctxseg.training.loop.run_steps`), or the steps of it
    ``schedule`` has left; returns the epoch's metric block, from a confusion matrix of the training batches'
    predictions."""
    cm = ConfusionMatrix(num_classes)

    def step_loss(net, images, masks):
        outputs = net(images)
        return training_loss(loss_fn, bare(net), outputs, masks), outputs

    def observe(outputs, masks) -> None:
        main = outputs if isinstance(outputs, torch.Tensor) else outputs[0]  # deep supervision: the full-size head
        cm.update(main.detach().argmax(1), masks)

    totals = run_steps(model, loader, step_loss, optimizer, scheduler, scaler, amp_dtype, device, grad_clip, stop,
                       names, grad_accum, observe, schedule)
    info = _epoch_info(cm, totals.loss_sum, totals.seen)
    if scaler.is_enabled():
        info["amp skipped steps"] = totals.skipped
    return info


def _load_encoder_weights(model: torch.nn.Module, source: str, verbose: bool, decoder_init: str = "none") -> None:
    from ..models.pretrained import load_pretrained  # ImageNet loading lives there (timm download, mirroring)

    report = load_pretrained(model, source, decoder_init)
    if verbose:
        print(report.summary())



def _split_files(cfg: TrainConfig, verbose: bool) -> tuple[list[ImagePair], list[ImagePair], str | None]:
    """Training and validation file pairs: the two folders, or fold ``cfg.fold`` of ``data_train`` by group."""
    if cfg.folds is None:
        return find_pairs(cfg.data_train, cfg.img_f, cfg.mask_f), find_pairs(cfg.data_val, cfg.img_f, cfg.mask_f), None
    # every fold, not only this one: a class one fold holds out whole is said before fold 0 trains (cv, train --folds)
    check_fold_classes(cfg.data_train, cfg.img_f, cfg.mask_f, cfg.folds, cfg.group_regex, cfg.splits)
    train_pairs, val_pairs, source = fold_files(
        cfg.data_train, cfg.img_f, cfg.mask_f, cfg.folds, cfg.fold, cfg.group_regex, cfg.splits
    )
    if verbose and source == ONE_GROUP_PER_IMAGE:
        print(f"warning: {cfg.data_train}: no --group-regex, splits.json or groups.json: every image is its own "
              "group, so scans of one patient may sit in training and validation", file=sys.stderr)
    return train_pairs, val_pairs, source


def _plan(cfg: TrainConfig, fingerprint, n_train: int, n_val: int, device, amp_dtype, ddp) -> tuple:
    """Plan the settings ``cfg`` leaves open (rank 0 plans, the others take its plan: equal schedules)."""
    given = {k: getattr(cfg, k) for k in PLANNED_SETTINGS if getattr(cfg, k) is not None}
    if cfg.steps is not None and "epochs" not in given:  # the epochs follow from the steps
        given["steps"] = cfg.steps
    plan = None
    if ddp.is_main:
        plan = plan_training(
            cfg.model, fingerprint.sizes, n_train, n_val, fingerprint.channels, fingerprint.value_map.num_classes,
            device, given=given, model_options=cfg.model_options, amp_dtype=amp_dtype, grad_accum=cfg.grad_accum,
            time_budget_s=cfg.time_budget * 60 if cfg.time_budget else None,
            structure_width=fingerprint.structure_width,
        )
    if dist.is_initialized():
        box = [plan]
        dist.broadcast_object_list(box, src=0)  # among this job's own ranks: not data from a file
        plan = box[0]
    caller = {**cfg.plan_reasons, **({"lr": cfg.lr_reason} if cfg.lr_reason else {})}
    for name, reason in caller.items():  # set by gctxseg cv from the data or another fold's plan, not by the user
        if name in plan.given:
            plan.given.remove(name)
            plan.reasons[name] = reason
    settings = {k: getattr(plan, k) for k in PLANNED_SETTINGS if k != "foreground_share"}
    return replace(cfg, model_options=plan.model_options, **settings), plan


def _plan_foreground(cfg: TrainConfig, plan, train_set: SegmentationDataset, num_classes: int) -> tuple:
    """The foreground share (planned from class presence unless given) and the presence table it needs."""
    if cfg.foreground_share == 0:
        return cfg, None
    presence = class_presence(train_set, num_classes)
    if cfg.foreground_share is None:
        plan.foreground_share, plan.reasons["foreground_share"] = planned_foreground_share(
            presence[:, 1:].mean(0).tolist()
        )
        cfg = replace(cfg, foreground_share=plan.foreground_share)
    return cfg, presence


# ---------------------------------------------------------------- agreement between ranks


@torch.no_grad()
def evaluate(model, loader, loss_fn, amp_dtype, device, num_classes) -> tuple[dict, ConfusionMatrix]:
    """Loss and metrics over a whole split (counts summed across ranks under DDP).

    ``model`` is the bare model, never the DDP wrapper: a rank may get no image at all (an empty shard).
    """
    model.eval()
    cm = ConfusionMatrix(num_classes)
    loss_sum, seen = torch.zeros((), dtype=torch.float64), 0
    show = not dist.is_initialized() or dist.get_rank() == 0
    for images, masks, _ in progress(loader, "val", show=show):
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        masks = masks.to(device, non_blocking=True)
        with autocast_context(device, amp_dtype):
            logits = model(images)
            loss = loss_fn(logits, masks)
        cm.update(logits.argmax(1), masks)
        loss_sum += loss.double().cpu() * images.shape[0]
        seen += images.shape[0]
    return _epoch_info(cm, loss_sum, seen), cm


def evaluate_probabilities(batches: Iterable[tuple[list[int], torch.Tensor]], dataset: SegmentationDataset, loss_fn,
                           num_classes: int, device: torch.device) -> dict:
    """:func:`evaluate`'s loss and metrics from class probabilities already predicted: ``(indices into dataset,
    N x K x h x w at the training size)`` batches, scored against the dataset's masks at that size; the loss is
    taken on their logarithm, which the softmax maps back to them."""
    cm = ConfusionMatrix(num_classes)
    loss_sum, seen = torch.zeros((), dtype=torch.float64), 0
    for indices, probs in batches:
        masks = torch.stack([dataset.load_untransformed(i)[1] for i in indices]).long().to(device)
        probs = probs.to(device)
        cm.update(probs.argmax(1), masks)
        loss_sum += loss_fn(probs.clamp_min(1e-12).log(), masks).double().cpu() * len(indices)
        seen += len(indices)
    return _epoch_info(cm, loss_sum, seen)


def _epoch_info(cm: ConfusionMatrix, loss_sum: torch.Tensor, seen: int) -> dict:
    cm.all_reduce()
    totals = torch.tensor([loss_sum.item(), float(seen)], dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(totals)
    info = cm.compute()
    info["loss"] = totals[0].item() / max(totals[1].item(), 1)
    return info


# ---------------------------------------------------------------- run folder outputs


def _save_preview(dataset: SegmentationDataset, path: Path, count: int = 4) -> None:
    rows = []
    for i in range(min(count, len(dataset))):
        image, mask = dataset.load_untransformed(i)
        img = to_uint8_rgb(image.permute(1, 2, 0).numpy())
        rows.append([img, colorize(mask.numpy()), overlay(img, mask.numpy())])
    save_rows(rows, path)


@torch.no_grad()
def _save_sample_predictions(
    model, dataset: SegmentationDataset, normalize, device, amp_dtype, path: Path, count: int
) -> None:
    """Grid of validation images: image | truth overlay | prediction overlay."""
    model.eval()
    rows = []
    for i in range(min(count, len(dataset))):
        image, mask = dataset.load_untransformed(i)
        with autocast_context(device, amp_dtype):
            pred = model(normalize(image)[None].to(device)).argmax(1)[0].cpu().numpy()
        img = to_uint8_rgb(image.permute(1, 2, 0).numpy())
        rows.append([img, overlay(img, mask.numpy()), overlay(img, pred)])
    if rows:
        save_rows(rows, path)


# ---------------------------------------------------------------- the phases of a run


@dataclass
class _TrainingData:
    """The checked, fingerprinted data of a run and its datasets."""

    train_pairs: list
    fingerprint: DatasetFingerprint
    base_train: SegmentationDataset  # unaugmented view of the training pairs (preview)
    train_set: SeededAugmentDataset
    val_set: SegmentationDataset
    plan: TrainingPlan
    presence: np.ndarray | None = None  # N x K: classes in each training sample (foreground top-up sampling)
    split_source: str | None = None  # where the folds came from (cross-validation)
    files: dict | None = None  # :func:`_data_files` of the training and validation pairs (checked on resume)

    @property
    def num_classes(self) -> int:
        return self.fingerprint.value_map.num_classes


@dataclass
class _Trainer:
    """The model in its three guises and what optimises it."""

    model: torch.nn.Module  # what the training step calls: compiled and/or DDP-wrapped
    net: torch.nn.Module  # compiled (or not), never DDP-wrapped: validation
    raw_model: torch.nn.Module  # the plain module: state dicts
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    train_sampler: EpochTaggedSampler
    train_loader: DataLoader
    val_loader: DataLoader
    workers: int
    params: int
    macs: float
    schedule: StepSchedule | None = None  # the optimiser steps and their lr (training/schedule.py)
    start: dict | None = None  # what --init-weights set (training/start.py), kept in plan.json and the log



def _data_files(train: Sequence[ImagePair], val: Sequence[ImagePair]) -> dict:
    """The number of training and validation images and a digest of their names and sizes (images and masks):
    what a resumed run must find again."""
    def digest(pairs: Sequence[ImagePair]) -> list:
        files = sorted({f for p in pairs for f in (p.image, p.mask)})
        text = "\n".join(f"{f.name}\t{f.stat().st_size}" for f in files)
        return [len({p.image for p in pairs}), hashlib.sha256(text.encode()).hexdigest()[:16]]

    return {"train": digest(train), "val": digest(val)}


def _check_same_files(ckpt: dict, files: dict, cfg: TrainConfig) -> None:
    """Refuse to resume on other data than the checkpoint's run trained on (removed, added or rewritten files):
    the run would go on as one run but train on another set, its schedule shrinking without a word."""
    saved = ckpt.get("data_files")
    if not saved:
        return  # a checkpoint from before the record: nothing to compare with
    for split, folder in (("train", cfg.data_train), ("val", cfg.data_val or cfg.data_train)):
        if list(saved[split]) != list(files[split]):
            then, now = saved[split][0], files[split][0]
            what = f"{then} images then, {now} now" if then != now else "an image or mask renamed or rewritten"
            raise DatasetError(f"{folder}: not the {split} files {cfg.resume} was trained on ({what}); resume on the "
                               "same data, or start a new run")


def _fingerprinted(cfg: TrainConfig, ckpt: dict | None, verbose: bool) -> tuple:
    """(training pairs, validation pairs, where the folds came from, the training pairs' fingerprint)."""
    train_files, val_files, split_source = _split_files(cfg, verbose)
    # a validation folder of its own (folds of one folder share its duplicates in every fold: not repeated there)
    shared = shared_images(train_files, val_files) if verbose and ckpt is None and not cfg.folds else []
    if shared:
        same = all(v == t for v, t in shared) and len(shared) == len(val_files)
        what = ("the validation images are the training images" if same else f"{len(shared)} of {len(val_files)} "
                f"validation image(s) are byte-identical to training images (first {shared[0][0]} = {shared[0][1]})")
        print(f"note: {what}; their validation Dice measures what was memorised", file=sys.stderr)
    train_pairs = expand_slices(train_files, cfg.empty_slice_fraction, cfg.seed)
    val_pairs = expand_slices(val_files)
    if ckpt is not None:
        return train_pairs, val_pairs, split_source, DatasetFingerprint(**ckpt["fingerprint"])
    return train_pairs, val_pairs, split_source, fingerprint_dataset(train_pairs, ct=cfg.ct, windows=cfg.ct_windows())


def plan_run(cfg: TrainConfig) -> tuple[TrainingPlan, int]:
    """(the plan :func:`train` would make for ``cfg`` on this device, training images), without training.

    ``gctxseg cv``'s learning-rate probe trains its candidates at the size and batch its folds will have."""
    cfg = absolute_data_paths(cfg)
    device = resolve_device(cfg.device)
    train_pairs, val_pairs, _, fingerprint = _fingerprinted(cfg, None, verbose=False)
    plan = _plan(cfg, fingerprint, len(train_pairs), len(val_pairs), device, autocast_dtype(cfg.amp, device),
                 Distributed())[1]
    return plan, len(train_pairs)


def _prepare_data(
    cfg: TrainConfig, ckpt: dict | None, ddp: Distributed, device: torch.device, amp_dtype
) -> tuple[_TrainingData, TrainConfig]:
    """Pair, check and fingerprint every file before any training, then plan what ``cfg`` leaves open.

    Volumes become one pair per slice; validation keeps every slice, so its Dice covers whole volumes.
    Returns the data and the configuration with every planned setting filled in.
    """
    train_pairs, val_pairs, split_source, fingerprint = _fingerprinted(cfg, ckpt, ddp.is_main)
    files = _data_files(train_pairs, val_pairs)
    if ckpt is not None:
        _check_same_files(ckpt, files, cfg)
    intensity = fingerprint.intensity_mapping  # values as read -> [0, 1]: the same at prediction
    value_map, channels = fingerprint.value_map, fingerprint.channels
    fingerprint.check_classes(cfg.data_train)  # first: the validation masks' classes would be blamed instead
    fingerprint_dataset(val_pairs, known_values=value_map.values, known_channels=channels, intensity=intensity)
    cfg, plan = _plan(cfg, fingerprint, len(train_pairs) // ddp.world, len(val_pairs), device, amp_dtype, ddp)

    def dataset(pairs, transforms) -> SegmentationDataset:
        return SegmentationDataset(
            pairs, value_map, cfg.base_size, channels, transforms, intensity=intensity, cache_dir=cfg.cache_dir
        )

    base_train = dataset(train_pairs, train_transforms(fingerprint.mean, fingerprint.std, strength=cfg.augment))
    val_set = dataset(val_pairs, eval_transforms(fingerprint.mean, fingerprint.std))
    cfg, presence = _plan_foreground(cfg, plan, base_train, value_map.num_classes)
    train_set = SeededAugmentDataset(base_train, cfg.seed)
    return _TrainingData(train_pairs, fingerprint, base_train, train_set, val_set, plan, presence, split_source,
                         files), cfg


def _make_run_folder(
    cfg: TrainConfig, ddp: Distributed, device: torch.device, data: _TrainingData, start: dict | None
) -> Path:
    """The run folder (a new one, or the resumed run's); rank 0 writes what describes the data, start and machine."""
    run_dir = Path(cfg.resume).parent if cfg.resume else next_run_dir(cfg.results, cfg.name, cfg.exist_ok)
    if ddp.is_main and cfg.resume:
        remove_stale_temp_files(run_dir)
    if ddp.is_main and not cfg.resume:
        if cfg.exist_ok and not cfg.folds:  # a cv's fold folders are the cv's to keep (crossval.folds)
            _clear_previous_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=cfg.exist_ok)
        data.fingerprint.save(run_dir / "dataset_fingerprint.json")
        atomic_write_json(run_dir / "plan.json", {**data.plan.to_dict(), "init weights": start})
        atomic_write_json(run_dir / "env.json", env_info(device))
        _save_preview(data.base_train, run_dir / "preview.png")
    return run_dir


# what a run writes into its folder (train, then its report): what a new run in the folder replaces
RUN_OUTPUTS = ("best.pt", "last.pt", "log.json", "plan.json", "dataset_fingerprint.json", "env.json", "preview.png",
               "curves.png", "report.html", "eval", "samples")


def _clear_previous_run(run_dir: Path) -> None:
    """``--exist-ok`` over a run folder: the previous run's outputs removed before this run writes any, so that a
    stop never leaves the new ``last.pt`` beside the old ``best.pt``, ``log.json`` and report (served as one run).
    Anything else in the folder (an exported model, an evaluation, the user's notes) is kept, and named."""
    if not run_dir.is_dir():
        return
    present = sorted(p.name for p in run_dir.iterdir())
    replaced = [n for n in present if n in RUN_OUTPUTS or is_temp_file(n)]
    kept = [n for n in present if n not in replaced]
    if replaced:
        print(f"{run_dir}: the previous run's files ({', '.join(replaced)}) are replaced by this run (--exist-ok)",
              file=sys.stderr)
    if kept:
        print(f"{run_dir}: kept as they are: {', '.join(kept[:5])}{' ...' if len(kept) > 5 else ''} (not a run's own "
              "files; an exported model or evaluation there was made from the previous run's weights)",
              file=sys.stderr)
    for name in replaced:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _build_trainer(
    cfg: TrainConfig, ddp: Distributed, device: torch.device, data: _TrainingData, resuming: bool,
    deadline: Deadline | None = None,
) -> _Trainer:
    """Model (compiled, DDP-wrapped as asked), loss, AdamW, loaders, schedule (on ``deadline``'s clock, where
    given) and grad scaler."""
    channels, model_kwargs = data.fingerprint.channels, dict(cfg.model_options)
    raw_model = create_model(cfg.model, in_channels=channels, num_classes=data.num_classes, **model_kwargs)
    if cfg.encoder_weights and not resuming:
        _load_encoder_weights(raw_model, cfg.encoder_weights, ddp.is_main, cfg.decoder_init)
    start = None
    if cfg.init_weights not in (None, NO_START) and not resuming:
        report = load_start(raw_model, cfg.model, cfg.init_weights)
        start = report.to_dict()
        if ddp.is_main:
            print(report.summary())
    params, macs = count_parameters(raw_model), count_macs(raw_model, channels, cfg.base_size)
    raw_model = raw_model.to(device, memory_format=torch.channels_last)
    if ddp.world > 1 and cfg.sync_bn:
        raw_model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(raw_model)
    # compiled first, then wrapped: DDP hooks see the same parameters
    net = compile_model(raw_model, device) if cfg.compile else raw_model
    model = ddp_wrapped(net, device, ddp.world)
    optimizer = adamw(raw_model, cfg.lr, cfg.weight_decay, device)
    workers = num_workers(cfg.workers)
    if cfg.foreground_share > 0:
        shuffled = ForegroundTopUpSampler(
            data.presence, cfg.batch_size, cfg.foreground_share, cfg.seed, ddp.rank, ddp.world
        )
    else:
        shuffled = DistributedSampler(data.train_set, ddp.world, ddp.rank, shuffle=True, seed=cfg.seed, drop_last=True)
    train_sampler, train_loader = make_train_loader(data.train_set, shuffled, cfg.batch_size, workers, device,
                                                    cfg.data_train)
    val_sampler = ShardSampler(len(data.val_set), ddp.rank, ddp.world)
    val_loader = DataLoader(data.val_set, cfg.batch_size, sampler=val_sampler, **loader_options(workers, device))
    schedule = _schedule(cfg, len(train_loader), deadline)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.lr_factor)
    scaler = grad_scaler(cfg.amp, device)
    loss_fn = DiceCELoss(cfg.lambda_dice, cfg.lambda_ce, include_background=cfg.dice_background)
    return _Trainer(
        model, net, raw_model, loss_fn, optimizer, scheduler, scaler, train_sampler, train_loader, val_loader,
        workers, params, macs, schedule, start,
    )  # fmt: skip


def _schedule(cfg: TrainConfig, batches: int, deadline: Deadline | None) -> StepSchedule:
    """The run's optimiser steps: ``--steps`` (a replay's recorded revisions with it), ``--epochs`` (given or
    planned), or, with ``deadline``, the planned epochs as a first estimate that the clock revises."""
    per_epoch = steps_per_epoch(batches, cfg.grad_accum)
    total = cfg.steps if cfg.steps is not None and deadline is None else cfg.epochs * per_epoch
    return StepSchedule(total, per_epoch, cfg.warmup_epochs, cfg.lrf, limit=cfg.steps, revisions=cfg.schedule,
                        deadline=deadline)


def _new_log(cfg: TrainConfig, ddp: Distributed, data: _TrainingData, trainer: _Trainer, amp_dtype) -> dict:
    """``log.json``'s header: the run's parameters and the model's size (the seed project's format)."""
    fingerprint = data.fingerprint
    intensity = fingerprint.intensity_mapping
    return {
        "train parameters": {
            "model": resolve_model_name(cfg.model),
            "input size": list(cfg.base_size),
            "batch size": cfg.batch_size,
            "grad accum": cfg.grad_accum,
            "lr": cfg.lr,
            "lrf": cfg.lrf,
            "ct": cfg.ct,
            "intensity": {**intensity.to_dict(), "description": str(intensity)},
            "empty slice fraction": cfg.empty_slice_fraction,
            "foreground share": cfg.foreground_share,
            "weight decay": cfg.weight_decay,
            "fold": None if cfg.folds is None else {"fold": cfg.fold, "folds": cfg.folds, "splits": data.split_source},
            "planned": [k for k in PLANNED_SETTINGS if k not in data.plan.given
                        and (k != "cpu_threads" or data.plan.cpu_threads is not None)],
            "epochs": cfg.epochs,
            "num classes": data.num_classes,
            "in channels": fingerprint.channels,
            "mask values": fingerprint.value_map.to_dict(),
            "seed": cfg.seed,
            "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
            "world size": ddp.world,
            "cpu threads": torch.get_num_threads(),  # planned under a time budget (training/planning.py)
            "compile": cfg.compile,
            "sample cache": cfg.cache_dir or "memory",
            "init weights": trainer.start,
        },
        "model": {
            "total parameters": trainer.params,
            "flops": trainer.macs,
            "flops note": "multiply-adds counted once (torch FlopCounterMode / 2), at the input size",
        },
    }


def _restore(trainer: _Trainer, ckpt: dict, cfg: TrainConfig) -> tuple[int, float, dict]:
    """Load a resumed run's states; returns the first epoch to run, the best Dice so far and the log."""
    trainer.raw_model.load_state_dict(ckpt["model"])
    try:
        trainer.optimizer.load_state_dict(ckpt["optimizer"])
    except ValueError as err:  # e.g. parameter groups of a gctxseg before weight-decay groups
        raise ValueError(
            f"{cfg.resume}: its optimiser state does not fit this gctxseg ({err}); start a new run (its weights "
            "still serve predict and evaluate)"
        ) from None
    trainer.scheduler.load_state_dict(ckpt["scheduler"])
    trainer.scaler.load_state_dict(ckpt["scaler"])
    trainer.schedule.load_state(ScheduleState.saved_in(ckpt), trainer.scheduler.last_epoch)
    trainer.schedule.continue_epochs(cfg.epochs - (ckpt["epoch"] + 1))
    log = {**ckpt["log"], "train parameters": {**ckpt["log"]["train parameters"],
                                                "epochs": trainer.schedule.epochs}}
    return ckpt["epoch"] + 1, ckpt["best_dice"], log


def _checkpoint(trainer: _Trainer, epoch: int, best_dice: float, cfg: TrainConfig, fingerprint, log: dict) -> dict:
    """Everything to resume the run and to predict with it, as plain data (loads with ``weights_only``)."""
    return {
        "gctxseg": __version__,
        **_inference_fields(cfg, fingerprint),
        "model": trainer.raw_model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "epoch": epoch,
        "best_dice": best_dice,
        "log": log,
        "schedule": trainer.schedule.state().to_json(),
        # numpy's and Python's states are not kept (they are pickled objects): every epoch reseeds all three
        "rng": {"torch": torch.get_rng_state()},
    }


def _inference_fields(cfg: TrainConfig, fingerprint: DatasetFingerprint) -> dict:
    """What a checkpoint holds to predict with, but the weights: the architecture, the run's settings and data,
    the classes, the input's normalisation and intensity mapping, the training size."""
    return {
        "model_name": resolve_model_name(cfg.model),
        "model_kwargs": dict(cfg.model_options),
        "config": asdict(cfg),
        "fingerprint": asdict(fingerprint),
        "value_map": fingerprint.value_map.to_dict(),
        "normalization": {"mean": fingerprint.mean, "std": fingerprint.std},
        "intensity": fingerprint.intensity,  # values as read -> [0, 1] (CT windows): prediction applies the same
        "base_size": list(cfg.base_size),
    }


@dataclass
class _Progress:
    """What the epoch loop carries from one epoch to the next."""

    start_epoch: int
    best_dice: float
    log: dict


class _SegmentationEpochs:
    """Segmentation training as the epoch driver runs it (training/driver.py): a pass of ``train_one_epoch``,
    validation on the held-out images, ``log.json``, ``last.pt``/``best.pt`` and the curves (rank 0 writes)."""

    what = "epoch"

    def __init__(self, cfg: TrainConfig, ddp: Distributed, device: torch.device, amp_dtype, data: _TrainingData,
                 trainer: _Trainer, run_dir: Path, state: _Progress, then_report: bool = False,
                 final_prediction: FinalPrediction | None = None) -> None:
        self.cfg, self.ddp, self.device, self.amp_dtype = cfg, ddp, device, amp_dtype
        self.data, self.trainer, self.run_dir, self.state = data, trainer, run_dir, state
        self.schedule, self.sampler, self.scheduler = trainer.schedule, trainer.train_sampler, trainer.scheduler
        # after the last step: the final validation with its log and checkpoints, then the sample predictions (a
        # validation's forward passes for that share of its images)
        self.samples_share = cfg.num_samples / max(len(data.val_set), 1)
        # the last validation and curve draw in wall seconds: the samples and the report after train() (the report on
        # the wall clock, outside the deadline's) are estimated from them
        self.then_report, self.validate_s, self.draw_s = then_report and trainer.schedule.clocked, 0.0, 0.0
        self.best_is_current = False  # the model holds best.pt's weights (the last epoch recorded was the best)
        self.final_prediction = final_prediction
        pairs = data.train_pairs
        self.names = [p.image.name if p.slice_index is None else f"{p.image.name} (slice {p.slice_index})"
                      for p in pairs]

    def save(self, name: str, epoch: int) -> None:
        state, trainer = self.state, self.trainer
        ckpt = _checkpoint(trainer, epoch, state.best_dice, self.cfg, self.data.fingerprint, state.log)
        ckpt["data_files"] = self.data.files
        if name == "best.pt":  # weights to predict with: the optimiser's moments (twice the weights) are last.pt's
            ckpt.update(optimizer=None, scaler=None)
        save_checkpoint(ckpt, self.run_dir / name)

    def save_start(self) -> None:
        self.save("last.pt", -1)

    def warm_up(self) -> None:
        """Before a clocked run times its first write: the figures warmed up (rank 0 draws them), then what the
        reserve and the validations between epochs are estimated from until a validation has run: one curves draw
        and one validation batch's forward pass. Not in a fold of a cross-validation, which validates after its last
        step only: its reserve keeps the planner's estimate rather than pay for both in every fold."""
        if not self.ddp.is_main:
            return
        warm_up_figures()
        if self.cfg.folds:
            return
        deadline, drawn = self.schedule.deadline, now()
        plot_curves(self.state.log, self.run_dir / "curves.png")  # no epoch yet: the axes of the curves to come
        deadline.draw_s = now() - drawn
        deadline.forward_s = self._forward_s()

    @torch.no_grad()
    def _forward_s(self) -> float | None:
        """Seconds of one validation batch, read and through the model with its loss, timed on a second pass (the
        first pays for the kernels' set-up); None without validation images."""
        val_set, net, count = self.data.val_set, self.trainer.net, min(self.cfg.batch_size, len(self.data.val_set))
        if count == 0:
            return None
        training, started = net.training, 0.0
        net.eval()
        try:
            for timed in (False, True):
                if timed:
                    started = now()
                images, masks, _ = zip(*(val_set[i] for i in range(count)))
                images = torch.stack(images).to(self.device).contiguous(memory_format=torch.channels_last)
                with autocast_context(self.device, self.amp_dtype):
                    loss = self.trainer.loss_fn(net(images), torch.stack(masks).to(self.device))
                loss.item()  # the device has finished
        finally:
            net.train(training)
        return now() - started

    def reserve_s(self, after_s: float) -> float:
        report_s = self.validate_s + REPORT_DRAWS * self.draw_s if self.then_report else 0.0
        return after_s + self.validate_s * self.samples_share + report_s

    def train_pass(self, stop: dict) -> EpochScores:
        t, cfg = self.trainer, self.cfg
        return EpochScores.from_json(train_one_epoch(
            t.model, t.train_loader, t.loss_fn, t.optimizer, t.scheduler, t.scaler, self.amp_dtype, self.device,
            self.data.num_classes, cfg.grad_clip, stop, self.names, cfg.grad_accum, self.schedule))

    def validate(self) -> EpochScores:
        started = time.perf_counter()
        broadcast_buffers(self.trainer.net)
        if self._predicts_final():
            scores = self._validate_predicted()
        else:
            scores = evaluate(self.trainer.net, self.trainer.val_loader, self.trainer.loss_fn, self.amp_dtype,
                              self.device, self.data.num_classes)[0]
        self.validate_s = time.perf_counter() - started
        return EpochScores.from_json(scores)

    def _predicts_final(self) -> bool:
        """Whether this is the validation after the last step that ``final_prediction`` predicts."""
        return self.schedule.finished and _final_is_predicted(self.final_prediction, self.data)

    @torch.no_grad()
    def _validate_predicted(self) -> dict:
        """The validation scored from ``final_prediction``'s probabilities of the held-out images, predicted by the
        model in memory as its ``last.pt`` predicts them (the images read and resized in float32, not the training
        cache's float16: its scores differ from a cache pass by that rounding)."""
        model, fields = self.trainer.raw_model, _inference_fields(self.cfg, self.data.fingerprint)
        training = model.training
        model.eval()
        try:
            batches = self.final_prediction(model, fields, self.data.val_set.pairs)
            return evaluate_probabilities(batches, self.data.val_set, self.trainer.loss_fn, self.data.num_classes,
                                          self.device)
        finally:
            model.train(training)

    def record(self, end: EpochEnd) -> None:
        self.cfg = replace(self.cfg, epochs=self.schedule.epochs)  # the schedule's epochs so far (a clock revises)
        improved = _log_epoch(self.state, end.epoch, end.lr, end.trained, end.validated, self.schedule, end.steps,
                              end.pass_s)
        if not self.ddp.is_main:
            return
        if improved:  # before last.pt: a stop between the two then redoes this epoch rather than keep a stale best
            self.save("best.pt", end.epoch)
        if end.write:  # a clocked run writes an unvalidated epoch's within a share of its seconds (driver.py)
            atomic_write_json(self.run_dir / "log.json", self.state.log)
            self.save("last.pt", end.epoch)
        self.best_is_current = improved
        if end.draw:
            drawn = time.perf_counter()
            plot_curves(self.state.log, self.run_dir / "curves.png")
            self.draw_s = time.perf_counter() - drawn
        _print_epoch(end.epoch, end.lr, end.trained, end.validated, self.schedule, end.steps, self.cfg.val_every,
                     time.perf_counter() - end.started, improved)

    def nonfinite_advice(self, first_epoch: bool) -> str:
        start = self.cfg.init_weights if self.cfg.init_weights != NO_START else None
        return nonfinite_advice(first_epoch, self.run_dir / "last.pt", start) if self.ddp.is_main else ""

    def close(self) -> None:
        shutdown_workers(self.trainer.train_loader, self.trainer.val_loader)


def _log_epoch(state: _Progress, epoch: int, lr: float, train: EpochScores, val: EpochScores | None,
               schedule: StepSchedule, steps: int, trained_s: float) -> bool:
    """Record the epoch's scores at learning rate ``lr`` (a partial epoch with its ``steps``), the schedule's steps
    and revisions and, in a clocked run, the ``trained_s`` seconds of its training pass in the log; returns whether
    its validation Dice is the best so far."""
    entry = {"train log:": {"info": replace(train, lr=lr).to_json()}}
    if val is not None:  # epochs between validations (planned val_every) log training only
        entry["val log:"] = {"info": replace(val, lr=lr).to_json()}
    if steps < schedule.per_epoch:  # the schedule ended inside it (a whole epoch keeps the seed's format)
        entry["steps"] = steps
    state.log[f"epoch:{epoch}"] = entry
    header = state.log["train parameters"]
    header.update(epochs=schedule.epochs, steps=schedule.done, schedule=schedule.revisions)
    if schedule.clocked:  # clock readings: only a budgeted run's log holds them (a seed gives the same log)
        header["time budget"] = budget_record(schedule, TimeBudget.of(header), trained_s).to_json()
    dice = val.mean_dice if val is not None else float("nan")
    improved = not math.isnan(dice) and dice > state.best_dice
    state.best_dice = dice if improved else state.best_dice
    return improved


def _print_epoch(epoch: int, lr: float, train: EpochScores, val: EpochScores | None, schedule: StepSchedule,
                 steps: int, val_every: int, seconds: float, improved: bool) -> None:
    partial = f" ({steps} of {schedule.per_epoch} steps)" if steps < schedule.per_epoch else ""
    shown = (f"val loss {val.loss:.4f} dice {val.mean_dice:.4f} iou {val.scores.mean_iou:.4f}"
             if val is not None else "(not validated: a budgeted run validates where its time allows)"
             if schedule.clocked else f"(validated every {val_every} epochs)")
    print(
        f"epoch {epoch + 1}/{schedule.epochs}{partial}  lr {lr:.2e}  train loss {train.loss:.4f} "
        f"dice {train.mean_dice:.4f}  {shown}  {seconds:.1f}s" + ("  *best" if improved else ""),
        flush=True,
    )


def _finish(
    cfg: TrainConfig, ddp: Distributed, device: torch.device, amp_dtype, data: _TrainingData, trainer: _Trainer,
    run_dir: Path, best_dice: float, best_is_current: bool = False,
) -> None:  # fmt: skip
    """Sample predictions drawn with the best weights (rank 0; read back from best.pt unless the model holds them:
    ``best_is_current``), then every rank waits for the others."""
    if ddp.is_main and (run_dir / "best.pt").exists():
        _draw_samples(cfg, device, amp_dtype, data, trainer, run_dir, best_is_current)
        print(f"done: best val mean dice {best_dice:.4f}; run folder {run_dir}")
    if dist.is_initialized():
        dist.barrier()


def _draw_samples(cfg: TrainConfig, device: torch.device, amp_dtype, data: _TrainingData, trainer: _Trainer,
                  run_dir: Path, best_is_current: bool) -> None:
    """``samples/val_predictions.png`` with best.pt's weights (none asked: ``num_samples`` 0)."""
    if cfg.num_samples > 0:
        if not best_is_current:
            trainer.raw_model.load_state_dict(load_checkpoint(run_dir / "best.pt", map_location=device)["model"])
        (run_dir / "samples").mkdir(exist_ok=True)
        _save_sample_predictions(
            trainer.raw_model,
            data.val_set,
            eval_transforms(data.fingerprint.mean, data.fingerprint.std),
            device,
            amp_dtype,
            run_dir / "samples" / "val_predictions.png",
            cfg.num_samples,
        )


# ---------------------------------------------------------------- the run


def _deadline(cfg: TrainConfig, ckpt: dict | None, started: float, clocked: bool) -> Deadline | None:
    """A budgeted run's deadline when its schedule follows the clock (a time budget, neither ``--epochs`` nor
    ``--steps``). A resumed run keeps its budget: what the checkpoint says was spent is subtracted from it."""
    if not clocked or not cfg.time_budget:
        return None
    return Deadline(cfg.time_budget * 60, started - ScheduleState.spent_in(ckpt))


def _replayed(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``--schedule-from``'s recorded steps and schedule, and its planned settings where ``cfg``
    leaves them open: the same seed then gives the same weights (training/schedule.py)."""
    if cfg.steps is not None or cfg.epochs is not None:
        raise ValueError(f"--schedule-from {cfg.schedule_from} replays that run's steps: leave out --epochs/--steps")
    recorded = replay_settings(cfg.schedule_from)
    planned = {k: v for k, v in recorded["planned"].items() if getattr(cfg, k, None) is None}
    options = {**recorded["model_options"], **cfg.model_options}
    return replace(cfg, **planned, model_options=options, steps=recorded["steps"], schedule=recorded["schedule"],
                   time_budget=None)


def train(cfg: TrainConfig, *, given: Collection[str] | None = None, then_report: bool = False,
          final_prediction: FinalPrediction | None = None, started: float | None = None) -> Path:
    """Train a model as ``cfg`` says and return the run folder (``report.html`` is
    :mod:`gctxseg.workflows.train_report`'s).

    Args:
        cfg: the run's settings; with ``cfg.resume`` the checkpoint's settings win except ``RESUME_SETTINGS``.
        given: with ``cfg.resume``, the settings the caller set explicitly (the CLI's flags): an explicit
            ``epochs`` always wins, the others are named on one line as ignored. None = those not at their default.
        then_report: the caller writes the report after this returns (``train_and_report``): a budgeted run
            ends early enough for it (``REPORT_DRAWS``).
        final_prediction: predicts the validation after the last step instead of the training cache's pass (a cv
            fold: :class:`gctxseg.crossval.oof.HeldOutPrediction`, whose probabilities become the fold's
            out-of-fold arrays); on one process, of whole images only (:meth:`_SegmentationEpochs.validate`).
        started: when the time budget's clock started (the ``now()`` clock: ``time.perf_counter``); None: at this
            call. The command line passes its own start, so the start-up before this call is inside the budget.

    Raises:
        TrainingInterrupted: SIGINT/SIGTERM (on any rank); the run folder is consistent and resumable.
        NonFiniteLossError: the loss became NaN/inf (on any rank).
        ValueError, DatasetError: bad settings or data, before anything is trained.
    """
    started = now() if started is None else started
    keep_freed_memory()  # a CPU step reuses the last one's memory instead of faulting it in again (utils.py)
    ckpt = load_checkpoint(cfg.resume) if cfg.resume else None
    if ckpt is not None and ckpt.get("optimizer") is None:
        raise ValueError(f"--resume {cfg.resume}: holds weights without the optimiser's state (a best.pt); resume "
                         "from the run's last.pt, or start a new run from these weights with --init-weights")
    cfg, fixed = _settled_config(cfg, ckpt, given)
    ddp, device = setup_distributed(cfg.device)
    seed_everything(cfg.seed + ddp.rank)
    amp_dtype = autocast_dtype(cfg.amp, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    if ckpt is None and cfg.init_weights is None:
        cfg = _planned_init_weights(cfg, ddp)
    data, cfg = _prepare_data(cfg, ckpt, ddp, device, amp_dtype)
    with cpu_threads(cfg.cpu_threads if device.type == "cpu" else None):  # the planned threads, this run only
        return _train_planned(cfg, ckpt, fixed, started, ddp, device, amp_dtype, data, then_report,
                              final_prediction)


def _train_planned(cfg: TrainConfig, ckpt: dict | None, fixed: set, started: float, ddp: Distributed,
                   device: torch.device, amp_dtype, data: _TrainingData, then_report: bool,
                   final_prediction: FinalPrediction | None) -> Path:
    """:func:`train` once its settings are planned and its data read: build, train, finish; the run folder."""
    deadline = _deadline(cfg, ckpt, started, clocked=_follows_clock(cfg, ckpt, fixed, data.plan))
    if deadline is not None and cfg.folds and "val_every" in data.plan.reasons:  # as drive_epochs is told below
        data.plan.reasons["val_every"] = "a cv fold under a time budget validates after its last step only (driver.py)"
    # the model first: a start that does not fit fails before a run folder is made
    trainer = _build_trainer(cfg, ddp, device, data, resuming=ckpt is not None, deadline=deadline)
    run_dir = _make_run_folder(cfg, ddp, device, data, trainer.start)
    state = _Progress(0, -1.0, _new_log(cfg, ddp, data, trainer, amp_dtype))
    if ckpt is not None:
        state = _Progress(*_restore(trainer, ckpt, cfg))
    if deadline is not None:  # a resumed run's earlier validation may have chosen best.pt
        predicts = state.best_dice >= 0 or not _final_is_predicted(final_prediction, data)
        _estimate_after_last_step(deadline, cfg, data, len(trainer.val_loader), then_report, report_predicts=predicts)
    if ddp.is_main:
        _announce(cfg, device, data, trainer, run_dir, state, resumed=ckpt is not None)

    epochs = _SegmentationEpochs(cfg, ddp, device, amp_dtype, data, trainer, run_dir, state, then_report,
                                 final_prediction)
    # a fold of a cross-validation is scored by its final weights on its held-out scans (crossval/folds.py): under a
    # budget, the validations between its epochs would only pick a best.pt nothing scores, out of its seconds
    stopped_by = drive_epochs(epochs, first_epoch=state.start_epoch, seed=cfg.seed, rank=ddp.rank, device=device,
                              is_main=ddp.is_main, fresh=state.start_epoch == 0 and not cfg.resume,
                              val_every=cfg.val_every, clocked_between=not cfg.folds)
    if stopped_by is not None:
        in_cv = bool(cfg.folds) and (run_dir.parent.parent / CV_RECORD).is_file()  # cv_dir/model/fold_k
        _leave_stopped(stopped_by, ddp, run_dir, cv_fold=in_cv)
    _finish(cfg, ddp, device, amp_dtype, data, trainer, run_dir, state.best_dice, epochs.best_is_current)
    return run_dir


def _final_is_predicted(final_prediction: FinalPrediction | None, data: _TrainingData) -> bool:
    """Whether ``final_prediction`` predicts the validation after the last step: on one process (under DDP each rank
    validates its shard) and of whole images (the arrays are kept per image file)."""
    return (final_prediction is not None and not dist.is_initialized()
            and all(pair.slice_index is None for pair in data.val_set.pairs))


def _estimate_after_last_step(deadline: Deadline, cfg: TrainConfig, data: _TrainingData, validation_batches: int,
                              then_report: bool, report_predicts: bool) -> None:
    """What the deadline keeps after the last step until a validation has measured it: the final validation, the
    sample predictions and, with ``then_report``, the report's figures, and its prediction of ``best.pt`` where
    ``report_predicts``. It need not predict where the final validation is predicted as the report predicts and is
    the run's first: its weights are then ``best.pt``'s, and the report scores its labels (rule 23)."""
    samples = math.ceil(min(cfg.num_samples, len(data.val_set)) / cfg.batch_size)
    deadline.forward_batches = validation_batches * (1 + (then_report and report_predicts)) + samples
    deadline.validation_batches, deadline.draws = validation_batches, 1 + REPORT_DRAWS * then_report


def _settled_config(cfg: TrainConfig, ckpt: dict | None, given: Collection[str] | None) -> tuple[TrainConfig, set]:
    """(``cfg`` with a replay's record, a resumed run's settings or absolute data paths; which of ``epochs`` and
    ``steps`` the caller fixed). Refuses ``--epochs`` with ``--steps``."""
    fixed = {"epochs", "steps"} & set(given if given is not None else
                                      [k for k in ("epochs", "steps") if getattr(cfg, k) is not None])
    if ckpt is None and cfg.steps is not None and cfg.epochs is not None:
        raise ValueError(f"--epochs {cfg.epochs} and --steps {cfg.steps}: give one (the other is derived)")
    if cfg.schedule_from and ckpt is None:
        cfg = _replayed(cfg)
    return (resume_config(cfg, ckpt, given) if ckpt is not None else absolute_data_paths(cfg)), fixed


def _planned_init_weights(cfg: TrainConfig, ddp: Distributed) -> TrainConfig:
    """``cfg`` starting from the installed offline start where there is one (planned: no ``--init-weights``)."""
    path, why = planned_start(cfg.model, cfg.model_options, cfg.encoder_weights)
    if why and ddp.is_main:
        print(f"init weights: {why}" if path else why)
    return replace(cfg, init_weights=path or NO_START)


def _follows_clock(cfg: TrainConfig, ckpt: dict | None, fixed: set, plan: TrainingPlan) -> bool:
    """Whether the schedule follows the clock: nothing fixed its length (``--epochs``, ``--steps``, a replay), and a
    resumed run was a budgeted one."""
    if fixed or cfg.steps is not None:
        return False
    if ckpt is None:
        return "epochs" not in plan.given
    saved = ScheduleState.saved_in(ckpt)
    return saved is not None and saved.budget_s is not None


def _announce(cfg: TrainConfig, device: torch.device, data: _TrainingData, trainer: _Trainer, run_dir: Path,
              state: _Progress, resumed: bool) -> None:
    """The plan (or where a resumed run goes on), then one line on the run: model, size, data, device."""
    if resumed:
        print(f"resuming {run_dir} at epoch {state.start_epoch}/{cfg.epochs}")
    else:
        print(data.plan.format())
    print(
        f"run {run_dir}: {resolve_model_name(cfg.model)} {trainer.params / 1e6:.2f} M params, "
        f"{trainer.macs / 1e9:.2f} G mult-adds at {cfg.base_size[0]}x{cfg.base_size[1]}; "
        f"{len(data.train_set)} train / {len(data.val_set)} val images; classes "
        f"{data.fingerprint.value_map.to_dict()}; device {device}, precision "
        f"{state.log['train parameters']['amp']}, {trainer.workers} loader workers"
    )


def _leave_stopped(signal: int, ddp: Distributed, run_dir: Path, cv_fold: bool = False) -> None:
    """Every rank agreed to stop on ``signal``: they leave together, and the message says how to go on (a fold of a
    ``gctxseg cv``: its command again, which resumes the fold and goes on with the rest)."""
    if dist.is_initialized():
        dist.barrier()
    how = ("run the same gctxseg cv command again: it resumes this fold" if cv_fold
           else f"resume with: gctxseg train --resume {run_dir / 'last.pt'}")
    raise TrainingInterrupted(f"training stopped by signal {signal}; {how}", said_by=ddp.is_main)
