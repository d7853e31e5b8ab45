"""AutoPi's dbt models on a real facts build, compared with the simulator's ground truth.

The world is the demo fleet's (seed 7), whose AutoPi tank sizes are in the
autopi_vehicle_tanks seed, so litres can be checked too.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dagster import AssetKey

from pipelines.simulator.autopi import AutoPiServer, env
from pipelines.simulator.world import World
from tests.conftest import fact_days, facts_connect, facts_env, settings_in
from tests.support.runs import run_assets

MODELS = [
    "autopi_vehicle_tanks",
    "stg_autopi__trips",
    "stg_autopi__datapoints",
    "int_autopi__speed_intervals",
    "int_autopi__trip_readings",
    "int_autopi__trips",
    "int_autopi__idle_periods",
]
CONFORMED_TRIPS = [
    "trip_id", "source", "source_trip_id", "source_vehicle_id", "started_at", "ended_at",
    "duration_s", "driving_s", "idle_s", "distance_km", "max_speed_kmh", "fuel_used_l",
    "fuel_cost", "fuel_source", "start_lat", "start_lon", "start_address", "end_lat", "end_lon", "end_address",
]  # fmt: skip
CONFORMED_IDLE = [
    "idle_period_id", "source", "source_vehicle_id", "started_at", "ended_at", "duration_s",
    "lat", "lon", "address", "trip_id",
]  # fmt: skip


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=7, vehicles=12, days=2, end_day=date(2026, 3, 31))


@pytest.fixture(scope="module")
def built_env(tmp_path_factory, world: World) -> Path:
    """One AutoPi landing and one build of its models, shared by the module's tests."""
    tmp = tmp_path_factory.mktemp("autopi_facts")
    now = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
    start = {"FLEET_START_DATE": "2026-03-01"}
    with (
        AutoPiServer(world, clock=lambda: now) as server,
        settings_in(tmp, {**env(server), **start}),
    ):
        raw = [AssetKey(["raw", "autopi", "trips"]), AssetKey(["raw", "autopi", "datapoints"])]
        assert run_assets(raw).success
        assert run_assets([AssetKey([m]) for m in MODELS], tags=fact_days()).success
    return tmp


