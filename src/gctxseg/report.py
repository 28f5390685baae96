"""Run reports: curves, evaluation plots and the self-contained ``report.html`` of a run folder.

Everything here reads what other modules already wrote or computed (``log.json``, ``env.json``, PNGs, an
evaluation folder's ``summary.json``); it never runs a model, so it depends on nothing above it.
:func:`gctxseg.evaluate.write_run_report` evaluates ``best.pt`` and then calls :func:`write_html_report`.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

from .utils import atomic_write_bytes, atomic_write_text  # noqa: E402
from .visualize import overlay, to_uint8_rgb  # noqa: E402

__all__ = [
    "epoch_rows",
    "plot_curves",
    "summarize_run",
    "plot_confusion_matrix",
    "plot_dice_histogram",
    "plot_cases",
    "plot_compare_curves",
    "format_table",
    "write_html_report",
]


def epoch_rows(log: dict) -> list[tuple[int, dict, dict]]:
    """``(epoch, train info, val info)`` for every ``"epoch:N"`` entry of a seed-format log (val info ``{}`` on an
    epoch that was not validated: a planned ``val_every`` > 1)."""
    rows = []
    for key, entry in log.items():
        if key.startswith("epoch:"):
            val = entry.get("val log:", {}).get("info", {})
            rows.append((int(key.split(":")[1]), entry["train log:"]["info"], val))
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
    _save_figure(fig, path)


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


# the PNG text chunk every figure gctxseg draws carries: how `compare --out` knows a plot it may replace
PLOT_SOFTWARE = "gctxseg"


def _save_figure(fig, path: str | Path, dpi: int = 100) -> None:
    """``fig`` as a PNG marked as gctxseg's (:data:`PLOT_SOFTWARE`), written atomically (a temp file of a unique
    name, then renamed: never a file of the user's beside it)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": PLOT_SOFTWARE})
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


# ---------------------------------------------------------------- evaluation plots


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
    fig.tight_layout()
    _save_figure(fig, path)


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
    fig.tight_layout()
    _save_figure(fig, path)


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
    fig.tight_layout()
    _save_figure(fig, path)


# ---------------------------------------------------------------- comparing runs


def plot_compare_curves(logs: Mapping[str, dict], path: str | Path) -> None:
    """Val mean Dice and train/val loss per epoch of several runs (``label -> log.json``), in one PNG."""
    fig, (ax_dice, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (label, log) in enumerate(logs.items()):
        rows = epoch_rows(log)
        epochs = [e for e, _, _ in rows]
        colour = f"C{i % 10}"
        dice = [r[2].get("mean dice") for r in rows]
        ax_dice.plot(epochs, [math.nan if v is None else v for v in dice], "-o", ms=3, color=colour, label=label)
        ax_loss.plot(epochs, [r[1].get("loss") for r in rows], "-", color=colour, label=f"{label} train")
        val_loss = [r[2].get("loss") for r in rows]  # None on epochs that were not validated
        ax_loss.plot(epochs, [math.nan if v is None else v for v in val_loss], "--o", ms=2, color=colour,
                     label=f"{label} val")
    ax_dice.set_title("val mean Dice")
    ax_loss.set_title("loss (train solid, val dashed)")
    for ax in (ax_dice, ax_loss):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, path)


def _fmt(value: object, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> str:
    """Plain-text table of ``rows`` (dicts), one column per key, right-aligned numbers."""
    columns = list(columns or (rows[0].keys() if rows else []))
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(columns, widths)))]
    for row in cells:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


# ---------------------------------------------------------------- report.html

