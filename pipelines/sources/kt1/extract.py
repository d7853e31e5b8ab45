"""kt1 batches → typed Arrow tables per raw table and UTC day. No Dagster, no HTTP.

Every item is kept: known types land in their table (day = UTC date of the item's own
timestamp) with the vendor's values raw and the whole item as `item_json`; anything lacking
the fields its identity or day needs, with a type we do not know, or in a body that is not
`{id, items[]}`, lands in `quarantine` (day = the landing day) with the reason. Nothing is
de-duplicated here: a redelivered batch lands again, and staging keeps one row per identity.

Items are typed in bulk by an in-memory DuckDB (`from_json` with each type's structure), a few
µs per item; parsing them one by one in Python cost several times the whole HTTP round trip.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.sources.kt1.client import Kt1Batch

SOURCE = "kt1"
TABLES = ("telemetry", "trips", "events", "changes")
QUARANTINE = "quarantine"
TABLE_OF_TYPE = {
    "telemetry": "telemetry",
    "trip": "trips",
    "event": "events",
    "changenotification": "changes",
}

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
    QUARANTINE: _schema(
        pa.field("item_type", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
    ),
}

# --- how each item type is read -----------------------------------------------------------
# `from_json` structure per type: JSON for values whose JSON type we check (ids, timestamps,
# booleans); the rest converted leniently (a value of the wrong type becomes NULL, and the
# item keeps it raw in item_json).
_STRUCTURES = {
    "telemetry": """{
        "origin": {"id": "JSON", "name": "VARCHAR"}, "asset": {"id": "JSON", "name": "VARCHAR"},
        "date": "JSON", "received": "JSON", "active": "JSON",
        "location": {"lon": "DOUBLE", "lat": "DOUBLE", "speed": "DOUBLE", "altitude": "DOUBLE",
                     "heading": "DOUBLE", "accuracy": "DOUBLE", "address": "VARCHAR"},
        "counters": {"odometer": "DOUBLE", "odo_counter": "DOUBLE", "engine_hours": "DOUBLE"}}""",
    "trip": """{
        "id": "JSON", "asset": {"id": "JSON", "name": "VARCHAR"}, "tripType": "VARCHAR",
        "dateStart": "JSON", "dateEnd": "JSON",
        "start": {"lat": "DOUBLE", "lon": "DOUBLE", "address": "VARCHAR"},
        "end": {"lat": "DOUBLE", "lon": "DOUBLE", "address": "VARCHAR"},
        "stats": {"driveTime": "DOUBLE", "idleTime": "DOUBLE", "distance": "DOUBLE"},
        "records": "DOUBLE", "maxes": {"speed": "DOUBLE"}}""",
    "event": """{
        "id": "JSON", "owner": "VARCHAR", "origin": "VARCHAR", "eventDate": "JSON",
        "eventClass": "VARCHAR", "eventType": "VARCHAR",
        "details": {"asset": {"id": "JSON"},
                    "location": {"lat": "DOUBLE", "lon": "DOUBLE", "address": "VARCHAR"}}}""",
    "changenotification": """{
        "operation": "JSON", "date": "JSON", "doc": {"id": "JSON", "type": "VARCHAR"}}""",
}


def _ident(value: str) -> str:
    """An id: a JSON string or integer, not empty."""
    kinds = "('VARCHAR', 'BIGINT', 'UBIGINT', 'HUGEINT')"
    return f"(json_type({value}) in {kinds} and {_text(value)} <> '')"


def _text(value: str) -> str:
    return f"({value} ->> '$')"


def _ts(value: str) -> str:
    """A timestamp value (NULL unless a parseable string); offset-less ones are read as UTC."""
    parsed = f"try_cast({_text(value)} as timestamptz)"
    return f"(case when json_type({value}) = 'VARCHAR' then {parsed} end)"


def _ts_checks(value: str, name: str) -> list[tuple[str, str]]:
    return [
        (
            f"coalesce(json_type({value}), 'NULL') = 'NULL' or {_text(value)} = ''",
            f"'{name} is missing'",
        ),
        (f"json_type({value}) <> 'VARCHAR'", f"'{name} is not a timestamp'"),
        (
            f"{_ts(value)} is null",
            f"'{name} ''' || left({_text(value)}, 40) || ''' is not ISO-8601'",
        ),
    ]


@dataclass(frozen=True)
class _Reader:
    """SQL of one item type: output columns (in schema order), the day, and what must hold."""

    columns: dict[str, str]
    day_of: str
    checks: list[tuple[str, str]]


_READERS = {
    "telemetry": _Reader(
        columns={
            "origin_id": _text("j.origin.id"),
            "origin_name": "j.origin.name",
            "asset_id": _text("j.asset.id"),
            "asset_name": "j.asset.name",
            "date": _ts("j.date"),
            "received": _ts("j.received"),
            "active": "case when json_type(j.active) = 'BOOLEAN' then j.active::boolean end",
            "lat": "j.location.lat",
            "lon": "j.location.lon",
            "speed": "j.location.speed",
            "altitude": "j.location.altitude",
            "heading": "j.location.heading",
            "accuracy": "j.location.accuracy",
            "address": "j.location.address",
            "counters_odometer": "j.counters.odometer",
            "counters_odo_counter": "j.counters.odo_counter",
            "counters_engine_hours": "j.counters.engine_hours",
        },
        day_of=_ts("j.date"),
        checks=[
            *_ts_checks("j.date", "date"),
            (f"not {_ident('j.origin.id')}", "'origin.id is missing'"),
            (f"not {_ident('j.asset.id')}", "'asset.id is missing'"),
        ],
    ),
    "trip": _Reader(
        columns={
            "id": _text("j.id"),
            "asset_id": _text("j.asset.id"),
            "asset_name": "j.asset.name",
            "trip_type": "j.tripType",
            "date_start": _ts("j.dateStart"),
            "date_end": _ts("j.dateEnd"),
            "start_lat": "j.start.lat",
            "start_lon": "j.start.lon",
            "start_address": "j.start.address",
            "end_lat": "j.end.lat",
            "end_lon": "j.end.lon",
            "end_address": "j.end.address",
            "stats_drive_time": "j.stats.driveTime",
            "stats_idle_time": "j.stats.idleTime",
            "stats_distance": "j.stats.distance",
            "records": "j.records",
            "maxes_speed": "j.maxes.speed",
        },
        day_of=_ts("j.dateStart"),
        checks=[
            *_ts_checks("j.dateStart", "dateStart"),
            (f"not {_ident('j.id')}", "'id is missing'"),
            (f"not {_ident('j.asset.id')}", "'asset.id is missing'"),
        ],
    ),
    "event": _Reader(
        columns={
            "id": _text("j.id"),
            "owner": "j.owner",
            "origin": "j.origin",
            "event_date": _ts("j.eventDate"),
            "event_class": "j.eventClass",
            "event_type": "j.eventType",
            "asset_id": (
                f"case when {_ident('j.details.asset.id')} then {_text('j.details.asset.id')} end"
            ),
            "lat": "j.details.location.lat",
            "lon": "j.details.location.lon",
            "address": "j.details.location.address",
        },
        day_of=_ts("j.eventDate"),
        checks=[
            *_ts_checks("j.eventDate", "eventDate"),
            (f"not {_ident('j.id')}", "'id is missing'"),
        ],
    ),
    "changenotification": _Reader(
        columns={
            "operation": _text("j.operation"),
            "date": _ts("j.date"),
            "doc_id": _text("j.doc.id"),
            "doc_type": "j.doc.type",
        },
        day_of=_ts("j.date"),
        checks=[
            *_ts_checks("j.date", "date"),
            (
                "json_type(j.operation) is distinct from 'VARCHAR' or (j.operation ->> '$') = ''",
                "'operation is missing'",
            ),
            (f"not {_ident('j.doc.id')}", "'doc.id is missing'"),
        ],
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
# Bodies that are not {id, items[]}, and items that are not objects of a type we know.
_REJECTED_SQL = """
select batch_id, -1 as item_index, fetched_at, body as item_json,
       cast(null as varchar) as item_type, 'batch: ' || problem as reason
