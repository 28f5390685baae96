"""``gctxseg cv``: every configuration on the same patient-wise folds, compared out of fold, the best one chosen.

nnU-Net's ``find_best_configuration`` in 2D: each configuration (an architecture with its planned settings) is
cross-validated on the same folds into ``CV/<model>/fold_k`` (:mod:`gctxseg.crossval.folds`), then every configuration
and every ensemble of two or more (their out-of-fold softmax averaged) is scored on the pooled out-of-fold Dice
after its own post-processing (chosen on the same out-of-fold predictions). The best is written to
``CV/cv_summary.json`` under ``"chosen"``, with its post-processing in ``CV/postprocessing.json``; ``gctxseg
predict --weights CV`` and ``evaluate --weights CV`` use exactly that. ``CV/splits_final.json`` holds the folds
(nnU-Net's shape), so another tool can be trained and compared on the very same split. Under ``--time-budget``
the configurations race after fold 0 (:mod:`gctxseg.crossval.race`): one far behind trains no more folds, and its time
goes to the later folds of the others.

Tie rule: candidates within ``TIE_DICE`` of the best count as tied, and the cheapest of them is chosen (fewest
members, then least training CPU time): a difference that small is below the fold-to-fold spread of any real
set measured here (docs/real-oct.md), and the cheaper one predicts faster.
"""

from __future__ import annotations

import html
import itertools
import json
import resource
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..core.files import atomic_write_json, atomic_write_text
from ..core.records import JsonRecord, key, records
from ..core.runtime import cpu_threads
from ..data import MaskValueMap, find_pairs, read_mask
from ..data.fingerprint import remembered_fingerprints
from ..data.splits import SPLITS_FINAL, cv_folds, held_out_scans, load_splits
from ..evaluation.image_scores import remembered_image_scores, scored_image
from ..inference.postprocess import choose_postprocessing
from ..metrics import nanmean, score_predictions
from ..models import resolve_model_name
from ..runs.checkpoint import load_checkpoint, remembered_checkpoints
from ..runs.cvfolder import choose_cv_folder, cv_identity, missing_folds, start_cv_folder
from ..runs.runfiles import RunFile
from ..training import TrainConfig
from ..training.planning import BUDGET_SHARE, remembered_step_times
from ..training.segmentation import plan_run
from ..training.start import NO_START, check_start_architecture, start_architecture
from ..workflows.train_report import trained_threads
from .folds import CvSummary, fold_finished, format_cv_summary, summarize_cv, train_fold, write_fold_report
from .lr_probe import (
    ProbePlan,
    ProbeRecord,
    ProbeResult,
    needs_probe,
    plan_probe,
    probe_learning_rate,
    probe_reason,
    read_record,
    skip_probe,
)
from .oof import OOF_FOLDER, HeldOutPrediction, predict_fold_oof, read_fold_oof, stored_probabilities
from .race import RACE_RECORD, RaceRecord, TopUp, format_race, race_after_first_fold, read_race
from .topup import PRE_RACE_FOLD, fold_steps, kept_plan, plan_top_ups, prepare_top_up

__all__ = ["DEFAULT_CONFIGURATIONS", "TIE_DICE", "ChosenCandidate", "ConfigurationResult", "CvChoice",
           "RankedCandidate", "UnitTime", "choose_configuration", "cv_models", "format_ranking", "run_cv",
           "summarize_folder", "write_splits"]

# The architectures `gctxseg cv` compares when none are named: the default transformer against the two baselines
# a reader expects, the planned U-Net and nnU-Net's own 2D network; `--models` picks others.
DEFAULT_CONFIGURATIONS = ("gctx_unet", "unet", "nnunet")
TIE_DICE = 0.005
SUMMARY_SHARE = 0.05  # of a whole-cv time budget kept for the summary at most, and until its cost is measured
# The summary kept once a fold's held-out scans have been scored: its work per scan, timed on that fold as the
# summary does it (SummaryCost), for every scan, configuration and ensemble, x SUMMARY_SAFETY, + SUMMARY_FIXED_S
# (docs/time-budget.md, rule 14)
SUMMARY_SAFETY, SUMMARY_FIXED_S = 1.15, 3.0
MIN_UNIT_S = 6.0  # a fold started past the cv's deadline still trains a few steps, so every fold has weights
# Under a time budget, a configuration whose fold share holds fewer optimiser steps than this (at its planned step
# time) is not trained: on Duke DME folds of 44-132 steps left nnU-Net's network at a pooled Dice of 0.14 and 132-176
# gave 0.54, where the U-Net's 176-352 gave 0.65 and 264-660 0.70 (docs/real-oct.md). Its minutes go to the others.
MIN_FOLD_STEPS = 150


@dataclass(frozen=True)
class UnitTime(JsonRecord):
    """One unit's entry of a configuration's ``timing.json`` (a fold, ``"0 top-up"``, ``"lr probe"``): the wall
    and CPU seconds it trained, summed over the runs that trained it."""

    wall_s: float
    cpu_s: float


@dataclass(frozen=True)
class SummaryCost:
    """Seconds per held-out scan of the summary's three kinds of work, timed on one fold's arrays as the summary
    does them (:func:`measure_summary_cost`)."""

    read_s: float  # reading a scan's stored array and mask back, checked
    surface_s: float  # scoring its labels with the surface metrics
    choice_s: float  # choosing post-processing on it, Dice before and after

    def seconds(self, scans: int, configurations: int) -> float:
        """The summary's seconds for ``scans`` held-out scans of ``configurations`` configurations: each one's
        own summary (read, scored, post-processing chosen), then every configuration and ensemble of them ranked
        (chosen again, on arrays read back at a tenth of the first read's cost, not counted)."""
        own = self.read_s + self.surface_s + self.choice_s
        return scans * (configurations * own + (2**configurations - 1) * self.choice_s)


