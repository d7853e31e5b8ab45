"""Metrotec rows → typed Arrow tables per UTC day, and the quarantine of the rows that cannot be.

The lake keeps the vendor's field names (so a row reads like the API reference) with typed
values, plus a few derived columns in snake_case: `running_time_s`, `fuel_is_code`,
`extra_fields`, `extracted_at`. Values are validated where they enter: a row without its id or
time, or with a number that is not a finite number (`NaN`, `Infinity`, "12,5") or a time that
is not a time in any field the facts are built from, is quarantined whole with the field, the
value and the reason, in the lake's one quarantine convention. Only a field declared optional
(a spare sensor, a vehicle's configuration) is stored NULL instead, its value kept verbatim in
`extra_fields` and counted. Nothing the API sent is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.sources.metrotec.client import parse_time
from pipelines.sources.metrotec.specs import QUARANTINE_FIELDS, VEHICLES, TableSpec
from pipelines.sources.metrotec.values import TYPES, BadValue, hms_seconds, value_text


def _derive(spec: TableSpec, record: dict[str, Any]) -> None:
    """Derived columns; the raw value stays in its own column. Raises BadValue (runningTime)."""
    if spec.name == "stops":
        record["running_time_s"] = hms_seconds(record.get("runningTime"))
    if spec.name == "refuels":
        levels = (record.get("fuelBeforeL"), record.get("fuelAfterL"))
        record["fuel_is_code"] = any(v is not None and v < 0 for v in levels)
    elif "fuel_is_code" in {f.name for f in spec.derived}:
        # Negative readings are device codes (-2: no reading), not litres: flagged, kept as sent.
        fuel = record.get("fuel")
        record["fuel_is_code"] = fuel is not None and fuel < 0


@dataclass
class Typed:
    """One table's rows of one window, typed, with what could not be typed.

    `quarantined` rows carry the quarantine columns plus `day`: the row's own UTC day when its
    time reads, else None (the caller places it).
    """

    table: pa.Table
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    unparsed_values: int = 0
    duplicates_dropped: int = 0
    outside_range: int = 0


def type_rows(
    spec: TableSpec,
    rows: Iterable[tuple[str | None, Any]],
    extracted_at: datetime,
    *,
    days: set[date] | None = None,
) -> Typed:
    """Type (vehicle id, raw row) pairs; keep only rows of `days` when given (counted if not).

    A row whose own day is outside `days` is counted, never landed nor quarantined here: its
    own partition's run decides. Rows are ordered by vehicle, time and id so that re-landing
    the same data writes the same rows in the same order.
    """
    known = {key for key, _ in spec.fields}
    out: dict[Any, dict[str, Any]] = {}
    result = Typed(table=spec.schema.empty_table())
    for n, (vehicle_id, row) in enumerate(rows):
        if not isinstance(row, dict):
            not_object = (None, None, "not a JSON object")
            result.quarantined.append(_quarantine(spec, vehicle_id, not_object, row, None))
            continue
        day = _own_day(spec, row)
        if days is not None and day is not None and day not in days:
            result.outside_range += 1
            continue
        record: dict[str, Any] = {}
        extra = {k: v for k, v in row.items() if k not in known}
        problem: tuple[str | None, Any, str] | None = None
        unparsed = 0
        for key, kind in spec.fields:
            value = row.get(key)
            if key == "objectID" and value in (None, ""):
                value = vehicle_id  # fuel levels carry no objectID: they are the asked vehicle's
            try:
                record[key] = TYPES[kind][1](value)
            except BadValue as exc:
                if key not in spec.optional:
                    problem = (key, value, str(exc))
                    break
                record[key] = None
                extra[key] = value
                unparsed += 1
        if problem is None:
            missing = [k for k in spec.required if record.get(k) is None]
            if missing:
                problem = (missing[0], None, "is missing")
        if problem is None:
            try:
                _derive(spec, record)
            except BadValue as exc:  # runningTime, which the idle durations are built from
                problem = ("runningTime", row.get("runningTime"), str(exc))
        if problem is not None:
            result.quarantined.append(_quarantine(spec, vehicle_id, problem, row, day))
            continue
        result.unparsed_values += unparsed
        record["extra_fields"] = json.dumps(extra, sort_keys=True, default=str) if extra else None
        record["extracted_at"] = extracted_at
        if spec.time_key is not None:
            record["day"] = record[spec.time_key].date()
        key = (record.get("objectID"), record[spec.id_key]) if spec.id_key else n
        if key in out:
            result.duplicates_dropped += 1
            del out[key]  # re-insert so the later (fresher) row also takes the later position
        out[key] = record
    ordered = list(out.values())
    time_key, id_key = spec.time_key, spec.id_key
    if time_key is not None:
        ordered.sort(
            key=lambda r: (r.get("objectID") or "", r[time_key], r[id_key] if id_key else 0)
        )
    elif id_key is not None:
        ordered.sort(key=lambda r: r[id_key])
    result.table = pa.Table.from_pylist(ordered, schema=spec.schema)
    return result


def _own_day(spec: TableSpec, row: dict[str, Any]) -> date | None:
    """The UTC day of the row's time, if it reads (the day it lands, or is quarantined, on)."""
    if spec.time_key is None:
        return None
    try:
        at = parse_time(row.get(spec.time_key))
    except (ValueError, OverflowError):
        return None
    return at.date() if at is not None else None


