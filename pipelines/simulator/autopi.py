"""Simulated AutoPi cloud API: automatic trip exports (tasks, gzipped JSON-lines results,
clear/remove, re-run), the logbook, and the `trip_export_finished` webhook signal.

Time is the injected simulated clock, so an export becomes ready exactly `export_delay_s`
after its trip ends, whatever the wall clock says. Everything served is a pure function of
(world seed, clock, calls made to the server), so tests can pin exact behaviour.

Webhook: a JSON POST to `webhook_url` with `{"signal": "trip_export_finished", "task_id",
"trip_id", "device", "vehicle", "state", "finished_at", "sent_at", "rebroadcast"}`; the shared
secret, when set, travels in the `X-Webhook-Secret` header (never in the body).
"""

from __future__ import annotations

import gzip
import json
import math
import queue
import threading
import time
import urllib.request
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipelines.simulator.httpd import Faults, Request, Response, SimServer
from pipelines.simulator.world import (
    CITY_LAT,
    CITY_LON,
    M_PER_DEG_LAT,
    M_PER_DEG_LON,
    Sample,
    Trip,
    Vehicle,
    World,
    _seed_of,
    address_of,
)

EXPORT_TASK = "core.tasks.es_trip_export"
SIGNAL = "trip_export_finished"
FIRST_TASK_ID = 100
EXPORT_RUNTIME_S = 3.0  # the last seconds before `ready_at` show as STARTED
REBROADCAST_AGE = timedelta(hours=2)  # reference: uncleared exports older than 2 h ...
REBROADCAST_HOUR_UTC = 3  # ... are signalled again once a day
REOPEN_FRACTION = 0.7
_RESULT_CACHE_SIZE = 64
_REC_BATCH_S = 30.0  # the dongle uploads its buffer about every 30 s

# Per-type offsets within one sample, so readings of one instant come out in a stable order
# and never tie with the engine event at the trip's start.
_OFFSETS = {
    "track.pos": 0.05,
    "obd.speed": 0.15,
    "obd.rpm": 0.25,
    "obd.engine_load": 0.35,
    "obd.coolant_temp": 0.45,
    "obd.fuel_level": 0.55,
    "obd.bat": 0.65,
}


def iso(ts: datetime) -> str:
    """AutoPi's timestamp style: UTC, microseconds, `Z`."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _num(value: float) -> int | float:
    """Whole floats as ints, as AutoPi's Elasticsearch-backed export writes them (`34`, `34.5`),
    so a column can start as integers and turn float later."""
    return int(value) if float(value).is_integer() else value


BAD_VALUES = ("NaN", "Infinity", "-Infinity", "decimal comma", "timestamp")


@dataclass
class ExportFaults(Faults):
    """The common switches plus bad trip objects; where `bad_value_rate` spoils lines.

    `bad_value_rate`: share of datapoint lines where one value is one of `BAD_VALUES`: the
    first number of the line as `NaN`, `Infinity` or `-Infinity` (the tokens Python's json and
    many emitters write, which JSON has no room for) or as a decimal-comma string (`"12,5"`),
    or `@ts` in a day-first local format (lines without a number get that one).
    `bad_trip_rate`: share of exports whose trip object has `"distanceKm": NaN`.
    Both are deterministic per (seed, trip, export run, line), like `malformed_rate`.
    """

    bad_trip_rate: float = 0.0


def _bad_value(point: dict[str, Any], pick: float) -> dict[str, Any]:
    """`point` with one value replaced by the bad value `pick` (in [0, 1)) selects."""
    kind = BAD_VALUES[int(pick * len(BAD_VALUES))]
    numbers = [
        k
        for k, v in point.items()
        if k != "@vid" and isinstance(v, int | float) and not isinstance(v, bool)
    ]
    if kind == "timestamp" or not numbers:
        ts = datetime.fromisoformat(point["@ts"].replace("Z", "+00:00"))
        return {**point, "@ts": ts.strftime("%d/%m/%Y %H:%M:%S")}
    key = numbers[0]
    non_finite = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
    value = non_finite.get(kind, f"{float(point[key]):.1f}".replace(".", ","))
    return {**point, key: value}


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) for the given key."""
    return _seed_of(*parts) / 2.0**64


