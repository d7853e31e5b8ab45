"""The simulated AutoPi API behaves as the automatic-exports reference says, over real HTTP."""

from __future__ import annotations

import gzip
import json
import socket
import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
import requests

from pipelines.simulator.autopi import EXPORT_TASK, AutoPiServer, env
from pipelines.simulator.clock import ManualClock as Clock
from pipelines.simulator.world import Trip, World

TOKEN = "test-autopi-token"
AUTH = {"Authorization": f"APIToken {TOKEN}"}
DELAY_S = 600.0
TASK_KEYS = {"id", "created_at", "task", "args", "kwargs", "state"}
TRIP_KEYS = {
    "id", "start_time_utc", "end_time_utc", "start_position_lat", "start_position_lng",
    "start_position_display", "end_position_lat", "end_position_lng", "end_position_display",
    "device", "vehicle", "duration", "distanceKm",
}  # fmt: skip


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=3, vehicles=6, days=3, end_day=date(2024, 5, 15))


@pytest.fixture(scope="module")
def autopi_trips(world: World) -> list[Trip]:
    indexes = [v.index for v in world.vehicles_of("autopi")]
    return world.trips(vehicle_indexes=indexes)


@pytest.fixture
def clock(autopi_trips: list[Trip]) -> Clock:
    """Five minutes after an end-day trip ended: that trip's export is still pending."""
    pending = [t for t in autopi_trips if t.day == date(2024, 5, 15)][1]
    return Clock(pending.ended_at + timedelta(seconds=300))


@pytest.fixture
def server(world: World, clock: Clock) -> Iterator[AutoPiServer]:
    with AutoPiServer(world, token=TOKEN, clock=clock, export_delay_s=DELAY_S) as srv:
        yield srv


