"""One configuration's K-fold cross-validation by patient, out-of-fold scoring, post-processing chosen on it.

``gctxseg cv`` (:mod:`gctxseg.crossval.configurations`) runs this for each configuration into ``CV/<model>`` and chooses
among them. A configuration's folder holds ``fold_0`` ... ``fold_{K-1}`` (ordinary run folders, trained one
after another here; any fold can also be trained on its own machine or under torchrun with ``gctxseg train
--folds K --fold k --results CV --name fold_k``), then

- ``oof/NAME.npz``: each held-out image's class probabilities from the fold that did not train on it
  (uint8, probability x 255, ``K x H x W`` at the image's size), written as the fold ends
  (:mod:`gctxseg.crossval.oof`) — what the summary scores and configuration ensembles average;
Scores use each fold's final weights (``last.pt``): ``best.pt`` is chosen on the held-out images themselves.

- ``postprocessing.json``: per class the connected-component rule that raised the pooled out-of-fold Dice
  (or none), applied by ``gctxseg predict --weights CV``;
- ``cv_summary.json`` and ``cv_report.html``: per fold and class Dice / IoU / HD95, mean ± sd over folds, and
  the pooled out-of-fold score before and after post-processing.
"""

from __future__ import annotations

import html
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..core.files import atomic_write_json, atomic_write_text
from ..core.records import JsonRecord, key, optional
from ..data import MaskValueMap
from ..evaluation.evaluate import score_labels
from ..evaluation.image_scores import scored_image
from ..inference.postprocess import choose_postprocessing
from ..metrics import pool_image_scores, pooled_mean_dice
from ..reporting.report import write_html_report
from ..runs.checkpoint import load_checkpoint
from ..training import TrainConfig, train
from ..workflows.train_report import write_report_or_warn
from .oof import HeldOutPrediction, fold_scans, oof_probabilities

__all__ = ["CvSummary", "OutOfFoldSource", "fold_dice", "fold_finished", "train_fold", "write_fold_report",
           "summarize_cv", "oof_probabilities", "format_cv_summary"]


@dataclass(frozen=True)
class OutOfFoldSource(JsonRecord):
    """The folds whose out-of-fold arrays a summary read back, and those it predicted again."""

    from_arrays: list[int]
    predicted_again: list[int]


@dataclass(frozen=True)
class CvSummary(JsonRecord):
    """A configuration's ``cv_summary.json``: per fold and pooled out-of-fold scores (the metric blocks of
    :func:`gctxseg.metrics.pool_image_scores`: ``"dice"``, ``"iou"``, ``"hd95"``, ``"nsd"`` per foreground class),
    their mean and sd over folds, and the post-processing chosen on them. Read back from the file, an undefined
    score is None (JSON null)."""

    folds: int
    images: int
    classes: dict
    model: str
    per_fold: dict[str, dict]  # fold ("0", "1" ...) -> its pooled scores
    fold_mean: dict[str, list]  # metric -> per class (mean, sd) over folds
    pooled_out_of_fold: dict = key("pooled out-of-fold")
    postprocessing: dict = key("postprocessing")  # the rules and their evidence (PostProcessing.to_dict)
    pooled_out_of_fold_post_processed: dict = key("pooled out-of-fold post-processed")
    out_of_fold: OutOfFoldSource | None = optional("out-of-fold", OutOfFoldSource)  # older summaries lack it


def fold_finished(fold_dir: Path) -> bool:
    last = fold_dir / "last.pt"
    if not (fold_dir / "best.pt").is_file() or not last.is_file():
        return False
    ckpt = load_checkpoint(last, mmap=True)  # its epoch and config: the weights stay on disk
    return ckpt["epoch"] + 1 >= ckpt["config"]["epochs"]


def train_fold(cfg: TrainConfig, cv_dir: str | Path, fold: int,
               final_prediction: HeldOutPrediction | None = None) -> Path:
    """Train ``fold`` into ``cv_dir/fold_<fold>``: kept when finished, resumed when stopped, else trained.

    Its ``report.html`` is :func:`write_fold_report`'s, from the out-of-fold arrays written after it (under a time
    budget the fold trains until its own deadline: the cv keeps back what those arrays and the report took); with
    ``final_prediction`` its final validation predicts them (``train``'s)."""
    fold_dir = Path(cv_dir) / f"fold_{fold}"
    if fold_finished(fold_dir):
        print(f"fold {fold}: finished in {fold_dir}; kept")
        return fold_dir
    if (fold_dir / "last.pt").is_file():
        resumed = TrainConfig(resume=str(fold_dir / "last.pt"), device=cfg.device, workers=cfg.workers)
        return train(resumed, given={"device", "workers"}, final_prediction=final_prediction)
    return train(replace(cfg, fold=fold, results=str(cv_dir), name=f"fold_{fold}", exist_ok=True),
                 final_prediction=final_prediction)


