"""kt1 batches → tables: routing by type, UTC days, raw values, validated values, quarantine in the
lake's convention, copies counted."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from pipelines.sources.kt1.client import Kt1Batch, batch_id_of, parse_batch
from pipelines.sources.kt1.drain import group_file_name
from pipelines.sources.kt1.extract import split_batches
from pipelines.sources.kt1.schemas import QUARANTINE, SCHEMAS
from tests.support.kt1_support import identity

FETCHED = datetime(2024, 5, 15, 12, 0, tzinfo=UTC)
LANDED = datetime(2024, 5, 15, 12, 0, 5, tzinfo=UTC)

TELEMETRY = {
    "type": "telemetry",
    "origin": {"id": 359000000000001, "name": "FMC130"},
    "asset": {"id": "a1", "name": "Van B-102"},
    "date": "2024-05-14T23:59:59.500Z",
    "received": "2024-05-15T00:00:01.100Z",
    "active": True,
    "location": {"lon": 24.7, "lat": 59.4, "speed": 0, "altitude": 30, "heading": 0,
                 "accuracy": 4, "address": "Narva mnt 1"},
    "counters": {"odometer": 123456789, "odo_counter": 4567890, "engine_hours": 1234.56},
    "io": {"ignition": True},
    "state": {"moving": False},
    "telemetry": {"rpm": 800},
}  # fmt: skip
TRIP = {
    "type": "trip",
    "id": "t1",
    "asset": {"id": "a1", "name": "Van B-102"},
    "tripType": "active",
    "dateStart": "2024-05-15T01:30:00.000+03:00",  # 2024-05-14 22:30 UTC
    "dateEnd": "2024-05-15T02:00:00.000+03:00",
    "start": {"lon": 24.7, "lat": 59.4, "address": "A", "counters": {}},
    "end": {"lon": 24.8, "lat": 59.5, "address": "B", "counters": {}},
    "stats": {"driveTime": 1500, "idleTime": 300, "distance": 12.345},
    "records": 60,
    "maxes": {"speed": 71.5},
}
EVENT = {
    "type": "event",
    "id": "e1",
    "owner": "o1",
    "origin": "359000000000001",
    "eventDate": "2024-05-15T08:00:00.000Z",
    "eventClass": "io",
    "eventType": "ignition_on",
    "details": {"asset": {"id": "a1"}, "location": {"lat": 59.4, "lon": 24.7, "address": "A"}},
}
CHANGE = {
    "type": "changenotification",
    "operation": "update",
    "date": "2024-05-15T10:00:00.000Z",
    "doc": {"id": "a1", "type": "asset"},
}


def batch(items: list, batch_id: str = "b1") -> Kt1Batch:
    return parse_batch(json.dumps({"id": batch_id, "items": items}).encode(), FETCHED)


def rows(split, table: str) -> list[dict]:
    return [r for (t, _), data in split.tables.items() if t == table for r in data.to_pylist()]


def test_items_go_to_their_table_on_the_utc_day_of_their_own_timestamp() -> None:
    split = split_batches([batch([TELEMETRY, TRIP, EVENT, CHANGE])], LANDED)
    assert set(split.tables) == {
        ("telemetry", date(2024, 5, 14)),
        ("trips", date(2024, 5, 14)),  # 01:30+03:00 is the previous UTC day
        ("events", date(2024, 5, 15)),
        ("changes", date(2024, 5, 15)),
    }
    for (table, _), data in split.tables.items():
        assert data.schema == SCHEMAS[table]
    (trip,) = rows(split, "trips")
    assert trip["date_start"] == datetime(2024, 5, 14, 22, 30, tzinfo=UTC)
    assert (trip["stats_drive_time"], trip["stats_idle_time"], trip["stats_distance"]) == (
        1500,
        300,
        12.345,
    )
    (event,) = rows(split, "events")
    assert (event["id"], event["asset_id"], event["origin"], event["event_type"]) == (
        "e1",
        "a1",
        "359000000000001",
        "ignition_on",
    )
    (change,) = rows(split, "changes")
    assert (change["doc_id"], change["doc_type"], change["operation"]) == ("a1", "asset", "update")
    assert change["date"] == datetime(2024, 5, 15, 10, tzinfo=UTC)
    assert split.quarantined == 0
    assert split.rows_by_table == {"telemetry": 1, "trips": 1, "events": 1, "changes": 1}


def test_values_stay_raw_and_the_whole_item_is_kept() -> None:
    split = split_batches([batch([TELEMETRY])], LANDED)
    (row,) = rows(split, "telemetry")
    assert row["origin_id"] == "359000000000001"  # numeric ids become text, digits intact
    assert row["counters_odometer"] == 123456789  # device counter, not corrected
    assert row["counters_odo_counter"] == 4567890
    assert json.loads(row["item_json"]) == TELEMETRY
    assert (row["batch_id"], row["item_index"], row["fetched_at"], row["landed_at"]) == (
        "b1",
        0,
        FETCHED,
        LANDED,
    )
    # Absent, null and empty values are NULL, not errors; a number sent as text is that number.
    sparse = {**TELEMETRY, "received": None, "location": {"speed": "", "lat": "59.5", "lon": 7}}
    split = split_batches([batch([sparse])], LANDED)
    (row,) = rows(split, "telemetry")
    assert split.quarantined == 0
    assert (row["received"], row["speed"], row["lat"], row["lon"], row["altitude"]) == (
        None,
        None,
        59.5,
        7.0,
        None,
    )


@pytest.mark.parametrize(
    "item, reason, table, field, value",
    [
        (
            {**TELEMETRY, "type": "x-telemetry"},
            "type: 'x-telemetry' is not a known type",
            "x-telemetry",
            "type",
            "x-telemetry",
        ),
        ({k: v for k, v in TELEMETRY.items() if k != "type"}, "type is missing", "unknown",
         "type", None),
        ({k: v for k, v in TELEMETRY.items() if k != "date"}, "date is missing", "telemetry",
         "date", None),
        ({k: v for k, v in TELEMETRY.items() if k != "asset"}, "asset.id is missing",
         "telemetry", "asset.id", None),
        ({**TRIP, "dateStart": "yesterday"}, "dateStart: 'yesterday' is not ISO-8601", "trips",
         "dateStart", "yesterday"),
        ({k: v for k, v in EVENT.items() if k != "id"}, "id is missing", "events", "id", None),
        ({k: v for k, v in CHANGE.items() if k != "doc"}, "doc.id is missing", "changes",
         "doc.id", None),
        ("not an object", "item is not an object", "unknown", None, None),
    ],
    ids=["unknown-type", "no-type", "no-date", "no-asset", "bad-date", "no-id", "no-doc", "text"],
)  # fmt: skip
def test_unplaceable_items_are_quarantined_with_the_reason_never_dropped(
    item, reason: str, table: str, field: str | None, value: str | None
) -> None:
    split = split_batches([batch([TRIP, item])], LANDED)
    assert split.quarantined == 1
    (kept,) = rows(split, QUARANTINE)
    assert (kept["reason"], kept["table"], kept["field"], kept["value"]) == (
        reason,
        table,
        field,
        value,
    )
    assert json.loads(kept["payload"]) == item
    assert (kept["batch_id"], kept["item_index"], kept["quarantined_at"]) == ("b1", 1, LANDED)
    # On the day the item would have landed on, when it has one; else the landing day.
    assert list(split.tables) == [("trips", date(2024, 5, 14)), (QUARANTINE, own_day(item))]


def own_day(item: object) -> date:
    """The UTC day of the item's own timestamp, if it has a readable one; else the landing day."""
    stamp = {"telemetry": "date", "trip": "dateStart", "event": "eventDate"}
    try:
        text = item[stamp[item["type"]]]  # type: ignore[index]
        return datetime.fromisoformat(text).astimezone(UTC).date()
    except (KeyError, TypeError, ValueError):
        return LANDED.date()