def _display(address: str, lat: float, lon: float) -> dict[str, str | None]:
    """`*_position_display`: the reverse-geocode object AutoPi attaches to trip ends."""
    street, _, city = address.partition(", ")
    road, _, number = street.rpartition(" ")
    return {
        "address": address,
        "road": road or street,
        "house_number": number if road else None,
        "city": city or None,
        "county": "Harju maakond",
        "postcode": None,
        "country": "Estonia",
        "country_code": "ee",
        "latitude": f"{lat:.6f}",
        "longitude": f"{lon:.6f}",
        "provider": "sim",
    }


@dataclass(frozen=True)
class ExportVersion:
    """One run of the export job; a later run of the same task overwrites the earlier result."""

    scheduled_at: datetime
    ready_at: datetime
    fraction: float  # share of the trip the device had uploaded when the trip (last) ended


@dataclass
class ExportTask:
    """A `core.tasks.es_trip_export` task: automatic (one per trip) or a manual re-run."""

    task_id: int
    trip: Trip
    created_at: datetime
    versions: list[ExportVersion]
    rerun: bool = False
    cleared: set[int] = field(default_factory=set)  # indexes of versions whose result is gone


@dataclass(frozen=True)
class TripShape:
    """A trip as one export version saw it: a reopened trip first looked shorter."""

    started_at: datetime
    ended_at: datetime
    start_lat: float
    start_lon: float
    end_lat: float
    end_lon: float
    start_address: str
    end_address: str
    distance_km: float


