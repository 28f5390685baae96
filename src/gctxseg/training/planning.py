"""Training plan from the dataset fingerprint: derived, recorded, overridable (nnU-Net's planner, in 2D).

``plan_training`` turns what the fingerprint discovered (image sizes, class presence) plus the model and
the device into the settings a user would otherwise guess: input size, batch size, optimiser settings per
architecture family, foreground sampling share and schedule length. ``gctxseg train`` plans every setting
the user did not give, prints the plan and writes ``plan.json`` in the run folder; every given flag wins.

How each rule was chosen is said beside it; the measurements behind them are in ``docs/real-oct.md``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..core.files import atomic_write_json
from ..core.limits import check_time_budget
from ..core.remembered import Remembered
from ..core.runtime import cpu_threads
from ..models import create_model, resolve_model_name

__all__ = [
    "FAMILY_AUGMENT",
    "FAMILY_OPTIMISER",
    "TrainingPlan",
    "model_family",
    "FolderPlan",
    "plan_for_folder",
    "plan_training",
    "planned_foreground_share",
    "planned_input_size",
    "planned_size",
    "remembered_step_times",
    "size_options",
]

# The rules' evidence (the runs, their machines and figures) is in docs/real-oct.md, "What the planner's rules rest
# on"; each comment here says what a constant does.
# Pixel budget of one training input: 256x512 keeps a 496x1024 B-scan at half resolution, where the smallest cysts
# graders draw are still a few pixels wide. A time budget can lower it (``planned_size``).
PIXEL_BUDGET = 256 * 512
MIN_SHORT_SIDE = 128  # below this a B-scan's layers are a few pixels thick
# Thin structures keep their resolution: where the median foreground structure (the fingerprint's structure_width)
# is narrower than this, neither the pixel budget nor a time budget shrinks the input below the images' own size.
# It sits between vessels (about 2 px, which shrinking hurts) and OCT fluid (about 6 px, which needs the steps that
# shrinking buys).
THIN_STRUCTURE_PX = 4.0
# With a time budget, the input shrinks (aspect kept) until the schedule shows the network at least this many
# training images (steps x batch). Counted in images, not steps, since on a CPU the batch is planned small; beyond
# the floor, resolution is kept.
MIN_PLANNED_IMAGES = 1250
# Without a time budget: about this many optimiser steps (nnU-Net trains 2D for 250k at batch 12 on a GPU;
# a fifth of that here, as 2D slices of a few hundred images saturate sooner), within these epoch bounds.
PLANNED_STEPS = 50_000
EPOCH_RANGE = (50, 1000)
# nnU-Net forces a third of each batch to hold foreground; here it tops up each batch so that every
# foreground class is in at least this share of its images (batches that already have it are unchanged).
FOREGROUND_SHARE = 1 / 3
# CPU batch size: start at nnU-Net's minimum of 2 (BatchNorm needs more than one image) and double only while that
# makes an image at least 15% cheaper (``_cpu_batch``).
MIN_BATCH = 2
BATCH_GAIN = 0.15
# Validation cadence: validation at most this share of the training time (``planned_val_every``).
VAL_SHARE = 0.1
# Share of a time budget given to the epochs; the rest is start-up, checkpoints and the final report.
BUDGET_SHARE = 0.9
# With a time budget, the planner's step timings (steps of throw-away models, no training) stop once they have cost
# this share of it: the batch stops doubling there, smaller inputs' steps are estimated by their pixels, and the
# plan's reasons say so.
TIMING_SHARE = 0.02
# A smaller input whose step, estimated by its pixels from a larger one's, shows under this share of
# MIN_PLANNED_IMAGES is not timed: such estimates err on the fast side (a step's fixed costs do not shrink with the
# pixels), so its timing would reject it too; the share leaves room for where they do not (docs/time-budget.md).
UNTIMED_SHORTFALL = 0.9
# CPU threads under a time budget (``_planned_threads``): a step is timed at the machine's threads and at half as many,
# and fewer are planned when they make it at least this much faster (another program busy on a core: a step's
# threads wait for the one that shares it; docs/time-budget.md).
THREADS_GAIN = 0.1
# Steps timed at each thread count, their medians compared: beside a busy core a step's time varies with how the
# other program's time slices fall; the fastest of two steps each way chose 2 threads in 3 of 10 such folds. The
# machine's count and half of it are always timed, even past the timing share: a short share had stopped the timing
# after the first, and the run then kept the machine's threads beside the busy core.
THREADS_TIMED_STEPS = 3
# One step is timed at each thread count first; the others are timed only where those two are within this factor of
# each other: beside a busy core the machine's threads took 1.5-1.9x as long as half of them, alone half of them
# 1.7x as long for gctx_unet, so one step each tells those apart, and only a close call pays for the medians.
THREADS_CLEAR_FACTOR = 1.3
NNUNET_LR = 1e-3  # AdamW peak lr of the nnunet family (instance norm, residual blocks; see FAMILY_OPTIMISER)


@dataclass(frozen=True)
class FamilyOptimiser:
    lr: float
    weight_decay: float
    warmup_epochs: float
    why: str


# AdamW settings per family, each family's rate the best of benchmarks/lr_probe.py's grid on Duke DME: the
# transformer from scratch needs its authors' 1e-4, the U-Nets with BatchNorm take 5x that, the instance-norm nnunet
# 1e-3 (nnU-Net itself trains SGD 1e-2 with Nesterov momentum; the loop here is AdamW for every family). The
# transformer's best rate differs between data sets, so ``gctxseg cv`` probes it (crossval/lr_probe.py).
FAMILY_OPTIMISER = {
    "transformer": FamilyOptimiser(1e-4, 0.05, 2.0, "GC ViT from scratch: lr probe on Duke DME (planning.py)"),
    "cnn": FamilyOptimiser(5e-4, 1e-4, 1.0, "U-Nets with BatchNorm: lr probe on Duke DME (planning.py)"),
    "nnunet": FamilyOptimiser(NNUNET_LR, 3e-5, 1.0, "nnU-Net (instance norm): lr probe on Duke DME (planning.py)"),
}
# Augmentation strength per family (data.transforms.AUGMENTATIONS), chosen with benchmarks/real_oct.py on Duke DME:
# the transformer from scratch gains from more varied scans; the U-Net does not, so it keeps the standard one.
FAMILY_AUGMENT = {
    "nnunet": ("strong", "nnU-Net's own scheme is the strong one (rotation, scaling, intensity, blur, noise)"),
    "transformer": ("strong", "GC ViT from scratch: strong beat standard on Duke DME (docs/real-oct.md)"),
    "cnn": ("standard", "U-Nets: strong was no better on Duke DME (docs/real-oct.md)"),
}
_TRANSFORMERS = {"gctx_unet"}
_NNUNETS = {"nnunet"}
# architectures whose topology is planned from the input size (nnU-Net's): the planned size is their patch_size
_SIZE_PLANNED = {"nnunet"}
# U-Nets whose first-stage width is planned: nnU-Net's 2D U-Net starts at 32 features; Ronneberger's 64 costs 4x
# the compute (nnU-Net's choice, taken as it is: 32 against 64 was not measured here)
_PLANNED_WIDTH = {"unet", "gct_unet"}
CNN_BASE_WIDTH = 32


def model_family(model: str) -> str:
    """``transformer`` (GC ViT blocks), ``nnunet`` (instance-norm network planned from the size) or ``cnn``."""
    name = resolve_model_name(model)
    return "transformer" if name in _TRANSFORMERS else "nnunet" if name in _NNUNETS else "cnn"


def size_options(model_name: str, size) -> dict:
    """The options an architecture planned from its input size needs to be built for ``size`` (else none)."""
    return _sized_options(model_name, {}, size, {})


def _sized_options(model_name: str, options: Mapping[str, object], size, user_options: Mapping) -> dict:
    """``options`` with ``patch_size`` = ``size`` for architectures planned from the input size (unless given)."""
    if resolve_model_name(model_name) in _SIZE_PLANNED and "patch_size" not in user_options:
        return {**options, "patch_size": [int(size[0]), int(size[1])]}
    return dict(options)


@dataclass
class TrainingPlan:
    """Planned settings, each with the reason it has that value; ``given`` lists what the user set."""

    base_size: tuple[int, int]
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    epochs: int
    foreground_share: float
    median_size: tuple[int, int]
    augment: str = "standard"
    val_every: int = 1
    model_options: dict = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    given: list[str] = field(default_factory=list)
    seconds_per_step: float | None = None
    cpu_threads: int | None = None  # None: the machine's (not planned)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    def format(self) -> str:
        rows = []
        keys = ["base_size", "batch_size", "lr", "weight_decay", "warmup_epochs", "epochs", "foreground_share",
                "augment", "val_every"] + ["cpu_threads"] * (self.cpu_threads is not None)
        for key in keys:
            value = getattr(self, key)
            if isinstance(value, tuple):
                shown = "x".join(map(str, value))
            else:
                shown = value if isinstance(value, str) else f"{value:g}"
            source = "given" if key in self.given else self.reasons.get(key, "")
            rows.append(f"  {key:<17}{shown:<11} {source}")
        if "model_options" in self.reasons:
            rows.append(f"  {'model_options':<17}{json.dumps(self.model_options):<11} {self.reasons['model_options']}")
        return "plan:\n" + "\n".join(rows)


def _median_size(sizes: Mapping[str, int]) -> tuple[int, int]:
    """Median H and W over images (``sizes`` maps "HxW" to a count)."""
    hs, ws = [], []
    for key, count in sizes.items():
        h, w = (int(v) for v in key.split("x"))
        hs += [h] * count
        ws += [w] * count
    hs.sort()
    ws.sort()
    return hs[len(hs) // 2], ws[len(ws) // 2]


def planned_size(median: tuple[int, int], multiple: int, budget: int = PIXEL_BUDGET) -> tuple[int, int]:
    """The median size scaled (aspect kept, never enlarged) to at most ``budget`` pixels, in ``multiple``s."""
    h, w = median
    scale = min(1.0, math.sqrt(budget / (h * w)))
    rounded = [max(multiple, round(s * scale / multiple) * multiple) for s in (h, w)]
    while rounded[0] * rounded[1] > budget * 1.05 and max(rounded) > multiple:  # rounding up overshot
        i = 0 if rounded[0] / h >= rounded[1] / w else 1
        rounded[i] -= multiple
    return rounded[0], rounded[1]


def _activation_bytes(model: torch.nn.Module, channels: int, size: tuple[int, int]) -> int:
    """Bytes autograd keeps for one training sample (tensors saved for backward), measured at batch 1."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    model.train()
    x = torch.zeros(1, channels, *size)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
        out = out if isinstance(out, torch.Tensor) else out[0]
    del out
    return total


