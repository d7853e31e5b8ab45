"""kt1 through dbt: trips and idle periods in the marts, compared with the simulator's world.

The stream is drained twice from two servers over the same world, so the lake holds every item
twice (what redeliveries look like); the facts must still hold each trip and period once.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import duckdb
import pytest
from dagster import AssetKey, materialize

from pipelines.definitions import build_defs
from pipelines.lake import Lake
from pipelines.simulator.avl import AvlServer
from pipelines.simulator.avl import env as avl_env
from pipelines.simulator.world import World
from tests.conftest import fact_days, facts_connect, facts_env
from tests.support.kt1_support import run_drain, start_server

NOW = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
REPORT_INTERVAL_S = 30.0  # the simulator's telemetry interval: the resolution of idle periods


@pytest.fixture(scope="module")
def kt1_world() -> World:
    """The CLI's fleet (seed 7, 12 vehicles), so the shipped identity seed maps kt1 assets."""
    return World(seed=7, vehicles=12, days=5, end_day=date(2026, 3, 31))


@pytest.fixture(scope="module")
def built_env(tmp_path_factory, kt1_world: World):
    tmp = tmp_path_factory.mktemp("kt1-marts")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setenv("FLEET_LAKE_DIR", str(tmp / "lake"))
        for key, value in facts_env(tmp / "fleet_catalog.sqlite").items():
            mp.setenv(key, value)
        mp.setenv("FLEET_STATE_URL", f"sqlite:///{tmp / 'state.sqlite3'}")
        mp.setenv("FLEET_START_DATE", "2026-03-01")
        avl = AvlServer(kt1_world, rate_limit=(10, 1.0), clock=lambda: NOW).start()
        servers = [start_server(kt1_world, now=NOW, batch_size=100) for _ in range(2)]
        try:
            for key, value in avl_env(avl).items():
                mp.setenv(key, value)
            defs = build_defs()
            # dbt reads every source's lake table: land one AVL day so its staging has a file.
            assert materialize(
                list(defs.assets),
                resources=defs.resources,
                selection=[AssetKey(["raw", "avl", "trips"])],
                partition_key="2026-03-31",
            ).success
            # Same world, same batch ids: grouped differently so the copies get files of their
            # own instead of replacing the first landing's (as a same-group re-landing would).
            # dbt builds after each drain, as the after-drain sensor does: the second build
            # updates the staging tables day by day and must still keep one copy of each item.
            for server, group in zip(servers, (20, 7), strict=True):
                assert run_drain(server, group_max_batches=group).success
                assert materialize(
                    list(defs.assets),
                    resources=defs.resources,
                    selection="kind:dbt",
                    tags=fact_days(),
                ).success
        finally:
            avl.stop()
            for server in servers:
                server.stop()
        yield tmp


@pytest.fixture
def built(built_env):
    con = facts_connect(built_env / "fleet_catalog.sqlite")
    yield con
    con.close()


def kt1_trips(world: World):
    return {
        (v.kt1_asset_id, t.started_at): (v, t)
        for v in world.vehicles_of("kt1")
        for t in world.trips(vehicle_indexes=[v.index])
    }


def test_every_item_was_landed_twice_and_staged_once(built, built_env) -> None:
    lake_rows = len(Lake(built_env / "lake").read("kt1", "telemetry"))
    (staged,) = built.execute("select count(*) from stg_kt1__telemetry").fetchone()
    assert staged > 1000 and lake_rows == 2 * staged


def test_fct_trips_holds_every_kt1_trip_once_with_its_true_figures(built, kt1_world) -> None:
    truth = kt1_trips(kt1_world)
    rows = built.execute(
        """
        select v.source_vehicle_id, t.started_at, t.ended_at, t.duration_s, t.driving_s, t.idle_s,
               t.distance_km, t.max_speed_kmh, t.avg_speed_kmh, t.fuel_used_l, t.fuel_cost,
               t.start_lat, t.start_lon, t.start_address, t.end_lat, t.end_lon, t.end_address,
               t.vehicle_id, t.trip_id, t.source_trip_id
        from fct_trips t join dim_vehicles v using (vehicle_id, source)
        where t.source = 'kt1'
        """
    ).fetchall()
    assert len(rows) == len(truth) > 20
    for row in rows:
        asset, started, ended, duration, driving, idle, km, vmax, avg, fuel, cost = row[:11]
        start_lat, start_lon, start_address, end_lat, end_lon, end_address = row[11:17]
        vehicle_id, trip_id, source_trip_id = row[17:]
        vehicle, trip = truth[(asset, started.astimezone(UTC))]
        assert ended.astimezone(UTC) == trip.ended_at
        assert duration == trip.duration_s
        assert idle == round(trip.idle_s) and driving == round(trip.duration_s) - round(trip.idle_s)
        assert km == pytest.approx(trip.distance_km, abs=1e-3)
        assert vmax == round(trip.max_speed_kmh, 1)
        assert avg == pytest.approx(km / (driving / 3600), abs=0.01)
        assert fuel is None and cost is None  # KT1 trips carry no fuel: unknown, not 0
        assert (start_lat, start_lon) == pytest.approx(trip.start_latlon, abs=1e-6)
        assert (end_lat, end_lon) == pytest.approx(trip.end_latlon, abs=1e-6)
        assert (start_address, end_address) == (trip.start_address, trip.end_address)
        assert vehicle_id == vehicle.vehicle_id  # resolved through the identity seed
        assert trip_id == duckdb.sql(f"select md5('kt1|{source_trip_id}')").fetchone()[0]