@pytest.fixture(scope="module")
def built(built_env: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    con = facts_connect(built_env / "fleet_catalog.sqlite")
    yield con
    con.close()


def test_conformed_models_have_exactly_the_union_shapes(built: duckdb.DuckDBPyConnection) -> None:
    assert [c[0] for c in built.execute("describe int_autopi__trips").fetchall()] == CONFORMED_TRIPS
    idle = [c[0] for c in built.execute("describe int_autopi__idle_periods").fetchall()]
    assert idle == CONFORMED_IDLE


def test_trips_match_the_world(built: duckdb.DuckDBPyConnection, world: World) -> None:
    truth = {t.trip_id: t for t in world.trips()}
    rows = built.execute(
        "select source_trip_id, source_vehicle_id, started_at, ended_at, duration_s, driving_s,"
        " idle_s, distance_km, max_speed_kmh, fuel_used_l, fuel_cost from int_autopi__trips"
    ).fetchall()
    autopi = {t for t in truth if "autopi" in world.vehicles[truth[t].vehicle_index].sources}
    assert {r[0] for r in rows} == autopi
    for tid, device, started, ended, dur, driving, idle, km, vmax, fuel, cost in rows:
        trip = truth[tid]
        vehicle = world.vehicles[trip.vehicle_index]
        assert device == vehicle.autopi_device_id
        assert (started.astimezone(UTC), ended.astimezone(UTC)) == (trip.started_at, trip.ended_at)
        assert dur == trip.duration_s and driving + idle == dur
        # each idle span's two ends are known to one 5 s sampling interval
        assert idle == pytest.approx(trip.idle_s, abs=5 * len(trip.idle_spans()) + 5)
        assert km == pytest.approx(trip.distance_km, abs=1e-6)
        # sampled every 5 s, a reading may miss the top of the ±4% speed wobble
        assert trip.max_speed_kmh / 1.09 <= vmax <= trip.max_speed_kmh + 0.5
        assert fuel == pytest.approx(trip.fuel_used_l(vehicle), abs=0.1)
        assert cost is None


def test_idle_periods_are_the_worlds_long_idles(
    built: duckdb.DuckDBPyConnection, world: World
) -> None:
    periods = built.execute(
        "select s.source_trip_id, i.started_at, i.duration_s from int_autopi__idle_periods i"
        " join stg_autopi__trips s on s.autopi_trip_id = i.trip_id"
    ).fetchall()
    trips = [t for t in world.trips() if "autopi" in world.vehicles[t.vehicle_index].sources]
    spans = {t.trip_id: t.idle_spans() for t in trips}
    assert all(d >= 60 for _, _, d in periods)
    for trip_id, started, duration in periods:  # every period is a real idle span
        match = [s for s in spans[trip_id] if abs((s.started_at - started).total_seconds()) <= 5.5]
        assert len(match) == 1 and match[0].duration_s == pytest.approx(duration, abs=5.5)
    found = {(t, s.astimezone(UTC).replace(microsecond=0)) for t, s, _ in periods}
    for trip_id, trip_spans in spans.items():  # every clearly long idle span is found
        for span in trip_spans:
            if span.duration_s >= 66:
                assert any(
                    t == trip_id and 0 <= (s - span.started_at).total_seconds() <= 5.5
                    for t, s in found
                ), span


def test_datapoints_are_keyed_by_trip_and_line(built: duckdb.DuckDBPyConnection) -> None:
    total, keys = built.execute(
        "select count(*), count(distinct (source_trip_id, line_no)) from stg_autopi__datapoints"
    ).fetchone()
    assert total == keys > 0


def test_a_daily_incremental_build_equals_a_full_build(
    built: duckdb.DuckDBPyConnection,
    built_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Build on a lake missing the last day and one earlier trip, land them, build again: the
    per-trip incremental models must end exactly where one full build does."""
    lake = tmp_path / "lake"
    shutil.copytree(built_env / "lake", lake)
    held = tmp_path / "held"
    days = sorted((lake / "autopi" / "trips").iterdir())
    assert len(days) >= 2
    late = [days[-1], *sorted(days[-2].iterdir())[:1]]  # the last day, a trip of the day before
    for path in late:
        for table in ("trips", "datapoints"):
            source = lake / "autopi" / table / path.relative_to(lake / "autopi" / "trips")
            target = held / table / source.relative_to(lake / "autopi" / table)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source, target)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLEET_LAKE_DIR", str(lake))
    for key, value in facts_env(tmp_path / "fleet_catalog.sqlite").items():
        monkeypatch.setenv(key, value)
    models = [AssetKey([m]) for m in MODELS]
    assert run_assets(models, tags=fact_days()).success
    for table in ("trips", "datapoints"):
        shutil.copytree(held / table, lake / "autopi" / table, dirs_exist_ok=True)
    assert run_assets(models, tags=fact_days()).success
    with facts_connect(tmp_path / "fleet_catalog.sqlite") as incremental:
        for model, key in [
            ("int_autopi__speed_intervals", "source_trip_id, line_no"),
            ("int_autopi__trip_readings", "source_trip_id"),
            ("int_autopi__trips", "trip_id"),
            ("int_autopi__idle_periods", "idle_period_id"),
        ]:
            query = f"select * exclude (trip_landed_at) from {model} order by {key}"
            if model in ("int_autopi__trips", "int_autopi__idle_periods"):
                query = f"select * from {model} order by {key}"
            want = _rounded(built.execute(query).fetchall())
            assert _rounded(incremental.execute(query).fetchall()) == want, model
            assert want, model


def _rounded(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Sums of doubles may differ in the last bit with the order DuckDB adds them in."""
    return [tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows]
