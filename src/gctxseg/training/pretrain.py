"""Pre-training without the internet: a whole-network start for GCtx-UNet from what a machine has at hand.

Two tasks, run alone or one after the other (``gctxseg pretrain --task phantom mim``):

- ``phantom``: supervised segmentation of a stream of phantom B-scans (data/phantom.py: retinal layers,
  speckle, fluid pockets, macular holes), a fresh set of scans every epoch, encoder and decoder trained
  together. Formula-driven pre-training (Kataoka et al. 2020/2022) brought ViTs close to ImageNet starts;
  here the formula is the domain's own anatomy.
- ``mim``: masked-image modelling on the user's scans, labelled and unlabelled (SimMIM, Xie et al. 2022;
  self pre-training on small medical sets, Zhou et al. 2023): square patches of the input are blanked and the
  network rebuilds their pixels (L1 on the blanked pixels only), so it learns the scans' texture and layout
  without a label. The U-shaped network rebuilds at full resolution; skips carry the blanked input, so they
  leak nothing.

Both share the training loop's pieces (training/loop.py, data.py, schedule.py, distributed.py): seeded per
``(seed, epoch, index)``, resumable from ``last.pt`` exactly, DDP under ``torchrun``, stopped cleanly by
Ctrl-C. The run folder holds ``pretrain.json`` (settings), ``log.json`` (per-epoch loss, steps, images,
seconds), ``last.pt`` and, when done, ``pretrained.pt``: the weights and their record, which
``gctxseg train --init-weights`` loads (training/start.py).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .. import __version__
from ..core.files import atomic_write_json
from ..core.limits import check_time_budget, input_size_problem
from ..core.precision import AMP_CHOICES, autocast_dtype
from ..core.runtime import keep_freed_memory, seed_everything
from ..data import IMAGE_SUFFIXES, find_images, read_image
from ..data.io import fit_channels
from ..data.phantom import render_oct_bscan
from ..data.transforms import AUGMENTATIONS, train_transforms
from ..losses import DiceCELoss, training_loss
from ..models import create_model, resolve_model_name
from ..models.complexity import count_parameters
from ..runs.checkpoint import load_checkpoint, model_options_problem, save_checkpoint
from ..runs.runlog import TimeBudget
from .config import TrainingInterrupted
from .data import EpochTaggedSampler, SeededAugmentDataset, num_workers, sample_seed, shutdown_workers
from .distributed import Distributed, bare, setup_distributed
from .driver import EpochEnd, budget_record, drive_epochs
from .loop import (
    adamw,
    cpu_model,
    ddp_wrapped,
    env_info,
    grad_scaler,
    nonfinite_advice,
    run_steps,
    train_loader,
)
from .schedule import Deadline, ScheduleState, StepSchedule, now, steps_per_epoch
from .start import load_start

__all__ = ["PRETRAIN_TASKS", "PretrainConfig", "pretrain", "PhantomStream", "MaskedImages"]

PRETRAIN_TASKS = ("phantom", "mim")
PHANTOM_CLASSES = 3  # background, edema, macular hole (data/phantom.py)


@dataclass
class PretrainConfig:
    """Every setting of one pre-training task; ``asdict`` of it is kept in ``pretrain.json`` and ``last.pt``."""

    task: str = "phantom"
    images: tuple[str, ...] = ()  # mim: folders of the user's scans (the labelled images and any unlabelled ones)
    model: str = "gctx_unet"
    model_options: dict = field(default_factory=dict)  # must equal the later training run's (same architecture)
    in_channels: int = 1  # the later run's input channels (a start of another count is adapted when loaded)
    # the recipe measured on Duke DME (docs/real-oct.md): 28 epochs of 256 fresh phantom scans at 128x224, batch 4
    # (1,792 steps, 7,168 scans, about 13 minutes on 2 CPU cores); fixed epochs, so a seed gives the same start
    base_size: tuple[int, int] = (128, 224)
    init: str | None = None  # a start for this task (the phantom task's pretrained.pt before mim)
    epochs: int = 28
    images_per_epoch: int = 256  # phantom: scans rendered per epoch (new ones every epoch)
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 5e-4
    lrf: float = 0.01
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    mask_ratio: float = 0.6  # mim: share of patches blanked (SimMIM's 0.6 for 32 px patches at 192 px)
    mask_patch: int = 16  # mim: blanked patch side in pixels
    augment: str = "standard"
    time_budget: float | None = None  # minutes: the epochs are a first estimate, the clock decides (as training's)
    device: str = "auto"
    amp: str = "auto"
    workers: int = -1
    seed: int = 0
    out: str = "runs/pretrain"
    resume: str | None = None  # last.pt of a stopped pre-training

    def __post_init__(self) -> None:
        self.base_size, self.images = tuple(int(s) for s in self.base_size), tuple(str(i) for i in self.images)
        problems = []
        if self.task not in PRETRAIN_TASKS:
            problems.append(f"--task {self.task}: choose from {', '.join(PRETRAIN_TASKS)}")
        if self.task == "mim" and not self.images:
            problems.append("--task mim rebuilds your own scans: give --images DIR (and --unlabeled DIR)")
        size_problem = input_size_problem(list(self.base_size))
        if size_problem or min(self.base_size) < 32:
            problems.append(f"--base-size {self.base_size}: {size_problem or 'need two sizes >= 32 (H W)'}")
        for name in ("epochs", "images_per_epoch", "batch_size", "grad_accum", "mask_patch", "in_channels"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.mask_ratio < 1:
            problems.append(f"--mask-ratio must be in (0, 1), got {self.mask_ratio}")
        if self.lr <= 0 or not 0 < self.lrf <= 1:
            problems.append(f"need lr > 0 and 0 < lrf <= 1, got {self.lr}, {self.lrf}")
        try:
            check_time_budget(self.time_budget)
        except ValueError as err:
            problems.append(str(err))
        if self.augment not in AUGMENTATIONS or self.amp not in AMP_CHOICES:
            problems.append(f"--augment {self.augment} / --amp {self.amp}: choose from {AUGMENTATIONS} / {AMP_CHOICES}")
        resolve_model_name(self.model)
        problem = model_options_problem(self.model, self.model_options, "--model-option")
        if problem:
            problems.append(f"{problem}; see gctxseg models")
        if problems:  # every problem at once, as the data checks do
            raise ValueError("; ".join(problems))

    @property
    def outputs(self) -> int:
        """The head's channels: the phantom's classes, or the pixels rebuilt."""
        return PHANTOM_CLASSES if self.task == "phantom" else self.in_channels


# ---------------------------------------------------------------- what each task learns from


class PhantomStream(Dataset):
    """``images_per_epoch`` phantom B-scans a epoch, different every epoch: item ``epoch * N + i`` (the tag of
    :class:`EpochTaggedSampler`) is rendered and augmented from ``(seed, epoch, i)`` alone."""

    def __init__(self, cfg: PretrainConfig) -> None:
        self.size, self.length, self.seed = cfg.base_size, cfg.images_per_epoch, cfg.seed
        self.channels = cfg.in_channels
        self.mean, self.std = self._statistics()
        self.transform = train_transforms([self.mean] * self.channels, [self.std] * self.channels,
                                          strength=cfg.augment)

    def _statistics(self, count: int = 16) -> tuple[float, float]:
        """Mean and spread of the phantom's intensities (fixed scans), as a fingerprint gives a user's set's."""
        pixels = np.concatenate([self._render(-1 - i)[0].ravel() for i in range(count)])
        return float(pixels.mean()), float(pixels.std())

    def _render(self, tag: int) -> tuple[np.ndarray, np.ndarray]:
        sample = render_oct_bscan(np.random.default_rng([self.seed, tag % 2**62, 7]), self.size)
        return sample.image.astype(np.float32) / 255.0, sample.mask

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, tag: int):
        from torchvision import tv_tensors

        image, mask = self._render(tag)
        image = fit_channels(image[..., None], self.channels, Path("phantom"))
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, tag // self.length, tag % self.length))
            image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(torch.from_numpy(mask)))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long(), tag % self.length


