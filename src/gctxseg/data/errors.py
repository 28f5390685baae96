"""The one exception bad data raises."""

from __future__ import annotations

__all__ = ["DatasetError", "raise_collected"]


class DatasetError(ValueError):
    """Bad input data. The message is one line: ``path: what is wrong; what to do``."""


def raise_collected(problems: list[str]) -> None:
    """Raise one :class:`DatasetError` for a list of problems (first one shown, the rest counted)."""
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DatasetError(problems[0] + more)
