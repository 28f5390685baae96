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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from . import __version__
from .data import (
    CTWindow,
    DatasetFingerprint,
    SegmentationDataset,
    expand_slices,
    find_pairs,
    fingerprint_dataset,
    resolve_windows,
)
from .data.transforms import eval_transforms, train_transforms
from .losses import DiceCELoss, deep_supervision_loss
from .metrics import ConfusionMatrix
from .models import create_model, list_models, resolve_model_name
from .models.complexity import count_macs, count_parameters
from .report import plot_curves
from .utils import (
    atomic_torch_save,
    atomic_write_json,
    compile_model,
    next_run_dir,
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
    base_size: tuple[int, int] = (224, 224)  # (H, W) the network is trained at
    cache_dir: str | None = None  # decoded samples as memory-mapped .npy files here (shared by workers, ranks
    # and later runs); None = each loader worker keeps its own in-memory copy
    # model
    model: str = field(default_factory=_default_model)
    model_options: dict = field(default_factory=dict)  # extra keyword arguments of the architecture
    encoder_weights: str | None = None  # ImageNet encoder checkpoint (gctx_unet) or "imagenet" (timm's download)
    decoder_init: str = "none"  # "mirror": the decoder starts from the encoder's ImageNet blocks (gctx_unet)
    # optimisation
    epochs: int = 300
    batch_size: int = 16
    grad_accum: int = 1  # micro-batches summed per optimiser step: effective batch = batch_size * grad_accum
    lr: float = 0.002  # peak learning rate (AdamW)
    lrf: float = 0.002  # final lr = lr * lrf (cosine decay)
    warmup_epochs: float = 1.0  # linear warm-up, capped at 10% of the schedule
    weight_decay: float = 1e-4
    lambda_dice: float = 1.0
    lambda_ce: float = 1.0
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
        self.base_size = tuple(int(s) for s in self.base_size)
        if len(self.base_size) != 2 or min(self.base_size) < 8:
            raise ValueError(f"base_size must be two sizes >= 8 (H W), got {self.base_size}")
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 < self.lrf <= 1:
            raise ValueError(f"need lr > 0 and 0 < lrf <= 1, got lr={self.lr}, lrf={self.lrf}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
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


# ---------------------------------------------------------------- schedule, precision, randomness


def lr_at(step: int, total_steps: int, warmup_steps: int, lrf: float) -> float:
    """Learning-rate factor at ``step``: linear warm-up to 1, then cosine decay to ``lrf``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return lrf + (1 - lrf) * 0.5 * (1 + math.cos(math.pi * progress))


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None = full fp32).

    ``auto`` picks bf16 on CUDA GPUs that support it (else fp16) and bf16 on CPUs with native bf16
    instructions (AVX512-BF16 / AMX), where it is several times faster than fp32; fp32 elsewhere.
    """
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and _cpu_has_native_bf16():
        return torch.bfloat16
    return None


def _cpu_has_native_bf16() -> bool:
    cpu = getattr(torch, "cpu", None)
    return any(getattr(cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


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


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a gctxseg checkpoint; a truncated or foreign file gives one clear ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found; pass the run folder's best.pt or last.pt")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # pickle/zip errors differ between torch versions; all mean "not readable"
        raise ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}); it may be truncated") from None
    if not isinstance(ckpt, dict) or "model_name" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: not a gctxseg checkpoint (no model_name/model); use a best.pt or last.pt")
    return ckpt


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


# ---------------------------------------------------------------- one epoch


def train_one_epoch(
    model, loader, loss_fn, optimizer, scheduler, scaler, amp_dtype, device, num_classes, grad_clip, stop, names,
    grad_accum: int = 1,
) -> dict:
    """One pass over the training loader; returns the epoch's metric block (from a confusion matrix).

    With ``grad_accum`` > 1 the gradients of that many consecutive batches are averaged before each optimiser
    step (the epoch's last group may be shorter; it is averaged over its own length).
    """
    model.train()
    cm = ConfusionMatrix(num_classes)
    loss_sum, seen, skipped = torch.zeros((), dtype=torch.float64), 0, 0
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    num_batches = len(loader)
    for index, (images, masks, tags) in enumerate(tqdm(loader, desc="train", leave=False, disable=None)):
        group_start = index - index % grad_accum
        group_size = min(grad_accum, num_batches - group_start)
        last_in_group = index == group_start + group_size - 1
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        masks = masks.to(device, non_blocking=True)
        # under DDP only the group's last backward all-reduces the gradients
        accumulating = model.no_sync if not last_in_group and hasattr(model, "no_sync") else contextlib.nullcontext
        with accumulating(), autocast:
            outputs = model(images)
            loss = deep_supervision_loss(loss_fn, outputs, masks)
            # UNet3+'s classification-guided module: "does this image hold any foreground?" learnt with BCE
            cls_logit = getattr(getattr(model, "module", model), "last_cls_logit", None)
            if cls_logit is not None:
                has_fg = (masks > 0).flatten(1).any(dim=1, keepdim=True).float()
                loss = loss + F.binary_cross_entropy_with_logits(cls_logit.float(), has_fg)
        if not torch.isfinite(loss):
            files = [names[int(t) % len(names)] for t in tags]
            raise NonFiniteLossError(
                f"loss is {loss.item()} on the batch {files} at lr {scheduler.get_last_lr()[0]:.3g}; try a lower --lr"
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
        if stop["signal"] is not None:
            break
    info = _epoch_info(cm, loss_sum, seen)
    if scaler.is_enabled():
        info["amp skipped steps"] = skipped
    return info


@torch.no_grad()
def evaluate(model, loader, loss_fn, amp_dtype, device, num_classes) -> tuple[dict, ConfusionMatrix]:
    """Loss and metrics over a whole split (counts summed across ranks under DDP)."""
    model.eval()
    cm = ConfusionMatrix(num_classes)
    loss_sum, seen = torch.zeros((), dtype=torch.float64), 0
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    for images, masks, _ in tqdm(loader, desc="val", leave=False, disable=None):
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        masks = masks.to(device, non_blocking=True)
        with autocast:
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
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    for i in range(min(count, len(dataset))):
        image, mask = dataset._load(i)
        with autocast:
            pred = model(normalize(image)[None].to(device)).argmax(1)[0].cpu().numpy()
        img = to_uint8_rgb(image.permute(1, 2, 0).numpy())
        rows.append([img, overlay(img, mask.numpy()), overlay(img, pred)])
    if rows:
        save_rows(rows, path)


def _checkpoint(model, optimizer, scheduler, scaler, epoch, best_dice, cfg, fingerprint, log, model_kwargs) -> dict:
    return {
        "gctxseg": __version__,
        "model_name": resolve_model_name(cfg.model),
        "model_kwargs": model_kwargs,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "best_dice": best_dice,
        "config": asdict(cfg),
        "fingerprint": asdict(fingerprint),
        "value_map": fingerprint.value_map.to_dict(),
        "normalization": {"mean": fingerprint.mean, "std": fingerprint.std},
        "intensity": fingerprint.intensity,  # values as read -> [0, 1] (CT windows): prediction applies the same
        "base_size": list(cfg.base_size),
        "log": log,
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": __import__("random").getstate(),
        },
    }


def _write_report(run_dir: Path, device: torch.device, amp: str) -> None:
    """Evaluate best.pt on the val set and write report.html; a failure only warns, training has succeeded."""
    try:
        from .evaluate import write_run_report  # local: evaluate -> predict -> engine would be a cycle at import

        print(f"report: {write_run_report(run_dir, device=str(device), amp=amp)}")
    except Exception as err:  # any report problem must not fail a finished training run
        print(
            f"warning: report.html not written ({type(err).__name__}: {err}); retry with: gctxseg report {run_dir}",
            file=sys.stderr,
        )


# ---------------------------------------------------------------- the loop


def train(cfg: TrainConfig) -> Path:
    """Train a model as ``cfg`` says and return the run folder."""
    # -- resume: the checkpoint's configuration wins, except where to run and how many epochs
    ckpt = None
    if cfg.resume:
        ckpt = load_checkpoint(cfg.resume)
        saved = {f.name: ckpt["config"][f.name] for f in fields(TrainConfig) if f.name in ckpt["config"]}
        overrides = {k: getattr(cfg, k) for k in ("device", "workers", "resume")}
        if cfg.epochs != TrainConfig.epochs:  # an explicit --epochs extends (or shortens) the schedule
            overrides["epochs"] = cfg.epochs
        cfg = TrainConfig(**{**saved, **overrides})

    # -- device, distribution, randomness
    ddp, device = _setup_distributed(cfg.device)
    seed_everything(cfg.seed + ddp.rank)
    amp_dtype = autocast_dtype(cfg.amp, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels

    # -- data: pair, check and fingerprint everything before any training
    # (volumes become one pair per slice; validation keeps every slice, so its Dice covers whole volumes)
    train_pairs = expand_slices(find_pairs(cfg.data_train, cfg.img_f, cfg.mask_f), cfg.empty_slice_fraction, cfg.seed)
    val_pairs = expand_slices(find_pairs(cfg.data_val, cfg.img_f, cfg.mask_f))
    if ckpt is not None:
        fingerprint = DatasetFingerprint(**ckpt["fingerprint"])
    else:
        fingerprint = fingerprint_dataset(train_pairs, ct=cfg.ct, windows=cfg.ct_windows())
    intensity = fingerprint.intensity_mapping  # values as read -> [0, 1]: the same at prediction
    fingerprint_dataset(val_pairs, known_values=fingerprint.value_map.values, intensity=intensity)
    value_map, channels = fingerprint.value_map, fingerprint.channels
    num_classes = value_map.num_classes
    if num_classes < 2:
        raise ValueError(f"{cfg.data_train}: masks hold only the value {value_map.values}; need background and a class")
    base_train = SegmentationDataset(
        train_pairs,
        value_map,
        cfg.base_size,
        channels,
        train_transforms(fingerprint.mean, fingerprint.std),
        intensity=intensity,
        cache_dir=cfg.cache_dir,
    )
    train_set = SeededAugmentDataset(base_train, cfg.seed)
    val_set = SegmentationDataset(
        val_pairs,
        value_map,
        cfg.base_size,
        channels,
        eval_transforms(fingerprint.mean, fingerprint.std),
        intensity=intensity,
        cache_dir=cfg.cache_dir,
    )

    # -- run folder (rank 0 writes)
    run_dir = Path(cfg.resume).parent if cfg.resume else next_run_dir(cfg.results, cfg.name, cfg.exist_ok)
    if ddp.is_main and not cfg.resume:
        run_dir.mkdir(parents=True, exist_ok=cfg.exist_ok)
        fingerprint.save(run_dir / "dataset_fingerprint.json")
        atomic_write_json(run_dir / "env.json", _env_info(device))
        _save_preview(base_train, run_dir / "preview.png")

    # -- model, loss, optimiser, schedule
    model_kwargs = dict(cfg.model_options)
    model = create_model(cfg.model, in_channels=channels, num_classes=num_classes, **model_kwargs)
    if cfg.encoder_weights and ckpt is None:
        _load_encoder_weights(model, cfg.encoder_weights, ddp.is_main, cfg.decoder_init)
    params, macs = count_parameters(model), count_macs(model, channels, cfg.base_size)
    model = model.to(device, memory_format=torch.channels_last)
    if ddp.world > 1 and cfg.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    raw_model = model
    if cfg.compile:
        model = compile_model(model, device)  # compiled first, then wrapped: DDP hooks see the same parameters
    if ddp.world > 1:
        # gctx_unet keeps parameters that get no gradient (global-query generators of 1-block stages)
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    loss_fn = DiceCELoss(cfg.lambda_dice, cfg.lambda_ce)
    optimizer = torch.optim.AdamW(
        raw_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda"
    )
    workers = _num_workers(cfg.workers)
    train_sampler = EpochTaggedSampler(
        DistributedSampler(train_set, ddp.world, ddp.rank, shuffle=True, seed=cfg.seed, drop_last=True), len(train_set)
    )
    per_rank = len(train_sampler)
    if per_rank < cfg.batch_size:
        raise ValueError(
            f"{cfg.data_train}: {len(train_set)} training images give {per_rank} per process, fewer "
            f"than --batch-size {cfg.batch_size}; lower --batch-size"
        )
    loader_args = dict(
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=_ignore_stop_signals if workers > 0 else None,
    )
    train_loader = DataLoader(train_set, cfg.batch_size, sampler=train_sampler, drop_last=True, **loader_args)
    val_loader = DataLoader(
        val_set, cfg.batch_size, sampler=ShardSampler(len(val_set), ddp.rank, ddp.world), **loader_args
    )
    steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum)  # optimiser steps
    total_steps = cfg.epochs * steps_per_epoch
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total_steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, total_steps, warmup, cfg.lrf))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    log = {
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
            "epochs": cfg.epochs,
            "num classes": num_classes,
            "in channels": channels,
            "mask values": value_map.to_dict(),
            "seed": cfg.seed,
            "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
            "world size": ddp.world,
            "compile": cfg.compile,
            "sample cache": cfg.cache_dir or "memory",
        },
        "model": {
            "total parameters": params,
            "flops": macs,
            "flops note": "multiply-adds counted once (torch FlopCounterMode / 2), at the input size",
        },
    }
    start_epoch, best_dice = 0, -1.0
    if ckpt is not None:
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, best_dice = ckpt["epoch"] + 1, ckpt["best_dice"]
        log = {**ckpt["log"], "train parameters": {**ckpt["log"]["train parameters"], "epochs": cfg.epochs}}
        if ddp.is_main:
            print(f"resuming {run_dir} at epoch {start_epoch}/{cfg.epochs}")

    def save(name: str, epoch: int) -> None:
        atomic_torch_save(
            _checkpoint(raw_model, optimizer, scheduler, scaler, epoch, best_dice, cfg, fingerprint, log, model_kwargs),
            run_dir / name,
        )

    if ddp.is_main:
        print(
            f"run {run_dir}: {resolve_model_name(cfg.model)} {params / 1e6:.2f} M params, {macs / 1e9:.2f} G mult-adds "
            f"at {cfg.base_size[0]}x{cfg.base_size[1]}; {len(train_set)} train / {len(val_set)} val images; "
            f"classes {value_map.to_dict()}; device {device}, precision {log['train parameters']['amp']}, "
            f"{workers} loader workers"
        )
        if ckpt is None:
            save("last.pt", -1)  # a stop during the first epoch can still be resumed

    stop, previous_handlers = _install_stop_handlers()
    names = [p.image.name if p.slice_index is None else f"{p.image.name} (slice {p.slice_index})" for p in train_pairs]
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            # randomness of this epoch is a function of (seed, epoch, rank) only: resumable exactly
            seed_everything(_sample_seed(cfg.seed, epoch, ddp.rank))
            train_sampler.set_epoch(epoch)
            lr = scheduler.get_last_lr()[0]
            try:
                train_info = train_one_epoch(
                    model, train_loader, loss_fn, optimizer, scheduler, scaler, amp_dtype, device, num_classes,
                    cfg.grad_clip, stop, names, cfg.grad_accum,
                )  # fmt: skip
                if stop["signal"] is not None:
                    break  # a partial epoch is not logged: last.pt holds the last complete one
                val_info, _ = evaluate(model, val_loader, loss_fn, amp_dtype, device, num_classes)
            except NonFiniteLossError as err:
                kept = f"; the last good checkpoint is {run_dir / 'last.pt'}" if ddp.is_main else ""
                raise NonFiniteLossError(f"epoch {epoch + 1}: {err}{kept}") from None
            train_info["lr"] = lr
            val_info["lr"] = lr
            log[f"epoch:{epoch}"] = {"train log:": {"info": train_info}, "val log:": {"info": val_info}}
            dice = val_info["mean dice"]
            improved = not math.isnan(dice) and dice > best_dice
            best_dice = dice if improved else best_dice
            if ddp.is_main:
                atomic_write_json(run_dir / "log.json", log)
                save("last.pt", epoch)
                if improved:
                    save("best.pt", epoch)
                plot_curves(log, run_dir / "curves.png")
                print(
                    f"epoch {epoch + 1}/{cfg.epochs}  lr {lr:.2e}  train loss {train_info['loss']:.4f} "
                    f"dice {train_info['mean dice']:.4f}  val loss {val_info['loss']:.4f} "
                    f"dice {dice:.4f} iou {val_info['mean iou']:.4f}  {time.perf_counter() - t0:.1f}s"
                    + ("  *best" if improved else ""),
                    flush=True,
                )
    finally:
        _shutdown_workers(train_loader, val_loader)
        for sig, handler in previous_handlers:
            signal.signal(sig, handler)

    if stop["signal"] is not None:
        if ddp.is_main:
            print(
                f"stopped by signal {stop['signal']}; resume with: gctxseg train --resume {run_dir / 'last.pt'}",
                file=sys.stderr,
            )
        raise TrainingInterrupted(f"training stopped by signal {stop['signal']}; resume from {run_dir / 'last.pt'}")

    # -- samples drawn with the best weights
    if ddp.is_main and (run_dir / "best.pt").exists():
        raw_model.load_state_dict(torch.load(run_dir / "best.pt", map_location=device, weights_only=False)["model"])
        (run_dir / "samples").mkdir(exist_ok=True)
        _save_sample_predictions(
            raw_model,
            val_set,
            eval_transforms(fingerprint.mean, fingerprint.std),
            device,
            amp_dtype,
            run_dir / "samples" / "val_predictions.png",
            cfg.num_samples,
        )
        print(f"done: best val mean dice {best_dice:.4f}; run folder {run_dir}")
    if ddp.is_main:
        _write_report(run_dir, device, cfg.amp)
    if dist.is_initialized():
        dist.barrier()
    return run_dir