def _scan_files(folders: tuple[str, ...]) -> list[Path]:
    """Every picture in the folders (each sorted, so a seed gives the same order); one line when one has none."""
    return [path for folder in folders for path in find_images(folder, IMAGE_SUFFIXES)]


class MaskedImages(Dataset):
    """The user's scans, resized to ``base_size``, as ``(blanked input, [target, blanked map], index)``.

    Each scan is decoded once (kept in memory as float16, as the segmentation set keeps its samples); the
    augmentation and the blanked patches are drawn per ``(seed, epoch, index)`` by :class:`SeededAugmentDataset`.
    """

    def __init__(self, cfg: PretrainConfig) -> None:
        import torchvision.transforms.v2.functional as TF

        self.files, self.cfg = _scan_files(cfg.images), cfg
        scans = []
        for path in self.files:
            image = fit_channels(read_image(path), cfg.in_channels, path)
            tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).clamp(0, 1)
            scans.append(TF.resize(tensor, list(cfg.base_size), antialias=True).half())
        self.scans = torch.stack(scans)
        self.mean, self.std = float(self.scans.float().mean()), float(self.scans.float().std())
        self.transform = train_transforms([self.mean] * cfg.in_channels, [self.std] * cfg.in_channels,
                                          strength=cfg.augment)

    def __len__(self) -> int:
        return len(self.scans)

    def __getitem__(self, index: int):
        target = self.transform(self.scans[index].float())
        hidden = self._blanked_map()
        return target * (1 - hidden), torch.cat([target, hidden[None]]), index

    def _blanked_map(self) -> torch.Tensor:
        """1 where the input is blanked: ``mask_ratio`` of the ``mask_patch``-pixel squares, drawn at random."""
        (h, w), p = self.cfg.base_size, self.cfg.mask_patch
        grid = torch.rand(math.ceil(h / p), math.ceil(w / p)).flatten()
        hidden = torch.zeros_like(grid)
        hidden[grid.argsort()[: round(self.cfg.mask_ratio * grid.numel())]] = 1
        side = hidden.view(math.ceil(h / p), math.ceil(w / p))
        return side.repeat_interleave(p, 0).repeat_interleave(p, 1)[:h, :w]