def get(server: AutoPiServer, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(f"{server.url}/{path}", headers=AUTH, timeout=5, **kwargs)


def post(server: AutoPiServer, path: str, body: Any = None) -> requests.Response:
    return requests.post(f"{server.url}/{path}", headers=AUTH, json=body, timeout=5)


def tasks_by_trip(server: AutoPiServer) -> dict[str, dict[str, Any]]:
    return {t["kwargs"]["trip_id"]: t for t in get(server, "tasks/").json()}


def export_lines(resp: requests.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    return gzip.decompress(resp.content).decode().splitlines()


def parse_export(resp: requests.Response) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    lines = [json.loads(line) for line in export_lines(resp)]
    return lines[0], lines[1:]


def finished(server: AutoPiServer, clock: Clock, autopi_trips: list[Trip]) -> list[Trip]:
    return [t for t in autopi_trips if t.ended_at + timedelta(seconds=DELAY_S) <= clock.now]


# --- auth -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "APIToken wrong"}, {"Authorization": f"Bearer {TOKEN}"}],
    ids=["missing", "wrong-token", "wrong-scheme"],
)
@pytest.mark.parametrize("path", ["tasks/", "tasks/100/result/", "logbook/trips/"])
def test_requests_without_the_api_token_are_rejected(
    server: AutoPiServer, headers: dict[str, str], path: str
) -> None:
    resp = requests.get(f"{server.url}/{path}", headers=headers, timeout=5)
    assert resp.status_code == 401
    assert resp.json()["detail"]


def test_the_api_token_header_is_accepted(server: AutoPiServer) -> None:
    assert get(server, "tasks/").status_code == 200


# --- tasks ----------------------------------------------------------------------------------
def test_task_states_follow_the_export_delay(
    server: AutoPiServer, clock: Clock, autopi_trips: list[Trip]
) -> None:
    tasks = tasks_by_trip(server)
    delay = timedelta(seconds=DELAY_S)
    for trip in autopi_trips:
        if trip.ended_at > clock.now:
            assert trip.trip_id not in tasks, "a trip still under way has no export task"
        elif trip.ended_at + delay <= clock.now:
            assert tasks[trip.trip_id]["state"] == "SUCCESS"
        elif trip.ended_at + timedelta(seconds=5) <= clock.now:
            assert tasks[trip.trip_id]["state"] in {"PENDING", "STARTED"}
    states = {t["state"] for t in tasks.values()}
    assert {"SUCCESS", "PENDING"} <= states
    assert any(t.ended_at > clock.now for t in autopi_trips), "the clock should leave trips ahead"


def test_task_objects_have_exactly_the_reference_shape(server: AutoPiServer) -> None:
    for task in get(server, "tasks/").json():
        assert set(task) == TASK_KEYS
        assert isinstance(task["id"], int)
        assert task["task"] == EXPORT_TASK
        assert task["args"] == []
        assert set(task["kwargs"]) == {"trip_id"}
        assert task["created_at"].endswith("Z")


def test_one_task_per_trip_with_ids_stable_across_servers(
    world: World, clock: Clock, server: AutoPiServer
) -> None:
    first = get(server, "tasks/").json()
    assert len({t["kwargs"]["trip_id"] for t in first}) == len(first)
    with AutoPiServer(world, token=TOKEN, clock=clock, export_delay_s=DELAY_S) as twin:
        assert get(twin, "tasks/").json() == first


def test_tasks_appear_and_finish_as_the_clock_moves(
    server: AutoPiServer, clock: Clock, autopi_trips: list[Trip]
) -> None:
    before = tasks_by_trip(server)
    clock.advance(24 * 3600)
    after = tasks_by_trip(server)
    assert set(before) < set(after)
    assert {t["state"] for t in after.values()} == {"SUCCESS"}
    assert len(after) == len(autopi_trips)


# --- results --------------------------------------------------------------------------------
def test_result_is_a_trip_json_gz_with_trip_first_then_ascending_datapoints(
    server: AutoPiServer, clock: Clock, autopi_trips: list[Trip], world: World
) -> None:
    trip = finished(server, clock, autopi_trips)[0]
    task = tasks_by_trip(server)[trip.trip_id]
    resp = get(server, f"tasks/{task['id']}/result/")
    assert resp.headers["Content-Type"] == "application/gzip"
    assert f'filename="{trip.trip_id}.json.gz"' in resp.headers["Content-Disposition"]
    assert int(resp.headers["Content-Length"]) == len(resp.content)
    assert "Content-Encoding" not in resp.headers

    head, points = parse_export(resp)
    vehicle = world.vehicles[trip.vehicle_index]
    assert set(head) >= TRIP_KEYS
    assert head["id"] == trip.trip_id
    assert head["device"] == vehicle.autopi_device_id
    assert head["vehicle"] == vehicle.autopi_vehicle_id
    assert head["distanceKm"] == pytest.approx(trip.distance_km, abs=1e-6)
    assert head["end_time_utc"] == trip.ended_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert isinstance(head["start_position_lat"], str)
    assert head["end_position_display"]["address"] == trip.end_address

    stamps = [p["@ts"] for p in points]
    assert stamps == sorted(stamps)
    for p in points:
        assert {"@vid", "@uid", "@ts", "@t", "@rec"} <= set(p)
        assert p["@vid"] == vehicle.autopi_vehicle_id and p["@uid"] == vehicle.autopi_unit_id
        assert p["@rec"] > p["@ts"]
    assert (points[0]["@t"], points[0]["@tag"]) == (
        "event.vehicle.engine",
        "vehicle/engine/running",
    )
    assert points[-1]["@tag"] == "vehicle/engine/not_running"
    assert points[-1]["@ts"] == head["end_time_utc"]
    kinds = {p["@t"] for p in points}
    assert {
        "track.pos",
        "obd.speed",
        "obd.rpm",
        "obd.coolant_temp",
        "obd.fuel_level",
        "obd.bat",
    } <= kinds


def test_datapoint_types_carry_only_their_own_keys(
    server: AutoPiServer, clock: Clock, autopi_trips: list[Trip]
) -> None:
    trip = finished(server, clock, autopi_trips)[0]
    task = tasks_by_trip(server)[trip.trip_id]
    _, points = parse_export(get(server, f"tasks/{task['id']}/result/"))
    for p in points:
        own = {k for k in p if not k.startswith("@")}
        prefix = "obd.bat." if p["@t"] == "obd.bat" else p["@t"] + "."
        assert all(k.startswith(prefix) for k in own), p
    pos = next(p for p in points if p["@t"] == "track.pos")
    assert set(pos["track.pos.loc"]) == {"lat", "lon"}
    coolant = [p["obd.coolant_temp.value"] for p in points if p["@t"] == "obd.coolant_temp"]
    assert all(isinstance(v, int) for v in coolant)


def test_result_of_an_unfinished_or_unknown_task_is_404(
    server: AutoPiServer, clock: Clock, autopi_trips: list[Trip]
) -> None:
    pending = [t for t in tasks_by_trip(server).values() if t["state"] != "SUCCESS"]
    assert pending
    resp = get(server, f"tasks/{pending[0]['id']}/result/")
    assert resp.status_code == 404 and resp.json()["detail"]
    assert get(server, "tasks/999999/result/").status_code == 404


# --- clear / remove -------------------------------------------------------------------------
@pytest.mark.parametrize("verb", ["clear_result", "remove_result"])
def test_clear_and_remove_result_remove_the_result_and_count_the_call(
    server: AutoPiServer, clock: Clock, autopi_trips: list[Trip], verb: str
) -> None:
    trip = finished(server, clock, autopi_trips)[0]
    task_id = tasks_by_trip(server)[trip.trip_id]["id"]
    assert get(server, f"tasks/{task_id}/result/").status_code == 200
    assert get(server, f"tasks/{task_id}/{verb}/").status_code == 200
    assert get(server, f"tasks/{task_id}/result/").status_code == 404
    assert server.clear_calls[task_id] == 1
    assert get(server, "tasks/999999/clear_result/").status_code == 404


def test_clear_result_again_is_idempotent_counted_and_leaves_the_task_listed(
    server: AutoPiServer, clock: Clock, autopi_trips: list[Trip]
) -> None:
    trip = finished(server, clock, autopi_trips)[1]
    task_id = tasks_by_trip(server)[trip.trip_id]["id"]
    assert get(server, f"tasks/{task_id}/clear_result/").status_code == 200
    assert post(server, f"tasks/{task_id}/clear_result/").status_code == 200  # idempotent
    assert server.clear_calls[task_id] == 2
    assert sum(server.clear_calls.values()) == 2
    assert tasks_by_trip(server)[trip.trip_id]["state"] == "SUCCESS", "cleared tasks stay listed"


def test_results_expire_after_the_retention_but_the_task_stays_listed(
    world: World, clock: Clock, autopi_trips: list[Trip]
) -> None:
    with AutoPiServer(
        world, token=TOKEN, clock=clock, export_delay_s=DELAY_S, result_retention_s=3600
    ) as srv:
        old, recent = autopi_trips[0], finished(srv, clock, autopi_trips)[-1]
        tasks = tasks_by_trip(srv)
        assert tasks[old.trip_id]["state"] == "SUCCESS"
        assert get(srv, f"tasks/{tasks[old.trip_id]['id']}/result/").status_code == 404
        assert get(srv, f"tasks/{tasks[recent.trip_id]['id']}/result/").status_code == 200


# --- re-run ---------------------------------------------------------------------------------
def test_post_tasks_reruns_an_export_as_a_new_task_that_finishes_after_a_delay(
    server: AutoPiServer, clock: Clock, autopi_trips: list[Trip]
) -> None:
    trip = finished(server, clock, autopi_trips)[0]
    original = tasks_by_trip(server)[trip.trip_id]["id"]
    get(server, f"tasks/{original}/clear_result/")
    body = {"task": EXPORT_TASK, "args": [], "kwargs": {"trip_id": trip.trip_id}}
    resp = post(server, "tasks/", body)
    assert resp.status_code == 201
    rerun = resp.json()
    assert set(rerun) == TASK_KEYS and rerun["state"] == "PENDING"
    assert rerun["id"] > max(
        t["id"] for t in get(server, "tasks/").json() if t["id"] != rerun["id"]
    )
    assert get(server, f"tasks/{rerun['id']}/result/").status_code == 404

    clock.advance(server.rerun_delay_s)
    listed = {t["id"]: t for t in get(server, "tasks/").json()}
    assert listed[rerun["id"]]["state"] == "SUCCESS"
    head, points = parse_export(get(server, f"tasks/{rerun['id']}/result/"))
    assert head["id"] == trip.trip_id and points


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (None, 400),
        ({"task": "core.tasks.other", "args": [], "kwargs": {"trip_id": "x"}}, 400),
        ({"task": EXPORT_TASK, "args": [], "kwargs": {}}, 400),
        ({"task": EXPORT_TASK, "args": {}, "kwargs": {"trip_id": "x"}}, 400),
        ({"task": EXPORT_TASK, "args": [], "kwargs": {"trip_id": "no-such-trip"}}, 404),
    ],
    ids=["no-body", "other-task", "no-trip-id", "args-not-list", "unknown-trip"],
)
def test_post_tasks_rejects_a_bad_body_or_an_unknown_trip(
    server: AutoPiServer, body: Any, status: int
) -> None:
    resp = post(server, "tasks/", body)
    assert resp.status_code == status
    assert resp.json()["detail"]


