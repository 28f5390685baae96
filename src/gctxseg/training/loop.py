"""The optimiser loop both training and pre-training walk: steps with gradient accumulation, agreed stops, AdamW.

One readable pass (:func:`run_steps`) owns what every kind of run needs from a step: autocast, gradient
accumulation without DDP's all-reduce on the inner micro-batches, a non-finite loss caught on every rank at
once, gradient clipping, the fp16 grad scaler, the per-step schedule and a stop signal honoured after the
current optimiser step. What a step computes (the loss) is the caller's.
"""

from __future__ import annotations

import contextlib
import platform
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

from .. import __version__
from ..core.console import progress
from ..core.precision import autocast_context, autocast_dtype
from .config import NonFiniteLossError
from .data import EpochTaggedSampler, loader_options
from .distributed import agree_across_ranks
from .schedule import StepSchedule

__all__ = ["cpu_model", "ddp_wrapped", "adamw", "grad_scaler", "train_loader", "StepTotals",
           "run_steps", "install_stop_handlers", "restore_handlers", "env_info",
           "optimizer_param_groups", "nonfinite_advice"]

# (model, images, targets) -> (loss, outputs): what one micro-batch computes
StepLoss = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, object]]


def cpu_model() -> str:
    """The CPU's model name (speeds and budgets are stated per CPU: the machines here vary)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), platform.processor())
    except OSError:
        return platform.processor() or platform.machine()


def env_info(device: torch.device) -> dict:
    """The software and machine a run ran on (``env.json``)."""
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
        "cpu": cpu_model(),
        "device": str(device),
        "cuda device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu threads": torch.get_num_threads(),
        "git": git,
    }


def install_stop_handlers() -> tuple[dict, list]:
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


def restore_handlers(previous: list) -> None:
    """Put back the signal handlers :func:`install_stop_handlers` replaced."""
    for sig, handler in previous:
        signal.signal(sig, handler)


class StepTotals:
    """What a pass over the loader sums: loss times images, images seen, optimiser steps taken, fp16 steps the
    scaler skipped."""

    def __init__(self) -> None:
        self.loss_sum, self.seen, self.steps, self.skipped = torch.zeros((), dtype=torch.float64), 0, 0, 0

    @property
    def loss(self) -> float:
        """The mean loss per image on this rank."""
        return self.loss_sum.item() / max(self.seen, 1)


def run_steps(
    model: torch.nn.Module, loader: Iterable, step_loss: StepLoss, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler, amp_dtype, device: torch.device,
    grad_clip: float, stop: dict, names: list[str], grad_accum: int = 1,
    observe: Callable[[object, torch.Tensor], None] | None = None, schedule: StepSchedule | None = None,
) -> StepTotals:  # fmt: skip
    """One pass over ``loader`` (batches of ``(images, targets, tags)``), or fewer steps where ``schedule`` ends
    inside it; returns the pass's totals.

    With ``grad_accum`` > 1 the gradients of that many consecutive batches are averaged before each optimiser
    step (the pass's last group may be shorter; it is averaged over its own length). Under DDP the ranks agree
    on every micro-batch whether to stop (:func:`agree_across_ranks`), so they leave the loop together.
    ``observe(outputs, targets)`` sees every micro-batch's outputs (metrics); ``names[tag]`` names a sample.
    ``schedule`` (:class:`~gctxseg.training.schedule.StepSchedule`) is asked before each optimiser step for its
    total and whether to end after it; the answer rides on the same agreement, rank 0's clock deciding.
    """
    model.train()
    totals = StepTotals()
    num_batches = len(loader)
    show = not dist.is_initialized() or dist.get_rank() == 0
    if schedule is not None:
        schedule.pass_started()
    for index, (images, targets, tags) in enumerate(progress(loader, "train", show=show)):
        group_start = index - index % grad_accum
        group_size = min(grad_accum, num_batches - group_start)
        last_in_group = index == group_start + group_size - 1
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        # under DDP only the group's last backward all-reduces the gradients
        accumulating = model.no_sync if not last_in_group and hasattr(model, "no_sync") else contextlib.nullcontext
        with accumulating(), autocast_context(device, amp_dtype):
            loss, outputs = step_loss(model, images, targets)
        finite = bool(torch.isfinite(loss))
        if schedule is not None and last_in_group:
            stop["plan"] = schedule.propose(epoch_end=index == num_batches - 1)
        if not agree_across_ranks(stop, finite, device):
            where = f"the batch {[names[int(t) % len(names)] for t in tags]}" if not finite else "another rank's batch"
            raise NonFiniteLossError(
                f"loss is {loss.item() if not finite else 'nan or inf'} on {where} at lr "
                f"{scheduler.get_last_lr()[0]:.3g}; try a lower --lr"
            )
        if schedule is not None and last_in_group:
            schedule.revise(*stop.pop("plan"))
        with accumulating():
            scaler.scale(loss / group_size).backward()
        if observe is not None:
            observe(outputs, targets)
        totals.loss_sum += loss.detach().double().cpu() * images.shape[0]
        totals.seen += images.shape[0]
        if not last_in_group:
            continue
        _optimizer_step(model, optimizer, scheduler, scaler, grad_clip, totals)
        totals.steps += 1
        ends = schedule is not None and schedule.step_taken()
        if stop["signal"] is not None or ends:  # agreed on this group's last micro-batch: every rank breaks here
            break
    return totals


def _optimizer_step(model, optimizer, scheduler, scaler, grad_clip: float, totals: StepTotals) -> None:
    """Clip, step (the fp16 scaler skips a step whose gradients overflowed), advance the schedule, zero."""
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scale = scaler.get_scale() if scaler.is_enabled() else 0.0
    scaler.step(optimizer)
    scaler.update()
    totals.skipped += int(scaler.is_enabled() and scaler.get_scale() < scale)
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def nonfinite_advice(first_epoch: bool, last_pt: Path, start: str | None) -> str:
    """What a NaN loss leaves to go back to, as the end of its message: ``last_pt`` once an epoch has finished;
    before that it holds the weights the run started from, which gave the NaN, so naming it as good would mislead.
    ``start``: the file the run started from (``--init-weights``, an installed start), None from scratch."""
    if not first_epoch:
        return f"; the last good checkpoint is {last_pt}"
    if start:
        return (f"; no epoch has finished, so {last_pt} holds only the start {start}, which gives this loss: try a "
                "lower --lr, or another start (--init-weights none trains from scratch)")
    return f"; no epoch has finished, so {last_pt} holds only the initial weights: start again with a lower --lr"


def optimizer_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups in timm's convention: no weight decay on 1-D parameters (norm weights, biases)
    nor on what the model lists in ``no_weight_decay()`` (relative-position bias tables); decay on the rest."""
    from timm.optim import param_groups_weight_decay

    exempt = getattr(model, "no_weight_decay", lambda: ())()
    return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=tuple(exempt))


