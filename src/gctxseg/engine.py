"""Training engine: one readable loop from a :class:`TrainConfig` to a self-describing run folder.

Run folder (``<results>/<name>``): ``log.json`` (the seed project's format, rewritten atomically after
every epoch), ``dataset_fingerprint.json``, ``env.json``, ``preview.png``, ``curves.png``, ``best.pt`` and
``last.pt`` (atomic), ``samples/``. Distributed training is inferred from torchrun's environment; only
rank 0 writes.

Reproducibility: every random choice of an epoch is a function of ``(seed, epoch)`` — the shuffling
order, each sample's augmentation (seeded from ``(seed, epoch, sample index)``, so the number of
loader workers does not matter) and the model's own randomness (stochastic depth) — so a run resumed
from ``last.pt`` continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from . import __version__
from .checkpoint import load_checkpoint, save_checkpoint
from .data import (
    CTWindow,
    DatasetFingerprint,
    ImagePair,
    SegmentationDataset,
    expand_slices,
    find_pairs,
    fingerprint_dataset,
    resolve_windows,
)
from .data.sampling import ForegroundTopUpSampler, class_presence
from .data.splits import ONE_GROUP_PER_IMAGE, fold_files
from .data.transforms import AUGMENTATIONS, eval_transforms, train_transforms
from .losses import DiceCELoss, training_loss
from .metrics import ConfusionMatrix
from .models import create_model, list_models, resolve_model_name
from .models.complexity import count_macs, count_parameters
from .planning import BUDGET_SHARE, VAL_SHARE, TrainingPlan, plan_training, planned_foreground_share
from .precision import AMP_CHOICES, autocast_context, autocast_dtype
from .report import plot_curves
from .utils import (
    atomic_write_json,
    compile_model,
    keep_freed_memory,
    next_run_dir,
    progress,
    resolve_device,
    seed_everything,
)
from .visualize import colorize, overlay, save_rows, to_uint8_rgb

__all__ = [
    "TrainConfig",
    "train",
    "load_checkpoint",
    "lr_at",
    "autocast_dtype",
    "TrainingInterrupted",
    "NonFiniteLossError",
    "optimizer_param_groups",
]


def _default_model() -> str:
    return "gctx_unet" if "gctx_unet" in list_models() else "unet"


@dataclass
class TrainConfig:
    """Every setting of a training run; ``asdict`` of it is stored in the checkpoint and the run folder."""

    # data
    data_train: str = "./data/train/images"  # images folder; masks in the sibling 'masks' folder
    data_val: str = "./data/val/images"
    img_f: str = ".jpg"  # image file suffix
    mask_f: str = ".png"  # mask file suffix
    ct: bool = False  # CT input (DICOM/NIfTI in HU): windowing before normalisation
    window: str | None = None  # CT window preset (abdomen, lung, bone, brain, liver, mediastinum) or "L/W"
    window_level: float | None = None  # explicit CT window centre in HU (with window_width)
    window_width: float | None = None  # explicit CT window width in HU
    windows: tuple[str, ...] = ()  # CT windows stacked as input channels, e.g. ("lung", "mediastinum", "auto")
    # no window option with ct: one window derived from the training masks' foreground HU (0.5-99.5 percentiles)
    empty_slice_fraction: float = 1.0  # share of training slices/images without foreground kept (1 = all)
    base_size: tuple[int, int] | None = None  # (H, W) the network is trained at; None = planned (planning.py)
    cache_dir: str | None = None  # decoded samples as memory-mapped .npy files here (shared by workers, ranks
    # and later runs); None = each loader worker keeps its own in-memory copy
    # model
    model: str = field(default_factory=_default_model)
    model_options: dict = field(default_factory=dict)  # extra keyword arguments of the architecture
    encoder_weights: str | None = None  # ImageNet encoder checkpoint (gctx_unet) or "imagenet" (timm's download)
    decoder_init: str = "none"  # "mirror": the decoder starts from the encoder's ImageNet blocks (gctx_unet)
    # cross-validation: with folds, data_train holds every labelled image and data_val is not used
    folds: int | None = None  # K folds by group (patient / eye)
    fold: int = 0  # the fold trained here, 0..K-1
    group_regex: str | None = None  # group id from the file name (first capture group), e.g. '^(p\\d+)_'
    splits: str | None = None  # a splits.json (nnU-Net's splits_final.json shape) instead of computed folds
    # optimisation (None = planned from the dataset, the model family and the device: planning.py)
    epochs: int | None = None
    batch_size: int | None = None
    grad_accum: int = 1  # micro-batches summed per optimiser step: effective batch = batch_size * grad_accum
    lr: float | None = None  # peak learning rate (AdamW)
    lrf: float = 0.002  # final lr = lr * lrf (cosine decay)
    warmup_epochs: float | None = None  # linear warm-up, capped at 10% of the schedule
    weight_decay: float | None = None
    foreground_share: float | None = None  # each batch topped up to hold each foreground class in this share
    time_budget: float | None = None  # minutes the run may take: the planned schedule (and size) fit it
    augment: str | None = None  # augmentation strength (data.transforms.AUGMENTATIONS); None = planned per family
    val_every: int | None = None  # validate every N epochs (and the last); None = planned from the step time
    lambda_dice: float = 1.0
    lambda_ce: float = 1.0
    dice_background: bool = True  # background in the Dice term (cross-entropy always covers it)
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    # system
    device: str = "auto"
    amp: str = "auto"  # auto | bf16 | fp16 | off
    workers: int = -1  # loader processes; -1 = min(4, cpus // 2)
    seed: int = 0
    sync_bn: bool = False  # SyncBatchNorm under DDP
    compile: bool = False  # torch.compile the model (falls back to eager, with a message, where it cannot)
    # output
    results: str = "runs"
    name: str = "exp"
    exist_ok: bool = False
    num_samples: int = 8  # validation images drawn in samples/
    resume: str | None = None  # path to last.pt

    def __post_init__(self) -> None:
        if self.base_size is not None:
            self.base_size = tuple(int(s) for s in self.base_size)
            if len(self.base_size) != 2 or min(self.base_size) < 8:
                raise ValueError(f"base_size must be two sizes >= 8 (H W), got {self.base_size}")
        for name in ("epochs", "batch_size", "grad_accum", "val_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.folds is not None and not 0 <= self.fold < max(self.folds, 1):
            raise ValueError(f"--fold {self.fold}: with --folds {self.folds} it must be 0..{self.folds - 1}")
        if self.foreground_share is not None and not 0 <= self.foreground_share <= 1:
            raise ValueError(f"foreground_share must be in [0, 1], got {self.foreground_share}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError(f"--time-budget must be > 0 minutes, got {self.time_budget}")
        if (self.lr is not None and self.lr <= 0) or not 0 < self.lrf <= 1:
            raise ValueError(f"need lr > 0 and 0 < lrf <= 1, got lr={self.lr}, lrf={self.lrf}")
        if self.augment is not None and self.augment not in AUGMENTATIONS:
            raise ValueError(f"--augment must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}")
        if self.amp not in AMP_CHOICES:
            raise ValueError(f"amp must be auto, bf16, fp16 or off, got {self.amp!r}")
        resolve_model_name(self.model)  # unknown names fail now, with a suggestion
        self.windows = tuple(self.windows)
        if not self.ct and (
            self.window or self.window_level is not None or self.window_width is not None or self.windows
        ):
            raise ValueError("a CT window option (--window, --window-level/--window-width, --windows) needs --ct")
        self.ct_windows()  # conflicting or unknown windows fail now
        if not 0 <= self.empty_slice_fraction <= 1:
            raise ValueError(f"empty_slice_fraction must be in [0, 1], got {self.empty_slice_fraction}")

    def ct_windows(self) -> tuple[CTWindow | str, ...]:
        """The CT windows the options ask for (``"auto"`` = derived from the training set)."""
        return resolve_windows(self.window, self.window_level, self.window_width, self.windows)


class TrainingInterrupted(RuntimeError):
    """Raised after SIGINT/SIGTERM once the run folder is consistent."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite."""


