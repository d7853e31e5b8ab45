"""Simulated Key Telematics HTTP Export Task: the `/v2/stream` long-poll queue over the world.

Behaviour follows Key Telematics' HTTP Export reference: `GET /v2/stream` hands out the head of
the queue as one batch `{"id", "items"}` and takes it out of the queue; `DELETE
/v2/stream/{id}` acknowledges it for good; a batch not acknowledged within `redelivery_s` of its
GET goes back to the FRONT of the queue and is handed out again under a new id. An empty queue
is long-polled for up to `long_poll_s` and then answered with 500. A wrong batch id is also a
500, as the reference says ("if the incorrect reference/ID is used, a 500 error will be
returned"). Auth is the `x-access-token` header or the `token` query parameter.

Item shapes are those of docs/kt1.md. Values are raw device values, like the real export:

* `counters.odometer`: the device's CAN odometer in integer METRES, off from the true odometer by
  a fixed per-device calibration offset (between -250 km and +250 km);
* `counters.odo_counter`: the device's own GPS distance counter in integer METRES since it was
  fitted (zero some thousands of km before the world starts);
* `counters.engine_hours`: engine-on hours since the device was fitted (2 decimals).
  Differences of either distance counter equal the true distance driven.

Identity for de-duplication: telemetry `(origin.id, date)`, trips and events `id`,
change notifications `(doc.id, doc.type, operation, date)`.

Item availability follows the simulated `clock`; long poll and redelivery run on wall time,
because they are transport behaviour, not data.

Fault switches, besides the shared ones: `faults.malformed_rate` corrupts an item's shape (no
or an unknown type, a required field gone); `bad_value_rate` (an attribute, or `bad_value_rate`
in a `POST /_sim/faults` body) spoils one value of an item the way real emitters do, served raw:
a `NaN` or `Infinity` number (not JSON, but what JavaScript and Python encoders write), a
decimal comma in a string ("12,5"), or an unparseable date. Both pick items by content, so a
redelivered item carries the same fault.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pipelines.simulator.httpd import Request, Response, SimServer
from pipelines.simulator.world import (
    CITY_LAT,
    CITY_LON,
    M_PER_DEG_LAT,
    M_PER_DEG_LON,
    Refuel,
    Trip,
    Vehicle,
    World,
    address_of,
    xy_to_latlon,
)

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

ITEM_TYPES = ("telemetry", "trip", "event", "changenotification")
# Parked heartbeats after a trip ends (seconds), kept only while the vehicle stays parked.
_PARKED_HEARTBEATS_S = (60.0, 900.0, 3600.0)
_IDLE_EVENT_MIN_S = 60.0
_HARSH_BRAKING_SHARE = 0.12
_CHANGE_SHARE_PER_DAY = 0.35
_POLL_TICK_S = 0.05  # how often a waiting long poll re-checks the simulated clock and expiries


def env(server: Kt1Server) -> dict[str, str]:
    """The variables a pipeline needs to drain this server (docs/configuration.md)."""
    return {"KT1_BASE_URL": server.url, "KT1_TOKEN": server.token}


def iso(dt: datetime) -> str:
    """UTC ISO-8601 with milliseconds and `Z`, as KT1's JavaScript backend writes dates."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _oid(*parts: object) -> str:
    """A stable 24-hex id (the shape of the Mongo ObjectIds KT1 uses) from its natural key."""
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=12).hexdigest()


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from a key, for seeded choices without an RNG."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass
class _Batch:
    """One delivered batch: the queued payloads (to requeue) and the bytes actually sent."""

    batch_id: str
    items: list[bytes]
    delivered: list[bytes]
    deadline: float  # time.monotonic() after which the batch is redelivered


@dataclass(frozen=True)
class _Device:
    """The tracker fitted to one kt1 vehicle and its raw counter offsets."""

    vehicle: Vehicle
    origin_name: str
    odometer_offset_m: int
    counter_zero_km: float
    engine_hours_at_start: float

    def counters(self, odometer_km: float, engine_s: float) -> dict[str, Any]:
        return {
            "odometer": round(odometer_km * 1000) + self.odometer_offset_m,
            "odo_counter": round((odometer_km - self.counter_zero_km) * 1000),
            "engine_hours": round(self.engine_hours_at_start + engine_s / 3600.0, 2),
        }


