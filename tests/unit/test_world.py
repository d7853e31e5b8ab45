"""The simulator's ground truth: deterministic, internally consistent, plausible."""

from __future__ import annotations

import csv
import itertools
import math
from datetime import date
from pathlib import Path

from pipelines.cli import SEED_VEHICLES, SIM_SEED
from pipelines.simulator.world import World, xy_to_latlon

SEEDS = Path(__file__).resolve().parents[2] / "dbt_models" / "seeds"


def test_same_seed_gives_the_same_fleet_and_trips() -> None:
    a = World(seed=5, vehicles=4, end_day=date(2026, 1, 31), days=10)
    b = World(seed=5, vehicles=4, end_day=date(2026, 1, 31), days=10)
    assert [(t.trip_id, t.started_at, t.distance_km) for t in a.trips()] == [
        (t.trip_id, t.started_at, t.distance_km) for t in b.trips()
    ]
    assert a.refuels() == b.refuels()
    other = World(seed=6, vehicles=4, end_day=date(2026, 1, 31), days=10)
    assert [t.trip_id for t in other.trips()] != [t.trip_id for t in a.trips()]


def test_samples_agree_with_the_trip_summary() -> None:
    world = World(seed=3, vehicles=3, end_day=date(2026, 1, 31), days=5)
    for trip in world.trips()[:10]:
        samples = list(world.samples(trip, 1.0))
        assert samples[0].ts == trip.started_at and samples[-1].ts == trip.ended_at
        travelled = samples[-1].odometer_km - samples[0].odometer_km
        assert math.isclose(travelled, trip.distance_km, abs_tol=0.01)
        assert max(s.speed_kmh for s in samples) <= trip.max_speed_kmh + 0.1
        idle_seconds = sum(1 for s in samples[:-1] if s.speed_kmh == 0)
        assert abs(idle_seconds - trip.idle_s) <= 2 + len(trip.idle_spans())
        assert samples[-1].fuel_level_l < samples[0].fuel_level_l


def test_trips_of_a_vehicle_never_overlap_and_chain_positions() -> None:
    world = World(seed=9, vehicles=5, end_day=date(2026, 2, 28), days=20)
    for v in world.vehicles:
        trips = world.trips(vehicle_indexes=[v.index])
        for a, b in itertools.pairwise(trips):
            assert a.ended_at < b.started_at
            if a.day == b.day:
                assert a.end_xy == b.start_xy


def test_refuels_fill_a_low_tank_and_levels_stay_positive() -> None:
    world = World(seed=2, vehicles=4, end_day=date(2026, 3, 31), days=60)
    refuels = world.refuels()
    assert refuels
    for r in refuels:
        tank = world.vehicles[r.vehicle_index].tank_l
        assert 0 < r.level_before_l < 0.3 * tank and r.level_after_l >= 0.9 * tank
        assert r.volume_l > 0
    for trip in world.trips():
        assert world.trip_state(trip).fuel_level_l > 0


def test_positions_stay_in_and_around_the_city() -> None:
    world = World(seed=4, vehicles=6, end_day=date(2026, 1, 31), days=7)
    for trip in world.trips():
        for lat, lon in (trip.start_latlon, trip.end_latlon):
            assert 59.2 < lat < 59.7 and 24.3 < lon < 25.2
    assert xy_to_latlon(0, 0) == (59.437, 24.754)


def test_shipped_seeds_map_the_simulated_fleet() -> None:
    """Identities and AutoPi tank sizes of the first SEED_VEHICLES vehicles: a simulated fleet
    of any size up to that has one vehicle_id per truck, so nothing is counted twice."""
    world = World(seed=SIM_SEED, vehicles=SEED_VEHICLES)
    with (SEEDS / "vehicle_map.csv").open() as fh:
        assert list(csv.DictReader(fh)) == world.identity_rows()
    with (SEEDS / "autopi_vehicle_tanks.csv").open() as fh:
        tanks = {r["source_vehicle_id"]: float(r["tank_l"]) for r in csv.DictReader(fh)}
    assert tanks == {v.autopi_device_id: v.tank_l for v in world.vehicles if "autopi" in v.sources}
    small = World(seed=SIM_SEED, vehicles=12).identity_rows()
    assert all(
        row in world.identity_rows() for row in small
    )  # a vehicle's ids do not depend on fleet size