def raw_item(item: dict, path: str, token: str) -> str:
    """`item` as JSON with the value at `path` written as the raw `token` (NaN is not JSON)."""
    spoiled = json.loads(json.dumps(item))
    *parents, last = path.split(".")
    target = spoiled
    for key in parents:
        target = target.setdefault(key, {})
    target[last] = "@@TOKEN@@"
    return json.dumps(spoiled).replace('"@@TOKEN@@"', token)


@pytest.mark.parametrize(
    "item, path, token, value, problem",
    [
        (TELEMETRY, "location.speed", "NaN", "NaN", "is not a finite number"),
        (TELEMETRY, "location.lat", "Infinity", "Infinity", "is not a finite number"),
        (TELEMETRY, "counters.odometer", "-Infinity", "-Infinity", "is not a finite number"),
        (TELEMETRY, "counters.odo_counter", "1e999", "1e999", "is not a finite number"),
        (TELEMETRY, "location.speed", '"12,5"', "12,5", "is not a number"),
        (TELEMETRY, "location.speed", '"NaN"', "NaN", "is not a finite number"),
        (TELEMETRY, "location.heading", "true", "true", "is not a number"),
        (TELEMETRY, "location.altitude", '{"m": 3}', '{"m":3}', "is not a number"),
        (TELEMETRY, "telemetry.fuel_level", "NaN", "NaN", "is not a finite number"),
        (TELEMETRY, "received", '"31.02.2024 25:61"', "31.02.2024 25:61", "is not ISO-8601"),
        (TRIP, "stats.distance", '"12,5"', "12,5", "is not a number"),
        (TRIP, "dateEnd", '"2024-02-31T10:00:00Z"', "2024-02-31T10:00:00Z", "is not ISO-8601"),
        (TRIP, "maxes.speed", "NaN", "NaN", "is not a finite number"),
        (EVENT, "details.location.lon", "Infinity", "Infinity", "is not a finite number"),
        (EVENT, "details.volume", "NaN", "NaN", "is not a finite number"),
        (EVENT, "details.dateEnd", '"soon"', "soon", "is not ISO-8601"),
    ],
)
def test_a_value_that_is_not_a_finite_number_or_a_date_quarantines_its_item(
    item: dict, path: str, token: str, value: str, problem: str
) -> None:
    body = f'{{"id": "b1", "items": [{json.dumps(TRIP)}, {raw_item(item, path, token)}]}}'
    split = split_batches([parse_batch(body.encode(), FETCHED)], LANDED)
    table = {"telemetry": "telemetry", "trip": "trips", "event": "events"}[item["type"]]
    assert split.rows_by_table == {"trips": 1}  # the spoiled item never lands; the rest does
    assert split.quarantined == 1 and split.quarantined_by_table == {table: 1}
    (kept,) = rows(split, QUARANTINE)
    assert kept["reason"] == f"{path}: '{value}' {problem}"
    assert (kept["table"], kept["field"], kept["value"], kept["item_type"]) == (
        table,
        path,
        value,
        item["type"],
    )
    assert kept["payload"].replace(" ", "") == raw_item(item, path, token).replace(" ", "")
    assert split.quarantine_reasons == {f"{path} {problem}": 1}
    assert [d for t, d in split.tables if t == QUARANTINE] == [own_day(item)]


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"<html>busy</html>", "batch: body is not JSON"),
        (b'{"id": "b9", "items": {"type": "trip"}}', "batch: body is not {id, items[]}"),
        (b'{"items": []}', "batch: body is not {id, items[]}"),
    ],
    ids=["not-json", "items-not-a-list", "no-id"],
)
def test_a_body_that_is_not_id_and_items_is_quarantined_whole(body: bytes, reason: str) -> None:
    split = split_batches([batch([TRIP], "b1"), parse_batch(body, FETCHED)], LANDED)
    (kept,) = rows(split, QUARANTINE)
    assert kept["reason"] == reason and kept["payload"] == body.decode()
    assert (kept["table"], kept["field"], kept["value"]) == ("unknown", None, None)
    assert kept["item_index"] == -1 and split.rows_by_table == {"trips": 1}


