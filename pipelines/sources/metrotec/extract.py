"""Metrotec rows → typed Arrow tables per UTC day, and the per-vehicle, per-window pull.

No Dagster, no URLs. The lake keeps the vendor's field names (so a row reads like the API
reference) with typed values, plus a few derived columns in snake_case: `running_time_s`,
`fuel_is_code`, `extra_fields`, `extracted_at`. Nothing the API sent is dropped: a value that
does not fit its type is stored NULL and kept verbatim in `extra_fields`; a row without its
id or time cannot be placed and is quarantined whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from pipelines.http import RequestStats
from pipelines.sources.metrotec.client import MetrotecClient, Window, parse_time, plan_windows

TS = pa.timestamp("us", tz="UTC")
SOURCE = "metrotec"
TABLES = ("routelog", "stops", "refuels", "fuel_levels")
_HMS = re.compile(r"^(\d+):([0-5]\d):([0-5]\d)$")


# --- value parsers: each returns the typed value or raises ValueError -----------------------
def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"not an integer: {value!r}")
    if isinstance(value, int):
        return value
    number = float(value) if isinstance(value, float | str) else None
    if number is None or not number.is_integer():
        raise ValueError(f"not an integer: {value!r}")
    return int(number)


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


def _str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


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
        raise ValueError(f"not HH:MM:SS: {value!r}")
    hours, minutes, seconds = (int(g) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


_TYPES: dict[str, tuple[pa.DataType, Callable[[Any], Any]]] = {
    "int": (pa.int64(), _int),
    "float": (pa.float64(), _float),
    "str": (pa.string(), _str),
    "time": (TS, parse_time),
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
)
VEHICLES = TableSpec(
    "vehicles",
    fields=(
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
    ),
    required=("id",),
    time_key=None,
    id_key="id",
)
SPECS = {s.name: s for s in (ROUTELOG, STOPS, REFUELS, FUEL_LEVELS, VEHICLES)}

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("table", pa.string(), nullable=False),
        pa.field("vehicle_id", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("payload", pa.string(), nullable=False),
        pa.field("extracted_at", TS, nullable=False),
    ]
)


def _derive(spec: TableSpec, record: dict[str, Any], extra: dict[str, Any]) -> None:
    """Derived columns; the raw value stays in its own column whatever happens here."""
    if spec.name == "stops":
        try:
            record["running_time_s"] = hms_seconds(record.get("runningTime"))
        except ValueError:
            record["running_time_s"] = None
            extra.setdefault("runningTime", record.get("runningTime"))
    if spec.name == "refuels":
        levels = (record.get("fuelBeforeL"), record.get("fuelAfterL"))
        record["fuel_is_code"] = any(v is not None and v < 0 for v in levels)
    elif "fuel_is_code" in {f.name for f in spec.derived}:
        # Negative readings are device codes (-2: no reading), not litres: flagged, kept as sent.
        fuel = record.get("fuel")
        record["fuel_is_code"] = fuel is not None and fuel < 0


@dataclass
class Typed:
    """One table's rows of one window, typed, with what could not be typed."""

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

    Rows are ordered by vehicle, time and id so that re-landing the same data writes the same
    rows in the same order.
    """
    known = {key for key, _ in spec.fields}
    out: dict[Any, dict[str, Any]] = {}
    result = Typed(table=spec.schema.empty_table())
    for n, (vehicle_id, row) in enumerate(rows):
        if not isinstance(row, dict):
            result.quarantined.append(_quarantine(spec, vehicle_id, "not a JSON object", row))
            continue
        record: dict[str, Any] = {}
        extra = {k: v for k, v in row.items() if k not in known}
        problem = None
        for key, kind in spec.fields:
            value = row.get(key)
            if key == "objectID" and value in (None, ""):
                value = vehicle_id  # fuel levels carry no objectID: they are the asked vehicle's
            try:
                record[key] = _TYPES[kind][1](value)
            except (ValueError, TypeError, OverflowError):
                if key in spec.required:
                    problem = f"{key}: cannot read {value!r}"
                    break
                record[key] = None
                extra[key] = value
                result.unparsed_values += 1
        if problem is None:
            missing = [k for k in spec.required if record.get(k) is None]
            if missing:
                problem = f"{', '.join(missing)} missing"
        if problem is not None:
            result.quarantined.append(_quarantine(spec, vehicle_id, problem, row))
            continue
        _derive(spec, record, extra)
        record["extra_fields"] = json.dumps(extra, sort_keys=True, default=str) if extra else None
        record["extracted_at"] = extracted_at
        if spec.time_key is not None:
            record["day"] = record[spec.time_key].date()
            if days is not None and record["day"] not in days:
                result.outside_range += 1
                continue
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


def _quarantine(spec: TableSpec, vehicle_id: str | None, reason: str, row: Any) -> dict[str, Any]:
    return {
        "table": spec.name,
        "vehicle_id": vehicle_id,
        "reason": reason,
        "payload": json.dumps(row, sort_keys=True, default=str, ensure_ascii=False),
    }


def quarantine_table(records: Sequence[dict[str, Any]], extracted_at: datetime) -> pa.Table:
    return pa.Table.from_pylist(
        [{**r, "extracted_at": extracted_at} for r in records], schema=QUARANTINE_SCHEMA
    )


# --- the pull ------------------------------------------------------------------------------
@dataclass
class TableResult:
    """What one table's share of a run fetched and landed (its materialization metadata)."""

    stats: RequestStats = field(default_factory=RequestStats)
    rows_received: int = 0
    rows: int = 0
    files: int = 0
    bytes: int = 0
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
# Keeps rows that could not be typed: (table name, window, quarantine rows).
Quarantiner = Callable[[str, Window, pa.Table], None]


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
    requests run; a failure leaves that window's partitions as they were.
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
            if typed.quarantined:
                quarantine(table, window, quarantine_table(typed.quarantined, extracted_at))
            files, written = land(table, window.days, typed.table)
            result = results[table]
            result.add_typed(typed)
            result.files += files
            result.bytes += written

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
