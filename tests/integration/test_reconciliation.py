"""Ground-truth reconciliation: a 30-day, 20-vehicle World is served by the four simulated APIs,
landed by real Dagster runs and built by dbt; the facts must add up to what the World knows.

Per source and vehicle-day: trip counts exact; distance and durations within 1%, refuels within
1%, derived idle periods within 5%. On top of the relative tolerance each figure may be off by
the resolution of the best evidence its source sends (AVL's whole minutes, AutoPi's sampling
interval, ...), never more: km-vs-m, a shifted day or idle counted twice all fail.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, datetime

import pytest

from pipelines.dbt_vars import dbt_var
from pipelines.simulator.truth import DayTruth, day_truths, identities, trips_by_start
from pipelines.simulator.world import Trip, Vehicle, World
from tests.conftest import facts_connect
from tests.support.reconciliation_support import (
    AUTOPI_SAMPLE_S,
    IDLE_PERIOD_MIN_S,
    SOURCES,
    Build,
    Facts,
    FactTrip,
    build_everything,
    by_vehicle_day,
    read_facts,
    reconciliation_world,
    seeded_identities,
)

pytestmark = pytest.mark.slow

TRIP_REL = 0.01
REFUEL_REL = 0.01
IDLE_PERIOD_REL = 0.05
MEASURES = ("distance_km", "duration_s", "driving_s", "idle_s")


def _idle_phases(trip: Trip) -> int:
    return sum(1 for p in trip.phases if p.kind == "idle")


# Per trip, how far a figure may be off beyond the relative tolerance: the resolution of the best
# evidence the source sends for it. 0 where the source carries the exact figure.
TRIP_RESOLUTION: dict[tuple[str, str], Callable[[Trip], float]] = {
    ("avl", "distance_km"): lambda t: 0.05,  # `kms` has one decimal
    ("avl", "duration_s"): lambda t: 0.0,  # trip_start/trip_end are whole seconds, as the World's
    ("avl", "idle_s"): lambda t: 30.0,  # `idle_min` is whole minutes
    ("avl", "driving_s"): lambda t: 30.0,  # exact duration minus whole-minute idle
    ("autopi", "distance_km"): lambda t: 1e-6,  # distanceKm has six decimals
    ("autopi", "duration_s"): lambda t: 0.0,
    # Idle comes from speed readings every AUTOPI_SAMPLE_S: each standstill's start and end are
    # known to one interval, and its error lies within (-interval, +interval).
    ("autopi", "idle_s"): lambda t: AUTOPI_SAMPLE_S * _idle_phases(t),
    ("autopi", "driving_s"): lambda t: AUTOPI_SAMPLE_S * _idle_phases(t),
    ("kt1", "distance_km"): lambda t: 0.0005,  # stats.distance has three decimals
    ("kt1", "duration_s"): lambda t: 0.0,
    ("kt1", "idle_s"): lambda t: 0.5,  # stats.idleTime is whole seconds
    ("kt1", "driving_s"): lambda t: 1.0,  # round(duration) - round(idle)
    ("metrotec", "distance_km"): lambda t: 0.005,  # routeLengthKM has two decimals
    ("metrotec", "duration_s"): lambda t: 0.0,
    ("metrotec", "idle_s"): lambda t: 0.5,  # duration - whole-second drivingTimeSeconds
    ("metrotec", "driving_s"): lambda t: 0.5,
}

# Per true idle span, the resolution of the best idle evidence each source sends (seconds).
# kt1 sends `idle/idling` events with the span's exact start and end, so its derived periods
# are held to that, not to its 30 s telemetry.
IDLE_RESOLUTION_S = {"autopi": AUTOPI_SAMPLE_S, "kt1": 1.0, "metrotec": 1.0}


@pytest.fixture(scope="module")
def world() -> World:
    return reconciliation_world()


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory, world: World) -> Iterator[Build]:
    """One landing of every source and one dbt build, shared by every test of the module."""
    tmp = tmp_path_factory.mktemp("reconciliation")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        built = build_everything(world, tmp, mp)
        steps = ", ".join(f"{name} {s:.1f}s" for name, s in built.seconds.items())
        print(f"reconciliation build: {steps}")  # shown with -rP: where the time goes
        yield built


@pytest.fixture(scope="module")
def facts(build: Build, world: World) -> Facts:
    with facts_connect(build.catalog_path) as con:
        return read_facts(con, world)


def _fully_mapped(world: World) -> list[Vehicle]:
    """Vehicles whose every source identity the shipped vehicle_map seed resolves."""
    seeded = seeded_identities()
    by_vehicle: dict[str, list[tuple[str, str]]] = {}
    for identity, vehicle in identities(world).items():
        by_vehicle.setdefault(vehicle.vehicle_id, []).append(identity)
    return [v for v in world.vehicles if all(i in seeded for i in by_vehicle[v.vehicle_id])]


def _total(values: list[float | None]) -> float | None:
    """The sum, or None when any value is unknown (NULL where the truth has a figure)."""
    return None if None in values else sum(v for v in values if v is not None)


def _report(failures: list[str], total: int, what: str) -> str:
    shown = "\n  ".join(failures[:8])
    return f"{len(failures)} of {total} {what} off:\n  {shown}"


# --- identities -----------------------------------------------------------------------------------


def test_every_fact_row_resolves_to_a_world_vehicle(facts: Facts) -> None:
    assert facts.unplaced == []


def test_dim_vehicles_holds_each_world_identity_once(facts: Facts, world: World) -> None:
    """Identities the seed maps resolve to the World's vehicle_id, the rest to their own."""
    seeded = seeded_identities()
    truth = identities(world)
    for identity, vehicle_id in seeded.items():  # the shipped seed agrees with the World
        if identity in truth:
            assert vehicle_id == truth[identity].vehicle_id, identity
    expected = sorted(
        (seeded.get((source, svid), f"{source}:{svid}"), source, svid) for source, svid in truth
    )
    assert sorted(facts.dim_rows) == expected


