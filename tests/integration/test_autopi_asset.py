"""`raw/autopi/*` end to end: real Dagster runs against the simulated AutoPi API over HTTP."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from dagster import AssetKey, ExecuteInProcessResult, materialize

from pipelines.definitions import build_defs
from pipelines.lake import Lake
from pipelines.simulator.autopi import AutoPiServer, env
from pipelines.simulator.world import Trip, World
from pipelines.sources.autopi.assets import reexport_trips, summary_line

TRIPS_KEY = AssetKey(["raw", "autopi", "trips"])
POINTS_KEY = AssetKey(["raw", "autopi", "datapoints"])
DELAY_S = 600.0


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=5, vehicles=6, days=2, end_day=date(2026, 3, 31))


@pytest.fixture(scope="module")
def trips(world: World) -> list[Trip]:
    return world.trips(vehicle_indexes=[v.index for v in world.vehicles_of("autopi")])


@pytest.fixture
def clock(trips: list[Trip]) -> Clock:
    """Two minutes after the last trip ended: its export is still pending."""
    return Clock(trips[-1].ended_at + timedelta(seconds=120))


class CuttingServer(AutoPiServer):
    """The simulator, with results of chosen tasks cut mid-body every time."""

    cut_results: set[int]

    def _pick_fault(self, path: str) -> str | None:
        if any(path == f"/tasks/{t}/result/" for t in self.cut_results):
            return "cut"
        return super()._pick_fault(path)


@pytest.fixture
def server(world: World, clock: Clock) -> Iterator[CuttingServer]:
    srv = CuttingServer(world, clock=clock, export_delay_s=DELAY_S, rerun_delay_s=0)
    srv.cut_results = set()
    with srv:
        yield srv


@pytest.fixture
def autopi_env(fleet_env, server: AutoPiServer, monkeypatch: pytest.MonkeyPatch):
    for key, value in env(server).items():
        monkeypatch.setenv(key, value)
    return fleet_env


def run() -> ExecuteInProcessResult:
    defs = build_defs()
    return materialize(
        list(defs.assets),
        resources=defs.resources,
        selection=[TRIPS_KEY, POINTS_KEY],
        raise_on_error=False,
    )


def meta(result: ExecuteInProcessResult, key: AssetKey) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        if event.asset_key == key:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise AssertionError(f"no materialization of {key}")


def finished(trips: list[Trip], clock: Clock) -> list[Trip]:
    return [t for t in trips if t.ended_at + timedelta(seconds=DELAY_S) <= clock.now]


def export_lines(server: AutoPiServer, trip_id: str) -> list[str]:
    """The lines of a trip's current export, straight from the simulator's generator."""
    task = server.task_for_trip(trip_id)
    current = server._current(task, server._now())
    assert current is not None
    return gzip.decompress(server.export_bytes(task, current[0])).decode().splitlines()


def landed_counts(env_) -> dict[str, int]:
    table = Lake(env_.lake_dir).read("autopi", "datapoints")
    counts: dict[str, int] = {}
    for trip_id in table["trip_id"].to_pylist():
        counts[trip_id] = counts.get(trip_id, 0) + 1
    return counts


def test_a_run_lands_every_finished_export_once_and_clears_each_once(
    autopi_env, server: CuttingServer, clock: Clock, trips: list[Trip]
) -> None:
    done = finished(trips, clock)
    assert 0 < len(done) < len(trips), "the clock leaves some exports pending"
    result = run()
    assert result.success
    lake = Lake(autopi_env.lake_dir)
    landed = {r["trip_id"]: r for r in lake.read("autopi", "trips").to_pylist()}
    assert set(landed) == {t.trip_id for t in done}
    counts = landed_counts(autopi_env)
    for trip in done:
        assert counts[trip.trip_id] == len(export_lines(server, trip.trip_id)) - 1
        row = landed[trip.trip_id]
        assert row["started_at"] == trip.started_at and row["ended_at"] == trip.ended_at
        assert row["day"] == trip.started_at.date()
        assert row["device_id"] == server.world.vehicles[trip.vehicle_index].autopi_device_id
    task_ids = {server.task_for_trip(t.trip_id).task_id for t in done}
    assert dict(server.clear_calls) == dict.fromkeys(task_ids, 1)
    trips_meta, points_meta = meta(result, TRIPS_KEY), meta(result, POINTS_KEY)
    assert trips_meta["rows"] == len(done) and trips_meta["exports_pending"] == len(trips) - len(
        done
    )
    assert points_meta["rows"] == sum(counts.values()) and points_meta["malformed_lines"] == 0
    assert trips_meta["api_requests"] >= 1 + 2 * len(done)
    assert summary_line(result).startswith(f"{len(done)} trip export(s) landed and cleared")
    # one file per trip per table, plus the schema-only placeholders
    assert (
        len(lake.files("autopi", "trips"))
        == len(lake.files("autopi", "datapoints"))
        == len(done) + 1
    )

    again = run()
    assert again.success
    assert meta(again, TRIPS_KEY)["rows"] == 0
    assert dict(server.clear_calls) == dict.fromkeys(task_ids, 1), "nothing cleared twice"
    assert landed_counts(autopi_env) == counts


def test_pending_exports_are_skipped_then_landed_once_finished(
    autopi_env, server: CuttingServer, clock: Clock, trips: list[Trip]
) -> None:
    assert run().success
    clock.advance(DELAY_S)
    result = run()
    assert result.success
    assert meta(result, TRIPS_KEY)["exports_pending"] == 0
    assert set(landed_counts(autopi_env)) == {t.trip_id for t in trips}
    assert set(server.clear_calls.values()) == {1}


def test_a_cut_download_is_retried_and_never_half_landed(
    autopi_env, server: CuttingServer, clock: Clock, trips: list[Trip]
) -> None:
    server.faults.next_cut = 3  # the listing and the first results are cut mid-body
    result = run()
    assert result.success
    assert meta(result, TRIPS_KEY)["retries"] >= 3
    counts = landed_counts(autopi_env)
    for trip in finished(trips, clock):
        assert counts[trip.trip_id] == len(export_lines(server, trip.trip_id)) - 1


def test_an_export_that_never_downloads_whole_is_not_cleared_and_lands_later(
    autopi_env, server: CuttingServer, clock: Clock, trips: list[Trip]
) -> None:
    victim = finished(trips, clock)[0]
    task_id = server.task_for_trip(victim.trip_id).task_id
    server.cut_results = {task_id}
    result = run()
    assert result.success
    assert victim.trip_id not in landed_counts(autopi_env)
    assert server.clear_calls[task_id] == 0
    assert meta(result, TRIPS_KEY)["exports_failed"] == 1
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["finished_exports_landed"].passed
    no_leftovers = list(autopi_env.lake_dir.rglob("*.part")) + list(
        autopi_env.lake_dir.rglob("*.tmp")
    )
    assert not no_leftovers

    server.cut_results = set()
    assert run().success
    assert victim.trip_id in landed_counts(autopi_env)
    assert server.clear_calls[task_id] == 1


def test_a_reopened_trips_reexport_replaces_its_data(
    autopi_env, server: CuttingServer, clock: Clock, trips: list[Trip]
) -> None:
    trip = max(finished(trips, clock), key=lambda t: t.duration_s)
    task_id = server.plan_reopen(trip.trip_id)
    assert run().success
    partial = landed_counts(autopi_env)[trip.trip_id]
    assert partial == len(export_lines(server, trip.trip_id)) - 1

    assert server.reopen_trip(trip.trip_id) == task_id  # same task, a new result
    clock.advance(1)
    result = run()  # never saw the task pending: the ledger's re-check window finds it
    assert result.success
    full = landed_counts(autopi_env)[trip.trip_id]
    assert full == len(export_lines(server, trip.trip_id)) - 1 > partial
    lake = Lake(autopi_env.lake_dir)
    rows = [r for r in lake.read("autopi", "trips").to_pylist() if r["trip_id"] == trip.trip_id]
    assert len(rows) == 1 and rows[0]["ended_at"] == trip.ended_at
    assert server.clear_calls[task_id] == 2  # once per landed export of the task


def test_malformed_lines_are_quarantined_with_exact_counts(
    autopi_env, server: CuttingServer, clock: Clock, trips: list[Trip]
) -> None:
    server.faults.update(malformed_rate=0.02, seed=3)
    result = run()
    assert result.success
    lake = Lake(autopi_env.lake_dir)
    counts = landed_counts(autopi_env)
    total_bad = 0
    for trip in finished(trips, clock):
        lines = export_lines(server, trip.trip_id)[1:]
        bad = []
        for n, line in enumerate(lines, start=2):
            try:
                json.loads(line)
            except ValueError:
                bad.append((n, line))
        total_bad += len(bad)
        assert counts[trip.trip_id] == len(lines) - len(bad)
        folder = lake.partition_dir("autopi", "datapoints", trip.started_at.date())
        quarantine = folder / f"{trip.trip_id}.quarantine.jsonl"
        if bad:
            got = [json.loads(x) for x in quarantine.read_text().splitlines()]
            assert [(e["line_no"], e["line"]) for e in got] == bad
        else:
            assert not quarantine.exists()
    assert total_bad > 0
    assert meta(result, POINTS_KEY)["malformed_lines"] == total_bad
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["no_malformed_lines"].passed


def test_the_reexport_job_lands_a_trip_whose_export_was_cleared(
    autopi_env, server: CuttingServer, clock: Clock, trips: list[Trip]
) -> None:
    assert run().success
    trip = finished(trips, clock)[0]
    original = server.task_for_trip(trip.trip_id).task_id
    before = landed_counts(autopi_env)[trip.trip_id]
    result = reexport_trips([trip.trip_id], wait_s=5)
    assert result.success
    new_ids = [t for t in server.clear_calls if t != original and t not in _auto_ids(server)]
    assert len(new_ids) == 1 and server.clear_calls[new_ids[0]] == 1
    assert landed_counts(autopi_env)[trip.trip_id] == before
    rows = Lake(autopi_env.lake_dir).read("autopi", "trips").to_pylist()
    assert [r["task_id"] for r in rows if r["trip_id"] == trip.trip_id] == new_ids


def _auto_ids(server: AutoPiServer) -> set[int]:
    return {
        server.task_for_trip(t.trip_id).task_id
        for t in server.world.trips()
        if t.vehicle_index in {v.index for v in server.world.vehicles_of("autopi")}
    }


def test_a_missing_token_fails_the_run_with_one_line(
    autopi_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTOPI_TOKEN")
    result = run()
    assert not result.success
    (failure,) = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert description == "AUTOPI_TOKEN is not set (needed by raw/autopi/trips)"
