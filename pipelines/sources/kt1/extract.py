"""kt1 batches → typed Arrow tables per raw table and UTC day. No Dagster, no HTTP.

Every item is kept: known types land in their table (day = UTC date of the item's own
timestamp) with the vendor's values raw and the whole item as `item_json`. Values are validated
where they enter: an item lacking what its identity or day needs, with a number that is not a
finite number (`NaN`, `Infinity`, "12,5", an object) or a timestamp that is not ISO-8601, with a
type we do not know, or in a body that is not `{id, items[]}`, goes to the source's quarantine
instead (the lake's one quarantine convention: table, reason, field, value, payload,
quarantined_at, then kt1's batch_id, item_index, fetched_at, item_type), on the day it would
have landed on, else the landing day. Nothing is de-duplicated here: a redelivered batch lands
again, and staging keeps one row per identity.

Items are typed in bulk by an in-memory DuckDB (`from_json` with each type's structure), a few
µs per item; parsing them one by one in Python cost several times the whole HTTP round trip.
DuckDB's JSON reader accepts the `NaN`/`Infinity` tokens (as DOUBLE nan/inf) and would read
"12,5" into a DOUBLE as NULL, so numbers are read as JSON text and checked here, not trusted to
the cast.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.lake import QUARANTINE_SCHEMA, QUARANTINE_TABLE
from pipelines.sources.kt1.client import Kt1Batch

SOURCE = "kt1"
TABLES = ("telemetry", "trips", "events", "changes")
QUARANTINE = QUARANTINE_TABLE
TABLE_OF_TYPE = {
    "telemetry": "telemetry",
    "trip": "trips",
    "event": "events",
    "changenotification": "changes",
}
UNKNOWN_TABLE = "unknown"
"""Quarantine `table` of an item without a type, or of a body that is not a batch."""

TS = pa.timestamp("us", tz="UTC")
_LANDING = [
    pa.field("batch_id", pa.string()),
    pa.field("item_index", pa.int32(), nullable=False),
    pa.field("fetched_at", TS, nullable=False),
    pa.field("landed_at", TS, nullable=False),
]
_ITEM_JSON = pa.field("item_json", pa.string(), nullable=False)


def _schema(*fields: pa.Field) -> pa.Schema:
    return pa.schema([*_LANDING, *fields, _ITEM_JSON])


SCHEMAS: dict[str, pa.Schema] = {
    "telemetry": _schema(
        pa.field("origin_id", pa.string(), nullable=False),
        pa.field("origin_name", pa.string()),
        pa.field("asset_id", pa.string(), nullable=False),
        pa.field("asset_name", pa.string()),
        pa.field("date", TS, nullable=False),
        pa.field("received", TS),
        pa.field("active", pa.bool_()),
        pa.field("lat", pa.float64()),
        pa.field("lon", pa.float64()),
        pa.field("speed", pa.float64()),
        pa.field("altitude", pa.float64()),
        pa.field("heading", pa.float64()),
        pa.field("accuracy", pa.float64()),
        pa.field("address", pa.string()),
        # Raw device counters, exactly as sent (the reference: not the asset's odometer).
        pa.field("counters_odometer", pa.float64()),
        pa.field("counters_odo_counter", pa.float64()),
        pa.field("counters_engine_hours", pa.float64()),
    ),
    "trips": _schema(
        pa.field("id", pa.string(), nullable=False),
        pa.field("asset_id", pa.string(), nullable=False),
        pa.field("asset_name", pa.string()),
        pa.field("trip_type", pa.string()),
        pa.field("date_start", TS, nullable=False),
        pa.field("date_end", TS),
        pa.field("start_lat", pa.float64()),
        pa.field("start_lon", pa.float64()),
        pa.field("start_address", pa.string()),
        pa.field("end_lat", pa.float64()),
        pa.field("end_lon", pa.float64()),
        pa.field("end_address", pa.string()),
        pa.field("stats_drive_time", pa.float64()),
        pa.field("stats_idle_time", pa.float64()),
        pa.field("stats_distance", pa.float64()),
        pa.field("records", pa.float64()),
        pa.field("maxes_speed", pa.float64()),
    ),
    "events": _schema(
        pa.field("id", pa.string(), nullable=False),
        pa.field("owner", pa.string()),
        pa.field("origin", pa.string()),
        pa.field("event_date", TS, nullable=False),
        pa.field("event_class", pa.string()),
        pa.field("event_type", pa.string()),
        pa.field("asset_id", pa.string()),
        pa.field("lat", pa.float64()),
        pa.field("lon", pa.float64()),
        pa.field("address", pa.string()),
    ),
    "changes": _schema(
        pa.field("operation", pa.string(), nullable=False),
        pa.field("date", TS, nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("doc_type", pa.string()),
    ),
    # The lake's quarantine columns, then where the item came from.
    QUARANTINE: pa.schema(
        [
            *QUARANTINE_SCHEMA,
            pa.field("batch_id", pa.string()),
            pa.field("item_index", pa.int32(), nullable=False),  # -1: the whole body
            pa.field("fetched_at", TS, nullable=False),
            pa.field("item_type", pa.string()),  # the item's `type` as sent (≤ 100 chars)
        ]
    ),
}

# --- how each item type is read -----------------------------------------------------------
# `from_json` structure per type: JSON for ids, timestamps and booleans (their JSON type is
# checked); VARCHAR for numbers (their text, `NaN` and "12,5" included, is cast and checked)
# and for free text. The whole item is kept raw in item_json.
_STRUCTURES = {
    "telemetry": """{
        "origin": {"id": "JSON", "name": "VARCHAR"}, "asset": {"id": "JSON", "name": "VARCHAR"},
        "date": "JSON", "received": "JSON", "active": "JSON",
        "location": {"lon": "VARCHAR", "lat": "VARCHAR", "speed": "VARCHAR",
                     "altitude": "VARCHAR", "heading": "VARCHAR", "accuracy": "VARCHAR",
                     "address": "VARCHAR"},
        "counters": {"odometer": "VARCHAR", "odo_counter": "VARCHAR", "engine_hours": "VARCHAR"},
        "telemetry": {"fuel_level": "VARCHAR"}}""",
    "trip": """{
        "id": "JSON", "asset": {"id": "JSON", "name": "VARCHAR"}, "tripType": "VARCHAR",
        "dateStart": "JSON", "dateEnd": "JSON",
        "start": {"lat": "VARCHAR", "lon": "VARCHAR", "address": "VARCHAR"},
        "end": {"lat": "VARCHAR", "lon": "VARCHAR", "address": "VARCHAR"},
        "stats": {"driveTime": "VARCHAR", "idleTime": "VARCHAR", "distance": "VARCHAR"},
        "records": "VARCHAR", "maxes": {"speed": "VARCHAR"}}""",
    "event": """{
        "id": "JSON", "owner": "VARCHAR", "origin": "VARCHAR", "eventDate": "JSON",
        "eventClass": "VARCHAR", "eventType": "VARCHAR",
        "details": {"asset": {"id": "JSON"},
                    "location": {"lat": "VARCHAR", "lon": "VARCHAR", "address": "VARCHAR"},
                    "dateStart": "JSON", "dateEnd": "JSON",
                    "volume": "VARCHAR", "levelBefore": "VARCHAR", "levelAfter": "VARCHAR"}}""",
    "changenotification": """{
        "operation": "JSON", "date": "JSON", "doc": {"id": "JSON", "type": "VARCHAR"}}""",
}


def _text(value: str) -> str:
    """A JSON value as text: a string's content, any other value as written."""
    return f"({value} ->> '$')"