def measure_summary_cost(config_dir: Path, fold: int, oof: dict[str, dict]) -> SummaryCost:
    """Time, on ``fold``'s held-out scans just written (``oof``), what the summary does with each scan: read its
    array back (:func:`read_fold_oof`), score it with surface metrics as :func:`summarize_cv` does, and rank it as
    :func:`choose_configuration` ranks a candidate."""
    names = sorted(oof)
    k = oof[names[0]]["probs"].shape[0]
    targets = [oof[n]["target"] for n in names]
    # one scan first, untimed: a first call pays once for what the summary's thousands of calls do not (imports)
    scored_image(oof[names[0]]["probs"].argmax(0), targets[0], k)
    _score_candidate(("fold",), {"fold": [oof[names[0]]["probs"]]}, targets[:1], k)
    started = time.perf_counter()
    read_fold_oof(config_dir, fold)
    read = time.perf_counter()
    for name, target in zip(names, targets):
        scored_image(oof[name]["probs"].argmax(0), target, k)
    scored = time.perf_counter()
    _score_candidate(("fold",), {"fold": [oof[n]["probs"] for n in names]}, targets, k)
    n = len(names)
    return SummaryCost((read - started) / n, (scored - read) / n, (time.perf_counter() - scored) / n)


@dataclass(frozen=True)
class ConfigurationResult(JsonRecord):
    """One configuration in the cv's ``cv_summary.json``: its training cost, its pooled out-of-fold scores before
    and after its post-processing (from its own ``cv_summary.json``) and its lr probe (None: not probed)."""

    cpu_s: float
    wall_s: float
    steps_per_fold: list[int]
    epochs_per_fold: list[int]
    pooled_out_of_fold: dict = key("pooled out-of-fold")
    pooled_out_of_fold_post_processed: dict = key("pooled out-of-fold post-processed")
    lr_probe: ProbeRecord | None = records(None, ProbeRecord, default=None)


@dataclass(frozen=True)
class RankedCandidate(JsonRecord):
    """A configuration or ensemble in the ranking: its pooled out-of-fold Dice per class before and after its
    post-processing, their mean (after), the margin to the best, the members' training CPU seconds."""

    name: str
    members: list[str]
    dice: list[float]
    post_processed_dice: list[float] = key("post-processed dice")
    mean_dice: float = key("mean dice")
    margin_to_best: float = key("margin to best")
    cpu_s: float = key("cpu s")
    postprocessing: dict = key("postprocessing")  # PostProcessing.to_dict


@dataclass(frozen=True)
class ChosenCandidate(JsonRecord):
    """The candidate chosen; its post-processing is in the file ``postprocessing`` names."""

    name: str
    members: list[str]
    mean_dice: float
    post_processed_dice: list[float] = key("post-processed dice")
    postprocessing: str = key("postprocessing")


@dataclass(frozen=True)
class CvChoice(JsonRecord):
    """The cv folder's ``cv_summary.json``: every configuration, the ranking of every candidate, the race (None:
    none was run), the tie rule and the candidate chosen."""

    folds: int
    images: int
    classes: dict
    configurations: dict[str, ConfigurationResult] = records(None, ConfigurationResult, mapping=True)
    ranking: list[RankedCandidate] = records(None, RankedCandidate)
    race: RaceRecord | None = records(None, RaceRecord, default=None)
    tie_rule: str = ""
    chosen: ChosenCandidate | None = records(None, ChosenCandidate, default=None)


@dataclass
class _Candidate:
    """A configuration or ensemble as it is scored: its Dice before and after the post-processing chosen on it."""

    members: tuple[str, ...]
    dice: list[float]
    post_processed_dice: list[float]
    mean_dice: float
    postprocessing: object  # gctxseg.inference.postprocess.PostProcessing
    cpu_s: float = 0.0

    @property
    def name(self) -> str:
        return "+".join(self.members)


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (loader workers are reaped after each fold)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def write_splits(cfg: TrainConfig, cv_dir: Path, identity: dict | None = None) -> Path:
    """The folds every configuration is trained on, as nnU-Net's ``splits_final.json`` (file stems): written once,
    checked and kept when the folder has them (:func:`gctxseg.data.splits.cv_folds`); ``cv_dir`` is made (and its
    run named by ``identity``, :mod:`gctxseg.runs.cvfolder`) only after the folds pass their checks."""
    pairs = find_pairs(cfg.data_train, cfg.img_f, cfg.mask_f)
    splits, written = cv_folds(pairs, cfg.folds, cfg.data_train, cv_dir, cfg.group_regex, cfg.splits)
    path = cv_dir / SPLITS_FINAL
    if identity is not None:
        start_cv_folder(cv_dir, identity)
    if not written:
        cv_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, splits)
    return path


def _start_for(cfg: TrainConfig, model: str) -> str | None:
    """``cfg.init_weights`` for ``model``: a whole-model start (--init-weights PT) is of one architecture, so the
    other configurations start as planned; None (planned) and "none" (from scratch) hold for every one."""
    init = cfg.init_weights
    if init not in (None, NO_START) and start_architecture(init) != resolve_model_name(model):
        return None
    return init


