"""Metrotec rows → typed Arrow tables per UTC day, and the per-vehicle, per-window pull.

No Dagster, no URLs. The lake keeps the vendor's field names (so a row reads like the API
reference) with typed values, plus a few derived columns in snake_case: `running_time_s`,
`fuel_is_code`, `extra_fields`, `extracted_at`. Values are validated where they enter: a row
without its id or time, or with a number that is not a finite number (`NaN`, `Infinity`,
"12,5") or a time that is not a time in any field the facts are built from, is quarantined
whole with the field, the value and the reason, in the lake's one quarantine convention. Only a
field declared optional (a spare sensor, a vehicle's configuration) is stored NULL instead, its
value kept verbatim in `extra_fields` and counted. Nothing the API sent is dropped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.http import RequestStats
from pipelines.lake import QUARANTINE_SCHEMA
from pipelines.sources.metrotec.client import MetrotecClient, Window, parse_time, plan_windows

TS = pa.timestamp("us", tz="UTC")
SOURCE = "metrotec"
TABLES = ("routelog", "stops", "refuels", "fuel_levels")
_HMS = re.compile(r"^(\d+):([0-5]\d):([0-5]\d)$")


# --- value parsers: each returns the typed value, or raises ValueError saying what is wrong ---
_INT64 = (-(2**63), 2**63 - 1)


class BadValue(ValueError):
    """A value that does not read as its type; the message says how ("is not a number")."""


def _finite(value: Any) -> float:
    """A number (or a string holding one) as a finite float."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadValue("is not a number")
    try:
        number = float(value)
    except ValueError:
        raise BadValue("is not a number") from None
    except OverflowError:  # an int beyond a double
        raise BadValue("is not a finite number") from None
    if not math.isfinite(number):
        raise BadValue("is not a finite number")
    return number


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number: int | float = value
    else:
        number = _finite(value)
        if not number.is_integer():
            raise BadValue("is not an integer")
    if not _INT64[0] <= number <= _INT64[1]:
        raise BadValue("is out of range")
    return int(number)


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return _finite(value)


def _str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def _time(value: Any) -> datetime | None:
    try:
        return parse_time(value)
    except (ValueError, OverflowError):
        raise BadValue("is not a time (YYYY-MM-DD HH:MM:SS)") from None


def hms_seconds(value: Any) -> int | None:
    """`runningTime` "HH:MM:SS" (hours may exceed 23) → whole seconds; ints are seconds already."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    match = _HMS.match(str(value).strip())
    if match is None:
        raise BadValue("is not HH:MM:SS")
    hours, minutes, seconds = (int(g) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def value_text(value: Any) -> str:
    """A value as the API sent it, as text: NaN and Infinity as the bare tokens."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


_TYPES: dict[str, tuple[pa.DataType, Callable[[Any], Any]]] = {
    "int": (pa.int64(), _int),
    "float": (pa.float64(), _float),
    "str": (pa.string(), _str),
    "time": (TS, _time),
}


@dataclass(frozen=True)
class TableSpec:
    """One raw table: its vendor fields, typed; what places a row; what identifies it."""

    name: str
    fields: tuple[tuple[str, str], ...]  # (vendor key, kind in _TYPES)
    required: tuple[str, ...]  # keys without which a row is quarantined
    time_key: str | None  # its UTC date is the row's partition day (None: snapshot table)
    id_key: str | None  # rows sharing (objectID, id) are one record: the last one wins
    derived: tuple[pa.Field, ...] = ()
    # Fields whose unreadable value is stored NULL (kept verbatim in extra_fields, counted as
    # unparsed_values) instead of quarantining the row: nothing is built from them.
    optional: tuple[str, ...] = ()

    @property
    def schema(self) -> pa.Schema:
        columns = [pa.field(key, _TYPES[kind][0]) for key, kind in self.fields]
        columns += [
            *self.derived,
            pa.field("extra_fields", pa.string()),
            pa.field("extracted_at", TS, nullable=False),
        ]
        if self.time_key is not None:
            columns.append(pa.field("day", pa.date32(), nullable=False))
        return pa.schema(columns)


_FUEL_CODE = pa.field("fuel_is_code", pa.bool_())

