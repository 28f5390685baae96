"""Connected-component post-processing, chosen per class on cross-validation (as nnU-Net does).

Per foreground class one rule: ``none``, ``min_size`` (components smaller than N pixels become background) or
``largest`` (keep only the largest component: one macular hole per B-scan). :func:`choose_postprocessing`
tries each candidate on the out-of-fold predictions and keeps a rule only where it raises that class's pooled
out-of-fold Dice; the choice is stored as ``postprocessing.json`` and applied by ``gctxseg predict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.files import atomic_write_json
from ..runs.runfiles import RunFile

__all__ = ["ClassRule", "PostProcessing", "apply_rule", "choose_postprocessing", "component_sizes"]

RULE_KINDS = ("none", "min_size", "largest")
# min_size candidates: these percentiles of the true components' sizes in the training masks, so the sizes
# follow the data (cysts of tens of pixels, holes of thousands) instead of fixed pixel counts
SIZE_PERCENTILES = (5, 10, 25)


@dataclass(frozen=True)
class ClassRule:
    kind: str = "none"
    min_size: int = 0

    def __post_init__(self) -> None:
        if self.kind not in RULE_KINDS:
            raise ValueError(f"post-processing rule must be one of {RULE_KINDS}, got {self.kind!r}")

    def __str__(self) -> str:
        return f"remove components < {self.min_size} px" if self.kind == "min_size" else self.kind


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels (8-connected) and the size of each label (index 0 = unused)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return labels, np.bincount(labels.ravel(), minlength=count + 1)


def component_sizes(masks: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Sizes in pixels of every connected component of class ``k`` in ``masks``."""
    sizes = [_components(m == k)[1][1:] for m in masks]
    return np.concatenate(sizes) if sizes else np.zeros(0, int)


def apply_rule(pred: np.ndarray, k: int, rule: ClassRule) -> np.ndarray:
    """``pred`` (class indices) with the rule applied to class ``k``; removed pixels become background (0)."""
    if rule.kind == "none" or not (pred == k).any():
        return pred
    labels, sizes = _components(pred == k)
    out = pred.copy()
    out[_dropped(sizes, rule)[labels]] = 0
    return out


def _dropped(sizes: np.ndarray, rule: ClassRule) -> np.ndarray:
    """Which components (``sizes`` as :func:`_components` gives them, one at least) ``rule`` removes, by label."""
    if rule.kind == "largest":
        drop = np.ones_like(sizes, bool)
        drop[int(sizes[1:].argmax()) + 1] = False
    else:
        drop = sizes < rule.min_size
    drop[0] = False
    return drop


@dataclass
class PostProcessing:
    """Rules per foreground class index (absent = none), with the out-of-fold Dice that chose them."""

    rules: dict[int, ClassRule]
    evidence: dict | None = None

    def __call__(self, pred: np.ndarray) -> np.ndarray:
        for k, rule in self.rules.items():
            pred = apply_rule(pred, k, rule)
        return pred

    def to_dict(self) -> dict:
        return {"rules": {str(k): asdict(r) for k, r in self.rules.items()}, "evidence": self.evidence}

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path, num_classes: int | None = None, max_pixels: int | None = None) -> PostProcessing:
        """The rules of a ``postprocessing.json``, checked before any is applied.

        Args:
            num_classes: classes of the model the rules go with (background included): each rule's class must
                be a foreground class of it.
            max_pixels: pixels of the largest image the rules were chosen on: a ``min_size`` above it would
                erase the class from every image.

        Raises:
            ValueError: one line naming the file and the key: not JSON, a class that is not a foreground class, an
                unknown rule, a ``min_size`` that is not a whole number of pixels in ``0..max_pixels``.
        """
        file = RunFile(Path(path), "run gctxseg cv --summary-only to choose the post-processing again")
        data = file.mapping(file.read())
        rules, top = {}, num_classes - 1 if num_classes else None
        for key, rule in file.mapping(file.item(data, "rules"), "rules").items():
            where = f"rules.{key}"
            if not key.isdigit() or int(key) < 1 or (top is not None and int(key) > top):
                raise file.refuse(where, f"is not a foreground class{f' (1..{top})' if top else ''}")
            rule = file.mapping(rule, where)
            if set(rule) - {"kind", "min_size"}:
                raise file.refuse(where, f"has keys {', '.join(sorted(set(rule) - {'kind', 'min_size'}))}; a rule "
                                         "has only kind and min_size")
            kind = rule.get("kind", "none")
            if kind not in RULE_KINDS:
                raise file.refuse(f"{where}.kind", f"is {kind!r}, not one of {', '.join(RULE_KINDS)}")
            size = file.number(rule.get("min_size", 0), f"{where}.min_size", 0, max_pixels, integer=True)
            rules[int(key)] = ClassRule(kind, size)
        evidence = data.get("evidence")
        if evidence is not None:
            file.mapping(evidence, "evidence")
        return cls(rules, evidence)


