"""The simulated kt1 export stream behaves as the HTTP Export Task reference says, over HTTP."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests

from pipelines.simulator.clock import ManualClock as Clock
from pipelines.simulator.kt1 import BAD_DATE, ITEM_TYPES, Kt1Server, env
from pipelines.simulator.world import World

TOKEN = "test-kt1-token"
AUTH = {"x-access-token": TOKEN}
LONG_POLL_S = 0.5
REDELIVERY_S = 0.6
BATCH = 40
# docs/kt1.md: the fields each item type must carry (extra fields are allowed).
REQUIRED = {
    "telemetry": {
        "type", "origin", "asset", "date", "received", "active", "location", "counters", "io",
        "state", "telemetry",
    },
    "trip": {
        "type", "id", "asset", "tripType", "dateStart", "dateEnd", "start", "end", "stats",
        "records", "maxes",
    },
    "event": {
        "type", "id", "owner", "origin", "eventDate", "eventClass", "eventType", "details",
    },
    "changenotification": {"type", "operation", "date", "doc"},
}  # fmt: skip
LOCATION_KEYS = {"lon", "lat", "speed", "altitude", "heading", "accuracy", "address"}
TIMESTAMPS = {
    "telemetry": ("date", "received"),
    "trip": ("dateStart", "dateEnd"),
    "event": ("eventDate",),
    "changenotification": ("date",),
}


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=3, vehicles=6, days=2, end_day=date(2024, 5, 15))


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2024, 5, 15, 12, 0, tzinfo=UTC))


def _stream(world: World, clock: Clock) -> Kt1Server:
    """The world's kt1 stream with this module's short timings and batch size."""
    return Kt1Server(
        world,
        token=TOKEN,
        clock=clock,
        long_poll_s=LONG_POLL_S,
        redelivery_s=REDELIVERY_S,
        batch_size=BATCH,
    )


@pytest.fixture
def server(world: World, clock: Clock) -> Iterator[Kt1Server]:
    """The world's kt1 stream at noon of its last day."""
    with _stream(world, clock) as srv:
        yield srv


@pytest.fixture
def empty_server(world: World) -> Iterator[Kt1Server]:
    """A stream whose clock is before the world starts: only what a test enqueues is served."""
    with _stream(world, Clock(datetime(2024, 1, 1, tzinfo=UTC))) as srv:
        yield srv


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.headers.update(AUTH)
        yield s


def stream(server: Kt1Server, session: requests.Session, **kwargs: Any) -> requests.Response:
    return session.get(f"{server.url}/v2/stream", timeout=10, **kwargs)


def ack(server: Kt1Server, session: requests.Session, batch_id: str) -> requests.Response:
    return session.delete(f"{server.url}/v2/stream/{batch_id}", timeout=10)


def drain(server: Kt1Server, session: requests.Session) -> list[dict[str, Any]]:
    """GET and DELETE until the queue is empty; every item, in delivery order."""
    items: list[dict[str, Any]] = []
    while server.pending():
        resp = stream(server, session)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        items.extend(body["items"])
        assert ack(server, session, body["id"]).status_code == 200
    return items


def markers(n: int, start: int = 0) -> list[dict[str, Any]]:
    """Distinguishable items for tests that feed the queue themselves."""
    return [
        {
            "type": "changenotification",
            "operation": "update",
            "date": "2024-01-01T00:00:00.000Z",
            "doc": {"id": f"doc-{i}", "type": "asset"},
        }
        for i in range(start, start + n)
    ]


def parse_ts(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value)


# --- auth ---------------------------------------------------------------------------------
def test_token_is_accepted_as_header(server: Kt1Server, session: requests.Session) -> None:
    assert stream(server, session).status_code == 200


def test_token_is_accepted_as_query_parameter(server: Kt1Server) -> None:
    resp = requests.get(f"{server.url}/v2/stream", params={"token": TOKEN}, timeout=10)
    assert resp.status_code == 200
    assert resp.json()["items"]


@pytest.mark.parametrize(
    "headers, params",
    [({}, {}), ({"x-access-token": "wrong"}, {}), ({}, {"token": "wrong"})],
    ids=["missing", "wrong-header", "wrong-query"],
)
def test_missing_or_wrong_token_is_401_and_delivers_nothing(
    server: Kt1Server, headers: dict[str, str], params: dict[str, str]
) -> None:
    before = server.pending()
    resp = requests.get(f"{server.url}/v2/stream", headers=headers, params=params, timeout=10)
    assert resp.status_code == 401
    assert resp.json()["error"] == "UNAUTHORIZED"
    assert server.pending() == before
    assert (
        requests.delete(f"{server.url}/v2/stream/x", headers=headers, timeout=10).status_code == 401
    )