_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #ddd; margin: 6px 0; }
.note { color: #666; font-size: 0.85em; }
"""

# sets <body data-images-loaded="loaded/total"> once the page has loaded: a headless browser can check it
_IMAGES_LOADED_JS = (
    "window.addEventListener('load', () => { const imgs = [...document.images]; "
    "document.body.dataset.imagesLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length + '/' + "
    "imgs.length; });"
)


def _img(path: Path, alt: str) -> str:
    """An <img> with the PNG embedded as a data URI, so report.html is one self-contained file."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html_table(header: Sequence[str], rows: Sequence[Sequence[object]], table_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _class_names(mask_values: Mapping[str, int]) -> list[str]:
    return [f"class {i} (value {v})" for v, i in sorted(mask_values.items(), key=lambda kv: kv[1])]


def _best_epoch_section(log: dict) -> str:
    rows = epoch_rows(log)
    if not rows:
        return "<p>No epoch logged.</p>"
    epoch, _, val = max(rows, key=lambda r: -1.0 if r[2].get("mean dice") is None else r[2]["mean dice"])
    names = _class_names(log["train parameters"].get("mask values", {}))[1:] or [
        f"class {i + 1}" for i in range(len(val["Dice"]))
    ]
    keys = ("Precision", "Recall", "F1 score", "Dice", "IoU")
    table = [[name] + [val[k][i] for k in keys] for i, name in enumerate(names)]
    means = ("mean precision", "mean recall", "mean f1 score", "mean dice", "mean iou")
    table.append(["mean"] + [val[k] for k in means])
    return (
        f"<p>Best epoch <b>{epoch + 1}</b> of {len(rows)} (by validation mean Dice, images at the training size): "
        f"pixel accuracy {_fmt(val.get('pixel accuracy'))}, loss {_fmt(val.get('loss'))}.</p>"
        + _html_table(["class", *keys], table, "best-epoch")
    )


def _evaluation_section(run_dir: Path, eval_dir: Path) -> str:
    summary = json.loads((eval_dir / "summary.json").read_text())
    unit = summary.get("distance unit", "px")
    header = ["class", "Dice (pooled)", "IoU (pooled)", "Precision", "Recall", "mean image Dice",
              f"HD95 mean ({unit})", f"HD95 median ({unit})", f"NSD@{summary['nsd tolerance']} {unit}",
              "images with truth", "missed", "false alarms"]  # fmt: skip
    rows = []
    for c in summary["per class"]:
        rows.append([c["name"], c["dice"], c["iou"], c["precision"], c["recall"], c["mean image dice"],
                     c["hd95 mean"], c["hd95 median"], c["nsd mean"], c["images with truth"],
                     c["missed"], c["false alarms"]])  # fmt: skip
    rel = eval_dir.relative_to(run_dir) if eval_dir.is_relative_to(run_dir) else eval_dir
    parts = [
        f"<p>{summary['images']} images of <code>{html.escape(str(summary['data']))}</code> at their original size, "
        f"weights <code>{html.escape(Path(summary['weights']).name)}</code>, inference {summary['infer mode']}, "
        f"TTA {summary['tta']}; pixel accuracy {_fmt(summary['pixel accuracy'])}, "
        f"mean Dice {_fmt(summary['mean dice'])}, "
        f"mean IoU {_fmt(summary['mean iou'])}, mean HD95 {_fmt(summary['mean hd95'])} {unit}, "
        f"mean NSD {_fmt(summary['mean nsd'])}.</p>",
        _html_table(header, rows, "evaluation"),
        '<p class="note">Dice/IoU/precision/recall (pooled) come from pixel counts summed over all images; HD95 '
        "and NSD are per-image values averaged over images where they are defined (see docs/evaluation.md). "
        "missed = truth present, nothing predicted; false alarms = predicted, no truth.</p>",
        f'<p>Files: <a href="{html.escape(str(rel / "metrics_per_image.csv"))}">metrics_per_image.csv</a>, '
        f'<a href="{html.escape(str(rel / "summary.json"))}">summary.json</a></p>',
    ]
    for name, alt in (("confusion_matrix.png", "confusion matrix"), ("dice_histogram.png", "Dice histogram")):
        if (eval_dir / name).is_file():
            parts.append(_img(eval_dir / name, alt))
    parts.append(_agreement_section(summary, eval_dir, rel))
    for name, title in (("worst_cases.png", "Worst cases"), ("best_cases.png", "Best cases")):
        if (eval_dir / name).is_file():
            parts.append(f"<h3>{title} (by image mean Dice)</h3>" + _img(eval_dir / name, title))
    return "\n".join(parts)


def _agreement_section(summary: dict, eval_dir: Path, rel: Path) -> str:
    """True vs predicted amounts (gctxseg.agreement): table, Bland-Altman and scatter plots."""
    agreement = summary.get("agreement") or []
    if not agreement:
        return ""
    header = ["class", "per", "n", "unit", "mean true", "mean predicted", "mean absolute error", "bias",
              "limits of agreement (95%)"]  # fmt: skip
    rows = [[a["class"], a["level"], a["n"], a["unit"], a["mean truth"], a["mean predicted"],
             a["mean absolute error"], a["bias"], " to ".join(_fmt(v) for v in a["limits of agreement"])]
            for a in agreement]  # fmt: skip
    parts = ["<h3>Amounts: predicted vs true</h3>", _html_table(header, rows, "agreement"),
             '<p class="note">Area per image (mm² where the pixel spacing is known, else pixels), volume per '
             "volume (mm³, else voxels); difference = predicted - true; limits of agreement = bias ± 1.96 SD. "
             f'Per case: <a href="{html.escape(str(rel / "amounts_per_image.csv"))}">amounts_per_image.csv</a>.</p>']
    for name, alt in (("bland_altman.png", "Bland-Altman"), ("amount_scatter.png", "predicted vs true")):
        if (eval_dir / name).is_file():
            parts.append(_img(eval_dir / name, alt))
    return "\n".join(parts)


def write_html_report(run_dir: str | Path, eval_dir: str | Path | None = None, out: str | Path | None = None) -> Path:
    """Write ``report.html``: parameters, model size and FLOPs, curves, best epoch, evaluation, cases.

    Images are embedded as data URIs, so the file can be mailed or archived alone; the per-image CSV and
    ``summary.json`` are linked relative to the run folder.

    Args:
        run_dir: a run folder with ``log.json`` (``env.json``, ``curves.png``, ``samples/`` when present).
        eval_dir: an evaluation folder written by :func:`gctxseg.evaluate.evaluate_folder` (skipped if None
            or without ``summary.json``).
        out: where to write (default ``run_dir/report.html``).

    Returns:
        the path written.

    Raises:
        ValueError: ``run_dir`` has no ``log.json``.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "log.json").is_file():
        raise ValueError(f"{run_dir}: no log.json; pass a run folder written by 'gctxseg train'")
    log = json.loads((run_dir / "log.json").read_text())
    env = json.loads((run_dir / "env.json").read_text()) if (run_dir / "env.json").is_file() else {}
    params, model = log.get("train parameters", {}), log.get("model", {})
    size = params.get("input size", ["?", "?"])
    sections = [
        f"<h1>gctxseg run {html.escape(run_dir.name)}: {html.escape(str(params.get('model', '?')))}</h1>",
        "<h2>Run parameters</h2>",
        _html_table(["parameter", "value"], [[k, json.dumps(v) if isinstance(v, (dict, list)) else v]
                                             for k, v in params.items()], "parameters"),
        _html_table(["environment", "value"], [[k, v] for k, v in env.items()], "environment") if env else "",
        "<h2>Model</h2>",
        _html_table(["", "value"], [
            ["parameters", model.get("total parameters")],
            [f"G multiply-adds at {size[0]}x{size[1]}", (model.get("flops") or 0) / 1e9],
        ], "model"),
        f'<p class="note">{html.escape(str(model.get("flops note", "")))}</p>',
        "<h2>Training curves</h2>",
        _img(run_dir / "curves.png", "training curves") if (run_dir / "curves.png").is_file() else "<p>none</p>",
        "<h2>Best epoch (validation, per class)</h2>",
        _best_epoch_section(log),
    ]
    if eval_dir is not None and (Path(eval_dir) / "summary.json").is_file():
        sections += ["<h2>Evaluation of best.pt</h2>", _evaluation_section(run_dir, Path(eval_dir))]
    samples = run_dir / "samples" / "val_predictions.png"
    if samples.is_file():
        sections += ["<h2>Validation samples (image | truth | prediction)</h2>", _img(samples, "samples")]
    if (run_dir / "preview.png").is_file():
        sections += ["<h2>Training data preview</h2>", _img(run_dir / "preview.png", "preview")]
    page = (
        f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>gctxseg {html.escape(run_dir.name)}"
        f"</title><style>{_CSS}</style></head>\n<body>\n" + "\n".join(s for s in sections if s)
        + f"\n<script>{_IMAGES_LOADED_JS}</script>\n</body></html>\n"
    )
    out = Path(out) if out is not None else run_dir / "report.html"
    atomic_write_text(out, page)
    return out
