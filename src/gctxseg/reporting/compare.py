"""Several runs side by side: best validation figures, size and the inference speed measured now."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..core.outputs import check_output_file
from ..inference.predictor import Predictor
from ..runs.runlog import RunLog, read_log_json
from ..visualize.plots import (
    is_gctxseg_plot,
    plot_compare_curves,
)
from .report import RunSummary, format_table, summarize_run

__all__ = ["measure_throughput", "compare_runs"]


@torch.no_grad()
def measure_throughput(predictor: Predictor, batch: int = 1, min_seconds: float = 1.0, min_repeats: int = 3) -> float:
    """Forward passes per second of the model alone on random inputs at the training size (images/s).

    One warm-up pass, then at least ``min_repeats`` timed passes and ``min_seconds``. Pre- and
    post-processing (reading, resizing, TTA) are not included; on a shared CPU the figure is noisy.
    """
    x = torch.randn(batch, predictor.channels, *predictor.base_size, device=predictor.device)
    sync = torch.cuda.synchronize if predictor.device.type == "cuda" else (lambda: None)
    predictor.batch_probabilities(x)  # warm-up
    sync()
    repeats, start = 0, time.perf_counter()
    while repeats < min_repeats or time.perf_counter() - start < min_seconds:
        predictor.batch_probabilities(x)
        sync()
        repeats += 1
    return batch * repeats / (time.perf_counter() - start)



def _run_row(label: str, summary: RunSummary, log: dict, predictor: Predictor, timing_seconds: float) -> dict:
    """One run's row: its best validation figures (``summary``: :func:`summarize_run`), size and the inference
    speed measured now."""
    best = summary.best_val.scores if summary.best_val is not None else None
    return {
        "run": label,
        "model": summary.model,
        "best epoch": summary.best_epoch + 1,
        "epochs": summary.epochs,
        "val mean dice": best.mean_dice if best else None,
        "val mean iou": best.mean_iou if best else None,
        "val pixel acc": best.pixel_accuracy if best else None,
        "params (M)": summary.parameters / 1e6,
        "G mult-adds": (RunLog.from_json(log).model.flops or 0) / 1e9,
        "input": "x".join(str(s) for s in predictor.base_size),
        "images/s": measure_throughput(predictor, min_seconds=timing_seconds),
    }  # fmt: skip


def compare_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path | None = "compare.png",
    device: str = "auto",
    amp: str = "off",
    timing_seconds: float = 1.0,
    *,
    force: bool = False,
) -> tuple[list[dict], str]:
    """Best validation figures, size and measured inference speed of several runs side by side.

    Images/s is measured now, on this machine, with :func:`measure_throughput` (batch 1, the run's training
    size, no TTA), so every run is timed under the same conditions; it is not read from the logs.

    Args:
        run_dirs: run folders (with ``log.json`` and ``best.pt`` or ``last.pt``).
        out: PNG of the runs' curves together (None = no plot).
        device: where to time inference.
        amp: precision of the timing (default fp32).
        timing_seconds: how long to time each run (at least 3 passes).
        force: replace an existing ``out`` that is not a plot gctxseg drew (never a file of the runs compared).

    Returns:
        the rows (one dict per run) and the same as a printable table.

    Raises:
        ValueError: a folder without ``log.json`` or checkpoint; an ``out`` that is a file of the runs, or an
            existing file that is not a gctxseg plot (:func:`gctxseg.core.outputs.check_output_file`).
    """
    if out is not None:  # before any run is read: a wrong --out costs nothing
        runs_files = [f for d in map(Path, run_dirs) if d.is_dir() for f in d.iterdir()]
        check_output_file(out, "compare", inputs=runs_files, suffix=".png", is_own=is_gctxseg_plot, force=force)
    rows, logs = [], {}
    for run_dir in map(Path, run_dirs):
        if not (run_dir / "log.json").is_file():
            raise ValueError(f"{run_dir}: no log.json; pass run folders written by 'gctxseg train'")
        summary = summarize_run(run_dir)
        weights = run_dir / "best.pt" if (run_dir / "best.pt").is_file() else run_dir / "last.pt"
        predictor = Predictor(weights, device, amp)
        label = run_dir.name if run_dir.name not in logs else str(run_dir)
        logs[label] = read_log_json(run_dir)
        rows.append(_run_row(label, summary, logs[label], predictor, timing_seconds))
    if out is not None and logs:
        plot_compare_curves(logs, out)
    device_name = str(predictor.device) if rows else device
    table = format_table(rows) + (
        f"\nimages/s: forward passes at batch 1 on {device_name} ({torch.get_num_threads()} threads), measured now"
    )
    return rows, table