ROUTELOG = TableSpec(
    "routelog",
    fields=(
        ("ID", "int"),
        ("objectID", "str"),
        ("startTime", "time"),
        ("previousStopTime", "time"),
        ("stopTime", "time"),
        ("stopEnd", "time"),
        ("routeLengthKM", "float"),
        ("drivingTimeSeconds", "int"),
        ("pauseTimeSeconds", "int"),
        ("averageSpeed", "float"),
        ("maxSpeed", "float"),
        ("AddressAtStartingPoint", "str"),
        ("AddressAtEndPoint", "str"),
        ("status", "str"),
    ),
    required=("ID", "startTime"),
    time_key="startTime",
    id_key="ID",
)
STOPS = TableSpec(
    "stops",
    fields=(
        ("ID", "int"),
        ("objectID", "str"),
        ("startTime", "time"),
        ("stopTime", "time"),
        ("stopEnd", "time"),
        ("runningTime", "str"),
        ("input", "int"),
        ("status", "int"),
        ("distance", "float"),
        ("fuel", "float"),
        ("required", "str"),
    ),
    required=("ID", "startTime"),
    time_key="startTime",
    id_key="ID",
    derived=(pa.field("running_time_s", pa.int64()), _FUEL_CODE),
    optional=("status",),
)
REFUELS = TableSpec(
    "refuels",
    fields=(
        ("ID", "int"),
        ("objectID", "str"),
        ("startTime", "time"),
        ("stopTime", "time"),
        ("maxTime", "time"),
        ("fuelBeforeL", "float"),
        ("fuelAfterL", "float"),
        ("routeLengthKM", "float"),
        ("fuelAddress", "str"),
        ("required", "str"),
    ),
    required=("ID", "startTime"),
    time_key="startTime",
    id_key="ID",
    derived=(_FUEL_CODE,),
)
FUEL_LEVELS = TableSpec(
    "fuel_levels",
    fields=(
        ("objectID", "str"),  # not in the payload: the vehicle the readings were asked for
        ("GMTime", "time"),
        ("fuel", "float"),
        ("lat", "float"),
        ("lon", "float"),
        ("input", "int"),
        ("t1", "float"),
        ("t2", "float"),
        ("t3", "float"),
        ("t4", "float"),
        ("location", "str"),
        ("required", "str"),
    ),
    required=("GMTime",),
    time_key="GMTime",
    id_key=None,
    derived=(_FUEL_CODE,),
    optional=("t1", "t2", "t3", "t4"),  # spare sensor inputs
)
_VEHICLE_FIELDS: tuple[tuple[str, str], ...] = (
    ("id", "str"),
    ("alias", "str"),
    ("categoryID", "int"),
    ("categoryName", "str"),
    ("tank_vol", "float"),
    ("isPercent", "int"),
    ("is_fuel_as_pressure", "int"),
    ("odometer", "float"),
    ("odometer_day", "time"),
    ("gps_refresh_interval", "int"),
    ("isOwn", "int"),
    ("isDDD", "int"),
    ("account_type", "int"),
    ("Manufacture", "int"),
    ("extraDevices", "int"),
    ("naviseade", "str"),
    ("calcByM", "int"),
    ("T1min", "float"),
    ("T1max", "float"),
    ("T2min", "float"),
    ("T2max", "float"),
    ("barrel_type", "str"),
    ("next_maintenance_km", "str"),
    ("mode", "str"),
    ("fuel_card_nr", "str"),
    ("btime", "int"),
)
VEHICLES = TableSpec(
    "vehicles",
    fields=_VEHICLE_FIELDS,
    required=("id",),
    time_key=None,
    id_key="id",
    # A vehicle row is configuration, and the vehicle list decides whose activity is pulled:
    # quarantining a vehicle for an unreadable setting would stop its trips being pulled at all.
    optional=tuple(key for key, _ in _VEHICLE_FIELDS if key != "id"),
)
SPECS = {s.name: s for s in (ROUTELOG, STOPS, REFUELS, FUEL_LEVELS, VEHICLES)}

QUARANTINE_FIELDS = (*QUARANTINE_SCHEMA, pa.field("vehicle_id", pa.string()))
"""The lake's quarantine columns, then the vehicle the rows were asked for."""


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
                record[key] = _TYPES[kind][1](value)
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


# --- the pull ------------------------------------------------------------------------------
@dataclass
class TableResult:
    """What one table's share of a run fetched and landed (its materialization metadata)."""

    stats: RequestStats = field(default_factory=RequestStats)
    rows_received: int = 0
    rows: int = 0
    files: int = 0
    bytes: int = 0
    days: set[date] = field(default_factory=set)  # partition days replaced
    quarantined: int = 0
    unparsed_values: int = 0
    duplicates_dropped: int = 0
    outside_range: int = 0
    not_found: int = 0  # vehicles the endpoint answered 404 for (treated as no data)
    fuel_code_rows: int = 0
    inconsistent_trips: int = 0

    def add_typed(self, typed: Typed) -> None:
        self.rows += typed.table.num_rows
        self.quarantined += len(typed.quarantined)
        self.unparsed_values += typed.unparsed_values
        self.duplicates_dropped += typed.duplicates_dropped
        self.outside_range += typed.outside_range
        if "fuel_is_code" in typed.table.column_names:
            self.fuel_code_rows += sum(bool(v) for v in typed.table["fuel_is_code"].to_pylist())
        if "drivingTimeSeconds" in typed.table.column_names:
            self.inconsistent_trips += inconsistent_trips(typed.table)


