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
"12,5" into a DOUBLE as NULL, so numbers are read as JSON text and checked, not trusted to
the cast. This module unpacks batches into items and routes the typed rows; readers.py holds
each item type's SQL, schemas.py the tables it fills.
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

from pipelines.sources.kt1.client import Kt1Batch
from pipelines.sources.kt1.readers import typed_sql
from pipelines.sources.kt1.schemas import (
    QUARANTINE,
    QUARANTINE_ROWS,
    SCHEMAS,
    TABLE_OF_TYPE,
    TS,
    UNKNOWN_TABLE,
)

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
                rows = con.execute(typed_sql(kind), [landed]).to_arrow_table()
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
            rows = pa.Table.from_pylist(quarantine, schema=QUARANTINE_ROWS)
            _add_by_day(out, QUARANTINE, rows)
        return out


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
