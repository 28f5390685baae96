"""The one exception bad data raises, and the warning for data that is questionable but usable."""

from __future__ import annotations

__all__ = ["DatasetError", "DataWarning", "raise_collected"]


class DatasetError(ValueError):
    """Bad input data. The message is one line: ``path: what is wrong; what to do``."""


class DataWarning(UserWarning):
    """Questionable input data that training can go on with; same one-line message format."""


def raise_collected(problems: list[str]) -> None:
    """Raise one :class:`DatasetError` for a list of problems (first one shown, the rest counted)."""
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DatasetError(problems[0] + more)