def test_the_batch_id_is_read_from_the_head_or_the_whole_body() -> None:
    assert batch_id_of('{"id":"5f1e","items":[]}') == "5f1e"
    assert batch_id_of('{ "items": [], "id": "late" }') == "late"  # another layout
    assert batch_id_of('{"id": 12, "items": []}') is None  # nothing we could acknowledge
    assert batch_id_of("<html>") is None
    assert parse_batch(b'{"id":"x","items":[1]}', FETCHED).items == [1]


def test_copies_are_counted_against_what_the_run_already_saw_and_still_land() -> None:
    seen: set[int] = set()
    first = split_batches([batch([TELEMETRY, TRIP])], LANDED, seen)
    again = split_batches([batch([TELEMETRY, TRIP, EVENT], "b2")], LANDED, seen)
    assert (first.duplicates, again.duplicates) == (0, 2)
    assert again.rows_by_table == {"telemetry": 1, "trips": 1, "events": 1}


def test_the_same_instant_written_with_another_offset_is_the_same_item() -> None:
    seen: set[int] = set()
    split_batches([batch([TELEMETRY])], LANDED, seen)
    same = {**TELEMETRY, "date": "2024-05-15T02:59:59.500+03:00", "received": None}
    again = split_batches([batch([same, {**TRIP, "stats": {}}])], LANDED, seen)
    assert again.duplicates == 1  # the telemetry item, written with +03:00; the trip is new
    assert split_batches([batch([same, TRIP])], LANDED, seen).duplicates == 2
    assert identity(same) == identity(TELEMETRY)  # the tests' oracle agrees


def test_group_file_names_replace_the_same_group_and_never_another() -> None:
    a, b, c = batch([], "aaa"), batch([], "bbb"), batch([], "ccc")
    assert group_file_name([a, b]) == group_file_name([batch([], "aaa"), batch([], "bbb")])
    assert group_file_name([a, b]) != group_file_name([a, c])  # same first id, other group
    assert group_file_name([a]).startswith("aaa-1-")
    assert "/" not in group_file_name([batch([], "../x/y")])