def _plan_probes(cfg: TrainConfig, cv_dir: Path, models: list[str]) -> tuple[float | None, dict[str, object]]:
    """(minutes per fold, configuration -> its probe: a ProbePlan to run, or a ProbeResult already recorded).

    Probed (:mod:`gctxseg.crossval.lr_probe`): a family with candidates, no ``--lr``, and not folds begun without a
    probe (a cv folder of an older gctxseg resumes as it was). A probe takes one fold's share of ``--time-budget``; one
    too short to separate the rates is skipped before any fold, and its share goes back to the folds."""
    probes: dict[str, object] = {}
    for m in models:
        record = read_record(cv_dir / m)
        if record is not None:
            probes[m] = ProbeResult(record.chosen, record)
        elif needs_probe(m, cfg) and not (cv_dir / m / "fold_0").exists():
            probes[m] = None
    while True:
        shares = len(models) * cfg.folds + sum(1 for p in probes.values() if not _skipped(p))
        fold_budget = cfg.time_budget * (1 - SUMMARY_SHARE) / shares if cfg.time_budget else None
        pending = [m for m, p in probes.items() if p is None or isinstance(p, ProbePlan)]
        planned = {m: plan_probe(replace(cfg, model=m, time_budget=fold_budget, init_weights=_start_for(cfg, m)), m,
                                 fold_budget) for m in pending}
        too_short = [m for m, probe in planned.items() if not probe.affordable]
        probes.update(planned)
        for m in too_short:
            probes[m] = skip_probe(cv_dir / m, planned[m])
        if not too_short:
            return fold_budget, probes


def _affordable_configurations(cfg: TrainConfig, cv_dir: Path, models: list[str]) -> list[str]:
    """``models`` less those whose fold share would hold fewer than ``MIN_FOLD_STEPS`` optimiser steps, one line
    each: the fewest-steps one goes first, and the shares of the rest grow with each one dropped. At least one is
    kept (the one that fits the most steps), and so is one with a fold begun; nothing is dropped without a time
    budget, under a schedule the user fixed (``--epochs``/``--steps``) or where no step time was measured (a GPU).

    Why fewer configurations, not fewer folds or a smaller input: the planner already shrinks the input to show
    each fold ``MIN_PLANNED_IMAGES`` images down to its resolution floor, fewer folds change what the
    cross-validation estimates (fewer held-out patients per fold, a noisier choice), and a configuration trained
    below the floor only ranks last and is left out of the chosen ensemble after costing its share."""
    if not cfg.time_budget or cfg.epochs is not None or cfg.steps is not None or len(models) < 2:
        return models
    share_s = cfg.time_budget * 60 * (1 - SUMMARY_SHARE) / (len(models) * cfg.folds)
    step_s = {}
    for m in models:
        plan = plan_run(replace(cfg, model=m, fold=0, time_budget=share_s / 60, init_weights=_start_for(cfg, m)))[0]
        step_s[m] = plan.seconds_per_step
    if any(s is None for s in step_s.values()):
        return models
    kept = list(models)
    begun = {m for m in models if any((cv_dir / m / f"fold_{f}").exists() for f in range(cfg.folds))}
    while len(kept) > 1:
        fold_s = cfg.time_budget * 60 * (1 - SUMMARY_SHARE) / (len(kept) * cfg.folds) * BUDGET_SHARE
        steps = {m: int(fold_s / step_s[m]) for m in kept}
        starved = sorted((m for m in kept if steps[m] < MIN_FOLD_STEPS and m not in begun), key=steps.get)
        if not starved:
            break
        dropped = starved[0]
        kept.remove(dropped)
        print(f"{dropped}: not trained: a fold's share of the time budget ({fold_s / 60:.2f} min) holds about "
              f"{steps[dropped]} optimiser steps at {step_s[dropped]:.2f} s each, fewer than {MIN_FOLD_STEPS} (on Duke "
              f"DME fewer gave unusable models); its minutes go to {', '.join(kept)}", flush=True)
    last_s = cfg.time_budget * 60 * (1 - SUMMARY_SHARE) / cfg.folds * BUDGET_SHARE
    if len(kept) == 1 and last_s / step_s[kept[0]] < MIN_FOLD_STEPS:
        print(f"{kept[0]}: trained although a fold's share holds only about {int(last_s / step_s[kept[0]])} steps "
              f"(fewer than {MIN_FOLD_STEPS}): the configuration that fits the most; a longer --time-budget or "
              "fewer --folds gives each fold more", flush=True)
    return kept


def _skipped(probe) -> bool:
    return isinstance(probe, ProbeResult) and probe.record.skipped is not None