def _masked_l1(outputs, targets: torch.Tensor) -> torch.Tensor:
    """L1 between the rebuilt and the true pixels, over the blanked ones only (SimMIM's loss)."""
    rebuilt = (outputs if isinstance(outputs, torch.Tensor) else outputs[0]).float()
    target, hidden = targets[:, :-1], targets[:, -1:]
    return ((rebuilt - target).abs() * hidden).sum() / (hidden.sum() * target.shape[1]).clamp_min(1)


# ---------------------------------------------------------------- the run


@dataclass
class _Pretraining:
    """The model, what optimises it and what feeds it."""

    raw_model: torch.nn.Module
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    schedule: StepSchedule
    scaler: torch.amp.GradScaler
    sampler: EpochTaggedSampler
    loader: DataLoader
    normalization: dict
    start: dict | None


def _build(cfg: PretrainConfig, ddp: Distributed, device: torch.device, resuming: bool,
           deadline: Deadline | None) -> _Pretraining:
    data = PhantomStream(cfg) if cfg.task == "phantom" else MaskedImages(cfg)
    train_set = data if cfg.task == "phantom" else SeededAugmentDataset(data, cfg.seed)
    raw_model = create_model(cfg.model, in_channels=cfg.in_channels, num_classes=cfg.outputs, **cfg.model_options)
    start = None
    if cfg.init and not resuming:
        report = load_start(raw_model, cfg.model, cfg.init)
        start = report.to_dict()
        if ddp.is_main:
            print(report.summary())
    raw_model = raw_model.to(device, memory_format=torch.channels_last)
    model = ddp_wrapped(raw_model, device, ddp.world)
    optimizer = adamw(raw_model, cfg.lr, cfg.weight_decay, device)
    shuffled = DistributedSampler(train_set, ddp.world, ddp.rank, shuffle=True, seed=cfg.seed, drop_last=True)
    sampler, loader = train_loader(train_set, shuffled, cfg.batch_size, num_workers(cfg.workers), device,
                                   ", ".join(cfg.images) or "phantom")
    per_epoch = steps_per_epoch(len(loader), cfg.grad_accum)
    schedule = StepSchedule(cfg.epochs * per_epoch, per_epoch, cfg.warmup_epochs, cfg.lrf, deadline=deadline)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.lr_factor)
    scaler = grad_scaler(cfg.amp, device)
    normalization = {"mean": [data.mean] * cfg.in_channels, "std": [data.std] * cfg.in_channels}
    return _Pretraining(raw_model, model, optimizer, scheduler, schedule, scaler, sampler, loader, normalization,
                        start)


def _step_loss(cfg: PretrainConfig):
    """What one micro-batch of the task computes: (loss, outputs)."""
    if cfg.task == "mim":

        def rebuild(net, images, targets):
            outputs = net(images)
            return _masked_l1(outputs, targets), outputs

        return rebuild
    dice_ce = DiceCELoss()

    def segmentation(net, images, masks):
        outputs = net(images)
        return training_loss(dice_ce, bare(net), outputs, masks), outputs

    return segmentation