def _memory_budget(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * 0.7)
    # a CPU: half the memory available now, at most 8 GiB (the machine is shared with loader workers)
    return min(_available_memory() // 2, 8 << 30)


def _available_memory() -> int:
    """Bytes the kernel can hand out now, page cache included (Linux MemAvailable). "Free" pages alone are a
    fraction of that on a machine that has read files."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def _seconds_per_step(model_name, options, channels, classes, size, batch, device, amp_dtype, kept: dict | None = None,
                      timed_steps: int = 2) -> float:
    """Measured time of one AdamW training step (forward, loss, backward, update) at this size and batch: the
    fastest of ``timed_steps`` after a warm-up step, or their median where more than two are timed.

    ``kept``: a slot for the last timed model (a plan's own); a timing of the same model, size and batch (at another
    thread count) reuses it, warmed up, instead of building and warming up a second one."""
    key = (model_name, repr(sorted(options.items())), channels, classes, tuple(size), batch, str(device), amp_dtype)
    timer = kept.get(key) if kept is not None else None
    if timer is None:
        timer = _StepTimer(model_name, options, channels, classes, size, batch, device, amp_dtype)
        if kept is not None:
            kept.clear()
            kept[key] = timer
    times = [timer.step() for _ in range(timed_steps)]
    return min(times) if timed_steps <= 2 else float(statistics.median(times))


class _StepTimer:
    """A throw-away model's training step at one size and batch, as training runs it; warmed up when built (the
    first step pays for the allocator's and the kernels' set-up)."""

    def __init__(self, model_name, options, channels, classes, size, batch, device, amp_dtype) -> None:
        from ..core.precision import autocast_context
        from ..losses import DiceCELoss, training_loss
        from .loop import adamw

        self.device, self.autocast = device, functools.partial(autocast_context, device, amp_dtype)
        self.training_loss = training_loss
        self.model = create_model(model_name, channels, classes, **options).to(device,
                                                                              memory_format=torch.channels_last)
        self.model.train()
        self.optimizer = adamw(self.model, 1e-4, 0.0, device)  # as training builds it
        self.loss_fn = DiceCELoss()
        self.x = torch.randn(batch, channels, *size, device=device).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, classes, (batch, *size), device=device)
        self.step()

    def step(self) -> float:
        """Seconds of one optimiser step."""
        started = time.perf_counter()
        with self.autocast():
            loss = self.training_loss(self.loss_fn, self.model, self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - started


def planned_foreground_share(presence: list[float]) -> tuple[float, str]:
    """Share of each batch topped up with a foreground class, from each class's share of training images."""
    rare = [p for p in presence if p < 1]
    if not rare:
        return 0.0, "every training image holds every class: nothing to top up"
    shown = ", ".join(f"{p:.0%}" for p in presence)
    return FOREGROUND_SHARE, f"foreground classes in {shown} of training images; nnU-Net's third per batch"