class _CvClock:
    """The whole cv's training minutes, handed out one unit (a fold, an lr probe) at a time: each unit gets an
    equal share of what is left when it starts, so a fold that ends early gives its minutes to the later ones and
    one that ran over takes them from them, and the cv ends by its deadline (docs/time-budget.md, rule 13).

    The deadline counts the training the folder already holds (``timing.json``), so a cv stopped and run again
    keeps the budget it was given, not a fresh one."""

    def __init__(self, minutes: float | None, spent_s: float = 0.0, started: float | None = None) -> None:
        self.budget_s, self.spent_s = (minutes or 0.0) * 60, spent_s
        self.started = time.perf_counter() if started is None else started
        self.after_s = 0.0  # what a fold spent after training (its out-of-fold arrays), last measured
        self.scans, self.configurations = 0, 1  # the summary's work: held-out scans, configurations still run
        self.summary_cost: SummaryCost | None = None  # the summary's seconds per scan, once measured
        # the CPU threads the last fold trained on (planned for the machine's load then): the summary's too
        self.threads: int | None = None

    @property
    def ends_at(self) -> float | None:
        """When training must end: the budget less the training of earlier runs and the summary's seconds."""
        return self.started + self.budget_s - self.spent_s - self.summary_s() if self.budget_s else None

    def summary_s(self) -> float:
        """Seconds kept for the summary: ``SUMMARY_SHARE`` of the budget until its work per scan is measured, then
        the estimate from that measure, within that share."""
        kept = SUMMARY_SHARE * self.budget_s
        if self.summary_cost is None:
            return kept
        estimate = self.summary_cost.seconds(self.scans, self.configurations)
        return min(kept, SUMMARY_SAFETY * estimate + SUMMARY_FIXED_S)

    def measure_summary(self, config_dir: Path, fold: int, oof: dict[str, dict]) -> None:
        """Time the summary's work on ``fold``'s held-out scans (:func:`measure_summary_cost`), once."""
        if self.summary_cost is None and oof and self.budget_s:
            self.summary_cost = measure_summary_cost(config_dir, fold, oof)

    def share(self, units_left: int) -> float | None:
        """Training minutes for the next unit of ``units_left`` (itself included): its share less what it will
        spend after training, as the last fold did; None without a budget."""
        if self.ends_at is None:
            return None
        return max(self.left_s() / max(units_left, 1) - self.after_s, MIN_UNIT_S) / 60

    def left_s(self) -> float:
        """Seconds of training left to the deadline (0 without a budget)."""
        return self.ends_at - time.perf_counter() if self.ends_at is not None else 0.0


def _training_spent_s(cv_dir: Path, models: list[str]) -> float:
    """Wall seconds of training the cv folder already holds (its folds and lr probes, from ``timing.json``)."""
    return sum(t.wall_s for m in models for t in _read_timing(cv_dir / m).values())


def _units_left(cv_dir: Path, model: str, folds: range, probe) -> int:
    """Units of ``model`` still to train: its unfinished ``folds``, and its lr probe when it is still to run."""
    return sum(not fold_finished(cv_dir / model / f"fold_{f}") for f in folds) + isinstance(probe, ProbePlan)


def _train_configuration(cfg: TrainConfig, cv_dir: Path, model: str, clock: _CvClock, probe, folds: range,
                         units_after: int = 0, plan_of: int | None = None) -> object:
    """Run ``probe`` (a ProbePlan) or take its result, then train (or keep, or resume) ``folds`` of one
    configuration, adding the probe's and each fold's wall and CPU time to ``CV/<model>/timing.json``. Each fold
    trained gets ``clock``'s share of the minutes left, with ``units_after`` units of other configurations still
    to come after this one's. The first fold trained plans, the others keep its plan; with ``plan_of``, every fold
    keeps fold ``plan_of``'s (trained earlier, on a share like theirs). Returns the probe's result (None when not
    probed), for the configuration's later folds."""
    config_dir = cv_dir / model
    config_dir.mkdir(parents=True, exist_ok=True)
    units = _units_left(cv_dir, model, folds, probe) + units_after
    if isinstance(probe, ProbePlan):  # its steps were planned from one fold's share, before the folds
        probe = _timed(config_dir, "lr probe", partial(probe_learning_rate, _configuration_config(cfg, model, None),
                                                        config_dir, probe))
        units -= 1
    cfg = _configuration_config(cfg, model, probe)
    # the first fold trained here plans (unless fold plan_of did); the later ones keep its size, batch and threads
    planned: dict = _kept_plan(cfg, config_dir, plan_of) if plan_of is not None else {}
    for fold in folds:
        done = fold_finished(config_dir / f"fold_{fold}")
        fold_cfg = cfg if done else replace(cfg, time_budget=clock.share(units) or cfg.time_budget, **planned)
        _timed(config_dir, str(fold), partial(_train_fold_and_oof, fold_cfg, config_dir, fold, clock), done=done)
        units -= not done
        if not done and not planned:
            planned = _kept_plan(cfg, config_dir, fold)
    return probe


def _kept_plan(cfg: TrainConfig, config_dir: Path, fold: int) -> dict:
    """``fold``'s planned size, batch and threads for the configuration's later folds (:func:`kept_plan`): one
    configuration, one plan, as nnU-Net's folds share their plans, and the later folds are not timed again."""
    return kept_plan(cfg, config_dir / f"fold_{fold}",
                     f"fold {fold}'s plan: a configuration's folds train at one size, batch and thread count")


def _timed(config_dir: Path, key: str, work, done: bool = False) -> object:
    """``work()``, its wall and CPU time added to ``timing.json[key]`` unless it was ``done`` (kept, not run)."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    out = work()
    if not done:
        timing = _read_timing(config_dir)
        spent = timing.get(key, UnitTime(0.0, 0.0))
        timing[key] = UnitTime(spent.wall_s + time.perf_counter() - wall, spent.cpu_s + _cpu_seconds() - cpu)
        atomic_write_json(config_dir / "timing.json", {unit: t.to_json() for unit, t in timing.items()})
    return out


def _train_fold_and_oof(cfg: TrainConfig, config_dir: Path, fold: int, clock: _CvClock) -> None:
    """Train ``fold``, then write its out-of-fold arrays (:mod:`gctxseg.crossval.oof`) as it ends and its report
    from them (rank 0); their seconds are what the clock keeps back from the next fold's training."""
    reported = fold_finished(config_dir / f"fold_{fold}") and (config_dir / f"fold_{fold}" / "report.html").is_file()
    final = HeldOutPrediction(cfg.device, cfg.amp)  # the fold's final validation predicts its arrays
    fold_dir = train_fold(cfg, config_dir, fold, final)
    not_main = torch.distributed.is_initialized() and torch.distributed.get_rank() != 0
    if not_main or not (fold_dir / "last.pt").is_file():
        return
    started, clock.threads = time.perf_counter(), trained_threads(fold_dir)
    with cpu_threads(clock.threads):  # as fast as its training was on this machine's load
        oof = final.write(config_dir, fold)
        if oof is None:  # a fold kept, or one validated otherwise (DDP, volume slices): predicted here
            oof = predict_fold_oof(config_dir, fold, cfg.device, cfg.amp)
        if not reported:  # a fold kept from an earlier run keeps its report
            write_fold_report(config_dir, fold, oof, cfg.device, cfg.amp, figures=clock.ends_at is None)
    clock.after_s = time.perf_counter() - started
    clock.measure_summary(config_dir, fold, oof)


