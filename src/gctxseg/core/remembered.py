"""Measurements kept for the length of a block: what ``gctxseg cv`` measures once and its later plans and folds reuse
(step times, data fingerprints). Outside a block nothing is kept, so a lone ``train`` measures afresh."""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator
from typing import Any

__all__ = ["Remembered"]


class Remembered:
    """Values keyed by what they were measured from, kept while a :meth:`block` is open (nested blocks share the
    outermost one's values)."""

    def __init__(self) -> None:
        self._values: dict | None = None

    @contextlib.contextmanager
    def block(self) -> Iterator[None]:
        outer = self._values
        self._values = {} if outer is None else outer
        try:
            yield
        finally:
            self._values = outer

    @property
    def open(self) -> bool:
        """Whether a block is open (values are kept)."""
        return self._values is not None

    def get(self, key: Hashable) -> Any | None:
        """The value kept for ``key`` (None: none, or no block open)."""
        return None if self._values is None else self._values.get(key)

    def keep(self, key: Hashable, value: Any) -> None:
        """Keep ``value`` for ``key`` while the block is open (nothing outside one)."""
        if self._values is not None:
            self._values[key] = value
