"""Simulated Metrotec API: JWT login, Accept-version negotiation, and per-vehicle route log,
stops, refuels and fuel-level history, all served as views of the shared `World`.

Payload keys follow Metrotec's API reference; paths are docs/metrotec.md's defaults under `/api`.
The reference shows example payloads but not their meaning, so this model pins it down:

Route log (`GET routelog`) — one row per world trip that *started* in
[period_start, period_stop] (both inclusive) and had *ended* by clock-now.
  - `startTime`/`stopTime`: engine on / engine off of the trip.
  - `previousStopTime`: engine off of the vehicle's previous trip (null for its first one).
  - `stopEnd`: start of the vehicle's next trip, i.e. when the parking after this trip
    ended; null while that next start is still in the future (or there is none).
  - `pauseTimeSeconds` = stopEnd - stopTime (null when stopEnd is null).
  - `drivingTimeSeconds`: trip time *excluding* engine-on idling, so the trip's idle seconds
    are (stopTime - startTime) - drivingTimeSeconds; `averageSpeed` = km / driving hours.
  - `maxSpeed` is whole km/h, `status` is the string "0", as in the reference.

Stops (`GET routelog/stops`) — every row is a stop: the vehicle halted at `startTime`, the
engine was switched off at `stopTime` and the vehicle left again at `stopEnd`;
`runningTime` ("HH:MM:SS") = stopTime - startTime is the engine-running (idling) part.
  - Idle rows: one per world idle span of ≥ IDLE_STOP_MIN_S inside a trip (traffic lights
    below it are not reported). The engine never stops, so stopTime = stopEnd = idle end and
    runningTime is the idle duration. These are the idle periods.
  - Parking rows: one per gap after a trip: startTime = stopTime = the trip's engine off,
    stopEnd = next trip start (null while in the future), runningTime "00:00:00".
  - `input` is the digital-input bitmask: 7 with the ignition (bit 0) on, 6 with it off.
  - `fuel` is litres burnt during the stop (idle burn; 0 when parked), or FUEL_UNKNOWN (-2)
    when the device sent no fuel reading — about a quarter of rows, as in the reference.
  - Rows whose startTime lies in the period, visible once their stopTime ≤ clock-now;
    `distance` is 0, `status` 0.

Refuels (`GET fuel/refuels`) — one row per world refuel started in the period and finished by
clock-now; `maxTime` (when the level peaked) = `stopTime`; `routeLengthKM` = km driven since
the previous refuel. Fuel values are litres with one decimal (the reference's integers are a
coarse sensor; the world's truth has 0.1 l).

Fuel levels (`GET fuel/levels?vehicle_id=&start_from=`) — a device log in ascending `GMTime`,
at most `fuel_levels_page` rows with GMTime ≥ start_from and ≤ clock-now. While driving, one
point every `gps_refresh_interval` s (60-300, per vehicle) from engine on to engine off with
`input` 7; while parked, hourly points after engine off with `input` 6 and a constant level,
plus a point at each refuel's start (level before) and end (level after). No two rows of a
vehicle share a GMTime second, so paging with `start_from = last GMTime + 1 s` neither loops
nor skips.

Login returns `expires` as absolute unix epoch seconds (clock-now + token_ttl_s); clients may
also meet a relative TTL from the real API, this server always sends the epoch.

Fault switch, besides the shared ones: `bad_value_rate` (an attribute, or `bad_value_rate` in a
`POST /_sim/faults` body) spoils one value of that share of route log, stop, refuel and fuel
level rows, served raw: a number becomes `NaN` or `Infinity` (bare tokens, as some encoders
write them) or "12,5" (a decimal comma), or a time becomes one that is no time. Rows are picked
by content, so asking again gives the same rows the same fault; `spoiled` records them.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from urllib.parse import parse_qs

from pipelines.simulator.httpd import Request, Response, SimServer
from pipelines.simulator.world import (
    CITY_LAT,
    CITY_LON,
    IDLE_BURN_L_PER_H,
    M_PER_DEG_LAT,
    M_PER_DEG_LON,
    Refuel,
    Trip,
    Vehicle,
    World,
    address_of,
    xy_to_latlon,
)

KNOWN_API_VERSIONS = ("1.0.0", "1.1.0")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
IDLE_STOP_MIN_S = 60.0  # shortest engine-on stop Metrotec reports; shorter ones are traffic
FUEL_UNKNOWN = -2  # the reference's code for "no fuel reading"
PARKED_POINT_EVERY_S = 3600
INPUT_IGNITION_ON, INPUT_IGNITION_OFF = 7, 6  # bit 0 = ignition; bits 1-2 constant wiring
BASE_PATH = "/api"

_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_VERSION_RE = re.compile(r"""version\s*=\s*"?([0-9A-Za-z.\-]+)"?""")
_EPOCH_2000 = date(2000, 1, 1)
_FuelPoint = tuple[int, float, float, float, int, str]  # epoch s, litres, lat, lon, input, address


def env(server: MetrotecServer) -> dict[str, str]:
    """The METROTEC_* variables (docs/configuration.md) that point a client at this server."""
    return {
        "METROTEC_BASE_URL": f"{server.url}{BASE_PATH}",
        "METROTEC_USERNAME": server.username,
        "METROTEC_PASSWORD": server.password,
        "METROTEC_API_VERSION": server.api_version,
    }


# Where `bad_value_rate` puts a bad number and a bad time in each table's rows.
_SPOIL: dict[str, tuple[str, str | None]] = {
    "routelog": ("routeLengthKM", "stopTime"),
    "stops": ("distance", "stopTime"),
    "refuels": ("fuelAfterL", "stopTime"),
    "fuel_levels": ("fuel", None),  # GMTime pages the endpoint: it stays readable
}
BAD_NUMBERS: tuple[object, ...] = (math.nan, math.inf, "12,5")
BAD_TIME = "2025-02-30 25:61:00"


def _fmt(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).strftime(TIME_FORMAT) if ts is not None else None


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _whole_second(ts: datetime) -> datetime:
    return ts.replace(microsecond=0) + timedelta(seconds=round(ts.microsecond / 1e6))


def _route_id(trip: Trip) -> int:
    """Stable across worlds that share the trip's (day, vehicle, seq), like a database id."""
    days = (trip.day - _EPOCH_2000).days
    return days * 100_000 + trip.vehicle_index * 10 + trip.seq