def test_post_tasks_rejects_malformed_json(server: AutoPiServer) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    resp = requests.post(f"{server.url}/tasks/", data=b"{nope", headers=headers, timeout=5)
    assert resp.status_code == 400


# --- logbook --------------------------------------------------------------------------------
def test_logbook_lists_the_ended_trips_of_the_requested_device(
    server: AutoPiServer, clock: Clock, autopi_trips: list[Trip], world: World
) -> None:
    ended = {t.trip_id for t in autopi_trips if t.ended_at <= clock.now - timedelta(seconds=5)}
    everything = get(server, "logbook/trips/").json()
    assert ended <= {t["id"] for t in everything}
    assert all(t["end_time_utc"] <= clock.now.strftime("%Y-%m-%dT%H:%M:%S.%fZ") for t in everything)

    vehicle = world.vehicles_of("autopi")[1]
    mine = get(server, "logbook/trips/", params={"device": vehicle.autopi_device_id}).json()
    assert mine and {t["device"] for t in mine} == {vehicle.autopi_device_id}
    assert {t["id"] for t in mine} == {
        t["id"] for t in everything if t["device"] == vehicle.autopi_device_id
    }
    assert set(mine[0]) >= TRIP_KEYS
    assert get(server, "logbook/trips/", params={"device": "nope"}).json() == []


