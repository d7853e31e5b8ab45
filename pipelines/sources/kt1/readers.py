"""How each kt1 item type is read: the SQL that types its values and names its first problem.

One `_Reader` per item type says which columns it fills, which day it lands on and what must
hold for it to land; `typed_sql` turns that into one DuckDB query over all items of the type.
Kept apart from the batch splitting (extract.py) because this is the part that changes when
the vendor adds a field.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    from there (refuel volumes), so a bad one must not land either. Every item must have its
    day's timestamp; `required` ids and any further `checks` say what else identifies it.
    """

    columns: dict[str, str]
    numbers: dict[str, str]
    day_of: str  # path of the timestamp whose UTC date is the item's day
    required: tuple[str, ...] = ()  # ids without which the item has no identity
    optional_ids: tuple[str, ...] = ()  # ids read but not required
    checks: tuple[_Check, ...] = ()  # identity checks beyond a required id, before those
    times: tuple[str, ...] = ()  # every timestamp read: the day's, then optional ones
    also_checked: tuple[str, ...] = ()

    @property
    def ids(self) -> tuple[str, ...]:
        return (*self.required, *self.optional_ids)

    @property
    def number_paths(self) -> list[str]:
        return [*self.numbers.values(), *self.also_checked]

    def all_columns(self) -> dict[str, str]:
        return {**self.columns, **{c: _number(p) for c, p in self.numbers.items()}}

    def all_checks(self) -> list[_Check]:
        """In the order reasons are given: placement first, then values."""
        return [
            _missing(self.day_of),
            _timestamp(self.day_of),
            *self.checks,
            *(_required_id(p) for p in self.required),
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
        required=("origin.id", "asset.id"),
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
        required=("id", "asset.id"),
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
        required=("id",),
        optional_ids=("details.asset.id",),
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
        required=("doc.id",),
        optional_ids=("operation",),  # checked on its own: text, not an id
        checks=(
            _Check(
                f"{_name('k', 'operation')} is distinct from 'VARCHAR' "
                f"or {_name('t', 'operation')} = ''",
                "operation",
                "'is missing'",
            ),
        ),
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


def typed_sql(kind: str) -> str:
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
