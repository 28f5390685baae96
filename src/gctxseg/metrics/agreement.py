"""Agreement of predicted with true amounts (an area per image, a volume per scan, an ETDRS subfield's volume),
as fluid studies report it: mean absolute error, bias (mean difference, predicted - true) and the 95% limits of
agreement, bias ± 1.96 SD of the differences (Bland & Altman 1986).

The cases are rows of ``file, kind, class, unit, truth, predicted, difference``: ``kind`` ``image`` is a case of
the image level, any other (a NIfTI volume, a B-scan group, a DICOM series) of the volume level. Which amounts
are measured, and how, is :mod:`gctxseg.clinical`'s; here they are only compared.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence

__all__ = ["agreement_by_unit", "agreement_summary", "level_of", "primary_unit"]


def level_of(kind: str) -> str:
    """``image`` for a case of kind ``image``, else ``volume``."""
    return "image" if kind == "image" else "volume"


def primary_unit(rows: Sequence[dict]) -> str:
    """The unit most of ``rows`` are in (some files of a set may lack a spacing: pixels among mm²)."""
    return Counter(r["unit"] for r in rows).most_common(1)[0][0]


def agreement_summary(rows: Sequence[dict], class_names: Sequence[str]) -> list[dict]:
    """Per level (``image``, ``volume``) and class: n, unit, mean true/predicted, MAE, bias, limits of agreement.

    Cases of a level whose unit differs from the level's most common one (some files without a spacing)
    are left out, so every figure has one unit.
    """
    out = []
    for level in ("image", "volume"):
        cases = [r for r in rows if level_of(r["kind"]) == level]
        if not cases:
            continue
        unit = primary_unit(cases)
        for name in class_names:
            kept = [r for r in cases if r["class"] == name and r["unit"] == unit]
            diffs = [r["difference"] for r in kept]
            sd = statistics.stdev(diffs) if len(diffs) > 1 else math.nan
            bias = statistics.fmean(diffs) if diffs else math.nan
            out.append({
                "level": level, "class": name, "unit": unit, "n": len(diffs),
                "mean truth": statistics.fmean(r["truth"] for r in kept) if kept else math.nan,
                "mean predicted": statistics.fmean(r["predicted"] for r in kept) if kept else math.nan,
                "mean absolute error": statistics.fmean(abs(d) for d in diffs) if diffs else math.nan,
                "bias": bias, "sd of differences": sd,
                "limits of agreement": [bias - 1.96 * sd, bias + 1.96 * sd],
            })  # fmt: skip
    return out


def agreement_by_unit(rows: Sequence[dict]) -> list[dict]:
    """:func:`agreement_summary` of cases in several units (subfield volumes in nL beside diameters in µm): per
    unit, per class in the order the rows first name it; a class without a case is left out."""
    by_unit: dict[str, list[dict]] = {}
    for row in rows:
        by_unit.setdefault(row["unit"], []).append(row)
    summary = []
    for unit_rows in by_unit.values():
        names = list(dict.fromkeys(row["class"] for row in unit_rows))
        summary += [s for s in agreement_summary(unit_rows, names) if s["n"]]
    return summary