# ---------------------------------------------------------------- schedule, randomness


def lr_at(step: int, total_steps: int, warmup_steps: int, lrf: float) -> float:
    """Learning-rate factor at ``step``: linear warm-up to 1, then cosine decay to ``lrf``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return lrf + (1 - lrf) * 0.5 * (1 + math.cos(math.pi * progress))


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + index) % 2**63


class EpochTaggedSampler(Sampler[int]):
    """Wraps a ``DistributedSampler`` and tags each index with the epoch: yields ``epoch * N + index``.

    The dataset splits the tag back and seeds the sample's augmentation from ``(seed, epoch, index)``,
    which works the same in the main process and in persistent loader workers.
    """

    def __init__(self, sampler: DistributedSampler, dataset_len: int) -> None:
        self.sampler, self.dataset_len, self.epoch = sampler, dataset_len, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        return (self.epoch * self.dataset_len + i for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class SeededAugmentDataset(torch.utils.data.Dataset):
    """Training view of a :class:`SegmentationDataset`: augmentation seeded per ``(seed, epoch, index)``."""

    def __init__(self, base: SegmentationDataset, seed: int) -> None:
        self.base, self.seed = base, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, tagged: int):
        epoch, index = divmod(tagged, len(self.base))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_sample_seed(self.seed, epoch, index))
            return self.base[index]


class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank r takes indices r, r + world, ...; no padding, so no sample counts twice."""

    def __init__(self, length: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, length, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# ---------------------------------------------------------------- setup helpers


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Distributed(), resolve_device(device_name)
    ddp = Distributed(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    device = resolve_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(ddp.local_rank)
        device = torch.device("cuda", ddp.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ddp, device


def _num_workers(requested: int) -> int:
    return min(4, (os.cpu_count() or 2) // 2) if requested < 0 else requested


def _env_info(device: torch.device) -> dict:
    try:
        git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        git = ""
    return {
        "gctxseg": __version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "host": platform.node(),
        "platform": platform.platform(),
        "device": str(device),
        "cuda device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu threads": torch.get_num_threads(),
        "git": git,
    }


def _load_encoder_weights(model: torch.nn.Module, source: str, verbose: bool, decoder_init: str = "none") -> None:
    from .models.pretrained import load_pretrained  # ImageNet loading lives there (timm download, mirroring)

    report = load_pretrained(model, source, decoder_init)
    if verbose:
        print(report.summary())


def _ignore_stop_signals(_worker_id: int) -> None:
    """Loader workers ignore Ctrl-C/SIGTERM sent to the whole process group: the main process stops after
    the current step and shuts them down itself (:func:`_shutdown_workers`); a worker killed first would
    abort the run from inside the loader instead."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _shutdown_workers(*loaders: DataLoader) -> None:
    """Stop persistent loader workers now (they ignore SIGTERM, so the interpreter's exit could not)."""
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None)  # persistent workers live in the loader's iterator
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        loader._iterator = None


def _install_stop_handlers() -> tuple[dict, list]:
    """SIGINT/SIGTERM set a flag; the loop stops after the current step with the run folder consistent."""
    state = {"signal": None}

    def handler(signum, _frame):
        if state["signal"] is not None:  # second signal: the user insists
            raise KeyboardInterrupt
        state["signal"] = signum

    previous = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous.append((sig, signal.signal(sig, handler)))
        except ValueError:  # not the main thread (e.g. called from a notebook worker): no handler
            pass
    return state, previous


# ---------------------------------------------------------------- folds and the plan

PLANNED_SETTINGS = ("base_size", "batch_size", "lr", "weight_decay", "warmup_epochs", "epochs", "foreground_share",
                    "augment", "val_every")


def _split_files(cfg: TrainConfig, verbose: bool) -> tuple[list[ImagePair], list[ImagePair], str | None]:
    """Training and validation file pairs: the two folders, or fold ``cfg.fold`` of ``data_train`` by group."""
    if cfg.folds is None:
        return find_pairs(cfg.data_train, cfg.img_f, cfg.mask_f), find_pairs(cfg.data_val, cfg.img_f, cfg.mask_f), None
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


def _agree_across_ranks(stop: dict, finite: bool, device: torch.device) -> bool:
    """Make every rank see the same stop signal and non-finite loss; returns whether every rank's loss is finite.

    A SIGTERM (or a NaN) seen by one rank only would let it leave the loop while the others block in the next
    gradient all-reduce until the timeout: one all-reduce (max) of ``[signal, non-finite]`` per micro-batch,
    before its backward, lets all ranks stop at the same step. Sets ``stop["signal"]`` to the agreed signal.
    Without DDP it only reads the local state.
    """
    if not dist.is_initialized():
        return finite
    flags = torch.tensor([stop["signal"] or 0, 0 if finite else 1], dtype=torch.int64, device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    signal_number, any_non_finite = flags.tolist()
    stop["signal"] = signal_number or None
    return not any_non_finite


def _broadcast_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank, as the DDP wrapper would do in its forward.

    Validation runs the bare model, so a rank with an empty shard (fewer images than ranks) never calls a
    forward whose collective the others wait in; this explicit broadcast is one that every rank reaches.
    """
    if dist.is_initialized():
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def _bare(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (a compiled module passes attribute lookups on to its original)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


# ---------------------------------------------------------------- one epoch


def train_one_epoch(
    model, loader, loss_fn, optimizer, scheduler, scaler, amp_dtype, device, num_classes, grad_clip, stop, names,
    grad_accum: int = 1,
) -> dict:
    """One pass over the training loader; returns the epoch's metric block (from a confusion matrix).

    With ``grad_accum`` > 1 the gradients of that many consecutive batches are averaged before each optimiser
    step (the epoch's last group may be shorter; it is averaged over its own length). Under DDP the ranks agree
    on every micro-batch whether to stop (:func:`_agree_across_ranks`), so they leave the loop together.
    """
    model.train()
    cm = ConfusionMatrix(num_classes)
    loss_sum, seen, skipped = torch.zeros((), dtype=torch.float64), 0, 0
    num_batches = len(loader)
    show = not dist.is_initialized() or dist.get_rank() == 0
    for index, (images, masks, tags) in enumerate(progress(loader, "train", show=show)):
        group_start = index - index % grad_accum
        group_size = min(grad_accum, num_batches - group_start)
        last_in_group = index == group_start + group_size - 1
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        masks = masks.to(device, non_blocking=True)
        # under DDP only the group's last backward all-reduces the gradients
        accumulating = model.no_sync if not last_in_group and hasattr(model, "no_sync") else contextlib.nullcontext
        with accumulating(), autocast_context(device, amp_dtype):
            outputs = model(images)
            loss = training_loss(loss_fn, _bare(model), outputs, masks)
        finite = bool(torch.isfinite(loss))
        if not _agree_across_ranks(stop, finite, device):
            where = f"the batch {[names[int(t) % len(names)] for t in tags]}" if not finite else "another rank's batch"
            raise NonFiniteLossError(
                f"loss is {loss.item() if not finite else 'nan or inf'} on {where} at lr "
                f"{scheduler.get_last_lr()[0]:.3g}; try a lower --lr"
            )
        with accumulating():
            scaler.scale(loss / group_size).backward()
        main = outputs if isinstance(outputs, torch.Tensor) else outputs[0]
        cm.update(main.detach().argmax(1), masks)
        loss_sum += loss.detach().double().cpu() * images.shape[0]
        seen += images.shape[0]
        if not last_in_group:
            continue
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scale = scaler.get_scale() if scaler.is_enabled() else 0.0
        scaler.step(optimizer)  # fp16: skipped by the scaler when gradients overflowed
        scaler.update()
        skipped += int(scaler.is_enabled() and scaler.get_scale() < scale)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if stop["signal"] is not None:  # agreed on this group's last micro-batch: every rank breaks here
            break
    info = _epoch_info(cm, loss_sum, seen)
    if scaler.is_enabled():
        info["amp skipped steps"] = skipped
    return info


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
        image, mask = dataset._load(i)
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
        image, mask = dataset._load(i)
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


# what a resumed run may change; every other setting is the checkpoint's
RESUME_SETTINGS = ("device", "workers", "epochs", "resume")


def _flag(name: str) -> str:
    return "--img_f" if name == "img_f" else "--mask_f" if name == "mask_f" else "--" + name.replace("_", "-")


def _resume_config(cfg: TrainConfig, ckpt: dict, given: Collection[str] | None) -> TrainConfig:
    """The checkpoint's configuration with the settings a resumed run may change; says which given ones it ignores.

    ``given`` names the settings the caller set explicitly (the CLI's flags); None = those differing from the
    defaults, except ``epochs``, which then counts as given only when it is not the default.
    """
    defaults = TrainConfig()
    if given is None:
        given = {f.name for f in fields(TrainConfig) if getattr(cfg, f.name) != getattr(defaults, f.name)}
    ignored = sorted(set(given) - set(RESUME_SETTINGS))
    if ignored and int(os.environ.get("RANK", "0")) == 0:
        print(
            f"--resume: ignoring {', '.join(map(_flag, ignored))}: a resumed run keeps its own settings (only "
            "--epochs, --device and --workers change); start a new run to change them",
            file=sys.stderr,
        )
    saved = {f.name: ckpt["config"][f.name] for f in fields(TrainConfig) if f.name in ckpt["config"]}
    saved.setdefault("augment", "standard")  # runs from before augmentation was planned trained with this one
    saved.setdefault("val_every", 1)  # runs from before the validation cadence was planned validated every epoch
    overrides = {k: getattr(cfg, k) for k in ("device", "workers", "resume")}
    if "epochs" in given:  # an explicit --epochs always wins: it extends or shortens the schedule
        overrides["epochs"] = cfg.epochs
    return TrainConfig(**{**saved, **overrides})


def _absolute_data_paths(cfg: TrainConfig) -> TrainConfig:
    """Data folders as absolute paths, so the run's report and evaluation work from any working directory."""
    return replace(cfg, data_train=os.path.abspath(cfg.data_train), data_val=os.path.abspath(cfg.data_val),
                   splits=os.path.abspath(cfg.splits) if cfg.splits else None)


def _prepare_data(
    cfg: TrainConfig, ckpt: dict | None, ddp: Distributed, device: torch.device, amp_dtype
) -> tuple[_TrainingData, TrainConfig]:
    """Pair, check and fingerprint every file before any training, then plan what ``cfg`` leaves open.

    Volumes become one pair per slice; validation keeps every slice, so its Dice covers whole volumes.
    Returns the data and the configuration with every planned setting filled in.
    """
    train_files, val_files, split_source = _split_files(cfg, ddp.is_main)
    train_pairs = expand_slices(train_files, cfg.empty_slice_fraction, cfg.seed)
    val_pairs = expand_slices(val_files)
    if ckpt is not None:
        fingerprint = DatasetFingerprint(**ckpt["fingerprint"])
    else:
        fingerprint = fingerprint_dataset(train_pairs, ct=cfg.ct, windows=cfg.ct_windows())
    intensity = fingerprint.intensity_mapping  # values as read -> [0, 1]: the same at prediction
    value_map, channels = fingerprint.value_map, fingerprint.channels
    fingerprint_dataset(val_pairs, known_values=value_map.values, known_channels=channels, intensity=intensity)
    if value_map.num_classes < 2:
        raise ValueError(f"{cfg.data_train}: masks hold only the value {value_map.values}; need background and a class")
    cfg, plan = _plan(cfg, fingerprint, len(train_pairs) // ddp.world, len(val_pairs), device, amp_dtype, ddp)

    def dataset(pairs, transforms) -> SegmentationDataset:
        return SegmentationDataset(
            pairs, value_map, cfg.base_size, channels, transforms, intensity=intensity, cache_dir=cfg.cache_dir
        )

    base_train = dataset(train_pairs, train_transforms(fingerprint.mean, fingerprint.std, strength=cfg.augment))
    val_set = dataset(val_pairs, eval_transforms(fingerprint.mean, fingerprint.std))
    cfg, presence = _plan_foreground(cfg, plan, base_train, value_map.num_classes)
    train_set = SeededAugmentDataset(base_train, cfg.seed)
    return _TrainingData(train_pairs, fingerprint, base_train, train_set, val_set, plan, presence, split_source), cfg


def _make_run_folder(cfg: TrainConfig, ddp: Distributed, device: torch.device, data: _TrainingData) -> Path:
    """The run folder (a new one, or the resumed run's); rank 0 writes what describes the data and machine."""
    run_dir = Path(cfg.resume).parent if cfg.resume else next_run_dir(cfg.results, cfg.name, cfg.exist_ok)
    if ddp.is_main and not cfg.resume:
        run_dir.mkdir(parents=True, exist_ok=cfg.exist_ok)
        data.fingerprint.save(run_dir / "dataset_fingerprint.json")
        data.plan.save(run_dir / "plan.json")
        atomic_write_json(run_dir / "env.json", _env_info(device))
        _save_preview(data.base_train, run_dir / "preview.png")
    return run_dir


def optimizer_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups in timm's convention: no weight decay on 1-D parameters (norm weights, biases)
    nor on what the model lists in ``no_weight_decay()`` (relative-position bias tables); decay on the rest."""
    from timm.optim import param_groups_weight_decay

    exempt = getattr(model, "no_weight_decay", lambda: ())()
    return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=tuple(exempt))


def _build_trainer(
    cfg: TrainConfig, ddp: Distributed, device: torch.device, data: _TrainingData, resuming: bool
) -> _Trainer:
    """Model (compiled, DDP-wrapped as asked), loss, AdamW, loaders, schedule and grad scaler."""
    channels, model_kwargs = data.fingerprint.channels, dict(cfg.model_options)
    raw_model = create_model(cfg.model, in_channels=channels, num_classes=data.num_classes, **model_kwargs)
    if cfg.encoder_weights and not resuming:
        _load_encoder_weights(raw_model, cfg.encoder_weights, ddp.is_main, cfg.decoder_init)
    params, macs = count_parameters(raw_model), count_macs(raw_model, channels, cfg.base_size)
    raw_model = raw_model.to(device, memory_format=torch.channels_last)
    if ddp.world > 1 and cfg.sync_bn:
        raw_model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(raw_model)
    # compiled first, then wrapped: DDP hooks see the same parameters
    net = compile_model(raw_model, device) if cfg.compile else raw_model
    model = net
    if ddp.world > 1:
        # gctx_unet keeps parameters that get no gradient (global-query generators of 1-block stages)
        model = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    optimizer = torch.optim.AdamW(
        optimizer_param_groups(raw_model, cfg.weight_decay), lr=cfg.lr, fused=device.type == "cuda"
    )
    workers = _num_workers(cfg.workers)
    if cfg.foreground_share > 0:
        shuffled = ForegroundTopUpSampler(
            data.presence, cfg.batch_size, cfg.foreground_share, cfg.seed, ddp.rank, ddp.world
        )
    else:
        shuffled = DistributedSampler(data.train_set, ddp.world, ddp.rank, shuffle=True, seed=cfg.seed, drop_last=True)
    train_sampler = EpochTaggedSampler(shuffled, len(data.train_set))
    if len(train_sampler) < cfg.batch_size:
        raise ValueError(
            f"{cfg.data_train}: {len(data.train_set)} training images give {len(train_sampler)} per process, fewer "
            f"than --batch-size {cfg.batch_size}; lower --batch-size"
        )
    loader_args = dict(
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=_ignore_stop_signals if workers > 0 else None,
    )
    train_loader = DataLoader(data.train_set, cfg.batch_size, sampler=train_sampler, drop_last=True, **loader_args)
    val_sampler = ShardSampler(len(data.val_set), ddp.rank, ddp.world)
    val_loader = DataLoader(data.val_set, cfg.batch_size, sampler=val_sampler, **loader_args)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, len(train_loader)))
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(cfg.amp, device) == torch.float16)
    loss_fn = DiceCELoss(cfg.lambda_dice, cfg.lambda_ce, include_background=cfg.dice_background)
    return _Trainer(
        model, net, raw_model, loss_fn, optimizer, scheduler, scaler, train_sampler, train_loader, val_loader,
        workers, params, macs,
    )  # fmt: skip


def _lr_lambda(cfg: TrainConfig, batches_per_epoch: int):
    """The learning-rate factor per optimiser step of ``cfg``'s schedule (warm-up capped at 10% of it)."""
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)  # optimiser steps
    total_steps = cfg.epochs * steps_per_epoch
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total_steps // 10)
    return lambda s: lr_at(s, total_steps, warmup, cfg.lrf)


def _refit_to_budget(cfg: TrainConfig, trainer: _Trainer, plan: TrainingPlan, started: float, epoch_s: float,
                     device: torch.device) -> TrainConfig:
    """After the first epoch of a ``--time-budget`` run whose epochs were planned: fewer epochs if the measured
    epoch time says the planned ones would overrun the budget (the schedule is rebuilt, as ``--resume --epochs``
    does).

    The planner times a few steps on a model alone; a real epoch also loads, augments and samples its data on
    the same cores and checkpoints: on Duke DME (2-core EPYC) epochs ran 1.5x the planned time, so a
    63-minute ``gctxseg cv`` would have taken about 80. Only ever shortens: a planned run never outgrows its plan.
    """
    if not cfg.time_budget or "epochs" in plan.given:
        return cfg
    remaining = cfg.time_budget * 60 * BUDGET_SHARE - (time.perf_counter() - started)
    fit = torch.tensor([max(1, 1 + int(remaining // max(epoch_s, 1e-6)))], device=device)
    if dist.is_initialized():  # every rank takes rank 0's count: equal schedules
        dist.broadcast(fit, 0)
    epochs = int(fit.item())
    if epochs >= cfg.epochs:
        return cfg
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"time budget: the first epoch took {epoch_s:.0f} s, so {epochs} of the planned {cfg.epochs} epochs "
              f"fit {cfg.time_budget:g} min; schedule re-fitted", flush=True)
    cfg = replace(cfg, epochs=epochs)
    lr_lambda = _lr_lambda(cfg, len(trainer.train_loader))
    trainer.scheduler.lr_lambdas = [lr_lambda] * len(trainer.optimizer.param_groups)
    return cfg


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
            "planned": [k for k in PLANNED_SETTINGS if k not in data.plan.given],
            "epochs": cfg.epochs,
            "num classes": data.num_classes,
            "in channels": fingerprint.channels,
            "mask values": fingerprint.value_map.to_dict(),
            "seed": cfg.seed,
            "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
            "world size": ddp.world,
            "compile": cfg.compile,
            "sample cache": cfg.cache_dir or "memory",
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
    log = {**ckpt["log"], "train parameters": {**ckpt["log"]["train parameters"], "epochs": cfg.epochs}}
    return ckpt["epoch"] + 1, ckpt["best_dice"], log


def _checkpoint(trainer: _Trainer, epoch: int, best_dice: float, cfg: TrainConfig, fingerprint, log: dict) -> dict:
    """Everything to resume the run and to predict with it, as plain data (loads with ``weights_only``)."""
    return {
        "gctxseg": __version__,
        "model_name": resolve_model_name(cfg.model),
        "model_kwargs": dict(cfg.model_options),
        "model": trainer.raw_model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "epoch": epoch,
        "best_dice": best_dice,
        "config": asdict(cfg),
        "fingerprint": asdict(fingerprint),
        "value_map": fingerprint.value_map.to_dict(),
        "normalization": {"mean": fingerprint.mean, "std": fingerprint.std},
        "intensity": fingerprint.intensity,  # values as read -> [0, 1] (CT windows): prediction applies the same
        "base_size": list(cfg.base_size),
        "log": log,
        # numpy's and Python's states are not kept (they are pickled objects): every epoch reseeds all three
        "rng": {"torch": torch.get_rng_state()},
    }


@dataclass
class _Progress:
    """What the epoch loop carries from one epoch to the next."""

    start_epoch: int
    best_dice: float
    log: dict


def _run_epochs(
    cfg: TrainConfig, ddp: Distributed, device: torch.device, amp_dtype, data: _TrainingData, trainer: _Trainer,
    run_dir: Path, state: _Progress, started: float,
) -> int | None:  # fmt: skip
    """Train and validate epoch by epoch, writing log and checkpoints (rank 0); returns the agreed stop signal."""

    def save(name: str, epoch: int) -> None:
        save_checkpoint(_checkpoint(trainer, epoch, state.best_dice, cfg, data.fingerprint, state.log), run_dir / name)

    if ddp.is_main and state.start_epoch == 0 and not cfg.resume:
        save("last.pt", -1)  # a stop during the first epoch can still be resumed
    stop, previous_handlers = _install_stop_handlers()
    pairs = data.train_pairs
    names = [p.image.name if p.slice_index is None else f"{p.image.name} (slice {p.slice_index})" for p in pairs]
    try:
        for epoch in range(state.start_epoch, cfg.epochs):
            if epoch >= cfg.epochs:  # re-fitted to a time budget after the first epoch: the rest is not run
                continue
            t0 = time.perf_counter()
            # randomness of this epoch is a function of (seed, epoch, rank) only: resumable exactly
            seed_everything(_sample_seed(cfg.seed, epoch, ddp.rank))
            trainer.train_sampler.set_epoch(epoch)
            lr = trainer.scheduler.get_last_lr()[0]
            try:
                train_info = train_one_epoch(
                    trainer.model, trainer.train_loader, trainer.loss_fn, trainer.optimizer, trainer.scheduler,
                    trainer.scaler, amp_dtype, device, data.num_classes, cfg.grad_clip, stop, names, cfg.grad_accum,
                )  # fmt: skip
                _agree_across_ranks(stop, True, device)  # a signal after the epoch's last step, on one rank
                if stop["signal"] is not None:
                    break  # a partial epoch is not logged: last.pt holds the last complete one
                if epoch == 0:  # a time budget's epochs re-fitted to the first one, with validation's planned share
                    epoch_s = (time.perf_counter() - t0) * (1 + VAL_SHARE)
                    cfg = _refit_to_budget(cfg, trainer, data.plan, started, epoch_s, device)
                    state.log["train parameters"]["epochs"] = cfg.epochs
                validate = (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs
                val_info = None
                if validate:
                    _broadcast_buffers(trainer.net)
                    val_info, _ = evaluate(trainer.net, trainer.val_loader, trainer.loss_fn, amp_dtype, device,
                                           data.num_classes)  # fmt: skip
            except NonFiniteLossError as err:
                kept = f"; the last good checkpoint is {run_dir / 'last.pt'}" if ddp.is_main else ""
                raise NonFiniteLossError(f"epoch {epoch + 1}: {err}{kept}") from None
            train_info["lr"] = lr
            entry = {"train log:": {"info": train_info}}
            if val_info is not None:  # epochs between validations (planned val_every) log training only
                val_info["lr"] = lr
                entry["val log:"] = {"info": val_info}
            state.log[f"epoch:{epoch}"] = entry
            dice = val_info["mean dice"] if val_info is not None else float("nan")
            improved = not math.isnan(dice) and dice > state.best_dice
            state.best_dice = dice if improved else state.best_dice
            if ddp.is_main:
                atomic_write_json(run_dir / "log.json", state.log)
                save("last.pt", epoch)
                if improved:
                    save("best.pt", epoch)
                plot_curves(state.log, run_dir / "curves.png")
                shown = (f"val loss {val_info['loss']:.4f} dice {dice:.4f} iou {val_info['mean iou']:.4f}"
                         if val_info is not None else f"(validated every {cfg.val_every} epochs)")
                print(
                    f"epoch {epoch + 1}/{cfg.epochs}  lr {lr:.2e}  train loss {train_info['loss']:.4f} "
                    f"dice {train_info['mean dice']:.4f}  {shown}  {time.perf_counter() - t0:.1f}s"
                    + ("  *best" if improved else ""),
                    flush=True,
                )
        else:
            _agree_across_ranks(stop, True, device)  # every rank ends the same way, stopped or done
    finally:
        _shutdown_workers(trainer.train_loader, trainer.val_loader)
        for sig, handler in previous_handlers:
            signal.signal(sig, handler)
    return stop["signal"]


def _finish(
    cfg: TrainConfig, ddp: Distributed, device: torch.device, amp_dtype, data: _TrainingData, trainer: _Trainer,
    run_dir: Path, best_dice: float,
) -> None:  # fmt: skip
    """Sample predictions drawn with the best weights (rank 0), then every rank waits for the others."""
    if ddp.is_main and (run_dir / "best.pt").exists():
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
        print(f"done: best val mean dice {best_dice:.4f}; run folder {run_dir}")
    if dist.is_initialized():
        dist.barrier()


# ---------------------------------------------------------------- the run


def train(cfg: TrainConfig, *, given: Collection[str] | None = None) -> Path:
    """Train a model as ``cfg`` says and return the run folder (``report.html`` is :mod:`gctxseg.workflow`'s).

    Args:
        cfg: the run's settings; with ``cfg.resume`` the checkpoint's settings win except ``RESUME_SETTINGS``.
        given: with ``cfg.resume``, the settings the caller set explicitly (the CLI's flags): an explicit
            ``epochs`` always wins, the others are named on one line as ignored. None = those not at their default.

    Raises:
        TrainingInterrupted: SIGINT/SIGTERM (on any rank); the run folder is consistent and resumable.
        NonFiniteLossError: the loss became NaN/inf (on any rank).
        ValueError, DatasetError: bad settings or data, before anything is trained.
    """
    started = time.perf_counter()
    keep_freed_memory()  # a CPU step reuses the last one's memory instead of faulting it in again (utils.py)
    ckpt = load_checkpoint(cfg.resume) if cfg.resume else None
    cfg = _resume_config(cfg, ckpt, given) if ckpt is not None else _absolute_data_paths(cfg)
    ddp, device = _setup_distributed(cfg.device)
    seed_everything(cfg.seed + ddp.rank)
    amp_dtype = autocast_dtype(cfg.amp, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels

    data, cfg = _prepare_data(cfg, ckpt, ddp, device, amp_dtype)
    run_dir = _make_run_folder(cfg, ddp, device, data)
    trainer = _build_trainer(cfg, ddp, device, data, resuming=ckpt is not None)
    state = _Progress(0, -1.0, _new_log(cfg, ddp, data, trainer, amp_dtype))
    if ckpt is not None:
        state = _Progress(*_restore(trainer, ckpt, cfg))
    if ddp.is_main:
        if ckpt is not None:
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

    stopped_by = _run_epochs(cfg, ddp, device, amp_dtype, data, trainer, run_dir, state, started)
    if stopped_by is not None:
        if dist.is_initialized():  # every rank agreed to stop: they leave together, as at the end of a run
            dist.barrier()
        if ddp.is_main:
            print(
                f"stopped by signal {stopped_by}; resume with: gctxseg train --resume {run_dir / 'last.pt'}",
                file=sys.stderr,
            )
        raise TrainingInterrupted(f"training stopped by signal {stopped_by}; resume from {run_dir / 'last.pt'}")
    _finish(cfg, ddp, device, amp_dtype, data, trainer, run_dir, state.best_dice)
    return run_dir