def inconsistent_trips(routelog: pa.Table) -> int:
    """Route log rows whose idle time, (stop - start) - driving, is unknown or negative."""
    bad = 0
    for row in routelog.select(["startTime", "stopTime", "drivingTimeSeconds"]).to_pylist():
        start, stop, driving = row["startTime"], row["stopTime"], row["drivingTimeSeconds"]
        duration = (stop - start).total_seconds() if stop is not None else -1.0
        bad += duration < 0 or (driving is not None and driving > duration)
    return bad


# Lands one table's rows for every day of a window (empty days too); returns (files, bytes).
Lander = Callable[[str, list[date], pa.Table], tuple[int, int]]
# Makes each day's quarantine of one table what the window found (an empty table: none).
Quarantiner = Callable[[str, dict[date, pa.Table]], None]


class _StatsDelta:
    """Attributes the client's traffic during a block to one table."""

    def __init__(self, client: MetrotecClient, into: RequestStats) -> None:
        self.client, self.into = client, into

    def __enter__(self) -> None:
        s = self.client.stats
        self.before = (s.requests, s.retries, s.http_429, s.rate_limit_wait_s, s.bytes_received)

    def __exit__(self, *exc: object) -> None:
        s = self.client.stats
        requests, retries, http_429, waited, received = self.before
        self.into.requests += s.requests - requests
        self.into.retries += s.retries - retries
        self.into.http_429 += s.http_429 - http_429
        self.into.rate_limit_wait_s += s.rate_limit_wait_s - waited
        self.into.bytes_received += s.bytes_received - received


def _fetch(client: MetrotecClient, table: str, vehicle_id: str, window: Window) -> list[Any] | None:
    if table == "fuel_levels":
        return client.fuel_levels(vehicle_id, window.start, window.end)
    endpoint = {"routelog": client.routelog, "stops": client.stops, "refuels": client.refuels}
    return endpoint[table](vehicle_id, window.start, window.stop)


def extract_range(
    client: MetrotecClient,
    vehicle_ids: Sequence[str],
    days: Sequence[date],
    *,
    tables: Sequence[str],
    land: Lander,
    quarantine: Quarantiner,
    window_days: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, TableResult]:
    """Pull `tables` for every vehicle over `days` and land each window once it is complete.

    One request series per vehicle per window (≤ `window_days` days): route log, stops and
    refuels take one request each, fuel levels page through the window. A window is landed
    only when every vehicle's rows are in hand, on a worker thread while the next window's
    requests run; a failure leaves that window's partitions as they were. Its quarantine is
    written first, so a day's data never shows without the rows it lost.
    """
    unknown = set(tables) - set(TABLES)
    if unknown:
        raise ValueError(f"unknown Metrotec tables {sorted(unknown)}; known: {TABLES}")
    windows = plan_windows(days, window_days)
    results = {t: TableResult() for t in tables}

    def process(window: Window, fetched: dict[str, list[tuple[str, Any]]]) -> None:
        extracted_at = datetime.now(UTC)
        for table, rows in fetched.items():
            typed = type_rows(SPECS[table], rows, extracted_at, days=set(window.days))
            quarantine(table, quarantine_by_day(typed.quarantined, extracted_at, window.days))
            files, written = land(table, window.days, typed.table)
            result = results[table]
            result.add_typed(typed)
            result.files += files
            result.bytes += written
            result.days.update(window.days)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrotec-land") as pool:
        pending: list[Future[None]] = []
        for n, window in enumerate(windows, 1):
            fetched: dict[str, list[tuple[str, Any]]] = {t: [] for t in tables}
            for vehicle_id in vehicle_ids:
                for table in tables:
                    with _StatsDelta(client, results[table].stats):
                        rows = _fetch(client, table, vehicle_id, window)
                    if rows is None:
                        results[table].not_found += 1
                        continue
                    results[table].rows_received += len(rows)
                    fetched[table].extend((vehicle_id, row) for row in rows)
            if progress:
                counts = ", ".join(f"{t} {len(r)}" for t, r in fetched.items())
                progress(
                    f"Metrotec window {n}/{len(windows)} {window.first_day}..{window.last_day}, "
                    f"{len(vehicle_ids)} vehicles: {counts} rows; "
                    f"{client.stats.requests} requests so far"
                )
            pending.append(pool.submit(process, window, fetched))
            # Surface a landing failure before spending more requests.
            for done in [f for f in pending if f.done()]:
                done.result()
        for future in pending:
            future.result()
    return results


def type_vehicles(rows: Sequence[Any], extracted_at: datetime) -> Typed:
    """The vehicle list as a typed snapshot (no day column: the caller lands it on fetch day)."""
    return type_rows(VEHICLES, ((None, r) for r in rows), extracted_at)
