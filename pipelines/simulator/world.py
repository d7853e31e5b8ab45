"""Deterministic synthetic fleet: the ground truth that all four simulated APIs are views of.

Everything is derived from `(seed, vehicle, day)` so any slice can be regenerated lazily and
identically; only cumulative state (odometer, fuel level, refuels) needs a sequential pass,
which is done once per vehicle on first use and cached.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property

CITY_LAT = 59.437
CITY_LON = 24.754
BLOCK_M = 250.0
M_PER_DEG_LAT = 111_320.0
M_PER_DEG_LON = M_PER_DEG_LAT * math.cos(math.radians(CITY_LAT))
IDLE_BURN_L_PER_H = 0.8
SOURCES = ("avl", "autopi", "kt1", "metrotec")
NAMESPACE = uuid.UUID("6f1c8e52-8a7e-4c4e-9d1b-3f0a5b2e7c11")

_STREETS = (
    "Narva mnt",
    "Pärnu mnt",
    "Tartu mnt",
    "Peterburi tee",
    "Paldiski mnt",
    "Kadaka tee",
    "Sõpruse pst",
    "Endla",
    "Liivalaia",
    "Toompuiestee",
    "Kristiine",
    "Järvevana tee",
    "Mustamäe tee",
    "Ehitajate tee",
    "Laagri",
    "Vabaduse pst",
    "Pirita tee",
    "Kopli",
)
_KINDS = ("Truck", "Van", "Car", "Pickup")


def _seed_of(*parts: object) -> int:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def xy_to_latlon(x_m: float, y_m: float) -> tuple[float, float]:
    """Local metres east/north of the city centre to WGS84 (equirectangular is plenty here)."""
    return CITY_LAT + y_m / M_PER_DEG_LAT, CITY_LON + x_m / M_PER_DEG_LON


def address_of(x_m: float, y_m: float) -> str:
    """A stable fake reverse-geocode: the nearest grid street and a house number."""
    bx, by = round(x_m / BLOCK_M), round(y_m / BLOCK_M)
    street = _STREETS[(bx * 7 + by * 3) % len(_STREETS)]
    number = 1 + abs(bx * 13 + by * 5) % 180
    return f"{street} {number}, Tallinn"


@dataclass(frozen=True)
class Vehicle:
    """One physical vehicle and the identity each vendor knows it by."""

    index: int
    vehicle_id: str
    display_name: str
    sources: frozenset[str]
    avl_device_id: str
    autopi_device_id: str
    autopi_vehicle_id: int
    autopi_unit_id: str
    kt1_asset_id: str
    kt1_origin_id: str
    metrotec_object_id: str
    tank_l: float
    consumption_l_per_100km: float
    fuel_price: float
    home_xy: tuple[float, float]

    @property
    def avl_device_name(self) -> str:
        return self.display_name


@dataclass(frozen=True)
class Phase:
    """A stretch of a trip at constant intent: driving a leg at a cruise speed, or idling."""

    kind: str  # "drive" | "idle"
    start_s: float  # offset from trip start
    duration_s: float
    from_xy: tuple[float, float]
    to_xy: tuple[float, float]
    speed_kmh: float  # cruise speed; 0 for idle

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    @property
    def length_m(self) -> float:
        return math.dist(self.from_xy, self.to_xy)


@dataclass(frozen=True)
class IdleSpan:
    """Engine on, speed 0, inside a trip."""

    started_at: datetime
    ended_at: datetime
    lat: float
    lon: float
    address: str

    @property
    def duration_s(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class Trip:
    """Engine on to engine off. Summary fields are exact functions of `phases`."""

    trip_id: str
    vehicle_index: int
    seq: int  # position within the vehicle's day
    started_at: datetime
    ended_at: datetime
    phases: tuple[Phase, ...] = field(repr=False)

    @property
    def day(self) -> date:
        return self.started_at.date()

    @property
    def duration_s(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()

    @cached_property
    def distance_km(self) -> float:
        return sum(p.length_m for p in self.phases if p.kind == "drive") / 1000.0

    @cached_property
    def idle_s(self) -> float:
        return sum(p.duration_s for p in self.phases if p.kind == "idle")

    @property
    def driving_s(self) -> float:
        return self.duration_s - self.idle_s

    @cached_property
    def max_speed_kmh(self) -> float:
        return max((p.speed_kmh * 1.04 for p in self.phases if p.kind == "drive"), default=0.0)

    @property
    def avg_speed_kmh(self) -> float:
        return self.distance_km / (self.driving_s / 3600.0) if self.driving_s > 0 else 0.0

    def fuel_used_l(self, vehicle: Vehicle) -> float:
        return (
            self.distance_km * vehicle.consumption_l_per_100km / 100.0
            + self.idle_s / 3600.0 * IDLE_BURN_L_PER_H
        )

    @property
    def start_xy(self) -> tuple[float, float]:
        return self.phases[0].from_xy

    @property
    def end_xy(self) -> tuple[float, float]:
        return self.phases[-1].to_xy

    @property
    def start_latlon(self) -> tuple[float, float]:
        return xy_to_latlon(*self.start_xy)

    @property
    def end_latlon(self) -> tuple[float, float]:
        return xy_to_latlon(*self.end_xy)

    @property
    def start_address(self) -> str:
        return address_of(*self.start_xy)

    @property
    def end_address(self) -> str:
        return address_of(*self.end_xy)

    def idle_spans(self, min_s: float = 0.0) -> list[IdleSpan]:
        spans = []
        for p in self.phases:
            if p.kind == "idle" and p.duration_s >= min_s:
                lat, lon = xy_to_latlon(*p.from_xy)
                spans.append(
                    IdleSpan(
                        started_at=self.started_at + timedelta(seconds=p.start_s),
                        ended_at=self.started_at + timedelta(seconds=p.end_s),
                        lat=lat,
                        lon=lon,
                        address=address_of(*p.from_xy),
                    )
                )
        return spans


@dataclass(frozen=True)
class Refuel:
    """Fuel added while parked after a trip, at that trip's end."""

    refuel_id: str
    vehicle_index: int
    started_at: datetime
    ended_at: datetime
    level_before_l: float
    level_after_l: float
    distance_since_last_km: float
    lat: float
    lon: float
    address: str

    @property
    def volume_l(self) -> float:
        return self.level_after_l - self.level_before_l