def reason_of(field_: str | None, value: Any, problem: str) -> str:
    """One line: "fuelAfterL: '12,5' is not a number", or "startTime is missing"."""
    if field_ is None:
        return problem
    if value is None:
        return f"{field_} {problem}"
    return f"{field_}: '{value_text(value)[:40]}' {problem}"


def _quarantine(
    spec: TableSpec,
    vehicle_id: str | None,
    problem: tuple[str | None, Any, str],
    row: Any,
    day: date | None,
) -> dict[str, Any]:
    field_, value, what = problem
    return {
        "table": spec.name,
        "reason": reason_of(field_, value, what),
        "field": field_,
        "value": None if value is None else value_text(value)[:1000],
        "payload": json.dumps(row, sort_keys=True, default=str, ensure_ascii=False),
        "vehicle_id": vehicle_id,
        "day": day,
    }


def quarantine_table(records: Sequence[dict[str, Any]], quarantined_at: datetime) -> pa.Table:
    """Quarantined rows in the lake's quarantine columns (+ vehicle_id), for one landing unit."""
    schema = pa.schema(QUARANTINE_FIELDS)
    return pa.Table.from_pylist(
        [{**r, "quarantined_at": quarantined_at} for r in records], schema=schema
    )


def quarantine_by_day(
    records: Sequence[dict[str, Any]], quarantined_at: datetime, days: Sequence[date]
) -> dict[date, pa.Table]:
    """The quarantine of every day of a window, empty days included (landing a day again then
    removes what an earlier landing quarantined there). A row without a readable day goes on
    the window's first day."""
    rows = [{**r, "day": r["day"] or days[0]} for r in records]
    table = quarantine_table(rows, quarantined_at).append_column(
        "day", pa.array([r["day"] for r in rows], pa.date32())
    )
    empty = pa.schema(QUARANTINE_FIELDS).empty_table()
    out = {}
    for day in days:
        mine = table.filter(pc.equal(table["day"], pa.scalar(day, pa.date32())))
        out[day] = mine.drop_columns(["day"]) if mine.num_rows else empty
    return out


def type_vehicles(rows: Sequence[Any], extracted_at: datetime) -> Typed:
    """The vehicle list as a typed snapshot (no day column: the caller lands it on fetch day)."""
    return type_rows(VEHICLES, ((None, r) for r in rows), extracted_at)