def test_env_names_the_base_url_and_token(server: Kt1Server) -> None:
    assert env(server) == {"KT1_BASE_URL": server.url, "KT1_TOKEN": TOKEN}


# --- batches, long poll, acknowledgement, redelivery --------------------------------------
def test_get_returns_a_batch_of_at_most_batch_size_items(
    server: Kt1Server, session: requests.Session
) -> None:
    queued = server.pending()
    body = stream(server, session).json()
    assert set(body) == {"id", "items"}
    assert isinstance(body["id"], str) and body["id"]
    assert len(body["items"]) == BATCH
    assert server.pending() == queued - BATCH
    assert server.in_flight() == BATCH
    assert server.stats()["deliveries"] == 1


def test_empty_queue_long_polls_then_answers_500(
    empty_server: Kt1Server, session: requests.Session
) -> None:
    started = time.monotonic()
    resp = stream(empty_server, session)
    waited = time.monotonic() - started
    assert resp.status_code == 500
    assert resp.json()["error"] == "NO_DATA"
    assert LONG_POLL_S - 0.05 <= waited < LONG_POLL_S + 1.0


def test_long_poll_returns_as_soon_as_data_is_enqueued(
    world: World, session: requests.Session
) -> None:
    before = Clock(datetime(2024, 1, 1, tzinfo=UTC))
    with Kt1Server(world, token=TOKEN, clock=before, long_poll_s=5.0) as srv:
        threading.Timer(0.3, srv.enqueue, args=(markers(3),)).start()
        started = time.monotonic()
        resp = stream(srv, session)
        waited = time.monotonic() - started
    assert resp.status_code == 200
    assert [i["doc"]["id"] for i in resp.json()["items"]] == ["doc-0", "doc-1", "doc-2"]
    assert 0.25 <= waited < 1.5


def test_long_poll_returns_when_the_clock_reaches_new_data(
    world: World, session: requests.Session
) -> None:
    """Items appear when their time comes: a waiting poll picks them up without a new GET."""
    trip = world.trips(vehicle_indexes=[world.vehicles_of("kt1")[0].index])[0]
    clock = Clock(trip.started_at - timedelta(seconds=1))
    with Kt1Server(world, token=TOKEN, clock=clock, long_poll_s=5.0) as srv:
        while srv.pending():  # drain what already happened, unacknowledged is fine here
            stream(srv, session)
        threading.Timer(0.3, clock.advance, args=(120,)).start()
        started = time.monotonic()
        resp = stream(srv, session)
        waited = time.monotonic() - started
    assert resp.status_code == 200
    dates = [parse_ts(i.get("date") or i.get("eventDate")) for i in resp.json()["items"]]
    assert min(dates) >= trip.started_at
    assert waited < 1.5


def test_acknowledged_batches_never_come_back(server: Kt1Server, session: requests.Session) -> None:
    queued = server.pending()
    items = drain(server, session)
    assert len(items) == queued
    time.sleep(REDELIVERY_S + 0.2)
    assert stream(server, session).status_code == 500  # nothing redelivered
    assert server.acknowledged_items() == items
    stats = server.stats()
    assert stats["acks"] == stats["deliveries"] and stats["redeliveries"] == 0
    assert stats["acked_items"] == queued


def test_unacknowledged_batch_comes_back_first_with_a_new_id(
    empty_server: Kt1Server, session: requests.Session
) -> None:
    empty_server.enqueue(markers(BATCH * 2))
    first = stream(empty_server, session).json()
    time.sleep(REDELIVERY_S + 0.1)
    assert empty_server.pending() == BATCH * 2  # back in the queue, not in flight
    again = stream(empty_server, session).json()
    assert again["id"] != first["id"]
    assert again["items"] == first["items"]  # at the front, in the same order
    assert ack(empty_server, session, first["id"]).status_code == 500  # the expired id is void
    assert ack(empty_server, session, again["id"]).status_code == 200
    stats = empty_server.stats()
    assert (stats["deliveries"], stats["redeliveries"], stats["acks"]) == (2, 1, 1)
    assert stats["redelivered_items"] == BATCH


def test_a_cut_response_is_redelivered(empty_server: Kt1Server, session: requests.Session) -> None:
    """A GET the client never read in full still takes the batch: it must come back."""
    empty_server.enqueue(markers(5))
    empty_server.faults.next_cut = 1
    with pytest.raises(requests.exceptions.RequestException):
        stream(empty_server, session)
    assert empty_server.in_flight() == 5
    time.sleep(REDELIVERY_S + 0.1)
    body = stream(empty_server, session).json()
    assert [i["doc"]["id"] for i in body["items"]] == [f"doc-{i}" for i in range(5)]