@dataclass(frozen=True)
class _ClassComponents:
    """Class ``k``'s predicted components over a set of scans, each with its size and the pixels of it that are
    true (``hits``), and the set's pooled counts with no rule: what any rule's pooled Dice is computed from,
    without labelling or copying a scan again for each candidate rule."""

    sizes: list[np.ndarray]  # per scan, index 0 = unused
    hits: list[np.ndarray]
    tp: int
    fp: int
    fn: int

    @classmethod
    def of(cls, preds: Sequence[np.ndarray], targets: Sequence[np.ndarray], k: int) -> _ClassComponents:
        sizes, hits, tp, predicted, true = [], [], 0, 0, 0
        for p, t in zip(preds, targets):
            labels, size = _components(p == k)
            hit = np.bincount(labels.ravel(), weights=(t == k).ravel(), minlength=len(size)).astype(np.int64)
            sizes.append(size)
            hits.append(hit)
            tp, predicted, true = tp + int(hit[1:].sum()), predicted + int(size[1:].sum()), true + int((t == k).sum())
        return cls(sizes, hits, tp, predicted - tp, true - tp)

    def dice(self, rule: ClassRule) -> float:
        """Pooled Dice of the class with ``rule`` applied to every scan (as :func:`apply_rule` applies it)."""
        lost_tp = lost_fp = 0
        for size, hit in zip(self.sizes, self.hits):
            if rule.kind != "none" and len(size) > 1:  # no rule, or a scan without the class: nothing removed
                drop = _dropped(size, rule)
                lost_tp, lost_fp = lost_tp + int(hit[drop].sum()), lost_fp + int((size - hit)[drop].sum())
        tp, fp, fn = self.tp - lost_tp, self.fp - lost_fp, self.fn + lost_tp
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def choose_postprocessing(
    preds: Sequence[np.ndarray], targets: Sequence[np.ndarray], num_classes: int, min_gain: float = 0.0
) -> PostProcessing:
    """Per class, the candidate rule with the best pooled Dice over ``preds``, kept only if it beats no rule.

    Args:
        preds, targets: out-of-fold predictions and their ground truth (class indices, equal shapes).
        num_classes: classes including background.
        min_gain: Dice a rule must add over ``none`` to be kept.
    """
    rules, evidence = {}, {}
    for k in range(1, num_classes):
        sizes = component_sizes(targets, k)
        thresholds = sorted({int(np.percentile(sizes, q)) for q in SIZE_PERCENTILES}) if sizes.size else []
        candidates = [ClassRule("largest")] + [ClassRule("min_size", t) for t in thresholds if t > 1]
        components = _ClassComponents.of(preds, targets, k)
        baseline = components.dice(ClassRule())
        scored = [(ClassRule(), baseline)] + [(rule, components.dice(rule)) for rule in candidates]
        best_rule, best = max(scored[1:], key=lambda s: np.nan_to_num(s[1], nan=-1.0))
        keep = not np.isnan(best) and not np.isnan(baseline) and best > baseline + min_gain
        if keep:
            rules[k] = best_rule
        evidence[str(k)] = {"none": baseline, **{str(r): d for r, d in scored[1:]},
                            "chosen": str(best_rule) if keep else "none"}
    return PostProcessing(rules, evidence)