def _name(prefix: str, path: str) -> str:
    """Column name of a value the query computes once per item (`ts_date`, `n_location_speed`)."""
    return f"{prefix}_{path.replace('.', '_')}"


def _ts(path: str) -> str:
    """The timestamp at `path` (NULL unless a parseable string); offset-less ones are UTC."""
    return _name("ts", path)


def _id(path: str) -> str:
    """The id at `path` as text (a JSON string or integer)."""
    return _name("t", path)


def _number(path: str) -> str:
    """The number at `path` as DOUBLE (NULL when absent or unreadable)."""
    return _name("n", path)


@dataclass(frozen=True)
class _Check:
    """One thing an item must satisfy; `fails` is SQL, true when it does not."""

    fails: str
    path: str  # the field to blame, as its path in the item (`location.speed`)
    problem: str  # SQL of what is wrong with it, e.g. 'is not a finite number'
    value: str | None = None  # SQL of its value as text, when the reason quotes it


def _missing(path: str) -> _Check:
    return _Check(f"not coalesce({_name('t', path)} <> '', false)", path, "'is missing'")


def _timestamp(path: str) -> _Check:
    """A timestamp that may be absent, but when given must be ISO-8601."""
    text = _name("t", path)
    return _Check(
        f"coalesce({text} <> '', false) and {_ts(path)} is null", path, "'is not ISO-8601'", text
    )


