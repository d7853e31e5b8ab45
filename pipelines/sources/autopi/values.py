"""How an export's JSON values are read and judged: non-finite numbers kept visible instead of
becoming floats, ISO-8601 times, and the two verdicts, `BadValue` (one row stays out of the
lake) and `CorruptExport` (the whole file does). Shared by the trip object and the datapoints.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


class CorruptExport(ValueError):
    """The file is not one complete export: truncated gzip, bad CRC, or no trip object."""


@dataclass(frozen=True)
class BadValue:
    """Why a row cannot land: the field to blame, its value as sent (as text), what is wrong."""

    field: str
    value: str
    why: str

    @property
    def reason(self) -> str:
        return f"{self.field}: {self.value!r} {self.why}"


# --- JSON with its non-finite numbers kept visible --------------------------------------------

NOT_FINITE = "is not a finite number"


class NonFinite:
    """A number JSON cannot carry (`NaN`, `Infinity`, `-Infinity`, or one beyond float64 such
    as `1e999`), in place of the float Python's json would make of it: nothing can land it by
    mistake, and the quarantine shows the text that was sent."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _parse_float(text: str) -> float | NonFinite:
    value = float(text)
    return value if math.isfinite(value) else NonFinite(text)


class DuplicateKey(ValueError):
    pass


def _pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object, unless a key repeats (which value counts would be a guess)."""
    obj = dict(items)
    if len(obj) != len(items):
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj


# Built once: json.loads with hooks builds a decoder per call, which doubles its cost.
LINE_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_float=_parse_float, parse_constant=NonFinite
)
TRIP_DECODER = json.JSONDecoder(parse_float=_parse_float, parse_constant=NonFinite)


def decode(raw: bytes, decoder: json.JSONDecoder) -> Any:
    """`json.loads(raw)` (same encoding detection) with `decoder`'s hooks."""
    return decoder.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


def value_text(value: Any) -> str:
    """A value as it was sent: a string as itself, anything else as its JSON text."""
    if isinstance(value, str):
        return value
    if isinstance(value, NonFinite):
        return value.text
    return json.dumps(value, ensure_ascii=False, default=repr)


def non_finite_in(value: Any, path: str) -> BadValue | None:
    """The first non-finite number nested in `value`, named by its key path."""
    if isinstance(value, NonFinite):
        return BadValue(path, value.text, NOT_FINITE)
    if isinstance(value, dict):
        items: Any = ((f"{path}.{k}" if path else k, v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub_path, sub in items:
        if found := non_finite_in(sub, sub_path):
            return found
    return None


def parse_utc(value: Any) -> datetime | None:
    """An ISO-8601 time in UTC (one without an offset is UTC already); None if not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
