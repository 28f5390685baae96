"""Which trained weights ``gctxseg predict`` takes when none are named: the newest run's ``best.pt``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["newest_best_weights"]


def newest_best_weights(results: str | Path = "runs") -> Path:
    """``best.pt`` of the most recently trained run folder directly under ``results`` (by the file's time).

    Raises:
        ValueError: no ``results/*/best.pt``; the message says how to train one or pass ``--weights``.
    """
    results = Path(results)
    candidates = [p for p in results.glob("*/best.pt") if p.is_file()] if results.is_dir() else []
    if not candidates:
        raise ValueError(f"{results}: no run folder with best.pt; train one first ('gctxseg train' or 'gctxseg demo') "
                         "or pass --weights runs/NAME/best.pt (or --results DIR)")
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, str(p)))