def _state(cfg: PretrainConfig, run: _Pretraining, epoch: int, log: dict) -> dict:
    """``last.pt``: everything to resume, as plain data (loads with ``weights_only``)."""
    return {
        "gctxseg": __version__,
        "model_name": resolve_model_name(cfg.model),
        "model_kwargs": dict(cfg.model_options),
        "model": run.raw_model.state_dict(),
        "channels": cfg.in_channels,
        "value_map": {str(i): i for i in range(cfg.outputs)},  # the head's outputs, for the checkpoint checks
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "schedule": run.schedule.state().to_json(),
        "epoch": epoch,
        "pretrain_config": asdict(cfg),
        "normalization": run.normalization,
        "log": log,
    }


def _record(cfg: PretrainConfig, log: dict, run: _Pretraining) -> dict:
    """What a start says about how it was made (kept in ``pretrained.pt``; training logs it)."""
    epochs = [v for k, v in log.items() if k.startswith("epoch:")]
    return {
        "task": cfg.task,
        "model": resolve_model_name(cfg.model),
        "base size": list(cfg.base_size),
        "epochs": len(epochs),
        "optimizer steps": sum(e["steps"] for e in epochs),
        "images seen": sum(e["images"] for e in epochs),
        "seconds": round(sum(e["seconds"] for e in epochs), 1),
        "final loss": epochs[-1]["loss"] if epochs else None,
        "scans": len(run.loader.dataset) if cfg.task == "mim" else None,
        "seed": cfg.seed,
        "started from": run.start,
        "cpu": f"{cpu_model()}, {torch.get_num_threads()} threads",
    }


def _resume(cfg: PretrainConfig) -> tuple[PretrainConfig, dict | None]:
    if not cfg.resume:
        return cfg, None
    ckpt = load_checkpoint(cfg.resume)
    if "pretrain_config" not in ckpt:
        raise ValueError(f"{cfg.resume}: not a pre-training's last.pt; resume training runs with gctxseg train")
    saved = dict(ckpt["pretrain_config"])
    saved.update(device=cfg.device, workers=cfg.workers, resume=cfg.resume, out=str(Path(cfg.resume).parent))
    return PretrainConfig(**saved), ckpt


class _PretrainEpochs:
    """Pre-training as the epoch driver runs it (training/driver.py): a pass of the task's loss, no validation,
    ``log.json`` and ``last.pt`` after each epoch (a clocked run: within the driver's ``WRITE_SHARE``; rank 0
    writes)."""

    what = "pretrain epoch"

    def __init__(self, cfg: PretrainConfig, ddp: Distributed, device, amp_dtype, run: _Pretraining, out: Path,
                 log: dict) -> None:
        self.cfg, self.ddp, self.device, self.amp_dtype, self.run, self.out, self.log = \
            cfg, ddp, device, amp_dtype, run, out, log
        self.schedule, self.sampler, self.scheduler = run.schedule, run.sampler, run.scheduler
        self.step_loss, self.names = _step_loss(cfg), [f"scan {i}" for i in range(len(run.loader.dataset))]

    def save_start(self) -> None:
        save_checkpoint(_state(self.cfg, self.run, -1, self.log), self.out / "last.pt")

    def warm_up(self) -> None:
        return None  # nothing is drawn

    def reserve_s(self, after_s: float) -> float:
        return after_s  # never asked: a run without validations keeps the reserve of two checkpoint writes

    def train_pass(self, stop: dict):
        run, cfg = self.run, self.cfg
        return run_steps(run.model, run.loader, self.step_loss, run.optimizer, run.scheduler, run.scaler,
                         self.amp_dtype, self.device, cfg.grad_clip, stop, self.names, cfg.grad_accum,
                         schedule=self.schedule)

    def validate(self) -> None:
        return None

    def record(self, end: EpochEnd) -> None:
        totals, log = end.trained, self.log
        log[f"epoch:{end.epoch}"] = {"loss": totals.loss, "lr": end.lr, "steps": totals.steps,
                                     "images": totals.seen * self.ddp.world, "seconds": end.pass_s}
        self.cfg = replace(self.cfg, epochs=self.schedule.epochs)
        if not self.ddp.is_main:
            return
        header = log["pretrain parameters"]
        header.update(epochs=self.cfg.epochs, steps=self.schedule.done, schedule=self.schedule.revisions)
        if self.schedule.clocked:
            # nothing but the log runs after the pass: its end is the time spent (no clock reading of its own)
            header["time budget"] = budget_record(self.schedule, TimeBudget.of(header), end.pass_s,
                                                  end.trained_at).to_json()
        if end.write:  # a clocked run writes an unvalidated epoch's within a share of its seconds (driver.py)
            atomic_write_json(self.out / "log.json", log)
            save_checkpoint(_state(self.cfg, self.run, end.epoch, log), self.out / "last.pt")
        print(f"pretrain epoch {end.epoch + 1}/{self.cfg.epochs}  lr {end.lr:.2e}  loss {totals.loss:.4f}  "
              f"{end.pass_s:.1f}s", flush=True)

    def nonfinite_advice(self, first_epoch: bool) -> str:
        return nonfinite_advice(first_epoch, self.out / "last.pt", self.cfg.init)

    def close(self) -> None:
        shutdown_workers(self.run.loader)