def write_fold_report(cv_dir: str | Path, fold: int, oof: dict[str, dict], device: str = "auto",
                      amp: str = "auto", figures: bool = True) -> Path | None:
    """``fold_<fold>/report.html`` with its evaluation (``eval/``) scored from the fold's out-of-fold arrays
    (``oof``, as :func:`~gctxseg.crossval.oof.predict_fold_oof` returns them): the weights the cv scores
    (``last.pt``), predicted once. A fold of volume slices is evaluated as any run is (its ``best.pt``, predicted
    again). Without ``figures`` (a cv under a time budget) its scores and files are written, not its plots; the
    page says how to draw them. A failure only warns, as
    :func:`~gctxseg.workflows.train_report.write_report_or_warn`'s."""
    fold_dir = Path(cv_dir) / f"fold_{fold}"
    weights, ckpt, pairs = fold_scans(Path(cv_dir), fold)
    if not pairs or any(p.slice_index is not None for p in pairs) or any(p.name not in oof for p in pairs):
        return write_report_or_warn(fold_dir, device, amp)
    labels = {p.name: oof[p.name]["probs"].argmax(0) for p in pairs}
    try:
        skipped = None if figures else (f"a cv under a time budget spends its seconds training; gctxseg report "
                                        f"{fold_dir} evaluates best.pt and draws them")
        score_labels(labels, pairs, MaskValueMap.from_dict(ckpt["value_map"]), fold_dir / "eval",
                     weights=str(weights), out_owned=True, figures_skipped=skipped)
        path = write_html_report(fold_dir, fold_dir / "eval")
    except Exception as err:  # as a run's report: a finished fold never fails on it
        print(f"warning: {fold_dir / 'report.html'} not written ({type(err).__name__}: {err}); retry with: gctxseg "
              f"report {fold_dir}", file=sys.stderr)
        return None
    print(f"report: {path}")
    return path


def fold_dice(cv_dir: str | Path, fold: int, device: str = "auto", amp: str = "auto") -> float:
    """Mean foreground Dice, pooled over one fold's held-out images, of that fold's final weights (0 where no
    class is defined): the figure ``gctxseg cv``'s race compares after fold 0."""
    oof = oof_probabilities(cv_dir, device, amp, folds=[fold])
    names = sorted(oof)
    k = oof[names[0]]["probs"].shape[0]
    return pooled_mean_dice([oof[n]["probs"].argmax(0) for n in names], [oof[n]["target"] for n in names], k)


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    mean = float(np.mean(finite)) if finite else float("nan")
    return mean, (statistics.stdev(finite) if len(finite) > 1 else float("nan"))


