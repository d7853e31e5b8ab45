"""The World's truth per vehicle and UTC day, in the shape the built facts are summed to.

Only trips, idle spans and refuels of the World are used, never what a simulated server serves,
so comparing facts with these figures checks the whole path: API, landing, staging, marts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from pipelines.simulator.world import IdleSpan, Refuel, Trip, Vehicle, World

VehicleDay = tuple[str, date]  # (the World's vehicle_id, UTC day)


@dataclass(frozen=True)
class DayTruth:
    """One vehicle's UTC day: the trips that started on it and the refuels that began on it.

    A trip's idle spans count on the trip's day; the World's trips never cross midnight.
    """

    vehicle: Vehicle
    day: date
    trips: tuple[Trip, ...] = ()
    refuels: tuple[Refuel, ...] = field(default=(), repr=False)

    @property
    def distance_km(self) -> float:
        return sum(t.distance_km for t in self.trips)

    @property
    def duration_s(self) -> float:
        return sum(t.duration_s for t in self.trips)

    @property
    def driving_s(self) -> float:
        return sum(t.driving_s for t in self.trips)

    @property
    def idle_s(self) -> float:
        return sum(t.idle_s for t in self.trips)

    def idle_spans(self, min_s: float = 0.0) -> list[IdleSpan]:
        """Engine-on standstills of the day's trips lasting at least `min_s`."""
        return [s for t in self.trips for s in t.idle_spans(min_s)]

    def idle_period_s(self, min_s: float) -> float:
        return sum(s.duration_s for s in self.idle_spans(min_s))

    @property
    def refuel_l(self) -> float:
        return sum(r.volume_l for r in self.refuels)


def identities(world: World) -> dict[tuple[str, str], Vehicle]:
    """(source, the source's own vehicle id) -> the physical vehicle, for every source."""
    by_id = {v.vehicle_id: v for v in world.vehicles}
    return {
        (row["source"], row["source_vehicle_id"]): by_id[row["vehicle_id"]]
        for row in world.identity_rows()
    }


def vehicles_seen_by(world: World, source: str | None) -> list[Vehicle]:
    """The vehicles a source reports on; every vehicle when `source` is None."""
    return list(world.vehicles) if source is None else world.vehicles_of(source)


def trips_by_start(world: World, source: str | None = None) -> dict[tuple[str, datetime], Trip]:
    """Each true trip a source reports, keyed by (vehicle_id, started_at in UTC)."""
    indexes = [v.index for v in vehicles_seen_by(world, source)]
    trips = world.trips(vehicle_indexes=indexes)
    return {(world.vehicles[t.vehicle_index].vehicle_id, t.started_at): t for t in trips}


def day_truths(world: World, source: str | None = None) -> dict[VehicleDay, DayTruth]:
    """Per vehicle-day truth of the vehicles a source sees (all vehicles when None).

    Days are UTC dates of a trip's start and of a refuel's start, as fleet_daily counts them.
    """
    vehicles = vehicles_seen_by(world, source)
    indexes = [v.index for v in vehicles]
    trips: dict[VehicleDay, list[Trip]] = {}
    for trip in world.trips(vehicle_indexes=indexes):
        key = (world.vehicles[trip.vehicle_index].vehicle_id, trip.started_at.date())
        trips.setdefault(key, []).append(trip)
    refuels: dict[VehicleDay, list[Refuel]] = {}
    for refuel in world.refuels(vehicle_indexes=indexes):
        key = (world.vehicles[refuel.vehicle_index].vehicle_id, refuel.started_at.date())
        refuels.setdefault(key, []).append(refuel)
    by_id = {v.vehicle_id: v for v in vehicles}
    return {
        key: DayTruth(by_id[key[0]], key[1], tuple(trips.get(key, ())), tuple(refuels.get(key, ())))
        for key in sorted(trips.keys() | refuels.keys())
    }
