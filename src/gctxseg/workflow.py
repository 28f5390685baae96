"""What the commands do end to end, above the modules that do each part: train, then report.

Imports flow one way: ``cli`` -> ``workflow`` -> ``training`` / ``evaluate`` / ``predict`` / ``export`` /
``report`` -> ``checkpoint`` / ``models`` / ``data`` / ``metrics``; the training engine never imports the
evaluation that reports on its result.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Collection
from pathlib import Path

import torch.distributed as dist

from .training import TrainConfig, train

__all__ = ["train_and_report", "write_report_or_warn"]


def write_report_or_warn(run_dir: str | Path, device: str = "auto", amp: str = "auto") -> Path | None:
    """Evaluate ``best.pt`` on the run's validation set and write ``report.html``; a failure only warns.

    Training has succeeded by then: any problem with the report (a missing browser font, a disk hiccup) is one
    line on stderr naming the command that retries it, never a failed run.
    """
    from .evaluate import write_run_report

    try:
        path = write_run_report(run_dir, device=device, amp=amp)
    except Exception as err:  # any report problem must not fail a finished training run
        print(
            f"warning: report.html not written ({type(err).__name__}: {err}); retry with: gctxseg report {run_dir}",
            file=sys.stderr,
        )
        return None
    print(f"report: {path}")
    return path


def train_and_report(cfg: TrainConfig, *, given: Collection[str] | None = None) -> Path:
    """:func:`gctxseg.training.train`, then (rank 0 only) ``report.html`` of the best weights; the run folder."""
    run_dir = train(cfg, given=given)
    if not dist.is_initialized() or dist.get_rank() == 0:
        write_report_or_warn(run_dir, cfg.device, _trained_amp(run_dir, cfg.amp))
    return run_dir


def _trained_amp(run_dir: Path, amp: str) -> str:
    """The ``--amp`` setting of the precision the run trained in (a resumed run keeps its own), from its log."""
    try:
        trained = json.loads((run_dir / "log.json").read_text())["train parameters"]["amp"]
    except (OSError, ValueError, KeyError):
        return amp
    return {"fp32": "off", "bfloat16": "bf16", "float16": "fp16"}.get(trained, amp)
