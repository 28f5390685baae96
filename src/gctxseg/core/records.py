"""Records that gctxseg writes as JSON (``log.json``, ``summary.json``, a cv's summary) as dataclasses.

A record's JSON keys are the words people read in the file ("mean dice", "per class", "limits of agreement");
code reads the dataclass's attributes (``scores.mean_dice``) instead of spelling those keys again. A field's key
is its name with spaces for underscores, or ``key(...)``'s where that rule does not give it ("Dice", "class").
``to_json`` writes the fields in their declared order, so a record gives the same bytes as the dict it replaces;
``from_json`` reads such a dict back (a key that is not a field is ignored; a field an older file lacks takes its
default). Checking a file a user can edit stays with the reader that names it (``gctxseg.runs.runfiles.RunFile``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, Field, field, fields, is_dataclass
from typing import Any, TypeVar

__all__ = ["JsonRecord", "key", "optional", "inline", "records"]

R = TypeVar("R", bound="JsonRecord")


def key(name: str, **kwargs: Any) -> Any:
    """A field whose JSON key is ``name`` (other ``dataclasses.field`` arguments pass through)."""
    return field(metadata={"key": name}, **kwargs)


def optional(name: str | None = None, record: type[JsonRecord] | None = None, *, mapping: bool = False) -> Any:
    """A field written only when it is not None (a key that only some runs' files hold), None by default;
    ``record`` and ``mapping``: what it holds, as for :func:`records`."""
    return field(default=None, metadata={"key": name, "optional": True, "record": record, "mapping": mapping})


def inline(record: type[JsonRecord]) -> Any:
    """A field holding a ``record`` whose keys sit in this record's own JSON object (no key of its own)."""
    return field(metadata={"record": record, "inline": True})


def records(name: str | None, record: type[JsonRecord], *, mapping: bool = False, **kwargs: Any) -> Any:
    """A field holding a ``record`` or a list of them, or with ``mapping`` a dict of name -> ``record``, read back
    as such (``name``: its key, None for the rule)."""
    return field(metadata={"key": name, "record": record, "mapping": mapping}, **kwargs)


def _key(f: Field) -> str:
    return f.metadata.get("key") or f.name.replace("_", " ")


def _plain(value: Any) -> Any:
    """JSON data of ``value``: records as their dicts, also inside lists and dicts; tuples as lists."""
    if isinstance(value, JsonRecord):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _records_of(record: type[JsonRecord], value: Any, mapping: bool) -> Any:
    """``value`` (one record's dict, a list of them, or with ``mapping`` a dict of them) read back as records."""
    if mapping:
        return {k: record.from_json(v) for k, v in value.items()}
    return [record.from_json(v) for v in value] if isinstance(value, list) else record.from_json(value)


class JsonRecord:
    """Base of a dataclass written as a JSON object whose keys are its fields' keys (see the module's doc)."""

    def to_json(self) -> dict:
        """The record as the dict written to the file (keys in field order, optional fields left out when None)."""
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.metadata.get("optional"):
                continue
            if f.metadata.get("inline"):
                out.update(value.to_json())
                continue
            out[_key(f)] = _plain(value)
        return out

    @classmethod
    def from_json(cls: type[R], data: Mapping[str, Any]) -> R:
        """The record of ``data`` (a dict ``to_json`` wrote, or an older file's); ``KeyError`` on a missing
        field that has no default."""
        assert is_dataclass(cls), f"{cls.__name__} must be a dataclass"
        values = {}
        for f in fields(cls):
            name, record = _key(f), f.metadata.get("record")
            if f.metadata.get("inline"):
                values[f.name] = record.from_json(data)
            elif name in data:
                value = data[name]
                if record is not None and value is not None:
                    value = _records_of(record, value, f.metadata.get("mapping", False))
                values[f.name] = value
            elif f.default is MISSING and f.default_factory is MISSING:
                raise KeyError(name)
        return cls(**values)