# --- trips per source -----------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_each_true_trip_is_one_fact_trip_of_each_source_that_saw_it(
    source: str, facts: Facts, world: World
) -> None:
    """Matched on the exact start instant, so a shifted zone or day cannot hide."""
    truth = trips_by_start(world, source)
    got = Counter((t.vehicle.vehicle_id, t.started_at) for t in facts.trips_of(source))
    doubled = sorted(k for k, n in got.items() if n > 1)
    missing = sorted(truth.keys() - got.keys())
    extra = sorted(got.keys() - truth.keys())
    assert (doubled, missing[:5], extra[:5]) == ([], [], []), (len(missing), len(extra))
    wrong_end = [
        (t.vehicle.vehicle_id, t.started_at, t.ended_at)
        for t in facts.trips_of(source)
        if t.ended_at != truth[(t.vehicle.vehicle_id, t.started_at)].ended_at
    ]
    assert wrong_end == []


@pytest.mark.parametrize("source", SOURCES)
def test_trip_counts_per_vehicle_day_are_exact(source: str, facts: Facts, world: World) -> None:
    truth = {k: len(d.trips) for k, d in day_truths(world, source).items() if d.trips}
    got = by_vehicle_day(facts.trips_of(source), lambda t: t.started_at, lambda t: 1.0)
    assert {k: len(v) for k, v in got.items()} == truth


def _measure_cases() -> list:
    cases = []
    for source in SOURCES:
        for measure in MEASURES:
            cases.append(pytest.param(source, measure, id=f"{source}-{measure}"))
    return cases