def pretrain(cfg: PretrainConfig) -> Path:
    """Run one pre-training task; returns the path of its ``pretrained.pt``.

    Raises:
        TrainingInterrupted: SIGINT/SIGTERM; ``last.pt`` holds the last complete epoch (``--resume`` it).
        NonFiniteLossError, ValueError, DatasetError: as training raises them.
    """
    started = now()
    keep_freed_memory()
    cfg, ckpt = _resume(cfg)
    ddp, device = setup_distributed(cfg.device)
    seed_everything(cfg.seed + ddp.rank)
    amp_dtype = autocast_dtype(cfg.amp, device)
    out, log, first = Path(cfg.out), {"pretrain parameters": asdict(cfg)}, 0
    if ckpt is None and ddp.is_main and out.exists() and any(out.iterdir()):  # before anything is built
        raise ValueError(f"{out}: not empty; pre-train into a new --out, or --resume {out / 'last.pt'}")
    # a budget is for the whole pre-training: a resumed one has what its checkpoint did not spend
    deadline = Deadline(cfg.time_budget * 60, started - ScheduleState.spent_in(ckpt)) if cfg.time_budget else None
    run = _build(cfg, ddp, device, resuming=ckpt is not None, deadline=deadline)
    if ckpt is not None:
        run.raw_model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        run.scaler.load_state_dict(ckpt["scaler"])
        run.schedule.load_state(ScheduleState.saved_in(ckpt), run.scheduler.last_epoch)
        log, first, run.start = ckpt["log"], ckpt["epoch"] + 1, ckpt["log"].get("start")
    elif ddp.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "pretrain.json", asdict(cfg))
        atomic_write_json(out / "env.json", env_info(device))
        log["start"] = run.start
    if ddp.is_main:
        print(f"pretrain {cfg.task}: {resolve_model_name(cfg.model)} {count_parameters(run.raw_model) / 1e6:.2f} M "
              f"params at {cfg.base_size[0]}x{cfg.base_size[1]}, {len(run.loader.dataset)} scans an epoch, "
              f"batch {cfg.batch_size}, epochs {first + 1}-{cfg.epochs}; {out}", flush=True)
    epochs = _PretrainEpochs(cfg, ddp, device, amp_dtype, run, out, log)
    stopped = drive_epochs(epochs, first_epoch=first, seed=cfg.seed, rank=ddp.rank, device=device,
                           is_main=ddp.is_main, fresh=first == 0)
    cfg = replace(cfg, epochs=run.schedule.epochs)
    if stopped is not None:
        raise TrainingInterrupted(f"pre-training stopped by signal {stopped}; resume with: gctxseg pretrain "
                                  f"--resume {out / 'last.pt'}", said_by=ddp.is_main)
    weights = out / "pretrained.pt"
    if ddp.is_main:
        record = _record(cfg, log, run)
        save_checkpoint({**_state(cfg, run, cfg.epochs - 1, log), "optimizer": None, "scheduler": None,
                         "scaler": None, "pretraining": record}, weights)
        print(f"done: {record['optimizer steps']} steps, {record['images seen']} images, {record['seconds']:.0f} s; "
              f"start for gctxseg train --init-weights {weights}")
    if dist.is_initialized():
        dist.barrier()
    return weights


def pretrain_sequence(cfg: PretrainConfig, tasks: list[str]) -> Path:
    """Tasks one after the other, each starting from the one before, in ``out/<task>``; the last's weights.

    Raises:
        ValueError: ``mim`` among the tasks but no ``cfg.images`` (before any task trains).
    """
    if "mim" in tasks and not cfg.images:
        raise ValueError("--task mim rebuilds your own scans: give --images DIR (and --unlabeled DIR)")
    weights, init = None, cfg.init
    for task in tasks:
        weights = pretrain(replace(cfg, task=task, init=init, out=os.path.join(cfg.out, task)))
        init = str(weights)
    return weights
