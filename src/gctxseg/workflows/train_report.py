"""Train, then report: a run's ``best.pt`` evaluated on its validation set and its ``report.html`` written.

A workflow strings stages together, so it sits above them (docs/architecture.md): the training engine never
imports the evaluation that reports on its result.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from pathlib import Path

import torch.distributed as dist

from ..core.runtime import cpu_threads
from ..data import MaskValueMap
from ..data.splits import run_fold_files
from ..evaluation.evaluate import evaluate_folder, score_labels
from ..inference.predictor import KeptPrediction
from ..reporting.report import write_html_report
from ..runs.checkpoint import load_checkpoint
from ..runs.runlog import read_run_log
from ..training import TrainConfig, train

__all__ = ["train_and_report", "trained_threads", "write_report_or_warn", "write_run_report"]


def write_report_or_warn(run_dir: str | Path, device: str = "auto", amp: str = "auto",
                         predicted: KeptPrediction | None = None) -> Path | None:
    """Evaluate ``best.pt`` on the run's validation set and write ``report.html``; a failure only warns.

    Training has succeeded by then: any problem with the report (a missing browser font, a disk hiccup) is one
    line on stderr naming the command that retries it, never a failed run. ``predicted``: as
    :func:`write_run_report`'s.
    """
    try:
        path = write_run_report(run_dir, device=device, amp=amp, predicted=predicted)
    except Exception as err:  # any report problem must not fail a finished training run
        print(
            f"warning: report.html not written ({type(err).__name__}: {err}); retry with: gctxseg report {run_dir}",
            file=sys.stderr,
        )
        return None
    print(f"report: {path}")
    return path


def train_and_report(cfg: TrainConfig, *, given: Collection[str] | None = None, started: float | None = None
                     ) -> Path:
    """:func:`gctxseg.training.train`, then (rank 0 only) ``report.html`` of the best weights; the run folder.
    ``started``: as :func:`~gctxseg.training.train`'s (the command line's start).

    The validation after the last step is predicted as ``gctxseg evaluate`` predicts (:class:`KeptPrediction`):
    where those weights are the best, the report scores its labels instead of predicting the images again."""
    final = KeptPrediction(cfg.device)  # in the precision the run trains with: a resumed run's, not the flag's default
    # a budgeted run keeps time for the report
    run_dir = train(cfg, given=given, then_report=True, final_prediction=final, started=started)
    if not dist.is_initialized() or dist.get_rank() == 0:
        with cpu_threads(trained_threads(run_dir)):  # as fast as its training was on this machine's load
            write_report_or_warn(run_dir, cfg.device, _trained_amp(run_dir, cfg.amp), final)
    return run_dir


def trained_threads(run_dir: Path) -> int | None:
    """The CPU threads a run trained with (its log's ``cpu threads``; planned under a time budget), or None."""
    try:
        threads = read_run_log(run_dir).train_parameters.get("cpu threads")
    except (OSError, ValueError):
        return None
    return threads if isinstance(threads, int) and not isinstance(threads, bool) and threads > 0 else None


def _best_if_last(run_dir: Path) -> dict | None:
    """The run's ``best.pt`` (memory-mapped: the weights stay on disk) where it holds the weights the run ended with
    (``last.pt``'s epoch and optimiser step), else None."""
    best, last = (load_checkpoint(run_dir / name, mmap=True) for name in ("best.pt", "last.pt"))
    steps = [(ckpt.get("scheduler") or {}).get("last_epoch") for ckpt in (best, last)]
    return best if best.get("epoch") == last.get("epoch") and steps[0] == steps[1] else None


def _trained_amp(run_dir: Path, amp: str) -> str:
    """The ``--amp`` setting of the precision the run trained in (a resumed run keeps its own), from its log."""
    try:
        trained = read_run_log(run_dir).train_parameters["amp"]
    except (OSError, ValueError, KeyError):
        return amp
    return {"fp32": "off", "bfloat16": "bf16", "float16": "fp16"}.get(trained, amp)


def write_run_report(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    device: str = "auto",
    amp: str = "auto",
    tta: bool = False,
    infer_mode: str = "resize",
    evaluate: bool = True,
    predicted: KeptPrediction | None = None,
) -> Path:
    """Evaluate a run's ``best.pt`` on its validation set into ``run_dir/eval`` and write ``report.html``.

    Args:
        run_dir: a run folder written by ``gctxseg train``.
        data: images folder to evaluate on (default: the run's validation folder, from the checkpoint).
        device: ``auto``, ``cpu``, ``cuda`` ...
        amp: ``auto``, ``bf16``, ``fp16`` or ``off``.
        tta: horizontal-flip test-time augmentation.
        infer_mode: ``resize`` or ``sliding``.
        evaluate: False = reuse ``run_dir/eval`` as it is (or leave the evaluation out).
        predicted: the run's final validation, predicted as ``gctxseg evaluate`` predicts: scored instead of
            predicting again where ``best.pt`` holds the weights that predicted it (the default evaluation only).

    Returns:
        the path of ``report.html``.
    """
    run_dir = Path(run_dir)
    weights = run_dir / "best.pt"
    eval_dir = run_dir / "eval"
    as_validated = predicted is not None and predicted.kept is not None and data is None and not tta
    reusable = evaluate and weights.is_file() and as_validated and infer_mode == "resize"
    ckpt = _best_if_last(run_dir) if reusable else None
    if ckpt is not None:
        pairs, labels = predicted.labelled()  # brought to each image's size only once it is known to be used
        value_map, data_val = MaskValueMap.from_dict(ckpt["value_map"]), ckpt["config"]["data_val"]
        score_labels(labels, pairs, value_map, eval_dir, weights=str(weights), out_owned=True,
                     head={"data": data_val, **predicted.timing})
    elif evaluate and weights.is_file():
        cfg = load_checkpoint(weights)["config"]
        if data is None and cfg.get("folds"):  # a cross-validation fold: its held-out patients
            data = run_fold_files(cfg, run_dir)[1]
        evaluate_folder(
            weights, data or cfg["data_val"], cfg["img_f"], cfg["mask_f"], eval_dir,
            device=device, amp=amp, tta=tta, infer_mode=infer_mode, out_owned=True,
        )  # fmt: skip
    return write_html_report(run_dir, eval_dir)
