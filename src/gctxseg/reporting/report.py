"""Run reports: curves, evaluation plots and the self-contained ``report.html`` of a run folder.

Everything here reads what other modules already wrote or computed (``log.json``, ``env.json``, PNGs, an
evaluation folder's ``summary.json``); it never runs a model, so it depends on nothing above it.
:func:`gctxseg.workflows.train_report.write_run_report` evaluates ``best.pt`` and then calls
:func:`write_html_report`; the figures themselves are drawn by :mod:`gctxseg.visualize.plots`.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.files import atomic_write_text
from ..core.records import JsonRecord
from ..runs.evalsummary import EvaluationSummary
from ..runs.runlog import EpochScores, RunLog, read_run_log

__all__ = [
    "RunSummary",
    "summarize_run",
    "format_table",
    "write_html_report",
]


@dataclass(frozen=True)
class RunSummary(JsonRecord):
    """A run folder's best epoch (by validation mean Dice) and last epoch, as :func:`summarize_run` reads them."""

    run: str
    model: str
    parameters: int
    epochs: int
    best_epoch: int  # counted from 0, as log.json's "epoch:N"
    best_val: EpochScores | None  # None: no epoch was validated
    last_val: EpochScores | None


def summarize_run(run_dir: str | Path) -> RunSummary:
    """Best epoch (by val mean Dice) and last epoch figures of a run folder."""
    log = read_run_log(run_dir)
    if not log.epochs:
        raise ValueError(f"{run_dir}/log.json: no epochs logged yet")
    best = log.best_epoch()
    return RunSummary(str(run_dir), log.train_parameters["model"], log.model.total_parameters, len(log.epochs),
                      best[0], best[2], log.epochs[-1][2])


# ---------------------------------------------------------------- evaluation plots


# ---------------------------------------------------------------- comparing runs


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


def _best_epoch_section(log: RunLog) -> str:
    if not log.epochs:
        return "<p>No epoch logged.</p>"
    epoch, _, val = log.best_epoch()
    if val is None:
        return "<p>No epoch validated.</p>"
    s = val.scores
    names = _class_names(log.train_parameters.get("mask values", {}))[1:] or [
        f"class {i + 1}" for i in range(len(s.dice))
    ]
    columns = (s.precision, s.recall, s.f1_score, s.dice, s.iou)
    table = [[name] + [column[i] for column in columns] for i, name in enumerate(names)]
    table.append(["mean", s.mean_precision, s.mean_recall, s.mean_f1_score, s.mean_dice, s.mean_iou])
    return (
        f"<p>Best epoch <b>{epoch + 1}</b> of {len(log.epochs)} (by validation mean Dice, images at the training "
        f"size): pixel accuracy {_fmt(s.pixel_accuracy)}, loss {_fmt(val.loss)}.</p>"
        + _html_table(["class", "Precision", "Recall", "F1 score", "Dice", "IoU"], table, "best-epoch")
    )