@pytest.mark.parametrize(("source", "measure"), _measure_cases())
def test_trip_figures_per_vehicle_day_match_the_world(
    source: str, measure: str, facts: Facts, world: World
) -> None:
    """Sums per vehicle-day, so a trip moved to another day, a unit slip or a double count
    fails even where single trips would sit inside their source's rounding."""
    resolution = TRIP_RESOLUTION[(source, measure)]
    got = by_vehicle_day(
        facts.trips_of(source), lambda t: t.started_at, lambda t: getattr(t, measure)
    )
    truths = {k: d for k, d in day_truths(world, source).items() if d.trips}
    failures = []
    for key, day in truths.items():
        values = got.get(key, [])
        total = _total(values)
        true_value = getattr(day, measure)
        tolerance = TRIP_REL * true_value + sum(resolution(t) for t in day.trips) + 1e-9
        if total is None or abs(total - true_value) > tolerance:
            failures.append(f"{key}: {values} sum to {total}, "
                            f"truth {true_value:.3f} ± {tolerance:.3f}")  # fmt: skip
    assert not failures, _report(failures, len(truths), f"{source} {measure} vehicle-days")


# --- idle periods ---------------------------------------------------------------------------------


def _idle_allowance(day: DayTruth, resolution_s: float) -> float:
    """Each true span's ends are known to `resolution_s`; a span within one resolution of the
    threshold may show up or vanish, so it may count in full either way."""
    allowance = 0.0
    for span in day.idle_spans():
        d = span.duration_s
        if d >= IDLE_PERIOD_MIN_S + resolution_s:
            allowance += resolution_s
        elif d >= IDLE_PERIOD_MIN_S - resolution_s:
            allowance += d + resolution_s
    return allowance


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("autopi"),
        pytest.param("kt1"),
        pytest.param("metrotec"),
    ],
)
def test_idle_periods_per_vehicle_day_match_the_worlds_long_idles(
    source: str, facts: Facts, world: World
) -> None:
    """Periods on days without a true long idle count too: extra idle is as wrong as missing."""
    resolution_s = IDLE_RESOLUTION_S[source]
    got = by_vehicle_day(
        [p for p in facts.idle_periods if p.source == source],
        lambda p: p.started_at,
        lambda p: p.duration_s,
    )
    truths = day_truths(world, source)
    failures = []
    for key in sorted(truths.keys() | got.keys()):
        day = truths.get(key)
        true_s = day.idle_period_s(IDLE_PERIOD_MIN_S) if day else 0.0
        tolerance = IDLE_PERIOD_REL * true_s + (_idle_allowance(day, resolution_s) if day else 0)
        got_s = _total(got.get(key, []))
        if got_s is None or abs(got_s - true_s) > tolerance + 1e-9:
            failures.append(f"{key}: {got_s} s, truth {true_s:.1f} ± {tolerance:.1f} s")
    assert not failures, _report(failures, len(truths), f"{source} idle vehicle-days")
    total_true = sum(d.idle_period_s(IDLE_PERIOD_MIN_S) for d in truths.values())
    total_got = _total([v for values in got.values() for v in values])
    assert total_got == pytest.approx(total_true, rel=IDLE_PERIOD_REL / 5)  # no bias overall


# --- refuels --------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["metrotec", "kt1", "autopi"])
def test_refuels_per_vehicle_day_match_the_world(source: str, facts: Facts, world: World) -> None:
    """Every source's own refuel rows, duplicates of another source's included."""
    got = by_vehicle_day(
        [e for e in facts.fuel_events if e.source == source and e.event_type == "refuel"],
        lambda e: e.occurred_at,
        lambda e: e.volume_l,
    )
    truths = {k: d for k, d in day_truths(world, source).items() if d.refuels}
    assert truths, "the World has refuels for this source's vehicles"
    assert {k: len(v) for k, v in got.items()} == {k: len(d.refuels) for k, d in truths.items()}
    for key, day in truths.items():
        assert _total(got[key]) == pytest.approx(day.refuel_l, rel=REFUEL_REL), key


# --- fleet_daily ----------------------------------------------------------------------------------


def _primary_source(vehicle: Vehicle) -> str:
    """The source whose copy of a trip fleet_daily counts (var trip_source_priority)."""
    return next(s for s in dbt_var("trip_source_priority") if s in vehicle.sources)