def test_logbook_trip_is_the_same_object_as_the_export_first_line(
    server: AutoPiServer, clock: Clock, autopi_trips: list[Trip]
) -> None:
    trip = finished(server, clock, autopi_trips)[0]
    task_id = tasks_by_trip(server)[trip.trip_id]["id"]
    head, _ = parse_export(get(server, f"tasks/{task_id}/result/"))
    logbook = {t["id"]: t for t in get(server, "logbook/trips/").json()}
    assert logbook[trip.trip_id] == head


# --- reopened trips -------------------------------------------------------------------------
def test_reopened_trip_replaces_the_earlier_partial_export(
    server: AutoPiServer, clock: Clock, autopi_trips: list[Trip]
) -> None:
    trip = finished(server, clock, autopi_trips)[2]
    task_id = server.plan_reopen(trip.trip_id)
    first_head, first_points = parse_export(get(server, f"tasks/{task_id}/result/"))
    assert first_head["end_time_utc"] < trip.ended_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert first_points[-1]["@tag"] == "vehicle/engine/not_running"
    get(server, f"tasks/{task_id}/clear_result/")

    assert server.reopen_trip(trip.trip_id) == task_id
    assert tasks_by_trip(server)[trip.trip_id]["state"] in {"PENDING", "STARTED"}
    assert get(server, f"tasks/{task_id}/result/").status_code == 404

    clock.advance(server.rerun_delay_s)
    task = tasks_by_trip(server)[trip.trip_id]
    assert (task["id"], task["state"]) == (task_id, "SUCCESS")
    head, points = parse_export(get(server, f"tasks/{task_id}/result/"))
    assert head["end_time_utc"] == trip.ended_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert head["distanceKm"] > first_head["distanceKm"]
    assert len(points) > len(first_points)
    assert points[: len(first_points) - 10] == first_points[: len(first_points) - 10]
    logbook = {t["id"]: t for t in get(server, "logbook/trips/").json()}
    assert logbook[trip.trip_id]["end_time_utc"] == head["end_time_utc"]