def _evaluation_section(run_dir: Path, eval_dir: Path) -> str:
    """The evaluation's heading (the weights it scored: a run's ``best.pt``, a cv fold's ``last.pt``), table and
    files."""
    summary = EvaluationSummary.from_json(json.loads((eval_dir / "summary.json").read_text()))
    unit = summary.distance_unit
    header = ["class", "Dice (pooled)", "IoU (pooled)", "Precision", "Recall", "mean image Dice",
              f"HD95 mean ({unit})", f"HD95 median ({unit})", f"NSD@{summary.nsd_tolerance} {unit}",
              "images with truth", "missed", "false alarms"]  # fmt: skip
    rows = [[c.name, c.dice, c.iou, c.precision, c.recall, c.mean_image_dice, c.hd95_mean, c.hd95_median, c.nsd_mean,
             c.images_with_truth, c.missed, c.false_alarms] for c in summary.per_class]  # fmt: skip
    rel = eval_dir.relative_to(run_dir) if eval_dir.is_relative_to(run_dir) else eval_dir
    weights = html.escape(Path(summary.weights).name if summary.weights else "predictions")
    parts = [
        f"<h2>Evaluation of {weights}</h2>",
        f"<p>{summary.images} images of <code>{html.escape(str(summary.data))}</code> at their original size, "
        f"weights <code>{weights}</code>, inference {summary.infer_mode}, "
        f"TTA {summary.tta}; pixel accuracy {_fmt(summary.pooled.pixel_accuracy)}, "
        f"mean Dice {_fmt(summary.pooled.mean_dice)}, "
        f"mean IoU {_fmt(summary.pooled.mean_iou)}, mean HD95 {_fmt(summary.mean_hd95)} {unit}, "
        f"mean NSD {_fmt(summary.mean_nsd)}.</p>",
        _html_table(header, rows, "evaluation"),
        '<p class="note">Dice/IoU/precision/recall (pooled) come from pixel counts summed over all images; HD95 '
        "and NSD are per-image values averaged over images where they are defined (see docs/evaluation.md). "
        "missed = truth present, nothing predicted; false alarms = predicted, no truth.</p>",
        f'<p>Files: <a href="{html.escape(str(rel / "metrics_per_image.csv"))}">metrics_per_image.csv</a>, '
        f'<a href="{html.escape(str(rel / "summary.json"))}">summary.json</a></p>',
    ]
    if summary.figures_not_drawn:
        parts.append(f'<p class="note">Figures not drawn: {html.escape(summary.figures_not_drawn)}</p>')
    for name, alt in (("confusion_matrix.png", "confusion matrix"), ("dice_histogram.png", "Dice histogram")):
        if (eval_dir / name).is_file():
            parts.append(_img(eval_dir / name, alt))
    parts.append(_agreement_section(summary, eval_dir, rel))
    for name, title in (("worst_cases.png", "Worst cases"), ("best_cases.png", "Best cases")):
        if (eval_dir / name).is_file():
            parts.append(f"<h3>{title} (by image mean Dice)</h3>" + _img(eval_dir / name, title))
    return "\n".join(parts)


def _agreement_section(summary: EvaluationSummary, eval_dir: Path, rel: Path) -> str:
    """True vs predicted amounts (gctxseg.clinical.agreement): table, Bland-Altman and scatter plots."""
    if not summary.agreement:
        return ""
    header = ["class", "per", "n", "unit", "mean true", "mean predicted", "mean absolute error", "bias",
              "limits of agreement (95%)"]  # fmt: skip
    rows = [[a.class_name, a.level, a.n, a.unit, a.mean_truth, a.mean_predicted, a.mean_absolute_error, a.bias,
             " to ".join(_fmt(v) for v in a.limits_of_agreement)] for a in summary.agreement]  # fmt: skip
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
        eval_dir: an evaluation folder written by :func:`gctxseg.evaluation.evaluate.evaluate_folder` (skipped if None
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
    log = read_run_log(run_dir)
    env = json.loads((run_dir / "env.json").read_text()) if (run_dir / "env.json").is_file() else {}
    params, model = log.train_parameters, log.model
    size = params.get("input size", ["?", "?"])
    sections = [
        f"<h1>gctxseg run {html.escape(run_dir.name)}: {html.escape(str(params.get('model', '?')))}</h1>",
        "<h2>Run parameters</h2>",
        _html_table(["parameter", "value"], [[k, json.dumps(v) if isinstance(v, (dict, list)) else v]
                                             for k, v in params.items()], "parameters"),
        _html_table(["environment", "value"], [[k, v] for k, v in env.items()], "environment") if env else "",
        "<h2>Model</h2>",
        _html_table(["", "value"], [
            ["parameters", model.total_parameters],
            [f"G multiply-adds at {size[0]}x{size[1]}", (model.flops or 0) / 1e9],
        ], "model"),
        f'<p class="note">{html.escape(str(model.flops_note))}</p>',
        "<h2>Training curves</h2>",
        _img(run_dir / "curves.png", "training curves") if (run_dir / "curves.png").is_file() else "<p>none</p>",
        "<h2>Best epoch (validation, per class)</h2>",
        _best_epoch_section(log),
    ]
    if eval_dir is not None and (Path(eval_dir) / "summary.json").is_file():
        sections += [_evaluation_section(run_dir, Path(eval_dir))]
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