def _stable_int(*parts: object) -> int:
    """Python's hash() is salted per process; this is not, so output is reproducible."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _address_at(lat: float, lon: float) -> str:
    return address_of((lon - CITY_LON) * M_PER_DEG_LON, (lat - CITY_LAT) * M_PER_DEG_LAT)


@dataclass(frozen=True)
class _Stop:
    """A stop in this module's model: halted at `started_at`, engine off at `stopped_at`."""

    stop_id: int
    started_at: datetime
    stopped_at: datetime
    stop_end: datetime | None
    fuel: float | int
    ignition: int


@dataclass
class _Timeline:
    """One vehicle's whole history in time order, indexed for bisecting by period."""

    vehicle: Vehicle
    trips: list[Trip]
    trip_starts: list[datetime]
    trip_ends: list[datetime]
    stops: list[_Stop]
    stop_starts: list[datetime]
    refuels: list[tuple[int, Refuel]]
    refuel_starts: list[datetime]
    # (epoch s, litres, lat, lon, input, address); built on the first fuel/levels request.
    fuel_points: list[_FuelPoint] | None = None
    fuel_epochs: list[int] = field(default_factory=list)


class MetrotecServer(SimServer):
    """Metrotec as its API reference describes it, over the deterministic `World`."""

    name = "metrotec"

    def __init__(
        self,
        world: World,
        *,
        username: str = "sim-user",
        password: str = "sim-password",
        clock: Callable[[], datetime] | None = None,
        token_ttl_s: float = 3600,
        api_version: str = "1.1.0",
        fuel_levels_page: int = 1000,
        bad_value_rate: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.world = world
        # Rows served with a spoiled value: table → {(vehicle, row's time): (field, value)}.
        self.spoiled: dict[str, dict[tuple[str, str], tuple[str, object]]] = {}
        self.username = username
        self.password = password
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.token_ttl_s = token_ttl_s
        self.api_version = api_version
        self.known_versions = tuple(sorted({*KNOWN_API_VERSIONS, api_version}))
        self.fuel_levels_page = fuel_levels_page
        self.vehicles = {v.metrotec_object_id: v for v in world.vehicles_of("metrotec")}
        self._secret = hashlib.sha256(f"metrotec-sim-{world.seed}".encode()).digest()
        self._tokens: dict[str, datetime] = {}
        self._auth_lock = threading.Lock()
        self._timeline_lock = threading.Lock()
        self._timelines: dict[str, _Timeline] = {}
        self.logins = 0
        self.unauthorized = 0
        super().__init__(host, port)
        self.bad_value_rate = bad_value_rate

    # --- test hooks -----------------------------------------------------------------------
    def expire_tokens(self) -> int:
        """Expire every issued token at once (a token lapsing mid-backfill); returns how many."""
        with self._auth_lock:
            lapsed = datetime.min.replace(tzinfo=UTC)
            for token in self._tokens:
                self._tokens[token] = lapsed
            return len(self._tokens)

    def counters(self) -> dict[str, int]:
        """Logins and 401s, so tests can pin how often a client re-authenticated."""
        with self._auth_lock:
            return {
                "logins": self.logins,
                "unauthorized": self.unauthorized,
                "tokens_issued": len(self._tokens),
            }

    def now(self) -> datetime:
        """Simulated now: expiry and data visibility follow it, not the wall clock."""
        return self.clock().astimezone(UTC)

    def _stats(self, req: Request) -> Response:
        resp = super()._stats(req)
        resp.body["metrotec"] = self.counters()
        return resp

    def _spoil(
        self, table: str, vehicle_id: str, rows: list[dict[str, object]]
    ) -> list[dict[str, object]]:
        """Spoil one value of the `bad_value_rate` share of `rows` (see the module docstring)."""
        rate = self.bad_value_rate
        if rate <= 0:
            return rows
        number, stamp = _SPOIL[table]
        out = []
        for row in rows:
            key = json.dumps(row, sort_keys=True)
            roll = _stable_int(self.world.seed, self.faults.seed, "bad-value", table, key)
            if roll % 1_000_000 >= rate * 1_000_000:
                out.append(row)
                continue
            choice = roll // 1_000_000 % 4
            if choice < 3 or stamp is None:
                name, value = number, BAD_NUMBERS[choice % 3]
            else:
                name, value = stamp, BAD_TIME
            at = str(row.get("startTime") or row.get("GMTime"))
            with self._auth_lock:
                self.spoiled.setdefault(table, {})[(vehicle_id, at)] = (name, value)
            out.append({**row, name: value})
        return out

    # --- routing, version and auth --------------------------------------------------------
    def error(self, status: int, code: str, message: str) -> Response:
        return Response(status, {"status": status, "error": code, "message": message})

    def _register_routes(self) -> None:
        b = BASE_PATH
        self.route("POST", rf"{b}/login", self._guard(self._login, auth=False))
        self.route("GET", rf"{b}/vehicles", self._guard(self._vehicles))
        self.route("GET", rf"{b}/routelog", self._guard(self._routelog))
        self.route("GET", rf"{b}/routelog/stops", self._guard(self._stops))
        self.route("GET", rf"{b}/fuel/refuels", self._guard(self._refuels))
        self.route("GET", rf"{b}/fuel/levels", self._guard(self._fuel_levels))

    def _guard(
        self, handler: Callable[[Request], Response], *, auth: bool = True
    ) -> Callable[..., Response]:
        """Version first (it applies to login too), then the bearer token."""

        def guarded(req: Request, **_groups: str) -> Response:
            problem = self._check_version(req)
            if problem is None and auth:
                problem = self._check_token(req)
            return problem or handler(req)

        return guarded

    def _check_version(self, req: Request) -> Response | None:
        accept = req.header("accept") or ""
        m = _VERSION_RE.search(accept)
        example = f"'Accept: application/json; version={self.api_version}'"
        if m is None:
            return self.error(
                400,
                "VERSION_REQUIRED",
                f"API version missing from the Accept header; send {example}",
            )
        if m.group(1) not in self.known_versions:
            return self.error(
                400,
                "VERSION_UNSUPPORTED",
                f"API version {m.group(1)!r} is unknown (known: {', '.join(self.known_versions)});"
                f" send {example}",
            )
        return None

    def _unauthorized(self, message: str) -> Response:
        with self._auth_lock:
            self.unauthorized += 1
        return self.error(401, "UNAUTHORIZED", message)

    def _check_token(self, req: Request) -> Response | None:
        scheme, _, token = (req.header("authorization") or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._unauthorized("no auth token: send 'Authorization: Bearer <jwt>'")
        with self._auth_lock:
            expires = self._tokens.get(token.strip())
        if expires is None:
            return self._unauthorized("auth token is not valid")
        if self.now() >= expires:
            return self._unauthorized("auth token expired; log in again")
        return None

    def _login(self, req: Request) -> Response:
        try:
            body = req.json()
        except ValueError:
            body = {k: v[-1] for k, v in parse_qs(req.body.decode(errors="replace")).items()}
        if not isinstance(body, dict) or not body.get("username") or not body.get("password"):
            return self.error(400, "BAD_REQUEST", "username and password are required")
        if not (
            hmac.compare_digest(str(body["username"]), self.username)
            and hmac.compare_digest(str(body["password"]), self.password)
        ):
            return self._unauthorized("invalid username or password")
        now = self.now()
        expires = now + timedelta(seconds=self.token_ttl_s)
        with self._auth_lock:
            self.logins += 1
            claims = {
                "sub": self.username,
                "iat": int(now.timestamp()),
                "exp": int(expires.timestamp()),
                "jti": self.logins,
            }
            head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
            payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
            sig = _b64(hmac.new(self._secret, f"{head}.{payload}".encode(), "sha256").digest())
            token = f"{head}.{payload}.{sig}"
            self._tokens[token] = expires
        return Response(200, {"jwt": token, "expires": int(expires.timestamp())})

    # --- parameters -----------------------------------------------------------------------
    def _time_arg(self, req: Request, name: str) -> datetime | Response:
        raw = req.arg(name)
        if raw is None or not raw.strip():
            return self.error(400, "BAD_REQUEST", f"{name} is required (UTC YYYY-MM-DD HH:MM:SS)")
        raw = raw.strip()
        try:
            if not _TIME_RE.match(raw):
                raise ValueError(raw)
            return datetime.strptime(raw, TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            return self.error(
                400, "BAD_REQUEST", f"{name}={raw!r} is not a UTC time YYYY-MM-DD HH:MM:SS"
            )

    def _vehicle_arg(self, req: Request) -> _Timeline | Response:
        object_id = (req.arg("vehicle_id") or "").strip()
        if not object_id:
            return self.error(400, "BAD_REQUEST", "vehicle_id is required")
        if object_id not in self.vehicles:
            return self.error(404, "NOT_FOUND", f"vehicle {object_id!r} not found")
        return self._timeline(object_id)

    def _period_args(self, req: Request) -> tuple[_Timeline, datetime, datetime] | Response:
        start = self._time_arg(req, "period_start")
        if isinstance(start, Response):
            return start
        stop = self._time_arg(req, "period_stop")
        if isinstance(stop, Response):
            return stop
        if stop < start:
            return self.error(400, "BAD_REQUEST", "period_stop is before period_start")
        timeline = self._vehicle_arg(req)
        if isinstance(timeline, Response):
            return timeline
        return timeline, start, stop

    # --- timelines ------------------------------------------------------------------------
    def _timeline(self, object_id: str) -> _Timeline:
        with self._timeline_lock:
            timeline = self._timelines.get(object_id)
            if timeline is None:
                timeline = self._build_timeline(self.vehicles[object_id])
                self._timelines[object_id] = timeline
            return timeline

    def _build_timeline(self, vehicle: Vehicle) -> _Timeline:
        world = self.world
        trips = [t for day in world.day_range() for t in world.trips_on(vehicle.index, day)]
        stops: list[_Stop] = []
        for n, trip in enumerate(trips):
            rid = _route_id(trip)
            next_start = trips[n + 1].started_at if n + 1 < len(trips) else None
            for k, span in enumerate(trip.idle_spans()):
                if span.duration_s < IDLE_STOP_MIN_S:
                    continue
                burnt = round(span.duration_s / 3600.0 * IDLE_BURN_L_PER_H, 2)
                # Whole seconds, as the device reports; the world's spans are fractional.
                started, ended = _whole_second(span.started_at), _whole_second(span.ended_at)
                stops.append(
                    self._stop(rid * 100 + k, started, ended, ended, burnt, INPUT_IGNITION_ON)
                )
            stops.append(
                self._stop(
                    rid * 100 + 99, trip.ended_at, trip.ended_at, next_start, 0, INPUT_IGNITION_OFF
                )
            )
        stops.sort(key=lambda s: (s.started_at, s.stop_id))
        trip_ends = [t.ended_at for t in trips]
        refuels = []
        for r in world.refuels(vehicle_indexes=[vehicle.index]):
            before = bisect.bisect_right(trip_ends, r.started_at) - 1
            refuels.append((_route_id(trips[before]) if before >= 0 else 0, r))
        return _Timeline(
            vehicle=vehicle,
            trips=trips,
            trip_starts=[t.started_at for t in trips],
            trip_ends=trip_ends,
            stops=stops,
            stop_starts=[s.started_at for s in stops],
            refuels=refuels,
            refuel_starts=[r.started_at for _, r in refuels],
        )

    def _stop(
        self,
        stop_id: int,
        started: datetime,
        stopped: datetime,
        stop_end: datetime | None,
        fuel: float,
        ignition: int,
    ) -> _Stop:
        unknown = _stable_int(self.world.seed, "metrotec-stop-fuel", stop_id) % 4 == 0
        return _Stop(
            stop_id, started, stopped, stop_end, FUEL_UNKNOWN if unknown else fuel, ignition
        )

    def sample_interval_s(self, vehicle: Vehicle) -> int:
        """The device's reporting interval while driving (60-300 s, fixed per vehicle)."""
        return 60 * (1 + _stable_int(self.world.seed, "metrotec-interval", vehicle.index) % 5)

    def _fuel_points(self, timeline: _Timeline) -> tuple[list[int], list[_FuelPoint]]:
        with self._timeline_lock:
            if timeline.fuel_points is None:
                timeline.fuel_points = self._build_fuel_points(timeline)
                timeline.fuel_epochs = [p[0] for p in timeline.fuel_points]
            return timeline.fuel_epochs, timeline.fuel_points

    def _build_fuel_points(self, timeline: _Timeline) -> list[_FuelPoint]:
        world, vehicle, trips = self.world, timeline.vehicle, timeline.trips
        interval = self.sample_interval_s(vehicle)
        world_start = datetime.combine(world.start_day, datetime.min.time(), UTC)
        world_end = datetime.combine(world.end_day + timedelta(days=1), datetime.min.time(), UTC)
        refuels = [r for _, r in timeline.refuels]
        points: list[_FuelPoint] = []
        next_refuel = 0

        def add(ts: datetime, level: float, lat: float, lon: float, ign: int, addr: str) -> None:
            epoch = int(ts.timestamp())
            if points and epoch <= points[-1][0]:
                return  # one row per second keeps time paging exact
            points.append((epoch, round(level, 1), round(lat, 5), round(lon, 5), ign, addr))

        def parked(
            t0: datetime, t1: datetime, level: float, lat: float, lon: float, first_offset_s: int
        ) -> None:
            nonlocal next_refuel
            addr = _address_at(lat, lon)
            events: list[tuple[datetime, int, float | None]] = []
            t = t0 + timedelta(seconds=first_offset_s)
            while t < t1:
                events.append((t, 1, None))
                t += timedelta(seconds=PARKED_POINT_EVERY_S)
            while next_refuel < len(refuels) and refuels[next_refuel].started_at < t1:
                r = refuels[next_refuel]
                events.append((r.started_at, 0, level))
                events.append((r.ended_at, 0, r.level_after_l))
                next_refuel += 1
            events.sort(key=lambda e: (e[0], e[1]))
            for ts, _, new_level in events:
                level = level if new_level is None else new_level
                add(ts, level, lat, lon, INPUT_IGNITION_OFF, addr)

        if not trips:
            lat, lon = xy_to_latlon(*vehicle.home_xy)
            parked(world_start, world_end, vehicle.tank_l * 0.6, lat, lon, 0)
            return points
        first = trips[0]
        parked(
            world_start,
            first.started_at,
            world.trip_state(first).fuel_level_l,
            *first.start_latlon,
            0,
        )
        for n, trip in enumerate(trips):
            level = 0.0
            for s in world.samples(trip, interval):
                level = s.fuel_level_l
                add(s.ts, level, s.lat, s.lon, INPUT_IGNITION_ON, _address_at(s.lat, s.lon))
            t1 = trips[n + 1].started_at if n + 1 < len(trips) else world_end
            parked(trip.ended_at, t1, level, *trip.end_latlon, PARKED_POINT_EVERY_S)
        return points

    # --- endpoints ------------------------------------------------------------------------
    def _vehicles(self, req: Request) -> Response:
        now = self.now()
        return Response(200, [self._vehicle_row(v, now) for v in self.vehicles.values()])

    def _vehicle_row(self, vehicle: Vehicle, now: datetime) -> dict[str, object]:
        timeline = self._timeline(vehicle.metrotec_object_id)
        last = bisect.bisect_right(timeline.trip_ends, now) - 1
        odometer, odometer_day = 0, None
        if last >= 0:
            trip = timeline.trips[last]
            odometer = round(self.world.trip_state(trip).odometer_km + trip.distance_km)
            odometer_day = _fmt(trip.ended_at)
        kind = vehicle.display_name.split()[0]
        tank = round(vehicle.tank_l)
        return {
            "id": vehicle.metrotec_object_id,
            "extraDevices": 17_246_981_848 + vehicle.index,
            "categoryID": 0,
            "naviseade": "0",
            "isDDD": 1 if kind == "Truck" else 0,
            "account_type": 3,
            "Manufacture": 68,
            "calcByM": 0,
            "T1min": 0,
            "T1max": tank,
            "T2min": 0,
            "T2max": 0,
            "tank_vol": tank,
            "barrel_type": None,
            "alias": vehicle.display_name,
            "isPercent": 0,
            "next_maintenance_km": "",
            "isOwn": 1,
            "odometer_day": odometer_day,
            "odometer": odometer,
            "mode": None,
            "fuel_card_nr": "",
            "categoryName": kind,
            "btime": 1,
            "gps_refresh_interval": self.sample_interval_s(vehicle),
            "is_fuel_as_pressure": 0,
        }

    def _routelog(self, req: Request) -> Response:
        args = self._period_args(req)
        if isinstance(args, Response):
            return args
        timeline, start, stop = args
        now = self.now()
        trips = timeline.trips
        lo = bisect.bisect_left(timeline.trip_starts, start)
        hi = bisect.bisect_right(timeline.trip_starts, stop)
        rows = []
        for n in range(lo, hi):
            trip = trips[n]
            if trip.ended_at > now:
                continue
            previous = trips[n - 1].ended_at if n > 0 else None
            stop_end = trips[n + 1].started_at if n + 1 < len(trips) else None
            if stop_end is not None and stop_end > now:
                stop_end = None
            pause = int((stop_end - trip.ended_at).total_seconds()) if stop_end else None
            rows.append(
                {
                    "ID": _route_id(trip),
                    "objectID": timeline.vehicle.metrotec_object_id,
                    "startTime": _fmt(trip.started_at),
                    "previousStopTime": _fmt(previous),
                    "stopTime": _fmt(trip.ended_at),
                    "stopEnd": _fmt(stop_end),
                    "routeLengthKM": round(trip.distance_km, 2),
                    "drivingTimeSeconds": round(trip.driving_s),
                    "pauseTimeSeconds": pause,
                    "averageSpeed": round(trip.avg_speed_kmh, 2),
                    "maxSpeed": round(trip.max_speed_kmh),
                    "AddressAtStartingPoint": trip.start_address,
                    "AddressAtEndPoint": trip.end_address,
                    "status": "0",
                }
            )
        return Response(200, self._spoil("routelog", timeline.vehicle.metrotec_object_id, rows))

    def _stops(self, req: Request) -> Response:
        args = self._period_args(req)
        if isinstance(args, Response):
            return args
        timeline, start, stop = args
        now = self.now()
        lo = bisect.bisect_left(timeline.stop_starts, start)
        hi = bisect.bisect_right(timeline.stop_starts, stop)
        rows = []
        for s in timeline.stops[lo:hi]:
            if s.stopped_at > now:
                continue
            stop_end = s.stop_end if s.stop_end is not None and s.stop_end <= now else None
            rows.append(
                {
                    "ID": s.stop_id,
                    "objectID": timeline.vehicle.metrotec_object_id,
                    "startTime": _fmt(s.started_at),
                    "stopTime": _fmt(s.stopped_at),
                    "stopEnd": _fmt(stop_end),
                    "runningTime": _hms((s.stopped_at - s.started_at).total_seconds()),
                    "input": s.ignition,
                    "status": 0,
                    "distance": 0,
                    "fuel": s.fuel,
                    "required": None,
                }
            )
        return Response(200, self._spoil("stops", timeline.vehicle.metrotec_object_id, rows))

    def _refuels(self, req: Request) -> Response:
        args = self._period_args(req)
        if isinstance(args, Response):
            return args
        timeline, start, stop = args
        now = self.now()
        lo = bisect.bisect_left(timeline.refuel_starts, start)
        hi = bisect.bisect_right(timeline.refuel_starts, stop)
        rows = [
            {
                "ID": refuel_id,
                "objectID": timeline.vehicle.metrotec_object_id,
                "startTime": _fmt(r.started_at),
                "stopTime": _fmt(r.ended_at),
                "maxTime": _fmt(r.ended_at),
                "fuelBeforeL": r.level_before_l,
                "fuelAfterL": r.level_after_l,
                "routeLengthKM": r.distance_since_last_km,
                "fuelAddress": r.address,
                "required": None,
            }
            for refuel_id, r in timeline.refuels[lo:hi]
            if r.ended_at <= now
        ]
        return Response(200, self._spoil("refuels", timeline.vehicle.metrotec_object_id, rows))

    def _fuel_levels(self, req: Request) -> Response:
        start_from = self._time_arg(req, "start_from")
        if isinstance(start_from, Response):
            return start_from
        timeline = self._vehicle_arg(req)
        if isinstance(timeline, Response):
            return timeline
        epochs, points = self._fuel_points(timeline)
        lo = bisect.bisect_left(epochs, int(start_from.timestamp()))
        hi = min(
            bisect.bisect_right(epochs, int(self.now().timestamp())), lo + self.fuel_levels_page
        )
        rows = [
            {
                "GMTime": _fmt(datetime.fromtimestamp(epoch, UTC)),
                "fuel": level,
                "lat": lat,
                "lon": lon,
                "input": ign,
                "t1": 0,
                "t2": 0,
                "t3": 0,
                "t4": 0,
                "location": addr,
                "required": None,
            }
            for epoch, level, lat, lon, ign, addr in points[lo:hi]
        ]
        return Response(200, self._spoil("fuel_levels", timeline.vehicle.metrotec_object_id, rows))
