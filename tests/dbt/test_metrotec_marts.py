"""Metrotec through dbt into the facts catalog: real landings (AVL and Metrotec simulators over
HTTP) and a real `dbt build`, with the Metrotec facts compared to the World's ground truth."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date

import pytest
from dagster import AssetKey

from pipelines.definitions import build_defs
from pipelines.simulator.avl import AvlServer
from pipelines.simulator.metrotec import IDLE_STOP_MIN_S
from tests.conftest import SIM_NOW, fact_days, facts_connect, settings_in
from tests.support.metrotec_support import ScriptedMetrotecServer, day_bounds, truth_trips
from tests.support.runs import range_tags, run_assets

FIRST, LAST = date(2026, 3, 2), date(2026, 3, 15)
RANGE_TAGS = range_tags(FIRST, LAST)
METROTEC = [
    AssetKey(["raw", "metrotec", t])
    for t in ("vehicles", "routelog", "stops", "refuels", "fuel_levels")
]


@pytest.fixture(scope="module")
def sims(world):
    with (
        AvlServer(world, rate_limit=(10, 1.0), clock=lambda: SIM_NOW) as avl,
        ScriptedMetrotecServer(world, clock=lambda: SIM_NOW) as metrotec,
    ):
        yield avl, metrotec


@pytest.fixture(scope="module")
def built(tmp_path_factory, sims):
    """One landing of both sources and one dbt build, shared by the module's read-only tests."""
    from pipelines.simulator.avl import env as avl_env
    from pipelines.simulator.metrotec import env as metrotec_env

    avl, metrotec = sims
    tmp = tmp_path_factory.mktemp("metrotec-marts")
    settings = {
        **avl_env(avl),
        **metrotec_env(metrotec),
        "METROTEC_RATE_LIMIT": "1000/1",
        "FLEET_START_DATE": "2025-12-01",
    }
    with settings_in(tmp, settings):
        landing = run_assets([AssetKey(["raw", "avl", "trips"]), *METROTEC], tags=RANGE_TAGS)
        assert landing.success
        facts = run_assets("kind:dbt", tags=fact_days())
        assert facts.success  # every dbt data test included
    con = facts_connect(tmp / "fleet_catalog.sqlite")
    yield con
    con.close()


def test_raw_metrotec_tables_are_the_upstreams_of_their_staging_models(fleet_env) -> None:
    graph = build_defs().resolve_asset_graph()
    for table in ("vehicles", "routelog", "stops", "refuels", "fuel_levels"):
        parents = graph.get(AssetKey([f"stg_metrotec__{table}"])).parent_keys
        assert parents == {AssetKey(["raw", "metrotec", table])}


def test_fct_trips_holds_every_metrotec_trip_with_its_true_figures(built, sims) -> None:
    world = sims[1].world
    truth = {
        (world.vehicles[t.vehicle_index].vehicle_id, t.started_at): t
        for t in truth_trips(world, FIRST, LAST)
    }
    rows = built.execute(
        "select vehicle_id, started_at, ended_at, duration_s, driving_s, idle_s, distance_km, "
        "max_speed_kmh, avg_speed_kmh, fuel_used_l, fuel_cost, start_lat, start_lon, end_lat, "
        "end_lon, start_address, end_address from fct_trips where source = 'metrotec'"
    ).fetchall()
    assert len(rows) == len(truth)
    fuel_errors = []
    for (vid, started, ended, duration, driving, idle, km, vmax, vavg, fuel, cost, slat, slon,
         elat, elon, saddr, eaddr) in rows:  # fmt: skip
        trip = truth[(vid, started.astimezone(UTC))]
        vehicle = world.vehicles[trip.vehicle_index]
        assert ended.astimezone(UTC) == trip.ended_at and duration == trip.duration_s
        assert driving == round(trip.driving_s) and idle == duration - driving
        assert idle == pytest.approx(trip.idle_s, abs=0.51)
        assert km == pytest.approx(trip.distance_km, abs=0.006)
        assert vmax == round(trip.max_speed_kmh) and vavg == pytest.approx(
            trip.avg_speed_kmh, rel=0.005
        )
        assert (slat, slon) == pytest.approx(trip.start_latlon, abs=1e-4)
        assert (elat, elon) == pytest.approx(trip.end_latlon, abs=1e-4)
        assert (saddr, eaddr) == (trip.start_address, trip.end_address)
        assert cost is None  # Metrotec knows no price: unknown, not 0
        fuel_errors.append(fuel - trip.fuel_used_l(vehicle))
    # The estimate from the 0.1 l level log: within two sensor steps, unbiased overall.
    assert max(abs(e) for e in fuel_errors) <= 0.2
    assert abs(sum(fuel_errors) / len(fuel_errors)) < 0.02