def _top_up_first_folds(cfg: TrainConfig, cv_dir: Path, kept: list[str], clock: _CvClock, probes: dict,
                        race: RaceRecord) -> None:
    """After the race, train each kept configuration's fold 0 again from its weights for the share the dropped
    ones freed (:mod:`gctxseg.crossval.topup`); what each got is recorded in ``race.json`` under ``top-up``. Not
    with a schedule the user fixed (``--epochs``/``--steps``), and once: a cv resumed during a top-up finishes it as
    it resumes any fold; not under torchrun, where every rank would move the folder."""
    fixed = cfg.epochs is not None or cfg.steps is not None
    if clock.ends_at is None or fixed or race.top_up is not None or torch.distributed.is_initialized():
        return
    later = sum(_units_left(cv_dir, m, range(1, cfg.folds), None) for m in kept)
    spent = {m: t.wall_s if (t := _read_timing(cv_dir / m).get("0")) else 0.0 for m in kept}
    seconds, why_not = plan_top_ups(spent, clock.left_s(), later, MIN_UNIT_S)
    race.top_up = {m: TopUp(minutes=seconds[m] / 60) if m in seconds else TopUp(skipped=why_not[m]) for m in kept}
    # decided once: a cv resumed during a top-up does not plan again
    atomic_write_json(cv_dir / RACE_RECORD, race.to_json())
    for model in kept:
        config_dir, record = cv_dir / model, race.top_up[model]
        if model not in seconds:
            print(f"top-up after the race: {model}: {why_not[model]}", flush=True)
            continue
        record.steps_before = fold_steps(config_dir / "fold_0")[0]
        print(f"top-up after the race: {model} fold 0 trains {record.minutes:.2f} min more from the weights it "
              f"raced with ({record.steps_before} steps; that run moves to {model}/{PRE_RACE_FOLD})", flush=True)
        top_up = prepare_top_up(_configuration_config(cfg, model, probes.get(model)), config_dir, seconds[model])
        _timed(config_dir, "0 top-up", partial(_train_fold_and_oof, top_up, config_dir, 0, clock))
        record.steps = fold_steps(config_dir / "fold_0")[0]
        atomic_write_json(cv_dir / RACE_RECORD, race.to_json())


def _train_first_folds(cfg: TrainConfig, cv_dir: Path, models: list[str], clock: _CvClock, probes: dict,
                       first: range) -> None:
    """Train the ``first`` folds (fold 0 before a race, else every fold) of each configuration in turn, each unit
    on an equal share of the minutes left over every unit still to train: in a race, every configuration's later
    folds count too, so each configuration's fold 0 gets the same share and the race compares equals."""
    planned = {m: _units_left(cv_dir, m, range(cfg.folds), probes.get(m)) for m in models}
    now = {m: _units_left(cv_dir, m, first, probes.get(m)) for m in models}
    for i, model in enumerate(models):
        after = sum(planned.values()) - sum(now[m] for m in models[:i + 1])
        probes[model] = _train_configuration(cfg, cv_dir, model, clock, probes.get(model), first, after)


def _configuration_config(cfg: TrainConfig, model: str, probe) -> TrainConfig:
    """``cfg`` as one configuration's folds train: its model, its start, the learning rate its probe chose, and no
    sample predictions drawn (a fold's report shows its best and worst held-out scans, with the weights scored)."""
    cfg = replace(cfg, model=model, init_weights=_start_for(cfg, model), num_samples=0)
    return replace(cfg, lr=probe.lr, lr_reason=probe_reason(probe)) if probe is not None else cfg


def _races(cfg: TrainConfig, cv_dir: Path, models: list[str], race: bool) -> bool:
    """Whether this cv races after fold 0 (:mod:`gctxseg.crossval.race`): a race already on record holds; a new one
    needs a time budget to share out, two configurations or more, and no later fold begun (an older cv folder resumes
    as it was)."""
    if read_race(cv_dir, models, cfg.folds) is not None:
        return True
    begun = any((cv_dir / m / f"fold_{f}").exists() for m in models for f in range(1, cfg.folds))
    return race and bool(cfg.time_budget) and len(models) > 1 and not begun


