"""Run reports: training curves and run summaries read back from a run folder's ``log.json``."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["epoch_rows", "plot_curves", "summarize_run"]


def epoch_rows(log: dict) -> list[tuple[int, dict, dict]]:
    """``(epoch, train info, val info)`` for every ``"epoch:N"`` entry of a seed-format log."""
    rows = []
    for key, entry in log.items():
        if key.startswith("epoch:"):
            rows.append((int(key.split(":")[1]), entry["train log:"]["info"], entry["val log:"]["info"]))
    return sorted(rows, key=lambda r: r[0])


def plot_curves(log: dict, path: str | Path) -> None:
    """Loss, learning rate, mean Dice and mean IoU per epoch, train vs val, in one PNG."""
    rows = epoch_rows(log)
    epochs = [e for e, _, _ in rows]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = [("loss", "loss"), ("lr", "learning rate"), ("mean dice", "mean Dice"), ("mean iou", "mean IoU")]
    for ax, (key, title) in zip(axes.flat, panels):
        for split, idx, style in (("train", 1, "-"), ("val", 2, "--")):
            values = [r[idx].get(key) for r in rows]
            values = [float("nan") if v is None else v for v in values]
            if key == "lr" and split == "val":
                continue  # one learning rate per epoch
            ax.plot(epochs, values, style, marker="o", markersize=3, label=split)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if rows and any(r[1].get("lr") for r in rows):
        axes[0, 1].set_yscale("log")
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def summarize_run(run_dir: str | Path) -> dict:
    """Best epoch (by val mean Dice) and last epoch figures of a run folder."""
    log = json.loads((Path(run_dir) / "log.json").read_text())
    rows = epoch_rows(log)
    if not rows:
        raise ValueError(f"{run_dir}/log.json: no epochs logged yet")
    best = max(rows, key=lambda r: -1.0 if r[2].get("mean dice") is None else r[2]["mean dice"])
    return {
        "run": str(run_dir),
        "model": log["train parameters"]["model"],
        "parameters": log["model"]["total parameters"],
        "epochs": len(rows),
        "best epoch": best[0],
        "best val": best[2],
        "last val": rows[-1][2],
    }