def _required_id(path: str) -> _Check:
    return _Check(f"not {_name('ok', path)}", path, "'is missing'")


def _finite(path: str) -> _Check:
    """A number that may be absent, but when given must be a finite number (not `NaN`,
    `Infinity`, "12,5", `true` or an object)."""
    text, number = f"j.{path}", _number(path)
    return _Check(
        f"coalesce({text} <> '', false) and not coalesce(isfinite({number}), false)",
        path,
        f"case when {number} is null then 'is not a number' else 'is not a finite number' end",
        text,
    )


@dataclass(frozen=True)
class _Reader:
    """SQL of one item type: its columns, its day, and what must hold for it to land.

    Each checked value is read once, in query layers of its own (text, JSON type, timestamp or
    number), which columns and checks share. `numbers` are typed columns (column → path in the
    item); `also_checked` are numbers the table keeps only inside item_json but the models read
    from there (refuel volumes), so a bad one must not land either.
    """

    columns: dict[str, str]
    numbers: dict[str, str]
    day_of: str  # path of the timestamp whose UTC date is the item's day
    checks: list[_Check]  # identity and day: why an item cannot be placed at all
    ids: tuple[str, ...] = ()
    times: tuple[str, ...] = ()  # every timestamp read: the day's, then optional ones
    also_checked: tuple[str, ...] = ()

    @property
    def number_paths(self) -> list[str]:
        return [*self.numbers.values(), *self.also_checked]

    def all_columns(self) -> dict[str, str]:
        return {**self.columns, **{c: _number(p) for c, p in self.numbers.items()}}

    def all_checks(self) -> list[_Check]:
        """In the order reasons are given: placement first, then values."""
        return [
            *self.checks,
            *(_timestamp(p) for p in self.times if p != self.day_of),
            *(_finite(p) for p in self.number_paths),
        ]

    def layers(self) -> tuple[str, str]:
        """SQL select lists of the two layers that read each value once: text, JSON type and
        number first, then timestamps and ids from those."""
        first, second = [], []
        for path in dict.fromkeys([*self.times, *self.ids]):
            first += [f"(j.{path} ->> '$') as {_name('t', path)}"]
            first += [f"json_type(j.{path}) as {_name('k', path)}"]
        for path in self.times:
            parsed = f"try_cast({_name('t', path)} as timestamptz)"
            second += [f"case when {_name('k', path)} = 'VARCHAR' then {parsed} end as {_ts(path)}"]
        for path in self.ids:
            kind, text = _name("k", path), _name("t", path)
            ok = f"{kind} in ('VARCHAR', 'BIGINT', 'UBIGINT', 'HUGEINT') and {text} <> ''"
            second += [f"coalesce({ok}, false) as {_name('ok', path)}"]
        first += [f"try_cast(j.{p} as double) as {_number(p)}" for p in self.number_paths]
        return ", ".join(first), ", ".join(second)