def run_cv(cfg: TrainConfig, models: list[str] | tuple[str, ...] = DEFAULT_CONFIGURATIONS,
           device: str | None = None, amp: str | None = None, race: bool = True, started: float | None = None) -> Path:
    """Cross-validate every configuration in ``models`` on the same folds, then choose the best.

    ``cfg.time_budget`` (minutes) is for the whole run: after ``SUMMARY_SHARE`` of it for the out-of-fold
    predictions, each fold gets an equal share of the minutes left when it starts (:class:`_CvClock`). With a
    budget and ``race``, every configuration trains fold 0 first, and those far behind there stop
    (:mod:`gctxseg.crossval.race`): the minutes left go to the later folds of the others. The folder is
    ``results/name``: the same run started again continues it (finished folds are kept, a stopped one resumes), one
    of other data or settings is refused (:mod:`gctxseg.runs.cvfolder`), and nothing is made before every check has
    passed. ``started``: when the budget's clock started (``time.perf_counter``; the command line's start), None:
    at this call.
    Returns the CV folder.
    """
    # the configurations' plans and folds scan the same files, time the same steps, read the same checkpoints, and
    # a fold's report and its summary score the same scans: once each
    with remembered_step_times(), remembered_fingerprints(), remembered_checkpoints(), remembered_image_scores():
        return _run_cv(cfg, models, device, amp, race, time.perf_counter() if started is None else started)


def _run_cv(cfg: TrainConfig, models: list[str] | tuple[str, ...], device: str | None, amp: str | None,
            race: bool, started: float) -> Path:
    for other in models[1:]:  # every configuration's model options checked before any fold trains
        replace(cfg, model=other)
    if not cfg.folds:
        raise ValueError("gctxseg cv needs --folds K (K >= 2)")
    models = list(dict.fromkeys(models))
    if cfg.init_weights not in (None, NO_START):  # as train refuses it: a start no configuration can take
        check_start_architecture(cfg.init_weights, models)
    # every check of flags, data and folder before anything is made (cvfolder.py): a rerun continues its folder
    identity = cv_identity(cfg, models, race)
    cv_dir = choose_cv_folder(cfg, identity)
    # every fold (and its resume, summary and report) reads the folds back from the file, never the folder
    cfg = replace(cfg, splits=str(write_splits(cfg, cv_dir, identity).resolve()))
    clock = _CvClock(cfg.time_budget, _training_spent_s(cv_dir, models), started)
    models = _affordable_configurations(cfg, cv_dir, models)
    clock.scans = len(held_out_scans(load_splits(cfg.splits)))
    clock.configurations = len(models)
    fold_budget, probes = _plan_probes(cfg, cv_dir, models)
    if fold_budget:
        probed = [m for m, p in probes.items() if not _skipped(p)]
        shares = f", and one share for the lr probe of {', '.join(probed)}" if probed else ""
        print(f"time budget {cfg.time_budget:g} min: about {fold_budget:.2f} min for each of {cfg.folds} folds of "
              f"{len(models)} configuration(s) ({', '.join(models)}){shares}; each fold gets an equal share of "
              "the minutes left when it starts", flush=True)
    racing = _races(cfg, cv_dir, models, race)
    first = range(1) if racing else range(cfg.folds)
    _train_first_folds(cfg, cv_dir, models, clock, probes, first)
    record = None
    if racing:
        record = race_after_first_fold(cv_dir, models, fold_budget, cfg.folds, device or cfg.device, amp or cfg.amp)
        print(format_race(record), flush=True)
        models = record.kept
        clock.configurations = len(models)
        _top_up_first_folds(cfg, cv_dir, models, clock, probes, record)
        later = range(1, cfg.folds)
        # the race split the budget over every configuration's folds: where it dropped none, the later folds' shares
        # are fold 0's and they keep its plan; where it dropped one, they are larger and fold 1 plans again
        plan_of = None if record.dropped else 0
        for i, model in enumerate(models):
            after = sum(_units_left(cv_dir, m, later, None) for m in models[i + 1:])
            _train_configuration(cfg, cv_dir, model, clock, probes.get(model), later, after, plan_of)
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return cv_dir
    kept_s = clock.summary_s() if cfg.time_budget else None
    with cpu_threads(clock.threads):  # beside a busy core a second thread slows it down (docs/time-budget.md)
        _summarize(cv_dir, models, record, device or cfg.device, amp or cfg.amp, kept_s)
    return cv_dir


def _summarize(cv_dir: Path, models: list[str], race: RaceRecord | None, device: str, amp: str,
               kept_s: float | None = None) -> CvChoice:
    """Each configuration's summary, then the choice among them, from the folds' stored out-of-fold arrays; one
    line says what it took (against the ``kept_s`` seconds of the budget kept for it) and how it was scored."""
    started = time.perf_counter()
    summaries = [summarize_cv(cv_dir / model, device=device, amp=amp) for model in models]
    chosen = choose_configuration(cv_dir, models, race=race)
    again = sum(len(s.out_of_fold.predicted_again) for s in summaries)
    source = f"{again} fold(s) predicted again, the others from arrays" if again else "out-of-fold from arrays"
    share = f" of the {kept_s:.0f} s kept for it" if kept_s else ""
    print(f"summary: {time.perf_counter() - started:.1f} s{share} ({source}; surface metrics on each "
          f"configuration's {chosen.images} held-out scans at their own size, once, none for the ensembles)",
          flush=True)
    return chosen


def _read_timing(config_dir: Path) -> dict[str, UnitTime]:
    """``timing.json``: per fold (and the lr probe) its training wall and CPU seconds, checked ({} when none)."""
    path = config_dir / "timing.json"
    if not path.is_file():
        return {}
    file = RunFile(path, "remove it to count the times afresh (the folds are kept)")
    timing = file.mapping(file.read())
    for name, spent in timing.items():
        file.mapping(spent, name)
        for unit in ("wall s", "cpu s"):
            file.number(file.item(spent, unit, name), f"{name}.{unit}", 0.0)
    return {name: UnitTime.from_json(spent) for name, spent in timing.items()}


