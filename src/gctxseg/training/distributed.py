"""PyTorch DDP under ``torchrun``: the process's rank, and the few agreements every rank must reach together."""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..core.runtime import resolve_device

__all__ = ["Distributed", "setup_distributed", "agree_across_ranks", "broadcast_buffers", "bare"]


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Distributed(), resolve_device(device_name)
    ddp = Distributed(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    device = resolve_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(ddp.local_rank)
        device = torch.device("cuda", ddp.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        # torn down before the interpreter's own teardown: a process group still alive then can abort the process
        # ("terminate called without an active exception", exit -6) after a stop that was clean
        atexit.register(_destroy_process_group)
    return ddp, device


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()



def agree_across_ranks(stop: dict, finite: bool, device: torch.device) -> bool:
    """Make every rank see the same stop signal, non-finite loss and schedule; returns whether every rank's loss is
    finite.

    A SIGTERM (or a NaN) seen by one rank only would let it leave the loop while the others block in the next
    gradient all-reduce until the timeout: one all-reduce (max) of ``[signal, non-finite, total, end]`` per
    micro-batch, before its backward, lets all ranks stop at the same step. Sets ``stop["signal"]`` to the agreed
    signal. ``stop["plan"]``, where the caller set it (a step schedule's ``(total, end now)``,
    :class:`~gctxseg.training.schedule.StepSchedule`), becomes rank 0's: its clock decides for every rank.
    Without DDP it only reads the local state.
    """
    if not dist.is_initialized():
        return finite
    plan = stop.get("plan")
    ours = plan if plan is not None and dist.get_rank() == 0 else (0, 0)
    flags = torch.tensor([stop["signal"] or 0, 0 if finite else 1, *ours], dtype=torch.int64, device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    signal_number, any_non_finite, total, end = flags.tolist()
    stop["signal"] = signal_number or None
    if plan is not None:
        stop["plan"] = (total, end)
    return not any_non_finite


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank, as the DDP wrapper would do in its forward.

    Validation runs the bare model, so a rank with an empty shard (fewer images than ranks) never calls a
    forward whose collective the others wait in; this explicit broadcast is one that every rank reaches.
    """
    if dist.is_initialized():
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def bare(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (a compiled module passes attribute lookups on to its original)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