def _daily_by_key(facts: Facts) -> dict[tuple[str, date], dict]:
    rows: dict[tuple[str, date], dict] = {}
    for row in facts.daily:
        key = (row["vehicle_id"], row["day"])
        assert key not in rows, key
        rows[key] = row
    return rows


def test_each_true_trip_has_one_counted_copy_from_the_preferred_source(
    facts: Facts, world: World
) -> None:
    """The copies of one physical trip point at the copy of the first source in
    var trip_source_priority that saw it, which is the only one not flagged."""
    mapped = {v.vehicle_id for v in _fully_mapped(world)}
    copies: dict[tuple[str, datetime], list[FactTrip]] = {}
    for trip in facts.trips:
        if trip.vehicle.vehicle_id in mapped:
            copies.setdefault((trip.vehicle.vehicle_id, trip.started_at), []).append(trip)
    truth = trips_by_start(world)
    assert copies.keys() == {k for k in truth if k[0] in mapped}
    wrong = []
    for key, trips in copies.items():
        counted = [t for t in trips if t.is_duplicate_of is None]
        expected = _primary_source(trips[0].vehicle)
        if [t.source for t in counted] != [expected] or any(
            t.is_duplicate_of != counted[0].trip_id for t in trips if t is not counted[0]
        ):
            wrong.append(f"{key}: {[(t.source, t.is_duplicate_of) for t in trips]}")
    assert not wrong, _report(wrong, len(copies), "true trips")


def test_fleet_daily_counts_each_true_trip_once(facts: Facts, world: World) -> None:
    """Cross-source copies count once: trips equal the distinct true trips per vehicle-day."""
    mapped = {v.vehicle_id: v for v in _fully_mapped(world)}
    assert len(mapped) == len(world.vehicles)  # the shipped seed maps the whole simulated fleet
    truths = {k: d for k, d in day_truths(world).items() if d.trips and k[0] in mapped}
    daily = {k: r for k, r in _daily_by_key(facts).items() if k[0] in mapped}
    assert sorted(daily) == sorted(truths)
    failures = []
    for key, day in truths.items():
        row = daily[key]
        if row["trips"] != len(day.trips):
            failures.append(f"{key}: trips {row['trips']}, truth {len(day.trips)}")
        primary = _primary_source(day.vehicle)
        for measure in ("distance_km", "driving_s", "idle_s"):
            resolution = TRIP_RESOLUTION[(primary, measure)]
            true_value = getattr(day, measure)
            tolerance = TRIP_REL * true_value + sum(resolution(t) for t in day.trips) + 1e-3
            if row[measure] is None or abs(row[measure] - true_value) > tolerance:
                failures.append(f"{key} {measure}: {row[measure]}, truth {true_value:.3f} "
                                f"± {tolerance:.3f} (from {primary})")  # fmt: skip
    assert not failures, _report(failures, len(truths), "fleet_daily figures")


def test_fleet_daily_refuels_count_each_true_refuel_once(facts: Facts, world: World) -> None:
    """Metrotec, kt1 and AutoPi all report some refuels: each counts once, on its own day."""
    mapped = {v.vehicle_id for v in _fully_mapped(world)}
    daily = _daily_by_key(facts)
    truths = {k: d for k, d in day_truths(world).items() if d.trips and k[0] in mapped}
    assert sum(len(d.refuels) for d in truths.values()) > 5
    failures = []
    for key, day in truths.items():
        row = daily[key]
        if row["refuels"] != len(day.refuels) or row["refuel_l"] != pytest.approx(
            day.refuel_l, rel=REFUEL_REL
        ):
            failures.append(f"{key}: {row['refuels']} refuels, {row['refuel_l']} l; truth "
                            f"{len(day.refuels)}, {day.refuel_l:.1f} l")  # fmt: skip
    assert not failures, _report(failures, len(truths), "fleet_daily refuel days")