def _configuration_cost(config_dir: Path) -> dict:
    """Training CPU / wall seconds (timing.json), optimiser steps and epochs per fold (the final checkpoints), as
    :class:`ConfigurationResult`'s keyword arguments."""
    timing = _read_timing(config_dir)
    runs = [last.parent for last in sorted(config_dir.glob("fold_*/last.pt"))]
    steps, epochs = (list(c) for c in zip(*map(fold_steps, runs))) if runs else ([], [])
    if runs and (config_dir / PRE_RACE_FOLD / "last.pt").is_file():  # fold 0 topped up: both runs trained it
        before = fold_steps(config_dir / PRE_RACE_FOLD)
        steps[0], epochs[0] = steps[0] + before[0], epochs[0] + before[1]
    return {"cpu_s": sum(t.cpu_s for t in timing.values()), "wall_s": sum(t.wall_s for t in timing.values()),
            "steps_per_fold": steps, "epochs_per_fold": epochs}


def _load_oof(config_dir: Path, names: list[str]) -> list[np.ndarray]:
    return stored_probabilities(config_dir, names)


def _score_candidate(members: tuple[str, ...], oof: dict[str, list[np.ndarray]], targets, k: int) -> _Candidate:
    """Pooled out-of-fold Dice of ``members`` averaged, before and after the post-processing chosen on it."""
    probs = [np.mean([oof[m][i].astype(np.float32) for m in members], axis=0) for i in range(len(targets))]
    preds = [p.argmax(0) for p in probs]
    post = choose_postprocessing(preds, targets, k)
    # the ranking is by Dice: the surface metrics of every candidate are not paid for (the summaries have them)
    raw = score_predictions(preds, targets, k, surface=False)
    processed = score_predictions([post(p) for p in preds], targets, k, surface=False)
    return _Candidate(members, raw["dice"], processed["dice"], nanmean(processed["dice"]), post)


def _targets(cv_dir: Path, model: str, names: list[str]) -> tuple[int, dict, list[np.ndarray]]:
    """(classes, value map, each named scan's ground truth as class indices) from one configuration's folds."""
    ckpt = load_checkpoint(next(iter(sorted((cv_dir / model).glob("fold_*/last.pt")))), mmap=True)  # classes, data
    value_map = MaskValueMap.from_dict(ckpt["value_map"])
    cfg = ckpt["config"]
    masks = {p.name: p.mask for p in find_pairs(cfg["data_train"], cfg["img_f"], cfg["mask_f"])}
    return value_map.num_classes, value_map.to_dict(), [
        value_map.encode(read_mask(masks[n]), source=masks[n]) for n in names]


def _choose(scored: list[_Candidate]) -> _Candidate:
    """The best candidate by pooled Dice; among those within ``TIE_DICE`` of it, the cheapest."""
    best = max(s.mean_dice for s in scored)
    tied = [s for s in scored if s.mean_dice >= best - TIE_DICE]
    return min(tied, key=lambda s: (len(s.members), s.cpu_s))


def choose_configuration(cv_dir: str | Path, models: list[str], race: RaceRecord | None = None) -> CvChoice:
    """Score every configuration and ensemble of ``CV/<model>`` folders on their out-of-fold predictions, choose
    the best (ties: the cheaper), write ``cv_summary.json``, ``postprocessing.json`` and ``cv_report.html``;
    ``race`` (the record of :mod:`gctxseg.crossval.race`) is written beside the ranking."""
    cv_dir = Path(cv_dir)
    summaries = {m: CvSummary.from_json(json.loads((cv_dir / m / "cv_summary.json").read_text())) for m in models}
    folds_file = cv_dir / SPLITS_FINAL  # ensembles are scored on exactly the held-out scans, not stale oof files
    names = held_out_scans(load_splits(folds_file)) if folds_file.is_file() else \
        sorted(p.stem for p in (cv_dir / models[0] / OOF_FOLDER).glob("*.npz"))
    k, classes, targets = _targets(cv_dir, models[0], names)
    oof = {m: _load_oof(cv_dir / m, names) for m in models}
    costs = {m: _configuration_cost(cv_dir / m) for m in models}
    candidates = [c for r in range(1, len(models) + 1) for c in itertools.combinations(models, r)]
    scored = [_score_candidate(c, oof, targets, k) for c in candidates]
    for s in scored:
        s.cpu_s = sum(costs[m]["cpu_s"] for m in s.members)
    chosen = _choose(scored)
    best = max(s.mean_dice for s in scored)
    ranking = sorted(scored, key=lambda s: -s.mean_dice)
    chosen.postprocessing.save(cv_dir / "postprocessing.json")
    summary = CvChoice(
        folds=summaries[models[0]].folds,
        images=len(names),
        classes=classes,
        configurations={m: ConfigurationResult(
            **costs[m], pooled_out_of_fold=summaries[m].pooled_out_of_fold,
            pooled_out_of_fold_post_processed=summaries[m].pooled_out_of_fold_post_processed,
            lr_probe=read_record(cv_dir / m)) for m in models},
        ranking=[RankedCandidate(s.name, list(s.members), s.dice, s.post_processed_dice, s.mean_dice,
                                 s.mean_dice - best, s.cpu_s, s.postprocessing.to_dict()) for s in ranking],
        race=race,
        tie_rule=f"within {TIE_DICE} pooled Dice of the best: fewest members, then least training CPU time",
        chosen=ChosenCandidate(chosen.name, list(chosen.members), chosen.mean_dice, chosen.post_processed_dice,
                               "postprocessing.json"),
    )
    atomic_write_json(cv_dir / "cv_summary.json", summary.to_json())
    text = format_ranking(summary)
    per_config = "\n\n".join(f"{m}:\n{format_cv_summary(summaries[m])}" for m in models)
    atomic_write_text(cv_dir / "cv_report.html", _report_html(cv_dir.name, text, per_config))
    print(text)
    return summary