def test_reopen_share_exports_a_partial_trip_first_then_overwrites_it(
    world: World, autopi_trips: list[Trip]
) -> None:
    trip = max(autopi_trips, key=lambda t: t.duration_s)
    clock = Clock(trip.started_at)
    with AutoPiServer(world, token=TOKEN, clock=clock, export_delay_s=60, reopen_share=1.0) as srv:
        early = srv.task_for_trip(trip.trip_id).versions[0]
        assert early.ready_at < trip.ended_at, "the early end's export runs before the real end"
        clock.now = early.ready_at
        task = tasks_by_trip(srv)[trip.trip_id]
        assert task["state"] == "SUCCESS"
        first_head, _ = parse_export(get(srv, f"tasks/{task['id']}/result/"))
        assert first_head["end_time_utc"] < trip.ended_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        clock.now = trip.ended_at + timedelta(seconds=1)
        assert tasks_by_trip(srv)[trip.trip_id]["state"] == "PENDING", "re-export scheduled"
        assert get(srv, f"tasks/{task['id']}/result/").status_code == 404
        clock.advance(60)
        again = tasks_by_trip(srv)[trip.trip_id]
        assert (again["id"], again["state"]) == (task["id"], "SUCCESS")
        head, _ = parse_export(get(srv, f"tasks/{task['id']}/result/"))
        assert head["end_time_utc"] == trip.ended_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- faults ---------------------------------------------------------------------------------
def test_malformed_rate_corrupts_that_share_of_datapoint_lines_deterministically(
    server: AutoPiServer, clock: Clock, autopi_trips: list[Trip]
) -> None:
    trip = finished(server, clock, autopi_trips)[0]
    task_id = tasks_by_trip(server)[trip.trip_id]["id"]
    clean = export_lines(get(server, f"tasks/{task_id}/result/"))
    requests.post(f"{server.url}/_sim/faults", json={"malformed_rate": 0.2, "seed": 5}, timeout=5)
    dirty = export_lines(get(server, f"tasks/{task_id}/result/"))
    assert len(dirty) == len(clean)
    json.loads(dirty[0])  # the trip line is never corrupted

    def broken(lines: list[str]) -> list[int]:
        bad = []
        for n, line in enumerate(lines):
            try:
                json.loads(line)
            except json.JSONDecodeError:
                bad.append(n)
        return bad

    bad = broken(dirty)
    assert not broken(clean)
    assert 0.1 < len(bad) / (len(dirty) - 1) < 0.3
    assert all(clean[n].startswith(dirty[n]) for n in bad), "a corrupt line is a truncated one"
    assert export_lines(get(server, f"tasks/{task_id}/result/")) == dirty


def test_bad_value_faults_send_non_finite_comma_and_timestamp_values_in_valid_lines(
    server: AutoPiServer, clock: Clock, autopi_trips: list[Trip]
) -> None:
    done = finished(server, clock, autopi_trips)
    ids = [tasks_by_trip(server)[t.trip_id]["id"] for t in done]
    clean = {i: export_lines(get(server, f"tasks/{i}/result/")) for i in ids}
    faults = {"bad_value_rate": 0.1, "bad_trip_rate": 0.5, "seed": 7}
    assert requests.post(f"{server.url}/_sim/faults", json=faults, timeout=5).ok
    dirty = {i: export_lines(get(server, f"tasks/{i}/result/")) for i in ids}
    changed = bad_trips = 0
    seen: set[str] = set()
    for i in ids:
        assert len(dirty[i]) == len(clean[i])
        head = json.loads(dirty[i][0], parse_constant=str)  # NaN as its token
        if head["distanceKm"] == "NaN":  # the trip object's distance is the only change
            bad_trips += 1
            assert {**head, "distanceKm": None} == {**json.loads(clean[i][0]), "distanceKm": None}
        else:
            assert dirty[i][0] == clean[i][0]
        for before, after in zip(clean[i][1:], dirty[i][1:], strict=True):
            if before == after:
                continue
            changed += 1
            was = json.loads(before)
            now = json.loads(after, parse_constant=str)  # Python's json still reads it
            (key,) = [k for k in was if was[k] != now[k]]
            if now[key] in ("NaN", "Infinity", "-Infinity"):
                seen.add(now[key])
            elif key == "@ts":
                seen.add("timestamp")
                with pytest.raises(ValueError):
                    datetime.fromisoformat(now[key])
            else:
                assert now[key] == f"{float(was[key]):.1f}".replace(".", ",")
                seen.add("decimal comma")
    total = sum(len(lines) - 1 for lines in clean.values())
    assert 0.05 < changed / total < 0.15 and 0 < bad_trips < len(ids)
    assert seen == {"NaN", "Infinity", "-Infinity", "timestamp", "decimal comma"}
    again = {i: export_lines(get(server, f"tasks/{i}/result/")) for i in ids}
    assert again == dirty, "deterministic per seed"