def _planned_batch(model: torch.nn.Module, channels: int, size: tuple[int, int], n_train: int, device) -> tuple:
    """The largest batch that fits the memory budget, capped at 16 and at a sixteenth of the training images."""
    per_sample = _activation_bytes(model, channels, size)
    budget = _memory_budget(device)
    fits = max(1, int(budget // (per_sample * 1.5)))  # gradients and temporaries on top of saved activations
    cap = min(16, max(2, n_train // 16))  # at least 16 optimiser steps per epoch; 16 = the seed's batch
    batch = max(1, min(fits, cap))
    why = (f"{per_sample / 2**20:.0f} MiB activations per image, {fits} fit in {budget / 2**30:.1f} GiB; "
           f"cap {cap} (>= 16 steps per epoch of {n_train} images)")
    return batch, why


def _cpu_batch(step_time, memory_batch: int, may_time=lambda: True) -> tuple[int, float, str]:
    """On a CPU: the smallest batch from ``MIN_BATCH`` whose cost per image is within ``BATCH_GAIN`` of twice
    that batch's (``step_time(batch)`` measures one step), at most ``memory_batch``.

    A GPU is idle at small batches, a CPU is not: an image costs about the same in any batch there, so a larger
    batch buys fewer optimiser steps in the same time and little else. ``may_time()`` False stops the doubling (the
    timings' share of a time budget is spent). Returns (batch, seconds per step, reason).
    """
    batch = min(MIN_BATCH, memory_batch)
    seconds = step_time(batch)
    tried = [f"{batch}: {seconds / batch:.3f}"]
    stopped = ""
    while batch * 2 <= memory_batch:
        if not may_time():
            stopped = f"; timing stopped at {TIMING_SHARE:.0%} of the time budget"
            break
        doubled = step_time(batch * 2)
        tried.append(f"{batch * 2}: {doubled / (batch * 2):.3f}")
        if doubled / (batch * 2) > (1 - BATCH_GAIN) * seconds / batch:
            break
        batch, seconds = batch * 2, doubled
    why = (f"CPU: s per image by batch {', '.join(tried)} (measured); the smallest batch within "
           f"{BATCH_GAIN:.0%} of the next one's cost per image, so the budget buys steps; memory allows "
           f"{memory_batch}{stopped}")
    return batch, seconds, why


def planned_val_every(step_s: float, batch: int, steps_per_epoch: int, n_val: int, epochs: int) -> tuple[int, str]:
    """Validate every N epochs so that validation costs at most ``VAL_SHARE`` of the training time.

    A forward pass costs about a third of a training step per image; with many held-out images and short
    epochs, validating every epoch can take a third of a short budget. The last epoch is always validated, so
    the final weights are always scored.
    """
    val_s = n_val * step_s / batch / 3
    train_s = max(steps_per_epoch * step_s, 1e-9)
    every = max(1, min(max(1, epochs // 4), math.ceil(val_s / (VAL_SHARE * train_s))))
    why = (f"validation ~{val_s:.0f} s for {n_val} images, an epoch ~{train_s:.0f} s: every {every} epoch(s) keeps "
           f"it within {VAL_SHARE:.0%} of training (and at least 4 validations)")
    return every, why


def _keeps_random_state(fn):
    """Leave torch's global random state as it was: planning builds and runs throw-away models, and a planned run
    must initialise its model exactly as a run given every setting does."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            return fn(*args, **kwargs)

    return wrapper


@_keeps_random_state
def plan_training(
    model_name: str,
    sizes: Mapping[str, int],
    n_train: int,
    n_val: int,
    channels: int,
    num_classes: int,
    device: torch.device,
    *,
    given: Mapping[str, object],
    model_options: Mapping[str, object] | None = None,
    time_budget_s: float | None = None,
    amp_dtype: torch.dtype | None = None,
    grad_accum: int = 1,
    structure_width: float | None = None,
) -> TrainingPlan:
    """Plan every setting not in ``given`` (keys: base_size, batch_size, lr, weight_decay, warmup_epochs, epochs,
    augment, val_every; steps: the epochs that hold them).

    Args:
        model_name: registry name or alias.
        sizes: the fingerprint's "HxW" -> image count.
        n_train, n_val: training / validation images (or slices).
        channels, num_classes: model input channels and classes.
        device: where training runs (memory budget, step time).
        given: the user's settings; they win and are recorded as given.
        time_budget_s: wall seconds the whole run may take; sets the epochs (the schedule's first estimate: a
            planned run's clock revises it, training/schedule.py) from a measured step time and may shrink the
            planned size so that the network sees at least ``MIN_PLANNED_IMAGES`` training images.
        amp_dtype: autocast dtype of training (the step time is measured under it).
        structure_width: the fingerprint's median foreground width in pixels (``THIN_STRUCTURE_PX``).
    """
    user_options = dict(model_options or {})
    options, reasons = _planned_width(model_name, user_options)
    # the model as planned so far, built and timed at any size the plan tries
    clock = _StepClock(model_name, options, user_options, channels, num_classes, device, amp_dtype, grad_accum,
                       TIMING_SHARE * time_budget_s if time_budget_s else None)
    size, model, multiple, min_pixels, reasons["base_size"] = _planned_base_size(clock, sizes, given, structure_width)
    threads = _planned_threads(clock, size, given, time_budget_s, reasons)
    with cpu_threads(threads):  # the batch and the size are timed as the run will train
        step_s = None
        if "batch_size" in given:
            batch = int(given["batch_size"])
        else:
            batch, step_s, reasons["batch_size"] = _planned_batch_size(clock, model, size, n_train)
        family = _planned_family(model_name, given, reasons)
        steps_per_epoch = math.ceil(max(1, n_train // batch) / grad_accum)
        size, epochs, step_s, val_every = _planned_schedule(
            clock, size, step_s, batch, steps_per_epoch, n_val, time_budget_s, given, multiple, min_pixels, reasons)
    options = clock.sized(size)
    if "patch_size" in options and "patch_size" not in user_options:
        reasons["model_options"] = "patch_size: nnU-Net's topology (kernels, strides) planned for the input size"
    return TrainingPlan(
        base_size=(int(size[0]), int(size[1])), batch_size=batch, epochs=epochs, val_every=val_every, **family,
        foreground_share=float(given.get("foreground_share", 0.0)), median_size=_median_size(sizes),
        model_options=options, reasons=reasons, given=sorted(given), seconds_per_step=step_s, cpu_threads=threads,
    )


def _planned_threads(clock: _StepClock, size, given: Mapping[str, object], time_budget_s: float | None,
                     reasons: dict[str, str]) -> int | None:
    """torch's CPU threads for the run: given, or under a time budget on a CPU the fewest (halving from the
    machine's) that make a step at least ``THREADS_GAIN`` faster; None where not planned (the machine's)."""
    if "cpu_threads" in given:
        return int(given["cpu_threads"])
    threads = torch.get_num_threads()
    if clock.device.type != "cpu" or not time_budget_s or threads < 2 or torch.distributed.is_initialized():
        return None
    batch = min(int(given.get("batch_size", MIN_BATCH)), MIN_BATCH)  # a larger given batch only costs more seconds

    def step_s(threads: int, steps: int) -> float:
        with cpu_threads(threads):
            return clock(size, batch, steps)

    seconds, tried, medians = step_s(threads, 1), [], False
    while threads > 1 and (not tried or clock.may_time):  # half as many always timed: a choice needs two
        fewer = step_s(threads // 2, THREADS_TIMED_STEPS if medians else 1)
        if not medians and max(seconds, fewer) < THREADS_CLEAR_FACTOR * min(seconds, fewer):  # a close call
            medians = True
            seconds, fewer = step_s(threads, THREADS_TIMED_STEPS), step_s(threads // 2, THREADS_TIMED_STEPS)
        if not tried:
            tried.append(f"{threads}: {seconds:.3f}")
        tried.append(f"{threads // 2}: {fewer:.3f}")
        if fewer > (1 - THREADS_GAIN) * seconds:
            break
        threads, seconds = threads // 2, fewer
    timed = (f"median of {THREADS_TIMED_STEPS} steps: one each was within {THREADS_CLEAR_FACTOR:g}x" if medians else
             f"one step each, {THREADS_CLEAR_FACTOR:g}x apart or more")
    reasons["cpu_threads"] = (f"CPU: s per step of batch {batch} by threads {', '.join(tried)} ({timed}, measured); "
                              f"fewer threads only where at least {THREADS_GAIN:.0%} faster (another program busy "
                              "on a core)")
    return threads


def _planned_width(model_name: str, user_options: Mapping[str, object]) -> tuple[dict, dict[str, str]]:
    """(the model options: the user's plus the planned first-stage width of the U-Nets, the reasons so far)."""
    options, reasons = dict(user_options), {}
    if resolve_model_name(model_name) in _PLANNED_WIDTH and "base_width" not in options:
        options["base_width"] = CNN_BASE_WIDTH
        reasons["model_options"] = f"base_width {CNN_BASE_WIDTH}: nnU-Net's 2D first-stage width"
    return options, reasons


@dataclass
class _StepClock:
    """The model a plan is for, built and timed at any input size (``options``: without the planned size), and the
    seconds its timings have cost against the share of a time budget they may (``limit_s``; None: no limit)."""

    model_name: str
    options: dict
    user_options: dict
    channels: int
    classes: int
    device: torch.device
    amp_dtype: torch.dtype | None
    grad_accum: int
    limit_s: float | None = None
    spent_s: float = 0.0
    measured: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)  # how many steps each measured figure is of (inf: remembered)
    times: dict = field(default_factory=dict)  # each step's seconds, where timed one at a time
    kept: dict = field(default_factory=dict)  # the last timed model (``_seconds_per_step``)

    @property
    def may_time(self) -> bool:
        """Whether another timing fits the share of the time budget the timings may cost."""
        return self.limit_s is None or self.spent_s < self.limit_s

    def sized(self, size) -> dict:
        """The options of the model at ``size`` (``patch_size`` for architectures planned from it)."""
        return _sized_options(self.model_name, self.options, size, self.user_options)

    def build(self, size=None) -> torch.nn.Module:
        """A throw-away model, at ``size`` (None: before the size is known)."""
        options = self.options if size is None else self.sized(size)
        return create_model(self.model_name, self.channels, self.classes, **options)

    def __call__(self, size, batch: int, timed_steps: int = 2) -> float:
        """Seconds per optimiser step at ``size`` and ``batch`` (measured over its ``grad_accum`` micro-batches,
        once for each size, batch and thread count, or once inside ``remembered_step_times()``; ``timed_steps``:
        see :func:`_seconds_per_step`; asked again for more steps than a figure timed one step at a time holds, only
        the missing steps are timed)."""
        key = (tuple(size), batch, torch.get_num_threads())
        if key in self.measured and self.steps[key] >= timed_steps:
            return self.measured[key]
        remembered_key = (self.model_name, repr(sorted(self.sized(size).items())), self.channels, self.classes,
                          str(self.device), self.amp_dtype, self.grad_accum, *key)
        if key not in self.measured and (kept := _STEP_TIMES.get(remembered_key)) is not None:
            self.measured[key], self.steps[key] = kept, math.inf
            return kept
        started = time.perf_counter()
        timed = functools.partial(_seconds_per_step, self.model_name, self.sized(size), self.channels, self.classes,
                                  size, batch * self.grad_accum, self.device, self.amp_dtype, self.kept)
        if key in self.times or timed_steps == 1:  # one step at a time: asked for more, only the missing are timed
            times = self.times.setdefault(key, [])
            times += [timed(1) / self.grad_accum for _ in range(timed_steps - len(times))]
            seconds = min(times) if len(times) <= 2 else float(statistics.median(times))
        else:
            seconds = timed(timed_steps) / self.grad_accum
        self.spent_s += time.perf_counter() - started
        self.measured[key], self.steps[key] = seconds, timed_steps
        _STEP_TIMES.keep(remembered_key, seconds)
        return seconds


# Step times of the plans made inside ``remembered_step_times()``: ``gctxseg cv`` plans each configuration for its
# affordability check, its learning-rate probe and its first fold, seconds apart on the same machine; timing the same
# steps three times only took minutes from training. A model at one size, batch and thread count is timed once there.
_STEP_TIMES = Remembered()
remembered_step_times = _STEP_TIMES.block


def _planned_base_size(clock: _StepClock, sizes: Mapping[str, int], given: Mapping[str, object],
                       structure_width: float | None) -> tuple:
    """(input size, the model built for it or None, its size multiple, fewest pixels the input may shrink to, reason).

    The model is built only for what needs it (its stride, its activation memory): a run given every setting,
    such as a resumed one, builds none here."""
    needs_model = "base_size" not in given or "batch_size" not in given
    model = clock.build() if needs_model else None
    multiple = int(getattr(model, "size_multiple", 16))
    median = _median_size(sizes)
    min_pixels, pixel_budget = _resolution_floor(median, structure_width)
    size = tuple(given["base_size"]) if "base_size" in given else planned_input_size(sizes, multiple, structure_width)
    why = f"median image {median[0]}x{median[1]}, aspect kept within {pixel_budget:,} px, multiples of {multiple}"
    if min_pixels:
        why += (f"; structures {structure_width:g} px wide (median, < {THIN_STRUCTURE_PX:g}): kept at the images' "
                "resolution")
    if needs_model and clock.sized(size) != clock.options:  # built again for its planned topology
        model = clock.build(size)
    return size, model, multiple, min_pixels, why


def _planned_batch_size(clock: _StepClock, model: torch.nn.Module, size, n_train: int) -> tuple[int, float | None, str]:
    """(batch, seconds per step where measured, reason): what memory allows, on a CPU the cheapest per image."""
    batch, why = _planned_batch(model, clock.channels, size, n_train, clock.device)
    if clock.device.type != "cpu":
        return batch, None, why
    batch, step_s, cpu_why = _cpu_batch(lambda b: clock(size, b), batch, lambda: clock.may_time)
    return batch, step_s, f"{cpu_why} ({why.split(';')[0]})"


def _planned_schedule(clock: _StepClock, size, step_s, batch, steps_per_epoch, n_val, time_budget_s, given,
                      multiple, min_pixels, reasons: dict[str, str]) -> tuple:
    """(size, epochs, seconds per step, validation cadence): given, from ``--steps``, fitted to a time budget
    (which may shrink the size) or about ``PLANNED_STEPS``; ``reasons`` gets the reasons of what was planned."""
    val_every = int(given.get("val_every", 1))
    if "epochs" in given:
        epochs = int(given["epochs"])
    elif "steps" in given:  # --steps: the epochs that hold them (the last may be partial)
        epochs = math.ceil(int(given["steps"]) / steps_per_epoch)
        reasons["epochs"] = f"{given['steps']} optimiser steps given (--steps), {steps_per_epoch} per epoch"
    elif time_budget_s:
        size, epochs, step_s, val_every, reasons["epochs"] = _fit_budget(
            clock, size, step_s, batch, steps_per_epoch, n_val, time_budget_s, given, multiple, min_pixels)
        reasons["base_size"] += f"; {reasons['epochs'].split(';')[0]}"
    else:
        epochs = min(EPOCH_RANGE[1], max(EPOCH_RANGE[0], round(PLANNED_STEPS / steps_per_epoch)))
        reasons["epochs"] = (f"about {PLANNED_STEPS:,} optimiser steps of {steps_per_epoch} per epoch, "
                             f"within {EPOCH_RANGE}")
    if "val_every" not in given and step_s is not None:
        val_every, reasons["val_every"] = planned_val_every(step_s, batch, steps_per_epoch, n_val, epochs)
    return size, epochs, step_s, val_every


def _planned_family(model_name: str, given: Mapping[str, object], reasons: dict[str, str]) -> dict:
    """lr, weight_decay, warmup_epochs and augment: given, else the model family's (with its reasons)."""
    family_name = model_family(model_name)
    family = FAMILY_OPTIMISER[family_name]
    for key in ("lr", "weight_decay", "warmup_epochs"):
        reasons[key] = f"{family_name} family: {family.why}"
    augment, reasons["augment"] = FAMILY_AUGMENT[family_name]
    return dict(lr=float(given.get("lr", family.lr)),
                weight_decay=float(given.get("weight_decay", family.weight_decay)),
                warmup_epochs=float(given.get("warmup_epochs", family.warmup_epochs)),
                augment=str(given.get("augment", augment)))


def planned_input_size(sizes: Mapping[str, int], multiple: int, structure_width: float | None) -> tuple[int, int]:
    """The input size planned before any time budget (a fingerprint's sizes and structure width): the median image
    within the pixel budget, thin structures at the images' own resolution (``THIN_STRUCTURE_PX``)."""
    median = _median_size(sizes)
    return planned_size(median, multiple, _resolution_floor(median, structure_width)[1])


def _resolution_floor(median: tuple[int, int], structure_width: float | None) -> tuple[int, int]:
    """(fewest pixels the input may have, pixel budget of the planned size): the images' own size for thin
    structures (``THIN_STRUCTURE_PX``), else no floor and ``PIXEL_BUDGET``."""
    if structure_width is not None and structure_width < THIN_STRUCTURE_PX:
        return median[0] * median[1], max(PIXEL_BUDGET, median[0] * median[1])
    return 0, PIXEL_BUDGET


def _fit_budget(step_time: _StepClock, size, step_s, batch, steps_per_epoch, n_val, budget_s, given,
                multiple, min_pixels: int = 0) -> tuple[tuple[int, int], int, float, int, str]:
    """(size, epochs, seconds per step, validation cadence, reason) so that the schedule fits ``budget_s``.

    ``step_s`` is the step time already measured at ``size`` (or None). A smaller input is timed where its step,
    estimated from the last one timed by its pixels, might show the network enough images; one estimated well short
    (``UNTIMED_SHORTFALL``) is passed over untimed, as a timing would reject it too."""
    shrink, estimated = "base_size" not in given, ""
    step_s = step_s if step_s is not None else step_time(size, batch)
    reference = (size, step_s)  # the last size timed, and its step
    while True:
        if step_s is None:  # a smaller size to time
            step_s = step_time(size, batch)
            reference = (size, step_s)
        epochs, val_every = _budget_epochs(step_s, batch, steps_per_epoch, n_val, budget_s, given)
        if not shrink or epochs * steps_per_epoch * batch >= MIN_PLANNED_IMAGES or min(size) <= MIN_SHORT_SIDE:
            break
        smaller = _smaller_size(size, multiple, min_pixels)
        if smaller is None:
            break
        by_pixels = reference[1] * smaller[0] * smaller[1] / (reference[0][0] * reference[0][1])
        if not step_time.may_time:  # the timings' share of the budget is spent: the step scales with the pixels
            estimated, step_s = f"{reference[0][0]}x{reference[0][1]}", by_pixels
        else:
            epochs_by_pixels = _budget_epochs(by_pixels, batch, steps_per_epoch, n_val, budget_s, given)[0]
            images = epochs_by_pixels * steps_per_epoch * batch
            short = images < UNTIMED_SHORTFALL * MIN_PLANNED_IMAGES and _smaller_size(smaller, multiple, min_pixels)
            step_s = by_pixels if short else None  # the last size it may shrink to is timed, short or not
        size = smaller
    epochs = max(1, epochs)
    how = (f"estimated by pixels from the step measured at {estimated}: timing stopped at {TIMING_SHARE:.0%} of "
           "the time budget") if estimated else "measured"
    why = f"{epochs} epochs x {steps_per_epoch} steps fit {budget_s / 60:.1f} min at {step_s:.2f} s per step ({how})"
    return tuple(size), epochs, step_s, val_every, why


def _budget_epochs(step_s: float, batch: int, steps_per_epoch: int, n_val: int, budget_s: float,
                   given: Mapping[str, object]) -> tuple[int, int]:
    """(epochs, validation cadence) that fit ``budget_s`` at ``step_s`` seconds per step."""
    val_s = n_val * step_s / batch / 3  # a forward pass per image: about a third of a training step's cost
    # a first guess of the epochs gives the cadence, which gives the epochs that fit
    epochs = int(budget_s * BUDGET_SHARE // (steps_per_epoch * step_s + val_s))
    val_every = int(given.get("val_every", planned_val_every(step_s, batch, steps_per_epoch, n_val,
                                                             max(1, epochs))[0]))
    return int(budget_s * BUDGET_SHARE // (steps_per_epoch * step_s + val_s / val_every)), val_every


def _smaller_size(size, multiple: int, min_pixels: int) -> tuple[int, int] | None:
    """The next input size a time budget may shrink ``size`` to (0.7 of its pixels, aspect kept), or None."""
    smaller = planned_size(size, multiple, int(size[0] * size[1] * 0.7))
    if smaller == tuple(size) or min(smaller) < MIN_SHORT_SIDE or smaller[0] * smaller[1] < min_pixels:
        return None
    return smaller


@dataclass
class FolderPlan:
    """``gctxseg plan DATA``'s answer: what was found in the folder, and the plan made from it."""

    fingerprint: object  # data.DatasetFingerprint
    plan: TrainingPlan

    def format(self) -> str:
        return self.fingerprint.describe() + "\n" + self.plan.format()


def plan_for_folder(
    data: str | Path,
    img_f: str = ".png",
    mask_f: str = ".png",
    model: str | None = None,
    device: str = "auto",
    time_budget_min: float | None = None,
) -> FolderPlan:
    """``gctxseg plan DATA``: fingerprint a labelled folder and plan a run on it (nothing is trained).

    Raises:
        ValueError: a ``time_budget_min`` that is not a positive finite number of minutes (before any file is read).
        DatasetError: the folder's pairs, or masks that hold one value only (as ``train`` refuses them).
    """
    from ..core.runtime import resolve_device
    from ..data import expand_slices, find_pairs, fingerprint_dataset
    from ..models import list_models

    time_budget_min = check_time_budget(time_budget_min)
    model = model or ("gctx_unet" if "gctx_unet" in list_models() else "unet")
    pairs = expand_slices(find_pairs(data, img_f, mask_f))
    fingerprint = fingerprint_dataset(pairs)
    fingerprint.check_classes(data)
    plan = plan_training(model, fingerprint.sizes, len(pairs), 0, fingerprint.channels,
                         fingerprint.value_map.num_classes, resolve_device(device), given={},
                         time_budget_s=time_budget_min * 60 if time_budget_min else None,
                         structure_width=fingerprint.structure_width)
    present = [fingerprint.mask_value_images.get(str(v), 0) / len(pairs) for v in fingerprint.value_map.values[1:]]
    plan.foreground_share, plan.reasons["foreground_share"] = planned_foreground_share(present)
    return FolderPlan(fingerprint, plan)