def test_delete_of_an_unknown_id_is_500_as_the_reference_says(
    server: Kt1Server, session: requests.Session
) -> None:
    resp = ack(server, session, "5f0000000000000000000000")
    assert resp.status_code == 500
    assert resp.json()["error"] == "INVALID_ID"
    assert server.stats()["unknown_acks"] == 1


def test_a_batch_can_be_acknowledged_only_once(
    empty_server: Kt1Server, session: requests.Session
) -> None:
    empty_server.enqueue(markers(3))
    batch_id = stream(empty_server, session).json()["id"]
    assert ack(empty_server, session, batch_id).status_code == 200
    assert ack(empty_server, session, batch_id).status_code == 500
    assert len(empty_server.acknowledged_items()) == 3


# --- transport ----------------------------------------------------------------------------
def test_body_is_gzipped_when_asked(server: Kt1Server, session: requests.Session) -> None:
    resp = stream(server, session, headers={"Accept-Encoding": "gzip"}, stream=True)
    raw = resp.raw.read(decode_content=False)
    assert resp.headers["Content-Encoding"] == "gzip"
    assert raw[:2] == b"\x1f\x8b"


def test_body_is_plain_json_when_gzip_is_not_asked(
    server: Kt1Server, session: requests.Session
) -> None:
    resp = stream(server, session, headers={"Accept-Encoding": "identity"}, stream=True)
    raw = resp.raw.read(decode_content=False)
    assert "Content-Encoding" not in resp.headers
    assert json.loads(raw)["items"]


# --- the items ----------------------------------------------------------------------------
def test_world_items_are_queued_in_time_order_up_to_now(
    server: Kt1Server, session: requests.Session, clock: Clock
) -> None:
    items = drain(server, session)
    assert {i["type"] for i in items} == set(ITEM_TYPES)
    times = [parse_ts(i.get("received") or i.get("dateEnd") or i.get("eventDate") or i["date"])
             for i in items]  # fmt: skip
    assert max(times) <= clock.now
    telemetry = [parse_ts(i["received"]) for i in items if i["type"] == "telemetry"]
    assert telemetry == sorted(telemetry)
    assert server.stats()["future"] > 0  # the afternoon has not happened yet


def test_item_shapes_follow_design_section_2(server: Kt1Server, session: requests.Session) -> None:
    items = drain(server, session)
    for item in items:
        kind = item["type"]
        assert REQUIRED[kind] <= set(item), (kind, set(REQUIRED[kind]) - set(item))
        for field in TIMESTAMPS[kind]:
            parse_ts(item[field])
        if kind == "telemetry":
            assert set(item["origin"]) >= {"id", "name"} and set(item["asset"]) >= {"id", "name"}
            assert set(item["location"]) >= LOCATION_KEYS
            assert {"odometer", "odo_counter"} <= set(item["counters"])
            assert isinstance(item["active"], bool)
        elif kind == "trip":
            assert item["tripType"] in {"active", "inactive", "mixed"}
            for end in ("start", "end"):
                assert {"lon", "lat", "address", "counters"} <= set(item[end])
            assert {"driveTime", "idleTime", "distance"} <= set(item["stats"])
        elif kind == "event":
            assert item["details"]["asset"]["id"]
        else:
            assert set(item["doc"]) == {"id", "type"}
    telemetry = [i for i in items if i["type"] == "telemetry"]
    assert {i["active"] for i in telemetry} == {True, False}  # driving and parked
    event_types = Counter(i["eventType"] for i in items if i["type"] == "event")
    assert event_types["ignition_on"] and event_types["ignition_off"]


def test_trips_match_the_world_and_counters_are_raw_device_metres(
    server: Kt1Server, session: requests.Session, world: World, clock: Clock
) -> None:
    items = drain(server, session)
    kt1 = {v.kt1_asset_id: v for v in world.vehicles_of("kt1")}
    truth = {
        (kt1_id, t.started_at): t
        for kt1_id, v in kt1.items()
        for t in world.trips(vehicle_indexes=[v.index])
        if t.ended_at + timedelta(seconds=5) <= clock.now
    }
    trips = [i for i in items if i["type"] == "trip"]
    assert len(trips) == len(truth)
    assert len({t["id"] for t in trips}) == len(trips)
    for item in trips:
        trip = truth[(item["asset"]["id"], parse_ts(item["dateStart"]))]
        assert parse_ts(item["dateEnd"]) == trip.ended_at
        assert item["stats"]["distance"] == pytest.approx(trip.distance_km, abs=1e-3)
        assert item["stats"]["driveTime"] + item["stats"]["idleTime"] == round(trip.duration_s)
        start, end = item["start"]["counters"], item["end"]["counters"]
        for counter in ("odometer", "odo_counter"):
            assert isinstance(start[counter], int)
            delta_m = end[counter] - start[counter]
            assert delta_m == pytest.approx(trip.distance_km * 1000, abs=2)
        # Raw: the device odometer is not the vehicle's true odometer.
        true_m = world.trip_state(trip).odometer_km * 1000
        assert abs(start["odometer"] - true_m) > 1


