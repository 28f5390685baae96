"""ImageNet pre-training of GCtx-UNet: GC ViT-xxtiny weights into the encoder and, mirrored, the decoder.

``--encoder-weights imagenet`` asks timm for ``gcvit_xxtiny`` pre-trained weights
(``timm.create_model("gcvit_xxtiny", pretrained=True)``): timm downloads and caches them its own way, so
its cache and offline settings behave as timm users expect. In timm 1.0 these weights come from a release
URL into timm's cache folder (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``):
a file already there is used without the network. Models timm serves from the Hugging Face Hub go through
``huggingface_hub`` (``HF_HOME``, ``HF_HUB_OFFLINE``). With ``HF_HUB_OFFLINE=1`` (or no network) and nothing
cached, loading stops before training with one line that says how to pass a local file instead.

``--encoder-weights PATH`` takes such a file (timm or NVlabs key names). ``--decoder-init mirror`` copies
each encoder stage's GC ViT blocks and global-query generator into the decoder stage of the same scale, the
authors' initialisation (written here from their paper on timm's modules; their code is not used).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .gctx_unet import GCtxUNet, encoder_state, mirror_into_decoder

__all__ = ["IMAGENET", "DECODER_INITS", "TIMM_ENCODER", "PretrainedLoad", "imagenet_state_dict", "load_pretrained"]

IMAGENET = "imagenet"
DECODER_INITS = ("none", "mirror")
TIMM_ENCODER = "gcvit_xxtiny"
_SAVE_HINT = (
    f"on a machine online run: python -c \"import timm, torch; torch.save(timm.create_model('{TIMM_ENCODER}', "
    f"pretrained=True).state_dict(), '{TIMM_ENCODER}.pth')\" and pass --encoder-weights {TIMM_ENCODER}.pth"
)


@dataclass
class PretrainedLoad:
    """Which tensors an ImageNet checkpoint set: encoder keys loaded and missing, unused ones, decoder keys."""

    source: str
    encoder_loaded: list[str] = field(default_factory=list)
    encoder_missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # checkpoint keys the model has no place for
    decoder_loaded: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the training log."""
        return (f"encoder weights {self.source}: {len(self.encoder_loaded)} encoder tensors loaded, "
                f"{len(self.encoder_missing)} missing, {len(self.unused)} checkpoint tensors unused"
                + (f", {len(self.decoder_loaded)} decoder tensors mirrored" if self.decoder_loaded else ""))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cached_url_file(url: str) -> Path | None:
    """Where timm keeps a URL-served checkpoint, if it is there."""
    from timm.models._hub import get_cache_dir

    path = Path(get_cache_dir()) / os.path.basename(url)
    return path if path.is_file() else None


def imagenet_state_dict(name: str = TIMM_ENCODER) -> dict[str, torch.Tensor]:
    """The ImageNet weights timm has for ``name`` (timm key names), through timm's download and cache.

    Raises:
        ValueError: offline (``HF_HUB_OFFLINE``) with nothing cached, or the download failing; one line saying
            how to pass a local file.
    """
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    url = getattr(cfg, "url", None) if cfg is not None else None
    if _offline() and not getattr(cfg, "hf_hub_id", None) and url and _cached_url_file(url) is None:
        # timm fetches URL-served weights even under HF_HUB_OFFLINE: honour the setting before it tries
        raise ValueError(f"--encoder-weights {IMAGENET}: HF_HUB_OFFLINE is set and timm's cache has no "
                         f"{os.path.basename(url)}; {_SAVE_HINT}")
    try:
        return timm.create_model(name, pretrained=True).state_dict()
    except Exception as err:  # no network, proxy, hub offline, truncated file ...: many types
        reason = (str(err).splitlines() or [""])[0][:160]
        raise ValueError(f"--encoder-weights {IMAGENET}: timm could not get {name} weights "
                         f"({type(err).__name__}: {reason}); {_SAVE_HINT}") from None


def _load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A weights file read without running code (``weights_only``): refused with one line otherwise."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a crafted pickle, a truncated or foreign file: types differ by torch version
        raise ValueError(f"--encoder-weights {path}: not a plain weights file ({type(err).__name__}); it may hold "
                         f"Python objects, which are never loaded, or be truncated; {_SAVE_HINT}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"--encoder-weights {path}: holds a {type(raw).__name__}, not a state dict; {_SAVE_HINT}")
    return raw


def load_pretrained(model: torch.nn.Module, source: str | Path, decoder_init: str = "none") -> PretrainedLoad:
    """Load ImageNet GC ViT weights into a GCtx-UNet (``source``: ``imagenet`` or a checkpoint file).

    Raises:
        ValueError: not a GCtx-UNet, a missing file, an unknown ``decoder_init``, weights of another variant,
            or ``imagenet`` unavailable (see :func:`imagenet_state_dict`).
    """
    if decoder_init not in DECODER_INITS:
        raise ValueError(f"--decoder-init {decoder_init}: choose one of {', '.join(DECODER_INITS)}")
    if not isinstance(model, GCtxUNet):
        raise ValueError(
            f"--encoder-weights {source}: only gctx_unet has a GC ViT encoder to load, not {type(model).__name__}"
        )
    if str(source) == IMAGENET:
        raw = imagenet_state_dict()
    elif Path(source).is_file():
        raw = _load_weights_file(Path(source))
    else:
        raise ValueError(f"--encoder-weights {source}: file not found; pass a GC ViT-xxtiny checkpoint "
                         f"or '{IMAGENET}' (timm's download)")
    state = encoder_state(model, raw, source)
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    report = PretrainedLoad(str(source), sorted(set(state) - set(unexpected)), list(missing), list(unexpected))
    if decoder_init == "mirror":
        report.decoder_loaded = mirror_into_decoder(model, state)
    return report
