"""`raw/autopi/*` end to end: real Dagster runs against the simulated AutoPi API over HTTP."""

from __future__ import annotations

import gzip
import json
import math
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dagster import AssetCheckSeverity, AssetKey, ExecuteInProcessResult, materialize

from pipelines.cli.commands import reexport_trips
from pipelines.cli.summaries import autopi_line
from pipelines.definitions import build_defs
from pipelines.lake import Lake
from pipelines.simulator.autopi import AutoPiServer, env
from pipelines.simulator.world import Trip, World
from pipelines.sources.autopi.assets import build_autopi_exports

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


def not_parquet(lake_dir: Path) -> list[Path]:
    """Files under the raw AutoPi tables' folders other than their Parquet files."""
    found = []
    for table in ("trips", "datapoints"):
        folder = Path(lake_dir) / "autopi" / table
        found += [p for p in folder.rglob("*") if p.is_file() and p.suffix != ".parquet"]
    return found


def checks(result: ExecuteInProcessResult) -> dict[tuple[str, str], Any]:
    return {
        (c.asset_key.to_user_string(), c.check_name): c
        for c in result.get_asset_check_evaluations()
    }


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
    assert points_meta["quarantined_rows"] == trips_meta["quarantined_rows"] == 0
    days = sorted({t.started_at.date().isoformat() for t in done})
    assert points_meta["days_written"] == trips_meta["days_written"] == days
    evaluations = checks(result)
    assert evaluations[("raw/autopi/datapoints", "no_quarantined_rows")].passed
    assert evaluations[("raw/autopi/trips", "no_quarantined_rows")].passed
    assert trips_meta["api_requests"] >= 1 + 2 * len(done)
    assert autopi_line(result).startswith(f"{len(done)} trip export(s) landed and cleared")
    # one file per trip per table, plus the schema-only placeholders
    assert (
        len(lake.files("autopi", "trips"))
        == len(lake.files("autopi", "datapoints"))
        == len(done) + 1
    )

    again = run()
    assert again.success
    assert meta(again, TRIPS_KEY)["rows"] == 0
    assert meta(again, TRIPS_KEY)["days_written"] == meta(again, POINTS_KEY)["days_written"] == []
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
        folder = lake.partition_dir("autopi", "quarantine", trip.started_at.date())
        quarantine = folder / f"{trip.trip_id}.parquet"
        if bad:
            got = pq.read_table(quarantine).to_pylist()
            assert [(e["line_number"], e["payload"]) for e in got] == bad
            assert all(e["reason"].startswith("invalid JSON") for e in got)
        else:
            assert not quarantine.exists()
    assert total_bad > 0
    assert not not_parquet(autopi_env.lake_dir)
    assert meta(result, POINTS_KEY)["malformed_lines"] == total_bad
    assert meta(result, POINTS_KEY)["quarantined_rows"] == total_bad
    check = checks(result)[("raw/autopi/datapoints", "no_quarantined_rows")]
    assert not check.passed and check.severity == AssetCheckSeverity.WARN
    assert f"{autopi_env.lake_dir}/autopi/quarantine/" in check.description


_DECIMAL_COMMA = re.compile(r"-?[0-9]+,[0-9]+")


def bad_value(line: str) -> tuple[str, str] | None:
    """The test's own oracle of a line the pipeline must quarantine for a value: (field, value)
    of a non-finite number, a decimal-comma number or a `@ts` that is not ISO-8601."""
    found: list[str] = []
    point = json.loads(line, parse_constant=lambda token: found.append(token) or math.nan)
    for key, value in point.items():
        if isinstance(value, float) and math.isnan(value) and found:
            return key, found[0]
        if isinstance(value, str) and _DECIMAL_COMMA.fullmatch(value):
            return key, value
    try:
        datetime.fromisoformat(point["@ts"].replace("Z", "+00:00"))
    except ValueError:
        return "@ts", point["@ts"]
    return None