# --- webhook --------------------------------------------------------------------------------
class Receiver:
    """A tiny webhook endpoint recording what it was sent."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.calls.append((headers, json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/autopi"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


def test_webhook_signals_each_finished_export_once_with_the_secret_header(
    world: World, clock: Clock, receiver: Receiver
) -> None:
    with AutoPiServer(
        world, token=TOKEN, clock=clock, export_delay_s=DELAY_S,
        webhook_url=receiver.url, webhook_secret="hook-secret", webhook_poll_s=0,
    ) as srv:  # fmt: skip
        done = {t["id"]: t for t in get(srv, "tasks/").json() if t["state"] == "SUCCESS"}
        assert srv.flush_webhooks()
        assert {body["task_id"] for _, body in receiver.calls} == set(done)
        assert len(receiver.calls) == len(done)
        headers, body = receiver.calls[0]
        assert headers["x-webhook-secret"] == "hook-secret"
        assert body["signal"] == "trip_export_finished"
        assert body["trip_id"] == done[body["task_id"]]["kwargs"]["trip_id"]
        assert body["rebroadcast"] is False
        assert all(outcome == 204 for _, outcome in srv.webhook_deliveries)

        get(srv, "tasks/")
        assert srv.poll_webhooks() == []
        assert srv.flush_webhooks() and len(receiver.calls) == len(done), "no repeats"


def test_webhook_rebroadcasts_daily_only_the_exports_never_cleared(
    world: World, clock: Clock, receiver: Receiver
) -> None:
    with AutoPiServer(
        world, token=TOKEN, clock=clock, export_delay_s=DELAY_S,
        webhook_url=receiver.url, webhook_poll_s=0,
    ) as srv:  # fmt: skip
        first = srv.poll_webhooks()
        cleared = first[0]["task_id"]
        get(srv, f"tasks/{cleared}/clear_result/")
        assert srv.flush_webhooks()
        receiver.calls.clear()
        clock.now = (clock.now + timedelta(days=1)).replace(hour=4)
        again = srv.poll_webhooks()
        assert srv.flush_webhooks()
        rebroadcast = {p["task_id"] for p in again if p["rebroadcast"]}
        assert rebroadcast == {p["task_id"] for p in first} - {cleared}
        assert "x-webhook-secret" not in receiver.calls[0][0]


def test_an_unreachable_webhook_never_breaks_the_api(world: World, clock: Clock) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    with AutoPiServer(
        world, token=TOKEN, clock=clock, webhook_url=f"http://127.0.0.1:{dead_port}/x",
        webhook_poll_s=0.05, webhook_timeout_s=0.5,
    ) as srv:  # fmt: skip
        assert get(srv, "tasks/").status_code == 200
        assert srv.flush_webhooks()
        assert srv.webhook_deliveries
        assert all(isinstance(outcome, str) for _, outcome in srv.webhook_deliveries)


# --- env ------------------------------------------------------------------------------------
def test_env_gives_the_base_url_token_and_webhook_secret(world: World) -> None:
    with AutoPiServer(world, token="t0k", webhook_secret="s3") as srv:
        assert env(srv) == {
            "AUTOPI_BASE_URL": srv.url,
            "AUTOPI_TOKEN": "t0k",
            "AUTOPI_WEBHOOK_SECRET": "s3",
        }
    with AutoPiServer(world) as plain:
        assert set(env(plain)) == {"AUTOPI_BASE_URL", "AUTOPI_TOKEN"}