from kt1_batches
where problem is not null
union all
select
    batch_id,
    item_index,
    fetched_at,
    item::varchar,
    left(type_json ->> '$', 100),
    case
        when json_kind <> 'OBJECT' then 'item is not an object'
        when coalesce(json_type(type_json), 'NULL') = 'NULL' then 'no type'
        else 'unknown type ''' || left(type_json ->> '$', 40) || ''''
    end
from kt1_items
where coalesce(json_type(type_json), 'NULL') <> 'VARCHAR'
    or (type_json ->> '$') not in ('telemetry', 'trip', 'event', 'changenotification')
"""


def _typed_sql(kind: str) -> str:
    """All items of one type: their columns, UTC day, identity hash, and why not (if not)."""
    reader = _READERS[kind]
    # A check that cannot be decided (NULL) fails: such an item is quarantined, not landed.
    reason = "case " + " ".join(f"when coalesce({c}, true) then {r}" for c, r in reader.checks)
    columns = ",\n    ".join(f"{sql} as {name}" for name, sql in reader.columns.items())
    key = ", ".join(reader.columns[name] for name in _IDENTITY[kind])
    structure = " ".join(_STRUCTURES[kind].split())
    return f"""
select
    batch_id, item_index, fetched_at, ?::timestamptz as landed_at,
    item::varchar as item_json,
    {columns},
    cast({reader.day_of} as date) as day,
    hash('{kind}', {key}) as identity_hash,
    {reason} end as reason
from (
    select *, from_json(item, '{structure}') as j
    from kt1_items
    where json_type(type_json) = 'VARCHAR' and (type_json ->> '$') = '{kind}'
)
order by pos, item_index
"""


@dataclass
class GroupTables:
    """One group of batches split into (table, day) → rows, plus what the split counted."""

    tables: dict[tuple[str, date], pa.Table] = field(default_factory=dict)
    items_by_type: Counter[str] = field(default_factory=Counter)
    rows_by_table: Counter[str] = field(default_factory=Counter)
    quarantined: int = 0
    quarantine_reasons: Counter[str] = field(default_factory=Counter)
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
        con.register("kt1_incoming", incoming)
        try:
            con.execute(_BATCHES_SQL)
            con.execute(_ITEMS_SQL)
            kinds = sorted(k for (k,) in con.execute(_KINDS_SQL).fetchall() if k in TABLE_OF_TYPE)
            rejected = [con.execute(_REJECTED_SQL).to_arrow_table()]
            for kind in kinds:
                rows = con.execute(_typed_sql(kind), [landed]).to_arrow_table()
                reason = rows.column("reason")
                good = rows if reason.null_count == rows.num_rows else None
                bad = rows.filter(pc.is_valid(reason)) if good is None else None
                if bad is not None and bad.num_rows:
                    rejected.append(
                        bad.select(["batch_id", "item_index", "fetched_at", "item_json"])
                        .append_column("item_type", pa.array([kind] * bad.num_rows, pa.string()))
                        .append_column("reason", bad.column("reason"))
                    )
                if good is None:
                    good = rows.filter(pc.is_null(reason))
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
        quarantine = pa.concat_tables([t.cast(rejected[0].schema) for t in rejected])
        if quarantine.num_rows:
            reasons = quarantine.column("reason").to_pylist()
            out.quarantined = len(reasons)
            out.quarantine_reasons.update(
                "unknown type" if r.startswith("unknown type") else r for r in reasons
            )
            n = quarantine.num_rows
            quarantine = quarantine.append_column(
                "landed_at", pa.array([landed] * n, TS)
            ).append_column("day", pa.array([landed.date()] * n, pa.date32()))
            _add_by_day(out, QUARANTINE, quarantine)
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