_READERS = {
    "telemetry": _Reader(
        columns={
            "origin_id": _id("origin.id"),
            "origin_name": "j.origin.name",
            "asset_id": _id("asset.id"),
            "asset_name": "j.asset.name",
            "date": _ts("date"),
            "received": _ts("received"),
            "active": "case when json_type(j.active) = 'BOOLEAN' then j.active::boolean end",
            "address": "j.location.address",
        },
        numbers={
            "lat": "location.lat",
            "lon": "location.lon",
            "speed": "location.speed",
            "altitude": "location.altitude",
            "heading": "location.heading",
            "accuracy": "location.accuracy",
            "counters_odometer": "counters.odometer",
            "counters_odo_counter": "counters.odo_counter",
            "counters_engine_hours": "counters.engine_hours",
        },
        day_of="date",
        checks=[
            _missing("date"),
            _timestamp("date"),
            _required_id("origin.id"),
            _required_id("asset.id"),
        ],
        ids=("origin.id", "asset.id"),
        times=("date", "received"),
        also_checked=("telemetry.fuel_level",),
    ),
    "trip": _Reader(
        columns={
            "id": _id("id"),
            "asset_id": _id("asset.id"),
            "asset_name": "j.asset.name",
            "trip_type": "j.tripType",
            "date_start": _ts("dateStart"),
            "date_end": _ts("dateEnd"),
            "start_address": "j.start.address",
            "end_address": "j.end.address",
        },
        numbers={
            "start_lat": "start.lat",
            "start_lon": "start.lon",
            "end_lat": "end.lat",
            "end_lon": "end.lon",
            "stats_drive_time": "stats.driveTime",
            "stats_idle_time": "stats.idleTime",
            "stats_distance": "stats.distance",
            "records": "records",
            "maxes_speed": "maxes.speed",
        },
        day_of="dateStart",
        checks=[
            _missing("dateStart"),
            _timestamp("dateStart"),
            _required_id("id"),
            _required_id("asset.id"),
        ],
        ids=("id", "asset.id"),
        times=("dateStart", "dateEnd"),
    ),
    "event": _Reader(
        columns={
            "id": _id("id"),
            "owner": "j.owner",
            "origin": "j.origin",
            "event_date": _ts("eventDate"),
            "event_class": "j.eventClass",
            "event_type": "j.eventType",
            "asset_id": f"case when {_name('ok', 'details.asset.id')} then "
            f"{_id('details.asset.id')} end",
            "address": "j.details.location.address",
        },
        numbers={"lat": "details.location.lat", "lon": "details.location.lon"},
        day_of="eventDate",
        checks=[_missing("eventDate"), _timestamp("eventDate"), _required_id("id")],
        ids=("id", "details.asset.id"),
        times=("eventDate", "details.dateStart", "details.dateEnd"),
        also_checked=("details.volume", "details.levelBefore", "details.levelAfter"),
    ),
    "changenotification": _Reader(
        columns={
            "operation": _name("t", "operation"),
            "date": _ts("date"),
            "doc_id": _id("doc.id"),
            "doc_type": "j.doc.type",
        },
        numbers={},
        day_of="date",
        checks=[
            _missing("date"),
            _timestamp("date"),
            _Check(
                f"{_name('k', 'operation')} is distinct from 'VARCHAR' "
                f"or {_name('t', 'operation')} = ''",
                "operation",
                "'is missing'",
            ),
            _required_id("doc.id"),
        ],
        ids=("doc.id", "operation"),
        times=("date",),
    ),
}

# What identifies an item: staging de-duplicates on the same columns.
_IDENTITY = {
    "telemetry": ("origin_id", "date"),
    "trip": ("id",),
    "event": ("id",),
    "changenotification": ("doc_id", "doc_type", "operation", "date"),
}

_BATCHES_SQL = """
create or replace temp table kt1_batches as
select
    pos,
    batch_id,
    fetched_at,
    body,
    case
        when batch_id is not null and try(json_type(body, '$.items')) = 'ARRAY' then null
        when not json_valid(body) then 'body is not JSON'
        else 'body is not {id, items[]}'
    end as problem
from kt1_incoming
"""
_ITEMS_SQL = """
create or replace temp table kt1_items as
with unpacked as (
    select pos, batch_id, fetched_at, json_extract(body, '$.items[*]') as items
    from kt1_batches
    where problem is null
),
items as (
    select
        pos,
        batch_id,
        fetched_at,
        cast(generate_subscripts(items, 1) - 1 as integer) as item_index,
        unnest(items) as item
    from unpacked
)
select
    *,
    json_type(item) as json_kind,
    case when json_type(item) = 'OBJECT' then from_json(item, '{"type": "JSON"}').type end
        as type_json
from items
"""
_KINDS_SQL = """
select distinct type_json ->> '$'
from kt1_items
where json_type(type_json) = 'VARCHAR'
"""
# Bodies that are not {id, items[]}, and items that are not objects of a type we know, with
# what is wrong as a problem struct like the typed items'.
_REJECTED_SQL = """
select
    batch_id, -1 as item_index, fetched_at, body as item_json,
    cast(null as varchar) as item_type,
    cast(null as date) as day,
    {'field': null, 'value': null, 'problem': 'batch: ' || problem} as problem
from kt1_batches
where problem is not null
union all
select
    batch_id,
    item_index,
    fetched_at,
    item::varchar,
    left(type_json ->> '$', 100),
    null,
    case
        when json_kind <> 'OBJECT'
            then {'field': null, 'value': null, 'problem': 'item is not an object'}
        when coalesce(json_type(type_json), 'NULL') = 'NULL'
            then {'field': 'type', 'value': null, 'problem': 'is missing'}
        else {'field': 'type', 'value': type_json ->> '$', 'problem': 'is not a known type'}
    end
from kt1_items
where coalesce(json_type(type_json), 'NULL') <> 'VARCHAR'
    or (type_json ->> '$') not in ('telemetry', 'trip', 'event', 'changenotification')
"""