def format_ranking(summary: CvChoice) -> str:
    """The candidates, best first, with their margin to the best, CPU time and steps; the chosen one last."""
    lines = [f"{'configuration':<28}{'pooled OOF Dice':>16}{'margin':>9}{'train CPU min':>15}  steps per fold"]
    for row in summary.ranking:
        steps = [summary.configurations[m].steps_per_fold for m in row.members]
        shown = " | ".join("/".join(map(str, s)) for s in steps)
        lines.append(f"{row.name:<28}{row.mean_dice:>16.4f}{row.margin_to_best:>+9.4f}"
                     f"{row.cpu_s / 60:>15.1f}  {shown}")
    for model, config in summary.configurations.items():
        probe = config.lr_probe
        if probe:
            dice = ", ".join(f"{lr} {d:.3f}" for lr, d in (probe.held_out_dice or {}).items())
            lines.append(f"{model} lr probe: " + (probe.skipped if probe.skipped is not None else
                                                  f"fold 0 held-out Dice {dice}; chosen {probe.chosen:g}"))
    if summary.race:
        lines.append(format_race(summary.race))
    chosen = summary.chosen
    lines.append(f"chosen: {chosen.name} (pooled out-of-fold Dice {chosen.mean_dice:.4f} after its "
                 f"post-processing; {summary.tie_rule})")
    return "\n".join(lines)


def _report_html(title: str, ranking: str, per_config: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width, initial-scale=1'><title>{html.escape(title)} cross-validation</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:1.5em}pre{overflow-x:auto}</style></head><body>"
            f"<h1>{html.escape(title)}: configurations compared out of fold</h1><pre>{html.escape(ranking)}</pre>"
            f"<h2>Each configuration</h2><pre>{html.escape(per_config)}</pre></body></html>")


def cv_models(models: list[str] | None, model: str | None) -> list[str]:
    """The configurations ``gctxseg cv`` compares: ``--models``, else ``--model`` alone, else the defaults."""
    from ..models import resolve_model_name

    chosen = models or ([model] if model else list(DEFAULT_CONFIGURATIONS))
    return list(dict.fromkeys(resolve_model_name(m) for m in chosen))


def summarize_folder(cv_dir: str | Path, device: str = "auto", amp: str = "auto") -> None:
    """``gctxseg cv --summary-only``: summarise each configuration of a CV folder again and choose among them
    (a folder of one configuration's folds, as older gctxseg wrote, is summarised as it is). Only configurations
    that trained every fold are summarised; a folder that holds none is refused before anything is written."""
    with remembered_checkpoints():  # each fold's last.pt is read for its steps, classes and scans: once
        _summarize_folder(Path(cv_dir), device, amp)


def _summarize_folder(cv_dir: Path, device: str, amp: str) -> None:
    if not cv_dir.is_dir():
        raise ValueError(f"{cv_dir}: no such folder, so no cv run to summarise; pass the --results and --name of "
                         "a gctxseg cv run")
    models = sorted(d.name for d in cv_dir.iterdir() if d.is_dir() and any(d.glob("fold_*/last.pt")))
    if not models:
        if not any(cv_dir.glob("fold_*/last.pt")):
            raise ValueError(f"{cv_dir}: holds no cv run (no fold_*/last.pt, nor MODEL/fold_*/last.pt); pass the "
                             "--results and --name of a gctxseg cv run")
        _complete_folds(cv_dir, [cv_dir], None)
        summarize_cv(cv_dir, device=device, amp=amp)
        return
    race = read_race(cv_dir, models)
    if race is not None:  # the configurations dropped after fold 0 have one fold: not candidates
        models = [m for m in models if m in race.kept]
    _complete_folds(cv_dir, [cv_dir / m for m in models], race)
    _summarize(cv_dir, models, race, device, amp)


def _complete_folds(cv_dir: Path, config_dirs: list[Path], race: RaceRecord | None) -> None:
    """Every configuration to summarise trained every fold of one K (the race's, where one is on record).

    Raises:
        ValueError: one line naming the configuration (or ``race.json``'s ``kept``) and the missing fold."""
    race_file = RunFile(cv_dir / RACE_RECORD, "run the same gctxseg cv command again to finish it, or correct "
                                              "'kept'")
    counts = {}
    for config_dir in config_dirs:
        missing, counts[config_dir.name] = missing_folds(config_dir)
        trained = f"{counts[config_dir.name] - len(missing)} of {counts[config_dir.name]} folds"
        if missing and race is not None:
            raise race_file.refuse("kept", f"names {config_dir.name}, which trained {trained} (no "
                                           f"fold_{missing[0]}/last.pt)")
        if missing:
            raise ValueError(f"{config_dir}: trained {trained} (no fold_{missing[0]}/last.pt); run the same gctxseg "
                             "cv command again to finish it")
    if len(set(counts.values())) > 1:
        raise ValueError(f"{cv_dir}: its configurations were trained on different fold counts "
                         f"({', '.join(f'{m} {k}' for m, k in counts.items())}); summarise folders of one cv run")
    if race is not None and race.folds not in counts.values():
        raise race_file.refuse("folds", f"is {race.folds}, but the configurations trained {counts.popitem()[1]} "
                                        "folds")