def test_dim_vehicles_knows_each_kt1_asset_as_its_fleet_vehicle(built, kt1_world) -> None:
    rows = built.execute(
        "select source_vehicle_id, vehicle_id, display_name from dim_vehicles where source = 'kt1'"
    ).fetchall()
    expected = {
        (v.kt1_asset_id, v.vehicle_id, v.display_name) for v in kt1_world.vehicles_of("kt1")
    }
    assert set(rows) == expected


def _ms(ts: datetime) -> datetime:
    """kt1 writes dates with milliseconds (simulator.kt1.iso)."""
    return ts.replace(microsecond=ts.microsecond // 1000 * 1000)


def test_idle_periods_are_the_idling_events_kt1_measured(built, kt1_world) -> None:
    """kt1 reports each idle span of at least 60 s as an idling event: the periods are those
    spans exactly (to kt1's millisecond), each inside the trip it is linked to."""
    periods = built.execute(
        """
        select v.source_vehicle_id, p.started_at, p.ended_at, p.duration_s, t.source_trip_id,
               t.started_at, t.ended_at
        from fct_idle_periods p
        join dim_vehicles v using (vehicle_id, source)
        join fct_trips t using (trip_id)
        where p.source = 'kt1'
        """
    ).fetchall()
    by_asset: dict[str, set] = {v.kt1_asset_id: set() for v in kt1_world.vehicles_of("kt1")}
    for asset, started, ended, duration, _, trip_started, trip_ended in periods:
        assert duration == (ended - started).total_seconds() >= 60
        assert trip_started <= started < ended <= trip_ended  # inside the trip it is linked to
        by_asset[asset].add((started.astimezone(UTC), ended.astimezone(UTC)))
    assert sum(len(found) for found in by_asset.values()) == len(periods) > 10
    for vehicle in kt1_world.vehicles_of("kt1"):
        spans = {
            (_ms(s.started_at), _ms(s.ended_at))
            for t in kt1_world.trips(vehicle_indexes=[vehicle.index])
            for s in t.idle_spans(60.0)
        }
        assert by_asset[vehicle.kt1_asset_id] == spans


def test_idle_periods_are_real_idling_and_miss_no_long_standstill(built, kt1_world) -> None:
    """Against the world's exact idle spans: a period starts while the vehicle really idles,
    and every span long enough to show in three reports (>= 120 s) lies inside a period.
    Shorter drives between two stops can fall between reports, so a period may cover both.
    """
    periods = built.execute(
        """
        select v.source_vehicle_id, p.started_at, p.ended_at
        from fct_idle_periods p join dim_vehicles v using (vehicle_id, source)
        where p.source = 'kt1'
        """
    ).fetchall()
    slack = timedelta(seconds=REPORT_INTERVAL_S)
    for vehicle in kt1_world.vehicles_of("kt1"):
        spans = [
            s for t in kt1_world.trips(vehicle_indexes=[vehicle.index]) for s in t.idle_spans()
        ]
        mine = [
            (a.astimezone(UTC), b.astimezone(UTC))
            for v, a, b in periods
            if v == vehicle.kt1_asset_id
        ]
        for started, _ in mine:
            assert any(_ms(s.started_at) <= started < s.ended_at for s in spans), started
        for span in (s for s in spans if s.duration_s >= 120):
            assert any(
                a - slack <= span.started_at and span.ended_at <= b + slack for a, b in mine
            ), (vehicle.kt1_asset_id, span.started_at)


def test_device_counters_stay_raw_and_their_differences_are_distances(built, kt1_world) -> None:
    truth = kt1_trips(kt1_world)
    rows = built.execute(
        """
        select t.source_vehicle_id, t.started_at,
               max(m.device_odometer_counter_m) - min(m.device_odometer_counter_m),
               max(m.device_distance_counter_m) - min(m.device_distance_counter_m),
               min(m.device_odometer_counter_m)
        from stg_kt1__trips t
        join stg_kt1__telemetry m
            on m.asset_id = t.source_vehicle_id and m.recorded_at between t.started_at and t.ended_at
        group by all
        """
    ).fetchall()
    assert len(rows) == len(truth)
    for asset, started, odometer_m, counter_m, first_odometer_m in rows:
        _, trip = truth[(asset, started.astimezone(UTC))]
        assert odometer_m == pytest.approx(trip.distance_km * 1000, abs=2)
        assert counter_m == pytest.approx(trip.distance_km * 1000, abs=2)
        true_odometer_m = kt1_world.trip_state(trip).odometer_km * 1000
        assert abs(first_odometer_m - true_odometer_m) > 1  # a device counter, not the odometer