def summarize_cv(cv_dir: str | Path, device: str = "auto", amp: str = "auto") -> CvSummary:
    """Out-of-fold scores of a CV folder, the post-processing chosen on them, written as JSON and HTML."""
    cv_dir = Path(cv_dir)
    oof = oof_probabilities(cv_dir, device, amp)
    first = load_checkpoint(next(iter(sorted(cv_dir.glob("fold_*/last.pt")))), mmap=True)  # classes, model name
    value_map = MaskValueMap.from_dict(first["value_map"])
    k = value_map.num_classes
    names = sorted(oof)
    preds = [oof[n]["probs"].argmax(0) for n in names]
    targets = [oof[n]["target"] for n in names]
    scores = [scored_image(p, t, k) for p, t in zip(preds, targets)]  # each scan's surface metrics once
    per_fold = {}
    for fold in sorted({oof[n]["fold"] for n in names}):
        per_fold[str(fold)] = pool_image_scores([s for s, n in zip(scores, names) if oof[n]["fold"] == fold], k)
    postprocess = choose_postprocessing(preds, targets, k)
    postprocess.save(cv_dir / "postprocessing.json")
    processed = [postprocess(p) for p in preds]  # a scan the rules leave as it was keeps its scores
    processed_scores = [s if np.array_equal(q, p) else scored_image(q, t, k)
                        for s, p, q, t in zip(scores, preds, processed, targets)]
    summary = CvSummary(
        folds=len(per_fold),
        images=len(names),
        classes=value_map.to_dict(),
        model=first["model_name"],
        per_fold=per_fold,
        fold_mean={m: [_mean_sd([f[m][c] for f in per_fold.values()]) for c in range(k - 1)]
                   for m in ("dice", "iou", "hd95", "nsd")},
        pooled_out_of_fold=pool_image_scores(scores, k),
        postprocessing=postprocess.to_dict(),
        pooled_out_of_fold_post_processed=pool_image_scores(processed_scores, k),
        out_of_fold=OutOfFoldSource(sorted({oof[n]["fold"] for n in names if not oof[n]["predicted"]}),
                                    sorted({oof[n]["fold"] for n in names if oof[n]["predicted"]})),
    )
    atomic_write_json(cv_dir / "cv_summary.json", summary.to_json())
    atomic_write_text(cv_dir / "cv_report.html", cv_report_html(summary, cv_dir.name))
    print(format_cv_summary(summary))
    return summary


def _none_as_nan(value):
    if value is None:
        return float("nan")
    if isinstance(value, dict):
        return {k: v if k == "postprocessing" else _none_as_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_none_as_nan(v) for v in value]
    return value


def format_cv_summary(summary: CvSummary) -> str:
    """Plain-text table of a CV summary: per fold, mean ± sd, pooled out-of-fold (before/after post-processing).

    A summary read back from ``cv_summary.json`` holds null where a score was undefined: shown as nan."""
    k = len(summary.classes)
    columns = "".join(f"{'class ' + str(c) + ' Dice':>16}{'IoU':>8}{'HD95':>8}{'NSD':>8}" for c in range(1, k))
    lines = [f"{'':<24}" + columns]
    for fold, scores in _none_as_nan(summary.per_fold).items():
        lines.append(f"{'fold ' + fold + ' (' + str(scores['images']) + ' images)':<24}" + "".join(
            f"{scores['dice'][c]:>16.4f}{scores['iou'][c]:>8.4f}{scores['hd95'][c]:>8.1f}{scores['nsd'][c]:>8.4f}"
            for c in range(k - 1)))
    means = _none_as_nan(summary.fold_mean)
    lines.append(f"{'mean ± sd over folds':<24}" + "".join(
        f"{means['dice'][c][0]:>10.4f}±{means['dice'][c][1]:<5.3f}{means['iou'][c][0]:>8.4f}"
        f"{means['hd95'][c][0]:>8.1f}{means['nsd'][c][0]:>8.4f}" for c in range(k - 1)))
    for label, pooled in (("pooled out-of-fold", summary.pooled_out_of_fold),
                          ("  post-processed", summary.pooled_out_of_fold_post_processed)):
        s = _none_as_nan(pooled)
        lines.append(f"{label:<24}" + "".join(
            f"{s['dice'][c]:>16.4f}{s['iou'][c]:>8.4f}{s['hd95'][c]:>8.1f}{s['nsd'][c]:>8.4f}" for c in range(k - 1)))
    rules = summary.postprocessing["evidence"] or {}
    lines.append("post-processing: " + ", ".join(f"class {c}: {e['chosen']}" for c, e in rules.items()))
    return "\n".join(lines)


def cv_report_html(summary: CvSummary, title: str) -> str:
    """A self-contained HTML page of the CV summary (the run report's look, no network)."""
    text = html.escape(format_cv_summary(summary))
    evidence = html.escape(str(summary.postprocessing["evidence"]))
    return (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width, initial-scale=1'><title>{html.escape(title)} cross-validation</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:1.5em}pre{overflow-x:auto}</style></head><body>"
            f"<h1>{html.escape(title)}: {summary.folds}-fold cross-validation ({summary.model})</h1>"
            f"<p>{summary.images} held-out images; Dice and IoU pooled over images (summed confusion), HD95 "
            f"in pixels and NSD at 2 pixels, means over images where defined.</p><pre>{text}</pre>"
            f"<h2>Post-processing candidates (pooled out-of-fold Dice)</h2><pre>{evidence}</pre></body></html>")
