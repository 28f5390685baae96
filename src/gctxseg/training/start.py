"""A run's starting weights from a whole model (``--init-weights``): a ``gctxseg pretrain`` output or a run.

Every tensor whose name and shape match is copied. The input convolution of a start with another channel count
is adapted so that a grey picture given as any number of equal channels gives the same response (summed over
the start's channels, spread evenly over the run's: timm's ``adapt_input_conv`` does this for 3-channel
ImageNet stems only); a head of
another class count (phantom pre-training has 3 classes, a user's set has its own; masked-image pre-training
reconstructs pixels) is left at its initialisation and named in the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..models import resolve_model_name
from ..runs.checkpoint import load_model_start
from .config import NO_START

__all__ = ["NO_START", "PLANNED_STARTS", "StartReport", "adapt_input_channels", "check_start_architecture",
           "install_start", "installed_start_users", "load_start", "offline_start", "planned_start",
           "start_architecture", "start_cache"]

START_CACHE_ENV = "GCTXSEG_CACHE"
# The architectures whose runs, with none installed, say that gctxseg pretrain --install would build one: on Duke
# DME the phantom start raised gctx_unet's pooled out-of-fold fluid Dice clearly (docs/real-oct.md, "Pre-training
# GCtx-UNet offline"). The convolutional networks were not measured with one; a start the user installed for one is
# used all the same (installing is asking for it).
PLANNED_STARTS = ("gctx_unet",)


@dataclass
class StartReport:
    """What a start set: tensors copied, adapted to the input channels, left at their initialisation."""

    source: str
    sha256: str
    loaded: int
    total: int
    adapted: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    pretraining: dict = field(default_factory=dict)  # the start's own record (task, steps, images, time)

    def summary(self) -> str:
        task = self.pretraining.get("task")
        made = f" ({task} pre-training)" if task else ""
        left = f"; left at initialisation: {', '.join(self.left[:4])}{' ...' if len(self.left) > 4 else ''}"
        return (f"init weights {self.source}{made}: {self.loaded}/{self.total} tensors loaded"
                + (f", {len(self.adapted)} adapted to the input channels" if self.adapted else "")
                + (left if self.left else ""))

    def to_dict(self) -> dict:
        return asdict(self)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_start(model: torch.nn.Module, model_name: str, source: str | Path) -> StartReport:
    """Copy the start's matching tensors into ``model`` (built as ``model_name``); returns what was set.

    Raises:
        ValueError: an unreadable or unsafe file, a start of another architecture, or one that sets nothing.
    """
    ckpt = load_model_start(source)
    wanted = resolve_model_name(model_name)
    check_start_architecture(source, [wanted], ckpt)
    own, state = model.state_dict(), ckpt["model"]
    report = StartReport(str(source), _sha256(Path(source)), 0, len(own), pretraining=ckpt.get("pretraining") or {})
    chosen = {}
    for key, target in own.items():
        value = state.get(key)
        if value is not None and value.shape == target.shape:
            chosen[key] = value
        elif value is not None and value.dim() == 4 and value.shape[0] == target.shape[0] and key == _stem(own):
            chosen[key] = adapt_input_channels(value, target.shape[1])  # another channel count at the input only
            report.adapted.append(key)
        else:
            report.left.append(key)
    if not chosen:
        raise ValueError(f"--init-weights {source}: none of its tensors fits this {wanted}; its model_kwargs differ")
    model.load_state_dict(chosen, strict=False)
    report.loaded = len(chosen)
    return report


def adapt_input_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """A first convolution's ``(out, in, kh, kw)`` weight for ``channels`` inputs: equal channels in, same out."""
    return (weight.sum(1, keepdim=True) / channels).repeat(1, channels, 1, 1)