def _typed_sql(kind: str) -> str:
    """All items of one type: their columns, UTC day, identity hash, and their first problem
    (the field to blame, its value as text, what is wrong), NULL when there is none."""
    reader = _READERS[kind]
    columns = reader.all_columns()
    # A check that cannot be decided (NULL) fails: such an item is quarantined, not landed.
    whens = " ".join(
        f"when coalesce({c.fails}, true) then {{'field': '{c.path}', "
        f"'value': {c.value or 'null'}, 'problem': {c.problem}}}"
        for c in reader.all_checks()
    )
    first, second = reader.layers()
    select = ",\n    ".join(f"{sql} as {name}" for name, sql in columns.items())
    key = ", ".join(columns[name] for name in _IDENTITY[kind])
    structure = " ".join(_STRUCTURES[kind].split())
    return f"""
select
    batch_id, item_index, fetched_at, ?::timestamptz as landed_at,
    item::varchar as item_json,
    {select},
    cast({_ts(reader.day_of)} as date) as day,
    hash('{kind}', {key}) as identity_hash,
    case {whens} end as problem
from (
    select *, {second}
    from (
        select *, {first}
        from (
            select *, from_json(item, '{structure}') as j
            from kt1_items
            where json_type(type_json) = 'VARCHAR' and (type_json ->> '$') = '{kind}'
        )
    )
)
order by pos, item_index
"""


def reason_of(field_: str | None, value: str | None, problem: str) -> str:
    """One line: "location.speed: 'NaN' is not a finite number", or "date is missing"."""
    if value is None:
        return f"{field_} {problem}" if field_ else problem
    return f"{field_}: '{value[:40]}' {problem}"


@dataclass
class GroupTables:
    """One group of batches split into (table, day) → rows, plus what the split counted."""

    tables: dict[tuple[str, date], pa.Table] = field(default_factory=dict)
    items_by_type: Counter[str] = field(default_factory=Counter)
    rows_by_table: Counter[str] = field(default_factory=Counter)
    quarantined: int = 0
    quarantined_by_table: Counter[str] = field(default_factory=Counter)  # by quarantine `table`
    quarantine_reasons: Counter[str] = field(default_factory=Counter)  # reasons, values left out
    duplicates: int = 0  # items whose identity was already in `seen`