def test_unparseable_and_non_finite_values_are_quarantined_and_the_run_succeeds(
    autopi_env, server: CuttingServer, clock: Clock, trips: list[Trip]
) -> None:
    done = finished(trips, clock)
    server.faults.update(bad_value_rate=0.03, bad_trip_rate=0.3, seed=11)
    result = run()
    assert result.success
    lake = Lake(autopi_env.lake_dir)
    counts = landed_counts(autopi_env)
    landed_trips = {r["trip_id"] for r in lake.read("autopi", "trips").to_pylist()}
    expected: dict[tuple[str, int], tuple[str, str, str]] = {}
    for trip in done:
        head, *lines = export_lines(server, trip.trip_id)
        distance = json.loads(head)["distanceKm"]
        if isinstance(distance, float) and math.isnan(distance):
            expected[(trip.trip_id, 1)] = ("trips", "distanceKm", "NaN")
            assert trip.trip_id not in landed_trips
        else:
            assert trip.trip_id in landed_trips
        bad = 0
        for n, line in enumerate(lines, start=2):
            if found := bad_value(line):
                expected[(trip.trip_id, n)] = ("datapoints", *found)
                bad += 1
        assert counts[trip.trip_id] == len(lines) - bad, "every other line landed"
    kinds = {value for _, _, value in expected.values()}
    assert {"NaN", "Infinity", "-Infinity"} <= kinds and any("," in k for k in kinds)
    assert any(field == "@ts" for _, field, _ in expected.values())
    assert ("trips", "distanceKm", "NaN") in expected.values()

    kept = lake.read("autopi", "quarantine").to_pylist()
    got = {(q["trip_id"], q["line_number"]): (q["table"], q["field"], q["value"]) for q in kept}
    assert got == expected
    for q in kept:
        assert q["reason"].startswith(f"{q['field']}: {q['value']!r} is not ")
        assert q["day"] == next(t for t in done if t.trip_id == q["trip_id"]).started_at.date()
    assert not not_parquet(autopi_env.lake_dir)
    points = lake.read("autopi", "datapoints")
    for name in points.column_names:
        if pa.types.is_floating(points.schema.field(name).type):
            assert pc.all(pc.is_finite(points[name]), skip_nulls=True).as_py() is not False, name
    assert not any("," in (v or "") for v in points["obd.speed.unit"].to_pylist())

    trips_meta, points_meta = meta(result, TRIPS_KEY), meta(result, POINTS_KEY)
    quarantined_trips = sum(1 for table, _, _ in expected.values() if table == "trips")
    assert trips_meta["quarantined_rows"] == quarantined_trips
    assert points_meta["quarantined_rows"] == len(expected) - quarantined_trips
    assert trips_meta["rows"] == len(done) - quarantined_trips
    evaluations = checks(result)
    for asset in ("raw/autopi/trips", "raw/autopi/datapoints"):
        check = evaluations[(asset, "no_quarantined_rows")]
        assert not check.passed and check.severity == AssetCheckSeverity.WARN
    assert "is not a finite number" in str(
        evaluations[("raw/autopi/datapoints", "no_quarantined_rows")].metadata["reasons"].value
    )
    for spec in build_autopi_exports().check_specs:
        if spec.name == "no_quarantined_rows":  # where the rows are and what to do
            assert "<lake>/autopi/quarantine/" in spec.description
            assert "fleet autopi reexport" in spec.description

    # The trip sent clean again: its re-landing removes its quarantine and lands its row.
    victim = next(t for t in done if (t.trip_id, 1) in expected)
    server.faults.update(bad_value_rate=0, bad_trip_rate=0)
    relanded = reexport_trips([victim.trip_id], wait_s=5)
    assert relanded.success
    assert (
        not lake.partition_dir("autopi", "quarantine", victim.started_at.date())
        .joinpath(f"{victim.trip_id}.parquet")
        .exists()
    )
    assert victim.trip_id in {r["trip_id"] for r in lake.read("autopi", "trips").to_pylist()}
    assert (
        landed_counts(autopi_env)[victim.trip_id] == len(export_lines(server, victim.trip_id)) - 1
    )
    assert meta(relanded, TRIPS_KEY)["days_written"] == [victim.started_at.date().isoformat()]


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


def test_two_drains_at_once_download_and_clear_each_export_once(
    autopi_env, server: CuttingServer, clock: Clock, trips: list[Trip]
) -> None:
    """Without Dagster's pool (two CLI runs, two instances) the drain itself is one at a time:
    the second waits for the first, then finds every export landed."""
    done = finished(trips, clock)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: run(), range(2)))
    assert all(r.success for r in results)
    task_ids = {server.task_for_trip(t.trip_id).task_id for t in done}
    assert dict(server.clear_calls) == dict.fromkeys(task_ids, 1), "an export cleared twice"
    assert sorted(meta(r, TRIPS_KEY)["rows"] for r in results) == [0, len(done)]