def test_world_items_are_deterministic(world: World, clock: Clock) -> None:
    def first_batch() -> dict[str, Any]:
        with Kt1Server(world, token=TOKEN, clock=clock) as srv:
            return requests.get(f"{srv.url}/v2/stream", headers=AUTH, timeout=10).json()

    assert first_batch() == first_batch()


def test_fill_synthetic_adds_distinct_telemetry(empty_server: Kt1Server) -> None:
    started = time.monotonic()
    empty_server.fill_synthetic(5_000)
    empty_server.fill_synthetic(5_000)
    assert time.monotonic() - started < 2.0
    assert empty_server.pending() == 10_000
    with requests.Session() as s:
        s.headers.update(AUTH)
        empty_server.batch_size = 1_000
        items = drain(empty_server, s)
    assert {i["type"] for i in items} == {"telemetry"}
    assert len({(i["origin"]["id"], i["date"]) for i in items}) == 10_000


# --- malformed items ----------------------------------------------------------------------
def is_malformed(item: dict[str, Any]) -> bool:
    kind = item.get("type")
    return kind not in REQUIRED or not REQUIRED[kind] <= set(item)


def test_malformed_rate_corrupts_that_share_of_items_and_drops_none(
    server: Kt1Server, session: requests.Session
) -> None:
    server.faults.malformed_rate = 0.2
    queued = server.pending()
    items = drain(server, session)
    bad = [i for i in items if is_malformed(i)]
    assert len(items) == queued  # corrupted, never dropped
    assert 0.1 * queued < len(bad) < 0.3 * queued
    assert server.stats()["malformed_items"] == len(bad)
    kinds = Counter(i.get("type", "no type") for i in bad)
    assert kinds["no type"] and any(k.startswith("x-") for k in kinds)
    assert server.acknowledged_items() == items  # what the pipeline must have kept


def test_a_redelivered_batch_carries_the_same_corruption(
    server: Kt1Server, session: requests.Session
) -> None:
    server.faults.malformed_rate = 0.5
    first = stream(server, session).json()
    time.sleep(REDELIVERY_S + 0.1)
    again = stream(server, session).json()
    assert again["items"] == first["items"]
    assert any(is_malformed(i) for i in again["items"])


# --- spoiled values -----------------------------------------------------------------------
def spoiled_value(item: dict[str, Any]) -> Any:
    """The value `bad_value_rate` put in an item, if any."""
    for path in (("location", "speed"), ("stats", "distance"), ("details", "location", "lat")):
        value: Any = item
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if (isinstance(value, float) and not math.isfinite(value)) or value == "12,5":
            return value
    stamps = [item.get(k) for k in ("date", "dateEnd", "eventDate")]
    return BAD_DATE if BAD_DATE in stamps else None


def test_bad_value_rate_spoils_that_share_of_values_served_raw_and_drops_no_item(
    server: Kt1Server, session: requests.Session
) -> None:
    set_faults = session.post(f"{server.url}/_sim/faults", json={"bad_value_rate": 0.3})
    assert set_faults.status_code == 200 and server.bad_value_rate == 0.3
    queued = server.pending()
    bodies, items = [], []
    while server.pending():
        resp = stream(server, session)
        bodies.append(resp.text)
        body = resp.json()  # Python's reader takes NaN and Infinity; strict JSON would not
        items.extend(body["items"])
        assert ack(server, session, body["id"]).status_code == 200
    spoiled = [spoiled_value(i) for i in items if spoiled_value(i) is not None]
    assert len(items) == queued and 0.2 * queued < len(spoiled) < 0.4 * queued
    assert server.stats()["bad_value_items"] == len(spoiled)
    kinds = Counter("NaN" if v != v else str(v) for v in spoiled)
    assert set(kinds) == {"NaN", "inf", "12,5", BAD_DATE}
    assert any(":NaN" in b for b in bodies) and any(":Infinity" in b for b in bodies)
    with pytest.raises(ValueError, match="is not JSON"):  # bare tokens, not strings
        json.loads(next(b for b in bodies if ":NaN" in b), parse_constant=_strict)
    assert not any(is_malformed(i) for i in items)  # the shape stays intact


def _strict(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def test_a_redelivered_batch_carries_the_same_spoiled_values(
    server: Kt1Server, session: requests.Session
) -> None:
    server.bad_value_rate = 0.5
    first = stream(server, session).text
    time.sleep(REDELIVERY_S + 0.1)
    again = stream(server, session).text
    assert any(spoiled_value(i) is not None for i in json.loads(again)["items"])
    assert json.dumps(json.loads(again)["items"]) == json.dumps(json.loads(first)["items"])
