"""Agreement of predicted and true amounts (area per B-scan, volume per scan), as fluid studies report it.

Per image (area, mm² where the pixel spacing is known, else pixels) and per volume (NIfTI volume, B-scan
group, DICOM series: mm³, else voxels), per foreground class: the true and predicted amount and their
difference (predicted - true), in ``amounts_per_image.csv``. Over the cases of one level and class:
mean absolute error, bias (mean difference) and the 95% limits of agreement, bias ± 1.96 SD of the
differences (Bland & Altman 1986; :mod:`gctxseg.metrics.agreement`), in ``summary.json``; a Bland-Altman plot
(difference against the mean of the two) and a predicted-vs-true scatter per class, ``bland_altman.png`` and
``amount_scatter.png``.

Per volume of B-scans with a fovea, also per ETDRS subfield (nL) and hole diameter (µm) of the grader's and the
predicted read-out (:mod:`gctxseg.clinical.etdrs_rows`): :func:`etdrs_agreement`, ``summary.json``'s ``etdrs
agreement``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..core.files import atomic_write_csv
from ..metrics.agreement import agreement_by_unit, agreement_summary, level_of, primary_unit
from ..runs.evalsummary import AmountAgreement
from .etdrs_rows import VolumeReport, etdrs_columns
from .measurements import Measurement

__all__ = ["AMOUNT_COLUMNS", "amount_rows", "etdrs_agreement", "format_agreement", "format_etdrs_agreement",
           "write_agreement"]

AMOUNT_COLUMNS = ("file", "kind", "class", "unit", "truth", "predicted", "difference")


def _amounts(row: Measurement) -> tuple[list[float | int] | None, str]:
    """Amount per class of a row and its unit: area of an image, volume of the others; counts when unknown."""
    if row.pixels is None:
        return None, ""
    if row.kind == "image":
        areas = row.areas()
        return (areas, "mm2") if all(a is not None for a in areas) else (row.pixels, "px")
    volumes = row.volumes()
    return (volumes, "mm3") if all(v is not None for v in volumes) else (row.pixels, "voxels")


def amount_rows(truth: Sequence[Measurement], pred: Sequence[Measurement], class_names: Sequence[str]) -> list[dict]:
    """One dict per case and class: ``file, kind, class, unit, truth, predicted, difference``.

    ``truth`` and ``pred`` are the same plan filled with the true and the predicted pixels.
    """
    rows = []
    for t, p in zip(truth, pred):
        (true_amounts, unit), (pred_amounts, _) = _amounts(t), _amounts(p)
        if true_amounts is None or pred_amounts is None:
            continue
        for name, a, b in zip(class_names, true_amounts, pred_amounts):
            rows.append({"file": t.file, "kind": t.kind, "class": name, "unit": unit,
                         "truth": a, "predicted": b, "difference": b - a})  # fmt: skip
    return rows


def _plot(rows: Sequence[dict], summary: Sequence[dict], class_names: Sequence[str], path: Path,
          bland_altman: bool) -> None:
    """One panel per class at the volume level where there are volumes, else per image; the bias and limits of
    agreement drawn are the summary's."""
    from ..visualize.plots import plt, save_figure  # local: matplotlib only when plotting

    level = "volume" if any(level_of(r["kind"]) == "volume" for r in rows) else "image"
    cases = [r for r in rows if level_of(r["kind"]) == level]
    stats = {a.class_name: a for a in map(AmountAgreement.from_json, summary) if a.level == level}
    unit = primary_unit(cases)
    fig, axes = plt.subplots(1, len(class_names), figsize=(4.2 * len(class_names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], class_names):
        kept = [r for r in cases if r["class"] == name and r["unit"] == unit]
        t, p = [r["truth"] for r in kept], [r["predicted"] for r in kept]
        if bland_altman:
            ax.scatter([(a + b) / 2 for a, b in zip(t, p)], [r["difference"] for r in kept], s=14, alpha=0.7)
            if stats[name].n > 1:
                bias, (low, high) = stats[name].bias, stats[name].limits_of_agreement
                for y, style in ((bias, "-"), (low, "--"), (high, "--")):
                    ax.axhline(y, color="tab:red", linestyle=style, linewidth=1)
                ax.set_title(f"{name}: bias {bias:.3g}, LoA {low:.3g} to {high:.3g}", fontsize=9)
            ax.set_xlabel(f"mean of true and predicted ({unit})")
            ax.set_ylabel(f"predicted - true ({unit})")
        else:
            ax.scatter(t, p, s=14, alpha=0.7)
            top = max(t + p + [1e-12])
            ax.plot([0, top], [0, top], color="tab:gray", linewidth=1)
            ax.set_title(f"{name} ({len(kept)} {level}s)", fontsize=9)
            ax.set_xlabel(f"true ({unit})")
            ax.set_ylabel(f"predicted ({unit})")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{'Bland-Altman' if bland_altman else 'predicted vs true'}, per {level}")
    width = fig.get_figwidth()  # fixed margins in inches, as visualize/plots.py's figures keep
    fig.subplots_adjust(left=0.85 / width, right=1 - 0.15 / width, bottom=0.16, top=0.84, wspace=1.0 / 3.2)
    save_figure(fig, path)


def write_agreement(
    truth: Sequence[Measurement], pred: Sequence[Measurement], class_names: Sequence[str], out: str | Path | None,
    figures: bool = True,
) -> tuple[list[dict], list[dict]]:
    """Amount rows and their agreement summary; with ``out``, write the CSV and (with ``figures``) the two plots
    there."""
    rows = amount_rows(truth, pred, class_names)
    summary = agreement_summary(rows, class_names)
    if out is not None and rows:
        out = Path(out)
        shown = ({**r, **{k: format(r[k], ".10g") for k in ("truth", "predicted", "difference")}} for r in rows)
        atomic_write_csv(out / "amounts_per_image.csv", AMOUNT_COLUMNS, shown)
        if figures:
            _plot(rows, summary, class_names, out / "bland_altman.png", bland_altman=True)
            _plot(rows, summary, class_names, out / "amount_scatter.png", bland_altman=False)
    return rows, summary


def format_agreement(summary: Sequence[AmountAgreement]) -> str:
    """One line per level and class: mean absolute error and limits of agreement, with units."""
    lines = []
    for a in summary:
        lo, hi = a.limits_of_agreement
        lines.append(f"{a.class_name} per {a.level} ({a.n}): mean absolute error {a.mean_absolute_error:.4g} "
                     f"{a.unit}, bias {a.bias:.4g}, limits of agreement {lo:.4g} to {hi:.4g} {a.unit}")
    return "\n".join(lines)


def etdrs_agreement(truth: Sequence[VolumeReport], pred: Sequence[VolumeReport], class_names: Sequence[str],
                    eye: str | None) -> list[dict]:
    """Agreement of predicted with true subfield volumes (nL) and hole diameters (µm) over the volumes both have
    numbers for: per column n, mean true/predicted, MAE, bias and 95% limits of agreement (Bland-Altman)."""
    predicted = {r.name: r.record for r in pred}
    columns = [c for c in etdrs_columns(class_names, eye) if c.endswith("_nl") or c in ("hole_mld_um", "hole_base_um")]
    rows = []
    for r in truth:
        if r.name not in predicted:
            continue
        for column in columns:
            t, p = r.record.get(column, ""), predicted[r.name].get(column, "")
            if column.startswith("hole_") and (t == "") != (p == ""):
                t, p = t or "0", p or "0"  # a hole missed or invented: its diameter counts as 0 on that side
            if t == "" or p == "":
                continue
            rows.append({"file": r.name, "kind": "volume", "class": column, "unit": column.rsplit("_", 1)[1],
                         "truth": float(t), "predicted": float(p), "difference": float(p) - float(t)})
    return agreement_by_unit(rows)


def format_etdrs_agreement(summary: Sequence[AmountAgreement]) -> str:
    """The agreement table ``evaluate`` prints: one line per ETDRS column (nL) and hole diameter (µm)."""
    lines = [f"{'volumes vs grader':<28}{'n':>4}{'mean true':>11}{'mean pred':>11}{'MAE':>9}{'bias':>9}"
             f"{'95% limits of agreement':>26}"]
    for a in summary:
        low, high = a.limits_of_agreement
        lines.append(f"{a.class_name:<28}{a.n:>4}{a.mean_truth:>11.4g}{a.mean_predicted:>11.4g}"
                     f"{a.mean_absolute_error:>9.3g}{a.bias:>9.3g}{f'{low:.3g} to {high:.3g}':>26}")
    return "\n".join(lines)