# ---------------------------------------------------------------- what both loops build around the model


def ddp_wrapped(net: torch.nn.Module, device: torch.device, world: int) -> torch.nn.Module:
    """``net`` under DDP when there are several processes (else itself)."""
    if world <= 1:
        return net
    # gctx_unet keeps parameters that get no gradient (global-query generators of 1-block stages)
    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def adamw(raw_model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW over timm's weight-decay groups (:func:`optimizer_param_groups`), fused on GPUs and CPUs (one kernel
    per parameter instead of a dozen element-wise ops; the same update to rounding)."""
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(optimizer_param_groups(raw_model, weight_decay), lr=lr, fused=fused)


def grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler:
    """The loss scaler fp16 needs (disabled for bf16 and fp32)."""
    return torch.amp.GradScaler(device.type, enabled=autocast_dtype(amp, device) == torch.float16)


def train_loader(train_set: Dataset, shuffled: Sampler, batch_size: int, workers: int, device: torch.device,
                 what: str) -> tuple[EpochTaggedSampler, DataLoader]:
    """The epoch-tagged sampler over ``shuffled`` and its loader (whole batches only).

    Raises:
        ValueError: fewer samples per process than one batch (``what`` names the data in the line).
    """
    sampler = EpochTaggedSampler(shuffled, len(train_set))
    if len(sampler) < batch_size:
        raise ValueError(f"{what}: {len(train_set)} training images give {len(sampler)} per process, fewer than "
                         f"--batch-size {batch_size}; lower --batch-size")
    loader = DataLoader(train_set, batch_size, sampler=sampler, drop_last=True, **loader_options(workers, device))
    return sampler, loader