class Kt1Server(SimServer):
    """The kt1 export stream of a `World`'s kt1 vehicles, plus hooks for tests and benchmarks."""

    name = "kt1"
    # The reference answers a wrong batch id with 500; a client must treat it as "not acked".
    unknown_batch_status = 500

    def __init__(
        self,
        world: World,
        *,
        token: str = "sim-kt1-token",
        clock: Callable[[], datetime] | None = None,
        long_poll_s: float = 45.0,
        redelivery_s: float = 120.0,
        batch_size: int = 100,
        telemetry_interval_s: float = 30.0,
        bad_value_rate: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.world = world
        self.token = token
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.long_poll_s = long_poll_s
        self.redelivery_s = redelivery_s
        self.batch_size = batch_size
        self.telemetry_interval_s = telemetry_interval_s
        self.owner_id = _oid("kt1-owner", world.seed)
        self.counters: Counter[str] = Counter()
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[bytes] = deque()
        self._in_flight: dict[str, _Batch] = {}
        self._expired_ids: set[str] = set()
        self._acked: list[bytes] = []
        self._batch_seq = 0
        self._synthetic_seq = 0
        self._closed = False
        # World items not yet "happened" by the simulated clock: (available_at epoch, payload).
        self._future: list[tuple[float, bytes]] = []
        self._future_pos = 0
        super().__init__(host, port)
        self.bad_value_rate = bad_value_rate
        self._future = sorted(self._world_items(), key=lambda entry: entry[0])
        self._release_due()

    # --- routes ---------------------------------------------------------------------------
    def _register_routes(self) -> None:
        self.route("GET", r"/v2/stream", self._get_stream)
        self.route("DELETE", r"/v2/stream/(?P<batch_id>[^/]+)", self._delete_batch)

    def error(self, status: int, code: str, message: str) -> Response:
        return Response(status, {"statusCode": status, "error": code, "message": message})

    def _authorised(self, req: Request) -> bool:
        given = req.header("x-access-token") or req.arg("token") or ""
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _unauthorized(self) -> Response:
        with self._cond:
            self.counters["unauthorized"] += 1
        return self.error(401, "UNAUTHORIZED", "missing or invalid access token")

    def _get_stream(self, req: Request) -> Response:
        if not self._authorised(req):
            return self._unauthorized()
        give_up = time.monotonic() + self.long_poll_s
        with self._cond:
            while True:
                self._release_due()
                self._expire_in_flight()
                if self._queue:
                    return self._deliver()
                left = give_up - time.monotonic()
                if left <= 0 or self._closed:
                    self.counters["empty_polls"] += 1
                    return self.error(500, "NO_DATA", "no data available in the queue")
                self._cond.wait(min(left, _POLL_TICK_S))

    def _delete_batch(self, req: Request, batch_id: str) -> Response:
        if not self._authorised(req):
            return self._unauthorized()
        with self._cond:
            self._expire_in_flight()
            batch = self._in_flight.pop(batch_id, None)
            if batch is None:
                self.counters["unknown_acks"] += 1
                why = "expired and requeued" if batch_id in self._expired_ids else "unknown"
                message = f"batch {batch_id} is {why}"
                return self.error(self.unknown_batch_status, "INVALID_ID", message)
            self._acked.extend(batch.delivered)
            self.counters["acks"] += 1
            self.counters["acked_items"] += len(batch.delivered)
        return Response(200, {"id": batch_id, "deleted": len(batch.delivered)})

    def _stats(self, req: Request) -> Response:
        resp = super()._stats(req)
        resp.body["kt1"] = self.stats()
        return resp

    # --- queue mechanics (call with self._cond held) --------------------------------------
    def _release_due(self) -> None:
        """Move world items whose time has come (by the simulated clock) to the queue's tail."""
        now = self.clock().timestamp()
        future, pos = self._future, self._future_pos
        while pos < len(future) and future[pos][0] <= now:
            self._queue.append(future[pos][1])
            pos += 1
        self._future_pos = pos

    def _expire_in_flight(self) -> None:
        """Put batches whose acknowledgement is overdue back at the FRONT, oldest first."""
        now = time.monotonic()
        overdue = [b for b in self._in_flight.values() if b.deadline <= now]
        for batch in sorted(overdue, key=lambda b: b.deadline, reverse=True):
            del self._in_flight[batch.batch_id]
            self._expired_ids.add(batch.batch_id)
            self._queue.extendleft(reversed(batch.items))
            self.counters["redeliveries"] += 1
            self.counters["redelivered_items"] += len(batch.items)
        if overdue:
            self._cond.notify_all()

    def _deliver(self) -> Response:
        n = min(self.batch_size, len(self._queue))
        items = [self._queue.popleft() for _ in range(n)]
        self._batch_seq += 1
        batch_id = _oid("kt1-batch", self.world.seed, self._batch_seq)
        delivered = self._malform(items)
        self._in_flight[batch_id] = _Batch(
            batch_id, items, delivered, time.monotonic() + self.redelivery_s
        )
        self.counters["deliveries"] += 1
        self.counters["delivered_items"] += n
        body = b'{"id":"' + batch_id.encode() + b'","items":[' + b",".join(delivered) + b"]}"
        return Response(200, body)

    def _malform(self, items: list[bytes]) -> list[bytes]:
        """Corrupt the `malformed_rate` share of items and spoil a value of the
        `bad_value_rate` share of the rest, chosen by content so redeliveries match."""
        rate, bad_rate = self.faults.malformed_rate, self.bad_value_rate
        if rate <= 0 and bad_rate <= 0:
            return items
        salt = zlib.crc32(str(self.faults.seed).encode())
        out = []
        for payload in items:
            roll = zlib.crc32(payload, salt)
            bad_roll = zlib.crc32(payload, salt ^ 0x5BAD)
            if roll / 2**32 < rate:
                out.append(_corrupt(payload, roll))
                self.counters["malformed_items"] += 1
            elif bad_roll / 2**32 < bad_rate:
                out.append(_spoil(payload, bad_roll))
                self.counters["bad_value_items"] += 1
            else:
                out.append(payload)
        return out

    # --- test and benchmark hooks ---------------------------------------------------------
    def enqueue(self, items: list[dict[str, Any]]) -> None:
        """Append items to the queue's tail now, whatever their dates, and wake long polls."""
        payloads = [_dumps(item).encode() for item in items]
        with self._cond:
            self._queue.extend(payloads)
            self._cond.notify_all()

    def fill_synthetic(self, n_items: int) -> None:
        """Enqueue `n_items` distinct telemetry items fast (a string template, no world samples).

        They belong to synthetic devices of their own, so they never collide with world items
        under the telemetry identity `(origin.id, date)`; repeated calls continue the sequence.
        """
        with self._cond:  # reserve the sequence; build outside the lock so GETs keep flowing
            first = self._synthetic_seq
            self._synthetic_seq += n_items
        payloads = list(_synthetic_telemetry(self.world, first, n_items))
        with self._cond:
            self._queue.extend(payloads)
            self._cond.notify_all()

    def pending(self) -> int:
        """Items queued and not in flight (overdue batches count as queued again)."""
        with self._cond:
            self._release_due()
            self._expire_in_flight()
            return len(self._queue)

    def in_flight(self) -> int:
        """Items delivered and awaiting acknowledgement."""
        with self._cond:
            self._expire_in_flight()
            return sum(len(b.items) for b in self._in_flight.values())

    def future(self) -> int:
        """World items the simulated clock has not reached yet."""
        with self._cond:
            self._release_due()
            return len(self._future) - self._future_pos

    def acknowledged_items(self) -> list[dict[str, Any]]:
        """Every item ever acknowledged, as delivered (malformed ones included), in ack order."""
        with self._cond:
            acked = list(self._acked)
        return [json.loads(payload) for payload in acked]

    def acknowledged_count(self) -> int:
        with self._cond:
            return len(self._acked)

    def stats(self) -> dict[str, int]:
        """Counters (deliveries, acks, redeliveries, their item counts, ...) and queue sizes."""
        with self._cond:
            self._release_due()
            self._expire_in_flight()
            out = dict(self.counters)
            out.update(
                pending=len(self._queue),
                in_flight=sum(len(b.items) for b in self._in_flight.values()),
                future=len(self._future) - self._future_pos,
            )
        for key in ("deliveries", "acks", "redeliveries", "delivered_items", "acked_items"):
            out.setdefault(key, 0)
        return out

    def __enter__(self) -> Kt1Server:
        return self.start()

    def stop(self) -> None:
        """Release waiting long polls first, so shutdown doesn't leave them hanging."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        super().stop()

    # --- the world as kt1 items -----------------------------------------------------------
    def _world_items(self) -> list[tuple[float, bytes]]:
        out: list[tuple[float, bytes]] = []
        for vehicle in self.world.vehicles_of("kt1"):
            for available_at, item in self._vehicle_items(vehicle):
                out.append((available_at.timestamp(), _dumps(item).encode()))
        return out

    def _device(self, vehicle: Vehicle, first_odometer_km: float) -> _Device:
        seed, index = self.world.seed, vehicle.index
        return _Device(
            vehicle=vehicle,
            origin_name=f"FMC130 {vehicle.kt1_origin_id[-6:]}",
            odometer_offset_m=round((_unit(seed, "kt1-odo", index) - 0.5) * 500_000),
            counter_zero_km=first_odometer_km - 2_000 - 8_000 * _unit(seed, "kt1-fit", index),
            engine_hours_at_start=round(100 + 900 * _unit(seed, "kt1-hours", index), 2),
        )

    def _vehicle_items(self, vehicle: Vehicle) -> Iterator[tuple[datetime, dict[str, Any]]]:
        """Everything one vehicle's tracker reports over the world, with when each is queued."""
        world = self.world
        trips = world.trips(vehicle_indexes=[vehicle.index])
        if not trips:
            return
        device = self._device(vehicle, world.trip_state(trips[0]).odometer_km)
        refuels = world.refuels(vehicle_indexes=[vehicle.index])
        world_end = datetime.combine(world.end_day + timedelta(days=1), datetime.min.time(), UTC)
        engine_s = 0.0
        for n, trip in enumerate(trips):
            next_start = trips[n + 1].started_at if n + 1 < len(trips) else world_end
            yield from self._trip_items(device, trip, engine_s)
            engine_s += trip.duration_s
            refuel = next((r for r in refuels if trip.ended_at <= r.started_at < next_start), None)
            yield from self._parked_items(device, trip, refuel, next_start, engine_s)
        yield from self._change_items(vehicle)

    def _trip_items(
        self, device: _Device, trip: Trip, engine_s_before: float
    ) -> Iterator[tuple[datetime, dict[str, Any]]]:
        vehicle = device.vehicle
        state = self.world.trip_state(trip)
        samples = list(self.world.samples(trip, self.telemetry_interval_s))
        yield (
            _later(trip.started_at, 2),
            self._event(
                device,
                trip.started_at,
                "io",
                "ignition_on",
                f"{trip.trip_id}-on",
                trip.start_latlon,
                trip.start_address,
            ),
        )
        for sample in samples:
            engine_s = engine_s_before + (sample.ts - trip.started_at).total_seconds()
            moving = sample.speed_kmh > 0
            item = self._telemetry(
                device,
                ts=sample.ts,
                lat=sample.lat,
                lon=sample.lon,
                speed=sample.speed_kmh,
                heading=sample.heading_deg,
                counters=device.counters(sample.odometer_km, engine_s),
                ignition=True,
                state={"moving": moving, "idling": not moving},
                telemetry={
                    "rpm": sample.rpm,
                    "fuel_level": sample.fuel_level_l,
                    "coolant_temp": sample.coolant_temp_c,
                    "battery": sample.battery_v,
                },
            )
            yield _received(item), item
        yield from self._in_trip_events(device, trip)
        yield (
            _later(trip.ended_at, 2),
            self._event(
                device,
                trip.ended_at,
                "io",
                "ignition_off",
                f"{trip.trip_id}-off",
                trip.end_latlon,
                trip.end_address,
            ),
        )
        idle_s = round(trip.idle_s)
        duration_s = round(trip.duration_s)
        (start_lat, start_lon), (end_lat, end_lon) = trip.start_latlon, trip.end_latlon
        engine_end_s = engine_s_before + trip.duration_s
        trip_item = {
            "type": "trip",
            "id": _oid("kt1-trip", trip.trip_id),
            "asset": {"id": vehicle.kt1_asset_id, "name": vehicle.display_name},
            "tripType": "active",  # the world's trips are ignition-on from start to end
            "dateStart": iso(trip.started_at),
            "dateEnd": iso(trip.ended_at),
            "start": {
                "lon": round(start_lon, 6),
                "lat": round(start_lat, 6),
                "address": trip.start_address,
                "counters": device.counters(state.odometer_km, engine_s_before),
            },
            "end": {
                "lon": round(end_lon, 6),
                "lat": round(end_lat, 6),
                "address": trip.end_address,
                "counters": device.counters(state.odometer_km + trip.distance_km, engine_end_s),
            },
            "stats": {
                "driveTime": duration_s - idle_s,
                "idleTime": idle_s,
                "distance": round(trip.distance_km, 3),
            },
            "records": len(samples),
            "maxes": {
                "speed": round(trip.max_speed_kmh, 1),
                "rpm": max(s.rpm for s in samples),
                "coolant_temp": max(s.coolant_temp_c for s in samples),
            },
        }
        yield _later(trip.ended_at, 5), trip_item

    def _in_trip_events(
        self, device: _Device, trip: Trip
    ) -> Iterator[tuple[datetime, dict[str, Any]]]:
        """Idling (engine on, standing >= 60 s) and harsh braking before some stops."""
        seed = self.world.seed
        for n, span in enumerate(trip.idle_spans(_IDLE_EVENT_MIN_S)):
            event = self._event(
                device,
                span.ended_at,
                "idle",
                "idling",
                f"{trip.trip_id}-idle-{n}",
                (span.lat, span.lon),
                span.address,
            )
            event["details"].update(
                dateStart=iso(span.started_at),
                dateEnd=iso(span.ended_at),
                duration=round(span.duration_s),
            )
            yield _later(span.ended_at, 2), event
        for n, (phase, following) in enumerate(zip(trip.phases, trip.phases[1:], strict=False)):
            if phase.kind != "drive" or following.kind != "idle":
                continue
            if _unit(seed, "kt1-harsh", trip.trip_id, n) >= _HARSH_BRAKING_SHARE:
                continue
            at = trip.started_at + timedelta(seconds=phase.end_s - 2)
            lat, lon = xy_to_latlon(*phase.to_xy)
            event = self._event(
                device,
                at,
                "behaviour",
                "harsh_braking",
                f"{trip.trip_id}-brake-{n}",
                (lat, lon),
                address_of(*phase.to_xy),
            )
            event["details"]["speed"] = round(phase.speed_kmh, 1)
            yield _later(at, 2), event

    def _parked_items(
        self,
        device: _Device,
        trip: Trip,
        refuel: Refuel | None,
        next_start: datetime,
        engine_s: float,
    ) -> Iterator[tuple[datetime, dict[str, Any]]]:
        """A few ignition-off heartbeats (active=false), and the refuel if one happened."""
        vehicle = device.vehicle
        state = self.world.trip_state(trip)
        odometer_km = state.odometer_km + trip.distance_km
        level = round(state.fuel_level_l - trip.fuel_used_l(vehicle), 2)
        lat, lon = trip.end_latlon
        beats = [trip.ended_at + timedelta(seconds=s) for s in _PARKED_HEARTBEATS_S]
        if refuel is not None:
            event = self._event(
                device,
                refuel.ended_at,
                "fuel",
                "refuel",
                f"{refuel.refuel_id}-refuel",
                (refuel.lat, refuel.lon),
                refuel.address,
            )
            event["details"].update(
                dateStart=iso(refuel.started_at),
                dateEnd=iso(refuel.ended_at),
                volume=round(refuel.volume_l, 1),
                levelBefore=refuel.level_before_l,
                levelAfter=refuel.level_after_l,
            )
            yield _later(refuel.ended_at, 2), event
            beats.append(refuel.ended_at + timedelta(seconds=30))
        for ts in sorted(beats):
            if ts >= next_start - timedelta(seconds=30):
                continue
            fuel = refuel.level_after_l if refuel and refuel.ended_at <= ts else level
            item = self._telemetry(
                device,
                ts=ts,
                lat=lat,
                lon=lon,
                speed=0.0,
                heading=0.0,
                counters=device.counters(odometer_km, engine_s),
                ignition=False,
                state={"moving": False, "idling": False},
                telemetry={"rpm": 0.0, "fuel_level": fuel, "coolant_temp": None, "battery": 12.6},
            )
            item["active"] = False
            yield _received(item), item

    def _change_items(self, vehicle: Vehicle) -> Iterator[tuple[datetime, dict[str, Any]]]:
        """Occasional edits of the asset document in the KT1 back office."""
        seed = self.world.seed
        for day in self.world.day_range():
            if _unit(seed, "kt1-change", vehicle.index, day) >= _CHANGE_SHARE_PER_DAY:
                continue
            minute = int(600 + 480 * _unit(seed, "kt1-change-at", vehicle.index, day))
            at = datetime.combine(day, datetime.min.time(), UTC) + timedelta(minutes=minute)
            yield (
                at,
                {
                    "type": "changenotification",
                    "operation": "update",
                    "date": iso(at),
                    "doc": {"id": vehicle.kt1_asset_id, "type": "asset"},
                },
            )

    def _telemetry(
        self,
        device: _Device,
        *,
        ts: datetime,
        lat: float,
        lon: float,
        speed: float,
        heading: float,
        counters: dict[str, Any],
        ignition: bool,
        state: dict[str, Any],
        telemetry: dict[str, Any],
    ) -> dict[str, Any]:
        vehicle = device.vehicle
        second = int(ts.timestamp())
        latency_ms = 800 + (second * 7919) % 4200  # deterministic upload delay
        return {
            "type": "telemetry",
            "origin": {"id": vehicle.kt1_origin_id, "name": device.origin_name},
            "asset": {"id": vehicle.kt1_asset_id, "name": vehicle.display_name},
            "date": iso(ts),
            "received": iso(ts + timedelta(milliseconds=latency_ms)),
            "active": True,
            "location": {
                "lon": round(lon, 6),
                "lat": round(lat, 6),
                "speed": speed,
                "altitude": round(28 + 12 * math.sin(lat * 900) + 6 * math.cos(lon * 700), 1),
                "heading": heading,
                "accuracy": 3 + second % 6,
                "address": _address_at(lat, lon),
            },
            "counters": counters,
            "io": {"ignition": ignition, "din1": ignition, "din2": False},
            "state": {**state, "satellites": 8 + second % 7},
            "telemetry": telemetry,
        }

    def _event(
        self,
        device: _Device,
        at: datetime,
        event_class: str,
        event_type: str,
        key: str,
        latlon: tuple[float, float],
        address: str,
    ) -> dict[str, Any]:
        lat, lon = latlon
        return {
            "type": "event",
            "id": _oid("kt1-event", key),
            "owner": self.owner_id,
            "origin": device.vehicle.kt1_origin_id,
            "eventDate": iso(at),
            "eventClass": event_class,
            "eventType": event_type,
            "details": {
                "asset": {"id": device.vehicle.kt1_asset_id},
                "location": {"lat": round(lat, 6), "lon": round(lon, 6), "address": address},
            },
        }


# --- helpers ------------------------------------------------------------------------------
def _later(at: datetime, seconds: float) -> datetime:
    return at + timedelta(seconds=seconds)


def _received(item: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(item["received"])


def _address_at(lat: float, lon: float) -> str:
    """The world's fake reverse-geocode for a sampled position."""
    return address_of((lon - CITY_LON) * M_PER_DEG_LON, (lat - CITY_LAT) * M_PER_DEG_LAT)


def _corrupt(payload: bytes, roll: int) -> bytes:
    """One of three faults a quarantine must catch: unknown type, no type, a required field gone."""
    item = json.loads(payload)
    kind = roll % 3
    if kind == 0:
        item["type"] = "x-" + str(item.get("type", "item"))
    elif kind == 1:
        item.pop("type", None)
    else:
        required = {
            "telemetry": "date",
            "trip": "dateStart",
            "event": "eventDate",
            "changenotification": "doc",
        }.get(item.get("type", ""), "type")
        item.pop(required, None)
        item.pop("asset", None)
    return _dumps(item).encode()


# Where `_spoil` puts a bad number and a bad date in each item type (paths in the item).
_SPOIL_NUMBER = {
    "telemetry": ("location", "speed"),
    "trip": ("stats", "distance"),
    "event": ("details", "location", "lat"),
}
_SPOIL_DATE = {
    "telemetry": ("date",),
    "trip": ("dateEnd",),
    "event": ("eventDate",),
    "changenotification": ("date",),
}
BAD_NUMBERS = (math.nan, math.inf, "12,5")
"""What a spoiled number becomes (the first two are written as the bare tokens NaN, Infinity)."""
BAD_DATE = "31.02.2024 25:61"


def _spoil(payload: bytes, roll: int) -> bytes:
    """One value made unreadable: a number NaN, Infinity or "12,5", or a date that is no date
    (items with no number to spoil get the bad date)."""
    item = json.loads(payload)
    kind = item.get("type", "")
    choice = roll % 4
    path = _SPOIL_NUMBER.get(kind) if choice < 3 else None
    value: Any = BAD_NUMBERS[choice] if path else BAD_DATE
    path = path or _SPOIL_DATE.get(kind, ("date",))
    target = item
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    return _dumps(item).encode()


def _synthetic_telemetry(world: World, first: int, n_items: int) -> Iterator[bytes]:
    """`n_items` telemetry payloads of 8 synthetic devices, one per device per second.

    Each device's JSON is serialised once with markers; per item only the time, position and
    counters are %-formatted in, which is ~20x cheaper than building and dumping a dict.
    """
    devices = 8
    templates = []
    for d in range(devices):
        template = {
            "type": "telemetry",
            "origin": {"id": str(990_000_000_000_000 + world.seed * 1000 + d), "name": "FMC130"},
            "asset": {"id": _oid("kt1-bench-asset", world.seed, d), "name": f"Bench {d + 1:02d}"},
            "date": "@@DATE@@",
            "received": "@@RECEIVED@@",
            "active": True,
            "location": {
                "lon": "@@LON@@",
                "lat": round(CITY_LAT + d * 0.01, 6),
                "speed": 42.0,
                "altitude": 31.5,
                "heading": 90.0,
                "accuracy": 4,
                "address": "Narva mnt 12, Tallinn",
            },
            "counters": {"odometer": "@@ODO@@", "odo_counter": "@@CTR@@", "engine_hours": 1234.5},
            "io": {"ignition": True, "din1": True, "din2": False},
            "state": {"moving": True, "idling": False, "satellites": 11},
            "telemetry": {"rpm": 2100.0, "fuel_level": 40.0, "coolant_temp": 88.0, "battery": 14.1},
        }
        text = _dumps(template).replace("%", "%%")
        for token in ("DATE", "RECEIVED"):  # strings keep their quotes, numbers lose them
            text = text.replace(f"@@{token}@@", "%s")
        for token in ("LON", "ODO", "CTR"):
            text = text.replace(f'"@@{token}@@"', "%s")
        templates.append(text)  # placeholders in text order: date, received, lon, odo, ctr
    base = datetime.combine(world.start_day, datetime.min.time(), UTC).timestamp()
    step_seen, date_s, received_s = -1, "", ""
    for i in range(first, first + n_items):
        d, step = i % devices, i // devices
        if step != step_seen:
            second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + step))
            step_seen, date_s, received_s = step, second + ".000Z", second + ".900Z"
        metres = step * 12
        lon = round(CITY_LON + (step % 5000) * 1e-5, 6)
        values = (date_s, received_s, lon, 5_000_000 + metres, 1_000_000 + metres)
        yield (templates[d] % values).encode()
