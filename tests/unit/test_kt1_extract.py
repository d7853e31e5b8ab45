"""kt1 batches → tables: routing by type, UTC days, raw values, quarantine, copies counted."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from pipelines.sources.kt1.client import Kt1Batch, batch_id_of, parse_batch
from pipelines.sources.kt1.drain import group_file_name
from pipelines.sources.kt1.extract import QUARANTINE, SCHEMAS, split_batches
from tests.kt1_support import identity

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


@pytest.mark.parametrize(
    "item, reason",
    [
        ({**TELEMETRY, "type": "x-telemetry"}, "unknown type 'x-telemetry'"),
        ({k: v for k, v in TELEMETRY.items() if k != "type"}, "no type"),
        ({k: v for k, v in TELEMETRY.items() if k != "date"}, "date is missing"),
        ({k: v for k, v in TELEMETRY.items() if k != "asset"}, "asset.id is missing"),
        ({**TRIP, "dateStart": "yesterday"}, "dateStart 'yesterday' is not ISO-8601"),
        ({k: v for k, v in EVENT.items() if k != "id"}, "id is missing"),
        ({k: v for k, v in CHANGE.items() if k != "doc"}, "doc.id is missing"),
        ("not an object", "item is not an object"),
    ],
    ids=["unknown-type", "no-type", "no-date", "no-asset", "bad-date", "no-id", "no-doc", "text"],
)
def test_unplaceable_items_are_quarantined_with_the_reason_never_dropped(item, reason) -> None:
    split = split_batches([batch([TRIP, item])], LANDED)
    assert split.quarantined == 1
    (kept,) = rows(split, QUARANTINE)
    assert kept["reason"] == reason
    assert json.loads(kept["item_json"]) == item
    assert (kept["batch_id"], kept["item_index"]) == ("b1", 1)
    assert list(split.tables) == [("trips", date(2024, 5, 14)), (QUARANTINE, LANDED.date())]


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
    assert kept["reason"] == reason and kept["item_json"] == body.decode()
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
