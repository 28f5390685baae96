"""Model registry: architecture name -> constructor.

Entrypoints register under their function name with :func:`register_model`; aliases (the seed project's
``unet++``/``unet3+``) point at the same entrypoint. :func:`create_model` builds a model from a name with
``(in_channels, num_classes, **options)``; caller options beat the entrypoint's defaults.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable, Sequence

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "resolve_model_name", "model_description",
           "model_options"]

_ENTRYPOINTS: dict[str, Callable[..., nn.Module]] = {}
_ALIASES: dict[str, str] = {}


def register_model(
    fn: Callable[..., nn.Module] | None = None, *, aliases: Sequence[str] = ()
) -> Callable[..., nn.Module] | Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``fn`` under its ``__name__`` (and ``aliases``); a name taken twice raises ``ValueError``."""

    def decorate(entry: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        for name in (entry.__name__, *aliases):
            if name in _ENTRYPOINTS or name in _ALIASES:
                raise ValueError(f"model name {name!r} is registered twice")
        _ENTRYPOINTS[entry.__name__] = entry
        for alias in aliases:
            _ALIASES[alias] = entry.__name__
        return entry

    return decorate(fn) if fn is not None else decorate


def resolve_model_name(name: str) -> str:
    """Canonical registry name for ``name`` or an alias; unknown names raise with a suggestion."""
    if name in _ENTRYPOINTS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    known = sorted([*_ENTRYPOINTS, *_ALIASES])
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown model {name!r}{hint} available: {', '.join(known)}")


def create_model(name: str, in_channels: int, num_classes: int, **options) -> nn.Module:
    """Build the registered model ``name`` for ``in_channels`` inputs and ``num_classes`` output logits."""
    return _ENTRYPOINTS[resolve_model_name(name)](in_channels=in_channels, num_classes=num_classes, **options)


def list_models(with_aliases: bool = False) -> list[str]:
    """Registered names, sorted; with ``with_aliases`` the aliases too."""
    return sorted([*_ENTRYPOINTS, *_ALIASES]) if with_aliases else sorted(_ENTRYPOINTS)


def model_description(name: str) -> str:
    """First line of the entrypoint's docstring."""
    doc = _ENTRYPOINTS[resolve_model_name(name)].__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def model_options(name: str) -> dict[str, inspect.Parameter] | None:
    """Keyword options of the class a registered model builds (its entrypoint's return annotation), or None when
    they cannot be known (a ``**options`` catch-all).

    Entrypoints take ``**options`` and pass them on, so only the class's ``__init__`` says which there are;
    runs/checkpoint.py checks a received checkpoint's ``model_kwargs`` against them before building anything.
    """
    entry = _ENTRYPOINTS[resolve_model_name(name)]
    try:
        cls = typing.get_type_hints(entry).get("return")
    except Exception:  # an annotation that does not resolve: fall back to the entrypoint's own signature
        cls = None
    params = inspect.signature(cls.__init__ if isinstance(cls, type) else entry).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {k: p for k, p in params.items() if k not in ("self", "in_channels", "num_classes")}