def check_start_architecture(source: str | Path, models: Sequence[str], ckpt: dict | None = None) -> str:
    """The architecture a start holds, refused unless it is one of ``models`` (``train``'s one, ``cv``'s several:
    a start no configuration can take would leave every one of them starting from nothing, silently).

    Raises:
        ValueError: one line naming the start, what it holds and what to pre-train instead.
    """
    theirs = resolve_model_name((ckpt or load_model_start(source))["model_name"])
    wanted = [resolve_model_name(m) for m in models]
    if theirs not in wanted:
        raise ValueError(f"--init-weights {source}: holds a {theirs}, not a {' or '.join(wanted)}; pre-train with "
                         f"--model {wanted[0]}")
    return theirs


def start_architecture(source: str | Path) -> str:
    """The registry name of the network a start holds (``gctxseg cv`` gives it to that configuration only)."""
    return resolve_model_name(load_model_start(source)["model_name"])


def _stem(state: dict[str, torch.Tensor]) -> str | None:
    """The first convolution's weight: the only tensor that depends on the input channels."""
    return next((k for k, v in state.items() if v.dim() == 4), None)


def start_cache() -> Path:
    """Where installed starts live: ``$GCTXSEG_CACHE``, else ``~/.cache/gctxseg``."""
    return Path(os.environ.get(START_CACHE_ENV) or Path.home() / ".cache" / "gctxseg")


def offline_start(model: str) -> Path:
    """The installed start of ``model`` (``gctxseg pretrain --install`` writes it; it may not exist)."""
    return start_cache() / "starts" / f"{resolve_model_name(model)}.pt"


def install_start(weights: str | Path) -> Path:
    """Copy a ``pretrained.pt`` to the :func:`offline_start` of the architecture it holds (atomically: a
    half-copied start is never used).

    Raises:
        ValueError: a file :func:`~gctxseg.runs.checkpoint.load_model_start` refuses (it would be refused by every run).
    """
    target = offline_start(load_model_start(weights)["model_name"])
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    shutil.copyfile(weights, partial)
    os.replace(partial, target)
    return target


def planned_start(model: str, model_options: dict, encoder_weights: str | None) -> tuple[str | None, str]:
    """The start a run of ``model`` gets when ``--init-weights`` is not given, and why (one line).

    The start installed for the architecture (``gctxseg pretrain --install``) when it was pre-trained with the
    run's options (the start holds that network); nothing for ImageNet encoder weights, for other options (said),
    or when none is installed (said for the architectures of :data:`PLANNED_STARTS`, where one was measured).
    """
    name = resolve_model_name(model)
    if encoder_weights:
        return None, ""
    path = offline_start(name)
    if path.is_file():
        theirs = load_model_start(path).get("model_kwargs") or {}
        if theirs == dict(model_options):
            return str(path), f"the installed offline start {path}"
        return None, (f"{name} starts from scratch: the installed start {path} was pre-trained with --model-option "
                      f"{_shown(theirs)}, this run has {_shown(model_options)}; pre-train and install one with "
                      "this run's options, or give --init-weights")
    if name not in PLANNED_STARTS or model_options:
        return None, ""
    return None, (f"{name} starts from scratch: no offline start in {path}; gctxseg pretrain --install builds it "
                  "once (about 13 minutes on 2 CPU cores; +0.19 out-of-fold Dice on Duke DME, docs/real-oct.md)")


def _shown(options: dict) -> str:
    return " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(options.items())) or "(none)"


def installed_start_users(start: str | Path) -> str:
    """Which later runs start from an installed ``start``, as :func:`planned_start` decides (``pretrain --install``
    says it): those of its architecture with its options, given no other start."""
    ckpt = load_model_start(start)
    name, model_options = resolve_model_name(ckpt["model_name"]), ckpt.get("model_kwargs") or {}
    same = f" with --model-option {_shown(model_options)}" if model_options else " without --model-option"
    return (f"gctxseg train and cv runs of {name}{same} start from it, unless given --init-weights or "
            "--encoder-weights (--init-weights none: from scratch)")