class ItemSplitter:
    """Types the items of a group of batches in one in-memory DuckDB (kept open per drain)."""

    def __init__(self) -> None:
        self._con = duckdb.connect(":memory:")
        self._con.execute("SET TimeZone = 'UTC'")

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> ItemSplitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def split(
        self, batches: Iterable[Kt1Batch], landed_at: datetime, seen: set[int] | None = None
    ) -> GroupTables:
        """Route every item of `batches` to its table and UTC day; the rest to quarantine.

        A quarantined item goes on the day it would have landed on, else the landing day.
        With `seen` (identity hashes of items landed earlier in the run), identities are added
        to it and items already in it are counted as duplicates; they still land: staging,
        not the landing, removes copies.
        """
        batches = list(batches)
        incoming = pa.table(
            {
                "pos": pa.array(range(len(batches)), pa.int32()),
                "batch_id": pa.array([b.batch_id for b in batches], pa.string()),
                "fetched_at": pa.array([b.fetched_at for b in batches], TS),
                "body": pa.array([b.body for b in batches], pa.string()),
            }
        )
        con = self._con
        out = GroupTables()
        landed = landed_at.astimezone(UTC)
        quarantine: list[dict[str, Any]] = []
        con.register("kt1_incoming", incoming)
        try:
            con.execute(_BATCHES_SQL)
            con.execute(_ITEMS_SQL)
            kinds = sorted(k for (k,) in con.execute(_KINDS_SQL).fetchall() if k in TABLE_OF_TYPE)
            rejected = con.execute(_REJECTED_SQL).to_arrow_table()
            quarantine += _quarantine_rows(None, rejected, landed)
            for kind in kinds:
                rows = con.execute(_typed_sql(kind), [landed]).to_arrow_table()
                problem = rows.column("problem")
                good = rows if problem.null_count == rows.num_rows else None
                if good is None:
                    bad = rows.filter(pc.is_valid(problem))
                    quarantine += _quarantine_rows(kind, bad, landed)
                    good = rows.filter(pc.is_null(problem))
                if good.num_rows:
                    table = TABLE_OF_TYPE[kind]
                    out.items_by_type[kind] = good.num_rows
                    out.rows_by_table[table] = good.num_rows
                    if seen is not None:
                        hashes = good.column("identity_hash").to_pylist()
                        out.duplicates += sum(h in seen for h in hashes)
                        seen.update(hashes)
                    _add_by_day(out, table, good)
        finally:
            con.unregister("kt1_incoming")
        if quarantine:
            out.quarantined = len(quarantine)
            out.quarantined_by_table.update(r["table"] for r in quarantine)
            out.quarantine_reasons.update(r.pop("counted_as") for r in quarantine)
            rows = pa.Table.from_pylist(quarantine, schema=_QUARANTINE_ROWS)
            _add_by_day(out, QUARANTINE, rows)
        return out


_QUARANTINE_ROWS = pa.schema([*SCHEMAS[QUARANTINE], pa.field("day", pa.date32())])


def _quarantine_rows(kind: str | None, bad: pa.Table, landed: datetime) -> list[dict[str, Any]]:
    """Quarantine rows of the items in `bad` (few, so built in Python), each on the day it would
    have landed on, else the landing day; `counted_as` is the reason without the value.

    `kind` None: bodies and items of no known type, whose `table` is their type or "unknown".
    """
    columns = ("problem", "item_json", "batch_id", "item_index", "fetched_at", "day")
    types = bad.column("item_type").to_pylist() if kind is None else [kind] * bad.num_rows
    out = []
    for (problem, item_json, batch_id, item_index, fetched_at, day), item_type in zip(
        zip(*(bad.column(c).to_pylist() for c in columns), strict=True), types, strict=True
    ):
        field_, value, what = problem["field"], problem["value"], problem["problem"]
        out.append(
            {
                "table": TABLE_OF_TYPE[kind] if kind else (item_type or UNKNOWN_TABLE),
                "reason": reason_of(field_, value, what),
                "field": field_,
                "value": value[:1000] if value is not None else None,
                "payload": item_json,
                "quarantined_at": landed,
                "batch_id": batch_id,
                "item_index": item_index,
                "fetched_at": fetched_at,
                "item_type": item_type,
                "day": day or landed.date(),
                "counted_as": f"{field_} {what}" if field_ else what,
            }
        )
    return out


def _add_by_day(out: GroupTables, table: str, rows: pa.Table) -> None:
    """One table per UTC day, in the raw table's schema (columns by name, types exact)."""
    schema = SCHEMAS[table]
    days = rows.column("day")
    unique = pc.unique(days).to_pylist()
    for day in unique:
        part = (
            rows if len(unique) == 1 else rows.filter(pc.equal(days, pa.scalar(day, pa.date32())))
        )
        out.tables[(table, day)] = pa.table(
            [part.column(f.name).cast(f.type) for f in schema], schema=schema
        )


def split_batches(
    batches: Iterable[Kt1Batch], landed_at: datetime, seen: set[int] | None = None
) -> GroupTables:
    """`ItemSplitter.split` with a splitter of its own (a drain keeps one open instead)."""
    with ItemSplitter() as splitter:
        return splitter.split(batches, landed_at, seen)