@dataclass(frozen=True)
class Sample:
    """What a GPS/OBD logger would report at one instant of a trip."""

    ts: datetime
    lat: float
    lon: float
    speed_kmh: float
    heading_deg: float
    engine_on: bool
    rpm: float
    fuel_level_l: float
    odometer_km: float
    coolant_temp_c: float
    battery_v: float


@dataclass(frozen=True)
class TripState:
    """Cumulative vehicle state at a trip's start (needs the sequential pass)."""

    odometer_km: float
    fuel_level_l: float


class World:
    """A fleet of `vehicles` vehicles over `days` days ending at `end_day` (inclusive)."""

    def __init__(
        self,
        seed: int = 7,
        vehicles: int = 12,
        end_day: date | None = None,
        days: int = 14,
        source_vehicles: dict[str, set[int]] | None = None,
    ) -> None:
        self.seed = seed
        self.end_day = end_day or datetime.now(UTC).date()
        self.start_day = self.end_day - timedelta(days=days - 1)
        self.days = days
        self.vehicles = [self._make_vehicle(i, source_vehicles) for i in range(vehicles)]
        self._lock = threading.RLock()
        self._day_cache: dict[tuple[int, date], tuple[Trip, ...]] = {}
        self._states: dict[int, tuple[dict[str, TripState], tuple[Refuel, ...]]] = {}

    # --- vehicles -------------------------------------------------------------------------
    def _make_vehicle(self, i: int, source_vehicles: dict[str, set[int]] | None) -> Vehicle:
        rng = random.Random(_seed_of(self.seed, "vehicle", i))
        kind = _KINDS[i % len(_KINDS)]
        letter = "ABCDEFGH"[i % 8]
        if source_vehicles is None:
            # Every vehicle reports to AVL and Metrotec; AutoPi and kt1 dongles are on subsets,
            # so facts must reconcile overlapping views of one physical trip.
            sources = {"avl", "metrotec"}
            if i % 3 == 0:
                sources.add("autopi")
            if i % 3 == 1:
                sources.add("kt1")
        else:
            sources = {s for s, members in source_vehicles.items() if i in members}
        tank = {"Truck": 300.0, "Van": 80.0, "Car": 55.0, "Pickup": 75.0}[kind]
        consumption = {"Truck": 28.0, "Van": 10.5, "Car": 6.5, "Pickup": 11.0}[kind]
        return Vehicle(
            index=i,
            vehicle_id=f"V{i + 1:03d}",
            display_name=f"{kind} {letter}-{101 + i}",
            sources=frozenset(sources),
            avl_device_id=str(1001 + i),
            autopi_device_id=str(uuid.uuid5(NAMESPACE, f"autopi-device-{self.seed}-{i}")),
            autopi_vehicle_id=5001 + i,
            autopi_unit_id=uuid.uuid5(NAMESPACE, f"autopi-unit-{self.seed}-{i}").hex[:12],
            kt1_asset_id=hashlib.md5(f"kt1-asset-{self.seed}-{i}".encode()).hexdigest()[:24],
            kt1_origin_id=str(350_000_000_000_000 + _seed_of(self.seed, "imei", i) % 10**14),
            metrotec_object_id=f"{i:03d}{'ABCDEFGHJK'[i % 10]}{'LMNPRSTV'[i % 8]}{'XYZ'[i % 3]}",
            tank_l=tank,
            consumption_l_per_100km=round(consumption * rng.uniform(0.9, 1.1), 2),
            fuel_price=round(rng.uniform(1.55, 1.85), 3),
            home_xy=(rng.randint(-20, 20) * BLOCK_M, rng.randint(-20, 20) * BLOCK_M),
        )

    def vehicles_of(self, source: str) -> list[Vehicle]:
        return [v for v in self.vehicles if source in v.sources]

    def identity_rows(self) -> list[dict[str, str]]:
        """Each vendor's identity of each vehicle, for the `vehicle_map` dbt seed.

        AVL `device_name`, AutoPi device id, kt1 asset id, Metrotec object id.
        """
        ids = {
            "avl": lambda v: v.avl_device_name,
            "autopi": lambda v: v.autopi_device_id,
            "kt1": lambda v: v.kt1_asset_id,
            "metrotec": lambda v: v.metrotec_object_id,
        }
        return [
            {
                "source": source,
                "source_vehicle_id": ident(v),
                "vehicle_id": v.vehicle_id,
                "display_name": v.display_name,
            }
            for v in self.vehicles
            for source, ident in ids.items()
            if source in v.sources
        ]

    def day_range(self) -> list[date]:
        return [self.start_day + timedelta(days=d) for d in range(self.days)]

    # --- trips ----------------------------------------------------------------------------
    def trips_on(self, vehicle_index: int, day: date) -> tuple[Trip, ...]:
        if not (self.start_day <= day <= self.end_day):
            return ()
        key = (vehicle_index, day)
        with self._lock:
            cached = self._day_cache.get(key)
        if cached is None:
            cached = self._generate_day(vehicle_index, day)
            with self._lock:
                self._day_cache[key] = cached
        return cached

    def trips(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        vehicle_indexes: list[int] | None = None,
    ) -> list[Trip]:
        """Trips whose start lies in [start, end), ordered by start then vehicle."""
        start = start or datetime.combine(self.start_day, datetime.min.time(), UTC)
        end = end or datetime.combine(self.end_day + timedelta(days=1), datetime.min.time(), UTC)
        indexes = range(len(self.vehicles)) if vehicle_indexes is None else vehicle_indexes
        first = max(start.date(), self.start_day)
        last = min((end - timedelta(microseconds=1)).date(), self.end_day)
        out: list[Trip] = []
        for idx in indexes:
            day = first
            while day <= last:
                out.extend(t for t in self.trips_on(idx, day) if start <= t.started_at < end)
                day += timedelta(days=1)
        out.sort(key=lambda t: (t.started_at, t.vehicle_index))
        return out

    def _generate_day(self, vi: int, day: date) -> tuple[Trip, ...]:
        vehicle = self.vehicles[vi]
        rng = random.Random(_seed_of(self.seed, "day", vi, day.isoformat()))
        weekend = day.weekday() >= 5
        n_trips = rng.randint(0, 2) if weekend else rng.randint(2, 6)
        t = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=rng.uniform(5.0, 8.5))
        day_end = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=21)
        pos = vehicle.home_xy
        trips: list[Trip] = []
        for seq in range(n_trips):
            last = seq == n_trips - 1
            if last:
                dest = vehicle.home_xy
                if dest == pos:
                    dest = (pos[0] + 4 * BLOCK_M, pos[1])
            else:
                dest = (
                    vehicle.home_xy[0] + rng.randint(-40, 40) * BLOCK_M,
                    vehicle.home_xy[1] + rng.randint(-40, 40) * BLOCK_M,
                )
                if dest == pos:
                    dest = (dest[0] + 3 * BLOCK_M, dest[1] + 2 * BLOCK_M)
            phases = _route_phases(rng, pos, dest)
            duration = phases[-1].end_s
            # Whole seconds, as every vendor reports them.
            started = t.replace(microsecond=0)
            ended = started + timedelta(seconds=math.ceil(duration))
            if ended > day_end and trips:
                break
            trip_id = str(uuid.uuid5(NAMESPACE, f"trip-{self.seed}-{vi}-{day}-{seq}"))
            trips.append(Trip(trip_id, vi, seq, started, ended, phases))
            pos = dest
            t = ended + timedelta(minutes=rng.uniform(12, 150))
        return tuple(trips)

    # --- cumulative state: odometer, fuel, refuels ----------------------------------------
    def _state_pass(self, vi: int) -> tuple[dict[str, TripState], tuple[Refuel, ...]]:
        with self._lock:
            if vi in self._states:
                return self._states[vi]
        vehicle = self.vehicles[vi]
        rng = random.Random(_seed_of(self.seed, "fuel", vi))
        odometer = 20_000.0 + rng.uniform(0, 150_000)
        level = vehicle.tank_l * rng.uniform(0.45, 0.9)
        since_refuel = 0.0
        states: dict[str, TripState] = {}
        refuels: list[Refuel] = []
        for day in self.day_range():
            day_trips = self.trips_on(vi, day)
            for n, trip in enumerate(day_trips):
                states[trip.trip_id] = TripState(odometer, level)
                odometer += trip.distance_km
                since_refuel += trip.distance_km
                level -= trip.fuel_used_l(vehicle)
                next_start = day_trips[n + 1].started_at if n + 1 < len(day_trips) else None
                if level < 0.25 * vehicle.tank_l and (
                    next_start is None or next_start - trip.ended_at > timedelta(minutes=12)
                ):
                    started = trip.ended_at + timedelta(minutes=rng.uniform(1, 4))
                    started = started.replace(microsecond=0)
                    ended = started + timedelta(seconds=rng.randint(120, 420))
                    after = round(vehicle.tank_l * rng.uniform(0.9, 1.0), 1)
                    lat, lon = trip.end_latlon
                    refuels.append(
                        Refuel(
                            refuel_id=str(uuid.uuid5(NAMESPACE, f"refuel-{trip.trip_id}")),
                            vehicle_index=vi,
                            started_at=started,
                            ended_at=ended,
                            level_before_l=round(level, 1),
                            level_after_l=after,
                            distance_since_last_km=round(since_refuel, 2),
                            lat=lat,
                            lon=lon,
                            address=trip.end_address,
                        )
                    )
                    level = after
                    since_refuel = 0.0
        result = (states, tuple(refuels))
        with self._lock:
            self._states[vi] = result
        return result

    def trip_state(self, trip: Trip) -> TripState:
        return self._state_pass(trip.vehicle_index)[0][trip.trip_id]

    def refuels(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        vehicle_indexes: list[int] | None = None,
    ) -> list[Refuel]:
        indexes = range(len(self.vehicles)) if vehicle_indexes is None else vehicle_indexes
        out = [
            r
            for vi in indexes
            for r in self._state_pass(vi)[1]
            if (start is None or r.started_at >= start) and (end is None or r.started_at < end)
        ]
        out.sort(key=lambda r: (r.started_at, r.vehicle_index))
        return out

    # --- samples --------------------------------------------------------------------------
    def samples(self, trip: Trip, interval_s: float = 1.0) -> Iterator[Sample]:
        """Samples every `interval_s` from engine on to engine off, both ends included."""
        vehicle = self.vehicles[trip.vehicle_index]
        state = self.trip_state(trip)
        burn_per_m = vehicle.consumption_l_per_100km / 100_000.0
        idle_burn_per_s = IDLE_BURN_L_PER_H / 3600.0
        total = trip.duration_s
        phases = trip.phases
        n_steps = int(total // interval_s)
        offsets = [k * interval_s for k in range(n_steps + 1)]
        if offsets[-1] < total:
            offsets.append(total)
        pi = 0
        done_m = 0.0  # metres driven before phase pi
        idle_before = 0.0  # idle seconds before phase pi
        for off in offsets:
            while pi < len(phases) - 1 and off >= phases[pi].end_s:
                if phases[pi].kind == "drive":
                    done_m += phases[pi].length_m
                else:
                    idle_before += phases[pi].duration_s
                pi += 1
            p = phases[pi]
            into = min(max(off - p.start_s, 0.0), p.duration_s)
            frac = into / p.duration_s if p.duration_s > 0 else 1.0
            x = p.from_xy[0] + (p.to_xy[0] - p.from_xy[0]) * frac
            y = p.from_xy[1] + (p.to_xy[1] - p.from_xy[1]) * frac
            if p.kind == "drive":
                # A gentle, deterministic wobble around the cruise speed.
                speed = p.speed_kmh * (1.0 + 0.04 * math.sin(off / 9.0 + trip.seq))
                metres = done_m + p.length_m * frac
                idle = idle_before
                heading = (
                    math.degrees(math.atan2(p.to_xy[0] - p.from_xy[0], p.to_xy[1] - p.from_xy[1]))
                    % 360
                )
                rpm = 1200 + speed * 22
            else:
                speed = 0.0
                metres = done_m
                idle = idle_before + into
                heading = 0.0
                rpm = 780 + 40 * math.sin(off)
            lat, lon = xy_to_latlon(x, y)
            yield Sample(
                ts=trip.started_at + timedelta(seconds=off),
                lat=lat,
                lon=lon,
                speed_kmh=round(speed, 1),
                heading_deg=round(heading, 1),
                engine_on=True,
                rpm=round(rpm, 1),
                fuel_level_l=round(
                    state.fuel_level_l - metres * burn_per_m - idle * idle_burn_per_s, 2
                ),
                odometer_km=round(state.odometer_km + metres / 1000.0, 3),
                coolant_temp_c=round(min(90.0, 20.0 + off / 12.0), 1),
                battery_v=round(14.1 + 0.1 * math.sin(off / 30.0), 2),
            )


def _route_phases(
    rng: random.Random, origin: tuple[float, float], dest: tuple[float, float]
) -> tuple[Phase, ...]:
    """Drive a Manhattan route via a waypoint, with idles at some junctions.

    Legs follow grid streets; every 4th grid line is an arterial (faster). Idles are
    engine-on stops at lights or in traffic, a few long enough (>= 60 s) to be idle periods.
    """
    phases: list[Phase] = []
    t = 0.0

    def add(
        kind: str, duration: float, a: tuple[float, float], b: tuple[float, float], v: float
    ) -> None:
        nonlocal t
        phases.append(Phase(kind, t, duration, a, b, v))
        t += duration

    if rng.random() < 0.35:  # warm-up with the engine running before leaving
        add("idle", rng.uniform(30, 240), origin, origin, 0.0)
    mid = (
        (origin[0] + dest[0]) / 2 + rng.randint(-6, 6) * BLOCK_M,
        (origin[1] + dest[1]) / 2 + rng.randint(-6, 6) * BLOCK_M,
    )
    mid = (round(mid[0] / BLOCK_M) * BLOCK_M, round(mid[1] / BLOCK_M) * BLOCK_M)
    corners = [origin]
    for a, b in ((origin, mid), (mid, dest)):
        corner = (b[0], a[1]) if rng.random() < 0.5 else (a[0], b[1])
        corners.extend([corner, b])
    pos = origin
    for target in corners[1:]:
        if target == pos:
            continue
        axis_len = math.dist(pos, target)
        blocks = max(1, round(axis_len / BLOCK_M))
        # Split each straight leg into stretches of 2-6 blocks, junction to junction.
        done = 0
        while done < blocks:
            step = min(blocks - done, rng.randint(2, 6))
            f0, f1 = done / blocks, (done + step) / blocks
            a = (pos[0] + (target[0] - pos[0]) * f0, pos[1] + (target[1] - pos[1]) * f0)
            b = (pos[0] + (target[0] - pos[0]) * f1, pos[1] + (target[1] - pos[1]) * f1)
            along_x = abs(target[0] - pos[0]) > abs(target[1] - pos[1])
            line = round((a[1] if along_x else a[0]) / BLOCK_M)
            arterial = line % 4 == 0
            speed = rng.uniform(62, 88) if arterial else rng.uniform(28, 48)
            length = math.dist(a, b)
            add("drive", length / (speed / 3.6), a, b, round(speed, 1))
            done += step
            if done < blocks or target != dest:
                roll = rng.random()
                if roll < 0.06:
                    add("idle", rng.uniform(60, 300), b, b, 0.0)  # jam / loading with engine on
                elif roll < 0.3:
                    add("idle", rng.uniform(8, 50), b, b, 0.0)  # traffic light
        pos = target
    if rng.random() < 0.3:  # engine left running at the destination
        add("idle", rng.uniform(20, 180), dest, dest, 0.0)
    if phases[-1].kind == "idle" and len(phases) == 1:
        add("drive", BLOCK_M / (30 / 3.6), origin, (origin[0] + BLOCK_M, origin[1]), 30.0)
    return tuple(phases)