def test_fct_idle_periods_are_the_engine_running_stops_inside_their_trips(built, sims) -> None:
    world = sims[1].world
    trips = truth_trips(world, FIRST, LAST)
    spans = sorted(
        (world.vehicles[t.vehicle_index].vehicle_id, t.started_at, s.started_at, s.duration_s)
        for t in trips
        for s in t.idle_spans(IDLE_STOP_MIN_S)
    )
    rows = built.execute(
        "select i.vehicle_id, i.duration_s, t.started_at, i.started_at, i.ended_at "
        "from fct_idle_periods i join fct_trips t using (trip_id) where i.source = 'metrotec'"
    ).fetchall()
    (total,) = built.execute(
        "select count(*) from fct_idle_periods where source = 'metrotec'"
    ).fetchone()
    assert total == len(rows) == len(spans)  # every idle period found its trip
    got = sorted(
        (vid, trip_start.astimezone(UTC), start.astimezone(UTC), d)
        for vid, d, trip_start, start, _ in rows
    )
    for (vid, trip_start, start, duration), (tvid, ttrip, tstart, tduration) in zip(
        got, spans, strict=True
    ):
        assert (vid, trip_start) == (tvid, ttrip)
        assert abs((start - tstart).total_seconds()) <= 0.5
        assert duration == pytest.approx(tduration, abs=1.0)
    assert all((end - start).total_seconds() == d for _, d, _, start, end in rows)


def test_fct_fuel_events_are_the_worlds_refuels(built, sims) -> None:
    world = sims[1].world
    start, end = day_bounds(FIRST, LAST)
    truth = sorted(
        (world.vehicles[r.vehicle_index].vehicle_id, r.started_at, r.volume_l, r.lat, r.lon)
        for r in world.refuels(start, end)
    )
    rows = built.execute(
        "select vehicle_id, occurred_at, volume_l, lat, lon, event_type, address "
        "from fct_fuel_events where source = 'metrotec' order by vehicle_id, occurred_at"
    ).fetchall()
    assert len(rows) == len(truth) > 0
    for (vid, at, volume, lat, lon, kind, address), (tvid, tat, tvolume, tlat, tlon) in zip(
        sorted(rows), truth, strict=True
    ):
        assert (vid, at.astimezone(UTC), kind) == (tvid, tat, "refuel")
        assert volume == pytest.approx(tvolume, abs=1e-6) and address
        assert (lat, lon) == pytest.approx((tlat, tlon), abs=1e-4)


def test_fleet_daily_counts_metrotec_refuels_per_vehicle_and_day(built, sims) -> None:
    world = sims[1].world
    start, end = day_bounds(FIRST, LAST)
    truth = Counter(
        (r.started_at.date(), world.vehicles[r.vehicle_index].vehicle_id)
        for r in world.refuels(start, end)
    )
    rows = built.execute(
        "select day, vehicle_id, refuels from fleet_daily where refuels > 0"
    ).fetchall()
    assert {(d, v): n for d, v, n in rows} == dict(truth)


def test_metrotec_identities_resolve_to_the_seeded_fleet_vehicles(built, sims) -> None:
    world = sims[1].world
    rows = dict(
        built.execute(
            "select source_vehicle_id, vehicle_id from dim_vehicles where source = 'metrotec'"
        ).fetchall()
    )
    assert rows == {v.metrotec_object_id: v.vehicle_id for v in world.vehicles_of("metrotec")}
