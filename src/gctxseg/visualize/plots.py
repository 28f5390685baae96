"""Figures as marked PNGs: training curves, confusion matrix, Dice histogram, cases, compared runs.

The one place that picks matplotlib's backend (``Agg``: no display on training machines).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # no display on training machines; the only place gctxseg picks the backend
import matplotlib.pyplot as plt  # noqa: E402

from ..core.files import atomic_write_bytes  # noqa: E402
from ..runs.runlog import EpochScores, epoch_rows  # noqa: E402
from .colors import overlay, to_uint8_rgb  # noqa: E402

__all__ = ["PLOT_SOFTWARE", "is_gctxseg_plot", "plot_cases", "plot_compare_curves",
           "plot_confusion_matrix", "plot_curves", "plot_dice_histogram", "save_figure", "warm_up_figures"]


# The figures drawn after every run and cv fold (curves, cases, histogram) keep fixed margins rather than a layout
# engine's: tight_layout draws a figure once more to measure its labels, about half of drawing it
# (docs/time-budget.md, rule 22).

# the curves drawn from an epoch's scores: title -> its figure (None where the epoch was not validated)
_CURVES = {
    "loss": lambda s: s.loss,
    "learning rate": lambda s: s.lr,
    "mean Dice": lambda s: s.scores.mean_dice,
    "mean IoU": lambda s: s.scores.mean_iou,
}


def _curve(scores: list[EpochScores | None], title: str) -> list[float]:
    """One curve's figures per epoch, NaN (a gap) where an epoch was not validated or the figure is undefined."""
    values = [None if s is None else _CURVES[title](s) for s in scores]
    return [math.nan if v is None else v for v in values]



def warm_up_figures() -> None:
    """Draw a tiny figure in memory: the first figure a process draws loads fonts and sets the renderer up, a cost a
    timed draw should not carry (a budgeted run warms up before its clock measures what comes after its last step)."""
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1], label="0")
    ax.legend()
    fig.canvas.draw()
    plt.close(fig)


def plot_curves(log: dict, path: str | Path) -> None:
    """Loss, learning rate, mean Dice and mean IoU per epoch, train vs val, in one PNG."""
    rows = epoch_rows(log)
    epochs = [e for e, _, _ in rows]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, title in zip(axes.flat, _CURVES):
        for split, idx, style in (("train", 1, "-"), ("val", 2, "--")):
            if title == "learning rate" and split == "val":
                continue  # one learning rate per epoch
            ax.plot(epochs, _curve([r[idx] for r in rows], title), style, marker="o", markersize=3, label=split)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if rows and any(r[1].lr for r in rows):
        axes[0, 1].set_yscale("log")
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.08, top=0.95, wspace=0.22, hspace=0.32)
    save_figure(fig, path)



# the PNG text chunk every figure gctxseg draws carries: how `compare --out` knows a plot it may replace
PLOT_SOFTWARE = "gctxseg"



def save_figure(fig, path: str | Path, dpi: int = 100) -> None:
    """``fig`` as a PNG marked as gctxseg's (:data:`PLOT_SOFTWARE`), written atomically (a temp file of a unique
    name, then renamed: never a file of the user's beside it)."""
    buffer = io.BytesIO()
    # zlib level 3: smaller than PIL's default (6) on these figures and faster to write
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": PLOT_SOFTWARE}, pil_kwargs={"compress_level": 3})
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())



def is_gctxseg_plot(path: str | Path) -> bool:
    """Whether ``path`` is a PNG that gctxseg drew (its ``Software`` text chunk)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.text.get("Software") == PLOT_SOFTWARE
    except (OSError, ValueError):
        return False



def plot_confusion_matrix(
    matrix: np.ndarray | Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path
) -> None:
    """Confusion matrix normalised per true class (rows sum to 1), pixel counts in each cell, as PNG.

    Args:
        matrix: ``K x K`` pixel counts, rows = truth, columns = prediction.
        class_names: K labels.
        path: PNG to write.
    """
    counts = np.asarray(matrix, dtype=np.float64)
    rows = counts.sum(1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.6 * k + 2.5, 1.4 * k + 1.8))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{norm[i, j]:.3f}\n({int(counts[i, j])})", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), class_names, rotation=30, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title("confusion matrix (row-normalised, pixels)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    width, height = fig.get_size_inches()  # margins in inches: the labels' room is fixed, their share is not
    fig.subplots_adjust(left=1.2 / width, right=1 - 0.6 / width, bottom=1.15 / height, top=1 - 0.4 / height)
    save_figure(fig, path)



def plot_dice_histogram(dice_per_class: Mapping[str, Sequence[float]], path: str | Path) -> None:
    """Histogram of per-image Dice, one panel per class; NaN (class absent from truth and prediction) left out."""
    names = list(dice_per_class)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4 * max(1, len(names)), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = [v for v in dice_per_class[name] if not math.isnan(v)]
        ax.hist(values, bins=np.linspace(0, 1, 21), color="tab:blue", edgecolor="white")
        left_out = len(dice_per_class[name]) - len(values)
        ax.set_title(f"{name}: {len(values)} images" + (f" ({left_out} empty, left out)" if left_out else ""),
                     fontsize=9)
        ax.set_xlabel("Dice per image")
        ax.set_xlim(0, 1)
    axes[0][0].set_ylabel("images")
    fig.subplots_adjust(left=0.6 / fig.get_figwidth(), right=0.98, bottom=0.16, top=0.9, wspace=0.25)
    save_figure(fig, path)



def plot_cases(
    cases: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: str | Path, title: str = ""
) -> None:
    """A grid of cases, one row each: image | truth overlay | prediction overlay.

    Args:
        cases: ``(label, image H x W x C float in [0, 1] or uint8, truth H x W indices, prediction H x W indices)``.
        path: PNG to write.
        title: figure title.
    """
    n = max(1, len(cases))
    fig, axes = plt.subplots(n, 3, figsize=(9, 2.9 * n + 0.4), squeeze=False)
    for row, (label, image, truth, pred) in zip(axes, cases):
        rgb = to_uint8_rgb(image)
        tiles = (rgb, overlay(rgb, truth), overlay(rgb, pred))
        for ax, tile, name in zip(row, tiles, ("image", "truth", "prediction")):
            ax.imshow(tile, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label}  {name}" if name == "image" else name, fontsize=8)
    if not cases:
        for ax in axes[0]:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    height = 2.9 * n + 0.4  # inches: the room a title's text takes is fixed, its share of the figure is not
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.1 / height, top=1 - (0.7 if title else 0.3) / height,
                        wspace=0.04, hspace=0.3 / 2.6)
    save_figure(fig, path)



def plot_compare_curves(logs: Mapping[str, dict], path: str | Path) -> None:
    """Val mean Dice and train/val loss per epoch of several runs (``label -> log.json``), in one PNG."""
    fig, (ax_dice, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (label, log) in enumerate(logs.items()):
        rows = epoch_rows(log)
        epochs = [e for e, _, _ in rows]
        colour = f"C{i % 10}"
        ax_dice.plot(epochs, _curve([r[2] for r in rows], "mean Dice"), "-o", ms=3, color=colour, label=label)
        ax_loss.plot(epochs, _curve([r[1] for r in rows], "loss"), "-", color=colour, label=f"{label} train")
        ax_loss.plot(epochs, _curve([r[2] for r in rows], "loss"), "--o", ms=2, color=colour, label=f"{label} val")
    ax_dice.set_title("val mean Dice")
    ax_loss.set_title("loss (train solid, val dashed)")
    for ax in (ax_dice, ax_loss):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
