"""The AutoPi sensor and webhook receiver: polling alone finds every waiting export, a
signal makes the next tick ask for it, and a wrong secret is refused."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests
from dagster import RunRequest, build_sensor_context

from pipelines.lake import Lake
from pipelines.resources import LakeResource
from pipelines.settings import MissingCredentialError
from pipelines.simulator.autopi import AutoPiServer
from pipelines.simulator.clock import ManualClock
from pipelines.simulator.world import World
from pipelines.sources.autopi.assets import OP_NAME, build_autopi_exports, build_autopi_sensor
from pipelines.sources.autopi.resources import AutoPiResource
from pipelines.sources.autopi.state import ExportLedger
from pipelines.sources.autopi.webhook import SECRET_HEADER, WebhookServer, make_webhook_server

SECRET = "hook-secret-123"


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=5, vehicles=6, days=1, end_day=date(2026, 3, 31))


@pytest.fixture
def clock(world: World) -> ManualClock:
    last = world.trips(vehicle_indexes=[v.index for v in world.vehicles_of("autopi")])[-1]
    return ManualClock(last.ended_at + timedelta(seconds=120))


@pytest.fixture
def server(world: World, clock: ManualClock) -> Iterator[AutoPiServer]:
    with AutoPiServer(world, clock=clock, rerun_delay_s=30) as srv:
        yield srv


@pytest.fixture
def lake_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLEET_STATE_URL", f"sqlite:///{tmp_path / 'state.sqlite3'}")
    return tmp_path / "lake"


def ledger_of(lake_dir: Path) -> ExportLedger:
    """The AutoPi ledger of `lake_dir` in FLEET_STATE_URL, as the runs and the sensor open it."""
    return ExportLedger.of(Lake(lake_dir))


@pytest.fixture
def receiver(lake_dir: Path) -> Iterator[WebhookServer]:
    hook = make_webhook_server("127.0.0.1", 0, SECRET, ledger_of(lake_dir))
    thread = threading.Thread(target=hook.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield hook
    hook.shutdown()
    hook.server_close()
    thread.join()


SENSOR = build_autopi_sensor(build_autopi_exports())


def tick(server: AutoPiServer, lake_dir: Path, cursor: str | None = None):
    resources = {
        "autopi": AutoPiResource(base_url=server.url, token=server.token),
        "lake": LakeResource(lake_dir=str(lake_dir)),
    }
    with build_sensor_context(cursor=cursor, resources=resources) as context:
        result = SENSOR(context)
    return result, result.cursor


def requested(result) -> list[int]:
    runs = [r for r in (result.run_requests or []) if isinstance(r, RunRequest)]
    if not runs:
        return []
    (run,) = runs
    return run.run_config["ops"][OP_NAME]["config"]["task_ids"]


def finished_tasks(server: AutoPiServer) -> list[int]:
    listed = requests.get(
        f"{server.url}/tasks/", headers={"Authorization": f"APIToken {server.token}"}, timeout=5
    ).json()
    return sorted(t["id"] for t in listed if t["state"] == "SUCCESS")


def land_finished(server: AutoPiServer, lake_dir: Path) -> list[int]:
    """Record every finished export as landed and cleared, as a run would; their task ids."""
    done = finished_tasks(server)
    with ledger_of(lake_dir) as ledger:
        for task_id in done:
            ledger.record_landed(task_id, f"trip-{task_id}", "sha", "2026-03-31")
            ledger.record_cleared(task_id)
    return done


def test_the_sensor_asks_for_every_finished_export_and_not_twice(
    fleet_env, server: AutoPiServer, lake_dir: Path
) -> None:
    result, cursor = tick(server, lake_dir)
    assert requested(result) == finished_tasks(server)
    again, _ = tick(server, lake_dir, cursor)
    assert requested(again) == [] and again.skip_reason
    assert "already asked for" in again.skip_reason.skip_message


def test_the_sensor_skips_with_one_line_when_the_token_is_missing(
    fleet_env, server: AutoPiServer, lake_dir: Path
) -> None:
    resources = {
        "autopi": AutoPiResource(base_url=server.url),
        "lake": LakeResource(lake_dir=str(lake_dir)),
    }
    with build_sensor_context(resources=resources) as context:
        result = SENSOR(context)
    assert result.skip_message == "AUTOPI_TOKEN is not set (needed by autopi_exports_sensor)"


def test_landed_exports_are_not_asked_for_but_a_reexport_seen_pending_is(
    fleet_env, server: AutoPiServer, clock: ManualClock, lake_dir: Path
) -> None:
    done = land_finished(server, lake_dir)
    result, cursor = tick(server, lake_dir)
    assert requested(result) == []
    trip_id = server._tasks[done[0]].trip.trip_id
    server.reopen_trip(trip_id)
    pending, cursor = tick(server, lake_dir, cursor)  # sees the task unfinished again
    assert requested(pending) == []
    clock.now += timedelta(seconds=server.rerun_delay_s)
    result, _ = tick(server, lake_dir, cursor)
    assert requested(result) == [done[0]]


def test_a_signal_makes_the_next_tick_ask_for_that_export(
    fleet_env, server: AutoPiServer, lake_dir: Path, receiver: WebhookServer
) -> None:
    done = land_finished(server, lake_dir)
    _, cursor = tick(server, lake_dir)
    body = {"signal": "trip_export_finished", "task_id": done[1], "trip_id": "x"}
    resp = requests.post(receiver.url, json=body, headers={SECRET_HEADER: SECRET}, timeout=5)
    assert resp.status_code == 202 and resp.json()["status"] == "recorded"
    result, _ = tick(server, lake_dir, cursor)
    assert requested(result) == [done[1]]


@pytest.mark.parametrize(
    "headers",
    [{}, {SECRET_HEADER: "wrong"}, {SECRET_HEADER: SECRET + "x"}],
    ids=["none", "wrong", "longer"],
)
def test_the_webhook_rejects_a_missing_or_wrong_secret(
    receiver: WebhookServer, lake_dir: Path, headers: dict[str, str]
) -> None:
    body = {"signal": "trip_export_finished", "task_id": 100}
    resp = requests.post(receiver.url, json=body, headers=headers, timeout=5)
    assert resp.status_code == 401
    assert SECRET not in resp.text
    with ledger_of(lake_dir) as ledger:
        assert ledger.signals() == []
    assert receiver.rejected == 1 and receiver.received == 0


def test_the_webhook_records_the_simulators_signals(
    world: World, clock: ManualClock, receiver: WebhookServer, lake_dir: Path
) -> None:
    with AutoPiServer(
        world, clock=clock, webhook_url=receiver.url, webhook_secret=SECRET, webhook_poll_s=0
    ) as srv:
        sent = srv.poll_webhooks()
        assert sent and srv.flush_webhooks()
        assert {outcome for _, outcome in srv.webhook_deliveries} == {202}
    with ledger_of(lake_dir) as ledger:
        got = ledger.signals()
    assert [(s.task_id, s.trip_id) for s in got] == [(p["task_id"], p["trip_id"]) for p in sent]


def test_the_webhook_refuses_bad_bodies_and_ignores_other_signals(
    receiver: WebhookServer, lake_dir: Path
) -> None:
    post = lambda data: requests.post(  # noqa: E731
        receiver.url, data=data, headers={SECRET_HEADER: SECRET}, timeout=5
    )
    assert post(b"{nope").status_code == 400
    assert post(json.dumps({"signal": "trip_export_finished"})).status_code == 400
    assert post(json.dumps({"signal": "other", "task_id": 1})).json()["status"] == "ignored"
    assert requests.get(receiver.url + "healthz", timeout=5).status_code == 200


def test_the_webhook_will_not_start_without_a_secret(lake_dir: Path) -> None:
    with pytest.raises(MissingCredentialError, match="AUTOPI_WEBHOOK_SECRET is not set"):
        make_webhook_server("127.0.0.1", 0, None, ledger_of(lake_dir))