class AutoPiServer(SimServer):
    """AutoPi's `tasks/` + `logbook/trips/` API over one World, for the AutoPi vehicles.

    Knobs beyond the common constructor: `rerun_delay_s` (clock seconds a `POST tasks/` re-run
    or a `reopen_trip` re-export takes), `reopen_share` (share of trips whose first export
    holds only ~70% of the trip and is overwritten once the trip really ends),
    `result_retention_s` (results older than this 404, as "after a while" in the reference),
    `webhook_poll_s` (real seconds between background signal checks; 0 = only when `tasks/`
    is listed or `poll_webhooks()` is called). Test hooks: `clear_calls`, `plan_reopen`,
    `reopen_trip`, `poll_webhooks`, `flush_webhooks`, `webhook_deliveries`. Fault switches:
    `faults` (`ExportFaults`: the common ones, `malformed_rate`, `bad_value_rate`,
    `bad_trip_rate`), also settable over HTTP at `POST /_sim/faults`.
    """

    name = "autopi"

    def __init__(
        self,
        world: World,
        *,
        token: str = "sim-autopi-token",
        clock: Callable[[], datetime] | None = None,
        export_delay_s: float = 600,
        sample_interval_s: float = 5.0,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        rerun_delay_s: float = 5.0,
        reopen_share: float = 0.0,
        result_retention_s: float | None = None,
        webhook_poll_s: float = 1.0,
        webhook_timeout_s: float = 2.0,
    ) -> None:
        self.world = world
        self.token = token
        self.clock = clock or (lambda: datetime.now(UTC))
        self.export_delay_s = export_delay_s
        self.sample_interval_s = sample_interval_s
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.rerun_delay_s = rerun_delay_s
        self.reopen_share = reopen_share
        self.result_retention_s = result_retention_s
        self.webhook_poll_s = webhook_poll_s
        self.webhook_timeout_s = webhook_timeout_s
        # Test hooks: how often each task's result was cleared/removed, and what was signalled.
        self.clear_calls: Counter[int] = Counter()
        self.webhook_deliveries: list[tuple[dict[str, Any], int | str]] = []
        self._tasks_lock = threading.RLock()
        self._cache_lock = threading.Lock()
        self._results: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._shapes: dict[tuple[str, float], TripShape] = {}
        self._vehicles = {v.index: v for v in world.vehicles_of("autopi")}
        self._tasks: dict[int, ExportTask] = {}
        self._by_trip: dict[str, ExportTask] = {}
        self._build_automatic_tasks()
        self._next_id = FIRST_TASK_ID + len(self._tasks)
        self._signalled: dict[int, tuple[int, datetime]] = {}
        self._outbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._sender: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._stopping = threading.Event()
        super().__init__(host, port)
        self.faults: ExportFaults = ExportFaults()

    # --- ground truth → tasks -------------------------------------------------------------
    def _build_automatic_tasks(self) -> None:
        """One task per trip, ids in the order the exports were scheduled (stable per world)."""
        trips = self.world.trips(vehicle_indexes=sorted(self._vehicles))
        planned = [(self._automatic_versions(t), t) for t in trips]
        planned.sort(key=lambda p: (p[0][0].scheduled_at, p[1].vehicle_index, p[1].trip_id))
        for n, (versions, trip) in enumerate(planned):
            self._add_automatic(FIRST_TASK_ID + n, trip, versions)

    def _add_automatic(self, task_id: int, trip: Trip, versions: list[ExportVersion]) -> None:
        lag = timedelta(seconds=1 + int(_unit(self.world.seed, "autopi-lag", trip.trip_id) * 3))
        task = ExportTask(task_id, trip, versions[0].scheduled_at + lag, versions)
        self._tasks[task_id] = task
        self._by_trip[trip.trip_id] = task

    def _automatic_versions(self, trip: Trip) -> list[ExportVersion]:
        delay = timedelta(seconds=self.export_delay_s)
        full = ExportVersion(trip.ended_at, trip.ended_at + delay, 1.0)
        if _unit(self.world.seed, "autopi-reopen", trip.trip_id) >= self.reopen_share:
            return [full]
        # The engine stopped early, the trip ended, then more data reopened it.
        early = self._cut_at(trip, REOPEN_FRACTION)
        return [ExportVersion(early, early + delay, REOPEN_FRACTION), full]

    def _cut_at(self, trip: Trip, fraction: float) -> datetime:
        """The last sample instant within `fraction` of the trip: where a partial trip ended."""
        if fraction >= 1.0:
            return trip.ended_at
        limit = math.floor(trip.duration_s * fraction)
        steps = max(1, int(limit // self.sample_interval_s))
        return trip.started_at + timedelta(seconds=steps * self.sample_interval_s)

    def _now(self) -> datetime:
        now = self.clock()
        return now if now.tzinfo else now.replace(tzinfo=UTC)

    @staticmethod
    def _current(task: ExportTask, now: datetime) -> tuple[int, ExportVersion] | None:
        """The newest export run scheduled by `now` (each run overwrites the last)."""
        best: tuple[int, ExportVersion] | None = None
        for i, v in enumerate(task.versions):
            if v.scheduled_at <= now and (best is None or v.scheduled_at >= best[1].scheduled_at):
                best = (i, v)
        return best

    def _visible(self, task: ExportTask, now: datetime) -> bool:
        return task.created_at <= now and self._current(task, now) is not None

    def _state(self, task: ExportTask, now: datetime) -> str:
        cur = self._current(task, now)
        if cur is None:
            return "PENDING"
        ready = cur[1].ready_at
        if now >= ready:
            return "SUCCESS"
        return "STARTED" if now >= ready - timedelta(seconds=EXPORT_RUNTIME_S) else "PENDING"

    def _downloadable(self, task: ExportTask, now: datetime) -> int | None:
        """The version whose result can be downloaded now, if any."""
        cur = self._current(task, now)
        if cur is None or self._state(task, now) != "SUCCESS" or cur[0] in task.cleared:
            return None
        retention = self.result_retention_s
        if retention is not None and now > cur[1].ready_at + timedelta(seconds=retention):
            return None
        return cur[0]

    def _task_json(self, task: ExportTask, now: datetime) -> dict[str, Any]:
        return {
            "id": task.task_id,
            "created_at": iso(task.created_at),
            "task": EXPORT_TASK,
            "args": [],
            "kwargs": {"trip_id": task.trip.trip_id},
            "state": self._state(task, now),
        }

    # --- trip objects -----------------------------------------------------------------------
    def _shape(self, trip: Trip, fraction: float) -> TripShape:
        start_lat, start_lon = trip.start_latlon
        if fraction >= 1.0:
            end_lat, end_lon = trip.end_latlon
            return TripShape(
                trip.started_at,
                trip.ended_at,
                start_lat,
                start_lon,
                end_lat,
                end_lon,
                trip.start_address,
                trip.end_address,
                trip.distance_km,
            )
        key = (trip.trip_id, fraction)
        with self._cache_lock:
            if key in self._shapes:
                return self._shapes[key]
        cut = self._cut_at(trip, fraction)
        first: Sample | None = None
        last: Sample | None = None
        for s in self.world.samples(trip, self.sample_interval_s):
            if s.ts > cut:
                break
            first = first or s
            last = s
        assert first is not None and last is not None  # a trip always has its start sample
        x = (last.lon - CITY_LON) * M_PER_DEG_LON
        y = (last.lat - CITY_LAT) * M_PER_DEG_LAT
        shape = TripShape(
            trip.started_at,
            last.ts,
            start_lat,
            start_lon,
            last.lat,
            last.lon,
            trip.start_address,
            address_of(x, y),
            last.odometer_km - first.odometer_km,
        )
        with self._cache_lock:
            self._shapes[key] = shape
        return shape

    def _trip_json(self, trip: Trip, version: ExportVersion) -> dict[str, Any]:
        """The logbook trip object; also the first line of an export."""
        shape = self._shape(trip, version.fraction)
        vehicle = self._vehicles[trip.vehicle_index]
        return {
            "id": trip.trip_id,
            "start_time_utc": iso(shape.started_at),
            "end_time_utc": iso(shape.ended_at),
            "start_position_lat": f"{shape.start_lat:.6f}",
            "start_position_lng": f"{shape.start_lon:.6f}",
            "start_position_display": _display(
                shape.start_address, shape.start_lat, shape.start_lon
            ),
            "end_position_lat": f"{shape.end_lat:.6f}",
            "end_position_lng": f"{shape.end_lon:.6f}",
            "end_position_display": _display(shape.end_address, shape.end_lat, shape.end_lon),
            "device": vehicle.autopi_device_id,
            "vehicle": vehicle.autopi_vehicle_id,
            "duration": _hms((shape.ended_at - shape.started_at).total_seconds()),
            "distanceKm": round(shape.distance_km, 6),
            "tag": None,
            "personal": False,
            "last_recalc": iso(version.scheduled_at),
        }

    def _trip_version_now(self, trip: Trip, now: datetime) -> ExportVersion | None:
        """What the logbook knows of a trip now: its automatic task's newest run, once ended."""
        task = self._by_trip.get(trip.trip_id)
        if task is None or not self._visible(task, now):
            return None
        cur = self._current(task, now)
        return cur[1] if cur else None

    # --- export files -----------------------------------------------------------------------
    def _datapoints(self, trip: Trip, vehicle: Vehicle, shape: TripShape) -> list[dict[str, Any]]:
        """Sparse datapoints (each type its own keys), ascending by `@ts`."""
        points: list[tuple[datetime, int, dict[str, Any]]] = []
        order = {t: n + 1 for n, t in enumerate(_OFFSETS)}
        base = {"@vid": vehicle.autopi_vehicle_id, "@uid": vehicle.autopi_unit_id}

        def rec_of(ts: datetime, kind: str) -> str:
            # Uploaded with the buffer the reading fell into, a little after the batch closed.
            batch = math.ceil((ts - trip.started_at).total_seconds() / _REC_BATCH_S)
            latency = 0.4 + 2.5 * _unit(self.world.seed, "autopi-rec", trip.trip_id, batch)
            sent = trip.started_at + timedelta(seconds=batch * _REC_BATCH_S + latency)
            return iso(
                max(sent, ts + timedelta(seconds=0.2))
                + timedelta(microseconds=order.get(kind, 0) * 13)
            )

        def add(ts: datetime, kind: str, values: dict[str, Any], tag: str | None = None) -> None:
            point: dict[str, Any] = {**base, "@ts": iso(ts), "@t": kind}
            if tag:
                point["@tag"] = tag
            point.update(values)
            point["@rec"] = rec_of(ts, kind)
            points.append((ts, order.get(kind, 0), point))

        add(shape.started_at, "event.vehicle.engine", {}, "vehicle/engine/running")
        for k, s in enumerate(self.world.samples(trip, self.sample_interval_s)):
            if s.ts > shape.ended_at:
                break
            last = s.ts >= shape.ended_at
            # The final readings precede the engine-off event that ended the trip.
            at = s.ts - timedelta(seconds=1.0) if last else s.ts

            def ts_of(kind: str, at: datetime = at) -> datetime:
                return at + timedelta(seconds=_OFFSETS[kind])

            alt = 30 + 12 * math.sin(s.lat * 900) * math.cos(s.lon * 500)
            add(
                ts_of("track.pos"),
                "track.pos",
                {
                    "track.pos.utc": iso(s.ts.replace(microsecond=0)),
                    "track.pos.loc": {"lat": round(s.lat, 6), "lon": round(s.lon, 6)},
                    "track.pos.alt": _num(round(alt, 1)),
                    "track.pos.sog": _num(s.speed_kmh),
                    "track.pos.cog": _num(s.heading_deg),
                    "track.pos.nsat": 7 + (k * 7 + trip.seq) % 6,
                },
            )
            add(
                ts_of("obd.speed"),
                "obd.speed",
                {
                    "obd.speed.value": round(s.speed_kmh),
                    "obd.speed.unit": "kph",
                },
            )
            add(
                ts_of("obd.rpm"),
                "obd.rpm",
                {
                    "obd.rpm.value": _num(round(s.rpm * 4) / 4),
                    "obd.rpm.unit": "revolutions_per_minute",
                },
            )
            if k % 2 == 0 or last:
                load = (
                    18 + 3 * math.sin(k) if s.speed_kmh == 0 else min(95.0, 25 + 0.45 * s.speed_kmh)
                )
                add(
                    ts_of("obd.engine_load"),
                    "obd.engine_load",
                    {
                        "obd.engine_load.value": _num(round(load, 1)),
                        "obd.engine_load.unit": "percent",
                    },
                )
            if k % 6 == 0 or last:
                add(
                    ts_of("obd.coolant_temp"),
                    "obd.coolant_temp",
                    {
                        "obd.coolant_temp.value": round(s.coolant_temp_c),
                        "obd.coolant_temp.unit": "degC",
                    },
                )
            if k % 12 == 0 or last:
                pct = s.fuel_level_l / vehicle.tank_l * 100.0
                add(
                    ts_of("obd.fuel_level"),
                    "obd.fuel_level",
                    {
                        "obd.fuel_level.value": _num(round(pct, 2)),
                        "obd.fuel_level.unit": "percent",
                    },
                )
                add(
                    ts_of("obd.bat"),
                    "obd.bat",
                    {
                        "obd.bat.voltage": _num(s.battery_v),
                        "obd.bat.state": "charging",
                        "obd.bat.level": max(0, min(100, round(60 + (s.battery_v - 13.5) * 60))),
                    },
                )
        add(shape.ended_at, "event.vehicle.engine", {}, "vehicle/engine/not_running")
        points.sort(key=lambda p: (p[0], p[1]))
        return [p[2] for p in points]

    def export_bytes(self, task: ExportTask, version_index: int) -> bytes:
        """`TRIP_ID.json.gz` of one export run, cached; malformed lines and bad values follow
        the fault switches."""
        f = self.faults
        key = (
            task.task_id,
            version_index,
            f.malformed_rate,
            f.bad_value_rate,
            f.bad_trip_rate,
            f.seed,
        )
        with self._cache_lock:
            if key in self._results:
                self._results.move_to_end(key)
                return self._results[key]
        version = task.versions[version_index]
        trip = task.trip
        vehicle = self._vehicles[trip.vehicle_index]
        head = self._trip_json(trip, version)
        if f.bad_trip_rate and _unit(f.seed, "bad-trip", trip.trip_id, version_index) < (
            f.bad_trip_rate
        ):
            head["distanceKm"] = math.nan
        lines = [json.dumps(head, separators=(",", ":"))]
        shape = self._shape(trip, version.fraction)
        for n, point in enumerate(self._datapoints(trip, vehicle, shape)):
            if (
                f.bad_value_rate
                and _unit(f.seed, "bad-value", trip.trip_id, version_index, n) < f.bad_value_rate
            ):
                pick = _unit(f.seed, "bad-value-kind", trip.trip_id, version_index, n)
                point = _bad_value(point, pick)
            line = json.dumps(point, separators=(",", ":"))
            if (
                f.malformed_rate
                and _unit(f.seed, "malformed", trip.trip_id, version_index, n) < f.malformed_rate
            ):
                line = line[: len(line) // 2]  # a truncated object: never valid JSON
            lines.append(line)
        data = gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=6, mtime=0)
        with self._cache_lock:
            self._results[key] = data
            while len(self._results) > _RESULT_CACHE_SIZE:
                self._results.popitem(last=False)
        return data

    # --- test hooks -----------------------------------------------------------------------
    def task_for_trip(self, trip_id: str) -> ExportTask:
        """The automatic export task of a trip (KeyError if the trip is not an AutoPi trip)."""
        return self._by_trip[trip_id]

    def plan_reopen(self, trip_id: str, fraction: float = REOPEN_FRACTION) -> int:
        """Make the trip's first export hold only its first `fraction` (the trip ended early);
        the full trip arrives only when `reopen_trip` is called. Returns the task id."""
        with self._tasks_lock:
            task = self._by_trip[trip_id]
            cut = self._cut_at(task.trip, fraction)
            delay = timedelta(seconds=self.export_delay_s)
            task.versions = [ExportVersion(cut, cut + delay, fraction)]
            task.created_at = min(task.created_at, cut + timedelta(seconds=1))
            task.cleared.clear()
            self._signalled.pop(task.task_id, None)
        return task.task_id

    def reopen_trip(self, trip_id: str) -> int:
        """The trip was reopened: the same task re-exports the full trip now, ready after
        `rerun_delay_s`, overwriting the earlier result (cleared or not). Returns the task id."""
        with self._tasks_lock:
            task = self._by_trip[trip_id]
            now = self._now()
            task.versions.append(
                ExportVersion(now, now + timedelta(seconds=self.rerun_delay_s), 1.0)
            )
        return task.task_id

    # --- webhook ----------------------------------------------------------------------------
    def poll_webhooks(self) -> list[dict[str, Any]]:
        """Queue a `trip_export_finished` signal for every newly finished, uncleared export run,
        and the daily re-broadcast for uncleared ones older than 2 h. Returns what was queued;
        sending happens on a background thread so no request handler waits on the receiver."""
        if not self.webhook_url:
            return []
        now = self._now()
        due: list[dict[str, Any]] = []
        with self._tasks_lock:
            for task in self._tasks.values():
                if not self._visible(task, now):
                    continue
                index = self._downloadable(task, now)
                if index is None:
                    continue
                version = task.versions[index]
                sent = self._signalled.get(task.task_id)
                if sent is None or sent[0] != index:
                    rebroadcast = False
                elif self._rebroadcast_due(version.ready_at, sent[1], now):
                    rebroadcast = True
                else:
                    continue
                self._signalled[task.task_id] = (index, now)
                vehicle = self._vehicles[task.trip.vehicle_index]
                due.append(
                    {
                        "signal": SIGNAL,
                        "task_id": task.task_id,
                        "trip_id": task.trip.trip_id,
                        "device": vehicle.autopi_device_id,
                        "vehicle": vehicle.autopi_vehicle_id,
                        "state": "SUCCESS",
                        "finished_at": iso(version.ready_at),
                        "sent_at": iso(now),
                        "rebroadcast": rebroadcast,
                    }
                )
        if due:
            self._ensure_sender()
            for payload in due:
                self._outbox.put(payload)
        return due

    @staticmethod
    def _rebroadcast_due(ready_at: datetime, last_sent: datetime, now: datetime) -> bool:
        run = now.replace(hour=REBROADCAST_HOUR_UTC, minute=0, second=0, microsecond=0)
        if run > now:
            run -= timedelta(days=1)
        return run > last_sent and run >= ready_at + REBROADCAST_AGE

    def flush_webhooks(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued signal was attempted; True if the queue drained in time."""
        deadline = time.monotonic() + timeout_s
        while self._outbox.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._outbox.unfinished_tasks

    def _ensure_sender(self) -> None:
        with self._tasks_lock:
            if self._sender is None or not self._sender.is_alive():
                self._sender = threading.Thread(
                    target=self._send_loop, name="sim-autopi-webhook", daemon=True
                )
                self._sender.start()

    def _send_loop(self) -> None:
        while True:
            payload = self._outbox.get()
            try:
                if payload is None:
                    return
                self._deliver(payload)
            finally:
                self._outbox.task_done()

    def _deliver(self, payload: dict[str, Any]) -> None:
        """Best effort, like AutoPi's triggers: one attempt, short timeout, errors recorded."""
        headers = {"Content-Type": "application/json", "User-Agent": "AutoPi-Trigger (fleet-sim)"}
        if self.webhook_secret:
            headers["X-Webhook-Secret"] = self.webhook_secret
        request = urllib.request.Request(
            str(self.webhook_url), data=json.dumps(payload).encode(), headers=headers, method="POST"
        )
        outcome: int | str
        try:
            with urllib.request.urlopen(request, timeout=self.webhook_timeout_s) as resp:
                outcome = resp.status
        except Exception as exc:  # a receiver being down must never hurt the API
            outcome = f"{type(exc).__name__}: {exc}"
        with self._tasks_lock:
            self.webhook_deliveries.append((payload, outcome))

    def _tick(self) -> None:
        while not self._stopping.wait(self.webhook_poll_s):
            self.poll_webhooks()

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> AutoPiServer:
        super().start()
        if self.webhook_url and self.webhook_poll_s > 0:
            self._ticker = threading.Thread(target=self._tick, name="sim-autopi-tick", daemon=True)
            self._ticker.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._sender is not None and self._sender.is_alive():
            self._outbox.put(None)
            self._sender.join(timeout=self.webhook_timeout_s + 1)
        super().stop()

    def __enter__(self) -> AutoPiServer:
        return self.start()

    # --- HTTP -----------------------------------------------------------------------------
    def error(self, status: int, code: str, message: str) -> Response:
        """Django REST framework's error shape, which AutoPi's API uses."""
        return Response(status, {"detail": message, "code": code.lower()})

    def _register_routes(self) -> None:
        self.route("GET", r"/tasks", self._list_tasks)
        self.route("POST", r"/tasks", self._rerun)
        self.route("GET", r"/tasks/(?P<task_id>\d+)", self._get_task)
        self.route("GET", r"/tasks/(?P<task_id>\d+)/result", self._result)
        for method in ("GET", "POST"):
            self.route(method, r"/tasks/(?P<task_id>\d+)/(?:clear|remove)_result", self._clear)
        self.route("GET", r"/logbook/trips", self._logbook)

    def _unauthorized(self, req: Request) -> Response | None:
        header = req.header("authorization")
        if not header:
            return self.error(
                401, "NOT_AUTHENTICATED", "Authentication credentials were not provided."
            )
        scheme, _, token = header.partition(" ")
        if scheme != "APIToken" or token.strip() != self.token:
            return self.error(401, "AUTHENTICATION_FAILED", "Invalid token.")
        return None

    def _visible_task(self, task_id: str, now: datetime) -> ExportTask | None:
        task = self._tasks.get(int(task_id))
        return task if task is not None and self._visible(task, now) else None

    def _list_tasks(self, req: Request) -> Response:
        if denied := self._unauthorized(req):
            return denied
        now = self._now()
        with self._tasks_lock:
            body = [
                self._task_json(t, now)
                for _, t in sorted(self._tasks.items())
                if self._visible(t, now)
            ]
        self.poll_webhooks()  # signals are evaluated lazily too; only queued here
        return Response(200, body)

    def _get_task(self, req: Request, task_id: str) -> Response:
        if denied := self._unauthorized(req):
            return denied
        now = self._now()
        with self._tasks_lock:
            task = self._visible_task(task_id, now)
            if task is None:
                return self.error(404, "NOT_FOUND", "Not found.")
            return Response(200, self._task_json(task, now))

    def _result(self, req: Request, task_id: str) -> Response:
        if denied := self._unauthorized(req):
            return denied
        now = self._now()
        with self._tasks_lock:
            task = self._visible_task(task_id, now)
            if task is None:
                return self.error(404, "NOT_FOUND", "Not found.")
            index = self._downloadable(task, now)
            state = self._state(task, now)
        if index is None:
            why = "not finished" if state != "SUCCESS" else "cleared or expired"
            return self.error(404, "NOT_FOUND", f"Task {task.task_id} has no result ({why}).")
        return Response(
            200,
            self.export_bytes(task, index),
            headers={"Content-Disposition": f'attachment; filename="{task.trip.trip_id}.json.gz"'},
            content_type="application/gzip",
            compressible=False,  # already a .json.gz file
        )

    def _clear(self, req: Request, task_id: str) -> Response:
        if denied := self._unauthorized(req):
            return denied
        now = self._now()
        with self._tasks_lock:
            task = self._visible_task(task_id, now)
            if task is None:
                return self.error(404, "NOT_FOUND", "Not found.")
            self.clear_calls[task.task_id] += 1
            cur = self._current(task, now)
            if cur is not None and self._state(task, now) == "SUCCESS":
                task.cleared.add(cur[0])
            return Response(200, self._task_json(task, now))

    def _rerun(self, req: Request) -> Response:
        if denied := self._unauthorized(req):
            return denied
        try:
            body = req.json()
        except ValueError:
            return self.error(400, "PARSE_ERROR", "JSON parse error.")
        kwargs = body.get("kwargs") if isinstance(body, dict) else None
        trip_id = kwargs.get("trip_id") if isinstance(kwargs, dict) else None
        if (
            not isinstance(body, dict)
            or body.get("task") != EXPORT_TASK
            or not isinstance(body.get("args", []), list)
            or not isinstance(trip_id, str)
        ):
            return self.error(
                400,
                "INVALID",
                f'Expected {{"task": "{EXPORT_TASK}", "args": [], "kwargs": {{"trip_id": ...}}}}.',
            )
        now = self._now()
        with self._tasks_lock:
            auto = self._by_trip.get(trip_id)
            current = self._trip_version_now(auto.trip, now) if auto else None
            if auto is None or current is None:
                return self.error(404, "NOT_FOUND", f"Trip {trip_id} not found.")
            ready = now + timedelta(seconds=self.rerun_delay_s)
            task = ExportTask(
                self._next_id,
                auto.trip,
                now,
                [ExportVersion(now, ready, current.fraction)],
                rerun=True,
            )
            self._next_id += 1
            self._tasks[task.task_id] = task
            return Response(201, self._task_json(task, now))

    def _logbook(self, req: Request) -> Response:
        if denied := self._unauthorized(req):
            return denied
        device = req.arg("device") or None
        ordering = req.arg("ordering") or "-start_time_utc"
        if ordering.lstrip("-") != "start_time_utc":
            return self.error(400, "INVALID", "ordering must be start_time_utc or -start_time_utc.")
        now = self._now()
        indexes = [v.index for v in self._vehicles.values() if device in (None, v.autopi_device_id)]
        trips: list[dict[str, Any]] = []
        with self._tasks_lock:
            for trip in self.world.trips(vehicle_indexes=indexes):
                version = self._trip_version_now(trip, now)
                if version is not None:
                    trips.append(self._trip_json(trip, version))
        trips.sort(key=lambda t: t["start_time_utc"], reverse=ordering.startswith("-"))
        return Response(200, trips)


def env(server: AutoPiServer) -> dict[str, str]:
    """The variables a pipeline needs to talk to this server."""
    out = {"AUTOPI_BASE_URL": server.url, "AUTOPI_TOKEN": server.token}
    if server.webhook_secret:
        out["AUTOPI_WEBHOOK_SECRET"] = server.webhook_secret
    return out
