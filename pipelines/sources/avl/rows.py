"""AVL trip rows → one validated, typed, de-duplicated Arrow table, and the quarantine records
of the rows that cannot be trusted. Pure: no lake, no HTTP, no Dagster."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa

SOURCE = "avl"
TABLE = "trips"

TS = pa.timestamp("us", tz="UTC")
TRIPS_SCHEMA = pa.schema(
    [
        pa.field("device_name", pa.string(), nullable=False),
        pa.field("trip_start", TS, nullable=False),
        pa.field("trip_start_local", pa.string()),
        pa.field("trip_start_address", pa.string()),
        pa.field("trip_start_lat", pa.float64()),
        pa.field("trip_start_lon", pa.float64()),
        pa.field("trip_end", TS),
        pa.field("trip_end_local", pa.string()),
        pa.field("trip_end_address", pa.string()),
        pa.field("trip_end_lat", pa.float64()),
        pa.field("trip_end_lon", pa.float64()),
        pa.field("kms", pa.float64()),
        pa.field("duration_min", pa.float64()),
        pa.field("idle_min", pa.float64()),
        pa.field("max_speed", pa.float64()),
        pa.field("fuel", pa.float64()),
        pa.field("cost", pa.float64()),
        pa.field("extracted_at", TS, nullable=False),
        pa.field("day", pa.date32(), nullable=False),
    ]
)
_FLOATS = (
    "trip_start_lat",
    "trip_start_lon",
    "trip_end_lat",
    "trip_end_lon",
    "kms",
    "duration_min",
    "idle_min",
    "max_speed",
    "fuel",
    "cost",
)
_STRINGS = ("trip_start_address", "trip_end_address")
# A number sent as text: plain decimal notation only ("12,5", "1_000", "NaN" are not numbers).
_NUMBER_TEXT = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


class BadValue(ValueError):
    """One field of a row that cannot be landed; str() is the quarantine reason."""

    def __init__(self, name: str, value: Any, problem: str) -> None:
        self.field = name
        self.value = value
        super().__init__(f"{name}: {_shown(value)} {problem}")


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else _as_text(value) or "null"


def _as_text(value: Any) -> str | None:
    """A raw value as the quarantine's `value` text: strings as sent, others as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def to_utc(value: Any, tz: ZoneInfo, name: str = "timestamp") -> datetime | None:
    """An offset-less API timestamp read in the account's zone (earliest reading of a DST fold).

    Raises `BadValue` for anything but an ISO 8601 date-time (e.g. `05/03/2026 07:15:00`).
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadValue(name, value, "is not an ISO 8601 date-time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadValue(name, value, "is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(UTC)


def _float(name: str, value: Any) -> float | None:
    """A finite number, or None for null; NaN, infinities and "12,5" raise `BadValue`."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadValue(name, value, "is not a number")
    if isinstance(value, str) and not _NUMBER_TEXT.fullmatch(value.strip()):
        raise BadValue(name, value, "is not a number")
    try:
        number = float(value)
    except OverflowError:
        raise BadValue(name, value, "is out of range") from None
    if not math.isfinite(number):
        raise BadValue(name, value, "is not a finite number")
    return number


def _text(name: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise BadValue(name, value, "is not text")


def _device_name(name: str, value: Any) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadValue(name, value, "is missing: the row has no vehicle")
    if not isinstance(value, str):
        raise BadValue(name, value, "is not text")
    return value


def _typed_fields(row: dict[str, Any], tz: ZoneInfo) -> tuple[dict[str, Any], list[BadValue]]:
    """Every field of a row typed, and every value that could not be."""

    def timestamp(name: str, value: Any) -> datetime | None:
        return to_utc(value, tz, name)

    parsers: list[tuple[str, Callable[[str, Any], Any]]] = [
        ("device_name", _device_name),
        ("trip_start", timestamp),
        ("trip_end", timestamp),
        *((name, _float) for name in _FLOATS),
        *((name, _text) for name in _STRINGS),
    ]
    values: dict[str, Any] = {}
    problems: list[BadValue] = []
    for name, parse in parsers:
        try:
            values[name] = parse(name, row.get(name))
        except BadValue as bad:
            problems.append(bad)
    return values, problems


@dataclass
class Typed:
    """One answer's rows: landable ones as a table, and the rest with the reason why not."""

    table: pa.Table
    quarantined: list[tuple[date, dict[str, Any]]]  # (day, quarantine record)
    null_trip_start: int
    duplicates: int


def rows_to_table(
    rows: Sequence[Any], tz: ZoneInfo, extracted_at: datetime, fallback_day: date
) -> Typed:
    """Validate and type rows where they enter; drop rows without `trip_start` (not trips) and
    duplicate natural keys (`device_name`, `trip_start`: the API has no trip or device id).

    A row with a value that cannot be trusted (a number that is not one or not finite, an
    unreadable timestamp, no device_name) is quarantined whole, on its trip_start's UTC day
    (`fallback_day` when that is unreadable): a partly landed trip would be wrong facts.
    """
    by_key: dict[tuple[str, datetime], dict[str, Any]] = {}
    quarantined: list[tuple[date, dict[str, Any]]] = []
    nulls = 0
    dupes = 0
    for row in rows:
        if not isinstance(row, dict):
            quarantined.append((fallback_day, _quarantine_record(row, "row is not a JSON object")))
            continue
        if row.get("trip_start") is None or row.get("trip_start") == "":
            nulls += 1
            continue
        record, problems = _typed_fields(row, tz)
        start: datetime | None = record.get("trip_start")
        if problems:
            first = problems[0]
            reason = "; ".join(str(p) for p in problems)
            day = start.date() if start is not None else fallback_day
            quarantined.append((day, _quarantine_record(row, reason, first.field, first.value)))
            continue
        record.update(
            trip_start_local=row["trip_start"],
            trip_end_local=row.get("trip_end"),
            extracted_at=extracted_at,
            day=record["trip_start"].date(),
        )
        key = (record["device_name"], record["trip_start"])
        if key in by_key:
            dupes += 1
        by_key[key] = record  # the later page wins: it is the fresher answer
    ordered = sorted(by_key.values(), key=lambda r: (r["trip_start"], r["device_name"]))
    table = pa.Table.from_pylist(ordered, schema=TRIPS_SCHEMA)
    return Typed(table, quarantined, nulls, dupes)


def _quarantine_record(
    row: Any, reason: str, name: str | None = None, value: Any = None
) -> dict[str, Any]:
    return {
        "table": TABLE,
        "reason": reason,
        "field": name,
        "value": _as_text(value),
        "payload": json.dumps(row, ensure_ascii=False, default=str),
    }
