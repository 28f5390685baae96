"""A training run's settings (:class:`TrainConfig`), what a resumed run may change, and the loop's own errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Collection
from dataclasses import dataclass, field, fields, replace

from ..core.console import flag_name
from ..core.limits import check_input_size, check_time_budget
from ..core.outputs import plain_name
from ..core.precision import AMP_CHOICES
from ..data import CTWindow, resolve_windows
from ..data.transforms import AUGMENTATIONS
from ..models import list_models, resolve_model_name
from ..runs.checkpoint import model_options_problem

__all__ = ["TrainConfig", "TrainingInterrupted", "NonFiniteLossError", "PLANNED_SETTINGS", "RESUME_SETTINGS",
           "resume_config", "absolute_data_paths", "flag_name"]

# the settings the planner fills in when a run leaves them open (planning.py)
PLANNED_SETTINGS = ("base_size", "batch_size", "lr", "weight_decay", "warmup_epochs", "epochs", "foreground_share",
                    "augment", "val_every", "cpu_threads")


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
    init_weights: str | None = None  # a whole-model start (gctxseg pretrain's pretrained.pt, a run's best.pt);
    # None = planned (training/start.py: the installed offline start of gctx_unet), "none" = from scratch
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
    lr_reason: str | None = None  # why a caller (gctxseg cv's lr probe) set lr: plan.json says so, not "given"
    plan_reasons: dict = field(default_factory=dict)  # planned settings a caller (gctxseg cv) set -> why
    lrf: float = 0.002  # final lr = lr * lrf (cosine decay)
    warmup_epochs: float | None = None  # linear warm-up, capped at 10% of the schedule
    weight_decay: float | None = None
    foreground_share: float | None = None  # each batch topped up to hold each foreground class in this share
    time_budget: float | None = None  # minutes the run may take: a planned schedule follows the clock to its
    # deadline (training/schedule.py); with epochs or steps given it only sizes the plan
    steps: int | None = None  # train exactly this many optimiser steps (epochs derived; the last may be partial)
    schedule: tuple = ()  # [step, total] revisions of the lr's horizon to follow (a replayed budgeted run)
    schedule_from: str | None = None  # a run folder (or its log.json) whose schedule and planned settings to replay
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
    cpu_threads: int | None = None  # torch's CPU threads; None = the machine's, or planned under a time budget
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
            self.base_size = check_input_size(self.base_size)
        for name in ("epochs", "steps", "batch_size", "grad_accum", "val_every", "cpu_threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.folds is not None and not 0 <= self.fold < max(self.folds, 1):
            raise ValueError(f"--fold {self.fold}: with --folds {self.folds} it must be 0..{self.folds - 1}")
        if self.foreground_share is not None and not 0 <= self.foreground_share <= 1:
            raise ValueError(f"foreground_share must be in [0, 1], got {self.foreground_share}")
        self.time_budget = check_time_budget(self.time_budget)
        self.schedule = tuple(tuple(int(v) for v in revision) for revision in self.schedule)
        if (self.lr is not None and self.lr <= 0) or not 0 < self.lrf <= 1:
            raise ValueError(f"need lr > 0 and 0 < lrf <= 1, got lr={self.lr}, lrf={self.lrf}")
        if self.augment is not None and self.augment not in AUGMENTATIONS:
            raise ValueError(f"--augment must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}")
        if self.amp not in AMP_CHOICES:
            raise ValueError(f"amp must be auto, bf16, fp16 or off, got {self.amp!r}")
        resolve_model_name(self.model)  # unknown names fail now, with a suggestion
        problem = model_options_problem(self.model, self.model_options, "--model-option")
        if problem:  # what a checkpoint's model_kwargs may not hold, a flag may not set: before anything is built
            raise ValueError(f"{problem}; see gctxseg models")
        if self.init_weights not in (None, NO_START) and self.encoder_weights:
            raise ValueError("--init-weights starts the whole network and --encoder-weights its encoder: give one")
        self.windows = tuple(self.windows)
        if not self.ct and (
            self.window or self.window_level is not None or self.window_width is not None or self.windows
        ):
            raise ValueError("a CT window option (--window, --window-level/--window-width, --windows) needs --ct")
        self.ct_windows()  # conflicting or unknown windows fail now
        if not 0 <= self.empty_slice_fraction <= 1:
            raise ValueError(f"empty_slice_fraction must be in [0, 1], got {self.empty_slice_fraction}")
        plain_name(self.name, "--name", self.results)  # the run folder stays inside --results (gctxseg.core.outputs)

    def ct_windows(self) -> tuple[CTWindow | str, ...]:
        """The CT windows the options ask for (``"auto"`` = derived from the training set)."""
        return resolve_windows(self.window, self.window_level, self.window_width, self.windows)


NO_START = "none"  # --init-weights none: from scratch, even where a start is planned (training/start.py)


class TrainingInterrupted(RuntimeError):
    """Raised after SIGINT/SIGTERM once the run folder is consistent; ``said_by``: whether this process is the one
    to say so (rank 0 of a torchrun job: the others leave quietly)."""

    def __init__(self, message: str, said_by: bool = True) -> None:
        super().__init__(message)
        self.said_by = said_by


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite."""


# ---------------------------------------------------------------- schedule, randomness



RESUME_SETTINGS = ("device", "workers", "epochs", "steps", "resume")


def resume_config(cfg: TrainConfig, ckpt: dict, given: Collection[str] | None) -> TrainConfig:
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
            f"--resume: ignoring {', '.join(map(flag_name, ignored))}: a resumed run keeps its own settings (only "
            "--epochs, --device and --workers change); start a new run to change them",
            file=sys.stderr,
        )
    saved = {f.name: ckpt["config"][f.name] for f in fields(TrainConfig) if f.name in ckpt["config"]}
    overrides = {k: getattr(cfg, k) for k in ("device", "workers", "resume")}
    if "epochs" in given:  # an explicit --epochs or --steps always wins: it extends or shortens the schedule
        overrides.update(epochs=cfg.epochs, steps=None)
    if "steps" in given:
        overrides.update(steps=cfg.steps, schedule=())
    return TrainConfig(**{**saved, **overrides})


def absolute_data_paths(cfg: TrainConfig) -> TrainConfig:
    """Data folders as absolute paths, so the run's report and evaluation work from any working directory."""
    return replace(cfg, data_train=os.path.abspath(cfg.data_train), data_val=os.path.abspath(cfg.data_val),
                   splits=os.path.abspath(cfg.splits) if cfg.splits else None)
