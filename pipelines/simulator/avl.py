"""Simulated AVL Trips Report API (`GET /apidev/v1/reports/avl/trips`), per avl-trips-report.txt.

Three auth headers, parameter validation, a per-tenant sliding-window rate limit answering
429 RATE_LIMITED, offset paging with `meta.total`, offset-less local timestamps, the
`idle_min` stop threshold and `duration_min` filter, and rows without `trip_start`.
`AvlServer.report_faults` provokes what a real tenant sends now and then: a stale or
non-numeric `meta.total`, and bad values in chosen rows.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from pipelines.simulator.httpd import Request, Response, SimServer
from pipelines.simulator.world import Trip, World, _seed_of, address_of, xy_to_latlon

PATH = "/apidev/v1/reports/avl/trips"
MAX_RANGE = timedelta(days=31)
MAX_DEVICES = 500
MAX_LIMIT = 100
LOCAL_FMT = "%Y-%m-%dT%H:%M:%S"
# Share of vehicle-days with a report row that has no trip_start (a GPS-less ignition record).
ORPHAN_ROW_SHARE = 0.04
# Vehicles with no consumption rate configured: the API reports fuel and cost as 0.
UNCONFIGURED_FUEL_EVERY = 5


@dataclass(frozen=True)
class AvlRow:
    """One report row, plus its ground-truth sort key."""

    sort_key: tuple[datetime, str]
    body: dict[str, object]


@dataclass
class ReportFaults:
    """Faults in the report's content (the transport's are `SimServer.faults`).

    `values` maps a row's (device_name, trip_start) as the API would send it to fields to
    send instead, e.g. `{("Truck A-101", "2026-03-30T09:15:00"): {"fuel": "12,5"}}`; a float
    NaN or infinity goes out as JSON `NaN` / `Infinity`, as some servers write them.
    """

    stale_first_total: int | None = None  # `meta.total` of offset-0 pages: a cached, older count
    total_text: str | None = None  # `meta.total` of every page, e.g. "many"
    values: dict[tuple[str, str], dict[str, object]] = field(default_factory=dict)

    def apply(self, body: dict[str, object]) -> dict[str, object]:
        changes = self.values.get((str(body["device_name"]), str(body["trip_start"])))
        return {**body, **changes} if changes else body

    def total(self, real: int, offset: int) -> object:
        if self.total_text is not None:
            return self.total_text
        if self.stale_first_total is not None and offset == 0:
            return self.stale_first_total
        return real


def _parse_local(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


class AvlServer(SimServer):
    """The AVL tenant's report API over the shared world."""

    name = "avl"

    def __init__(
        self,
        world: World,
        *,
        token: str = "sim-avl-token",
        api_key: str = "sim-avl-key",
        tenant: str = "sim-tenant",
        timezone: str = "Europe/Tallinn",
        rate_limit: tuple[int, float] = (10, 60.0),
        clock: Callable[[], datetime] | None = None,
        forbidden: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.world = world
        self.token = token
        self.api_key = api_key
        self.tenant = tenant
        self.tz = ZoneInfo(timezone)
        self.timezone = timezone
        self.rate_limit = rate_limit
        self.clock = clock or (lambda: datetime.now(UTC))
        self.forbidden = forbidden
        self._window: deque[float] = deque()
        self._window_lock = threading.Lock()
        self.rate_limited = 0
        self.report_faults = ReportFaults()
        super().__init__(host, port)
        self._rows = lru_cache(maxsize=64)(self._rows_uncached)

    def _register_routes(self) -> None:
        self.route("GET", PATH, self._trips)

    def error(self, status: int, code: str, message: str) -> Response:
        return Response(status, {"success": False, "error": {"code": code, "message": message}})

    # --- rate limit -----------------------------------------------------------------------
    def _admit(self) -> float | None:
        """Sliding window over accepted requests; returns seconds to wait when full."""
        limit, window = self.rate_limit
        now = time.time()
        with self._window_lock:
            while self._window and self._window[0] <= now - window:
                self._window.popleft()
            if len(self._window) >= limit:
                self.rate_limited += 1
                return self._window[0] + window - now
            self._window.append(now)
            return None

    # --- handler --------------------------------------------------------------------------
    def _trips(self, req: Request) -> Response:
        auth = req.header("authorization")
        key = req.header("x-api-key")
        tenant = req.header("tenant")
        if not auth or not key or not tenant:
            return self.error(
                400, "BAD_REQUEST", "Missing required headers: Authorization, X-API-Key, tenant"
            )
        if auth != f"Bearer {self.token}" or key != self.api_key or tenant != self.tenant:
            return self.error(401, "UNAUTHORIZED", "Invalid or expired JWT / API Key")
        if self.forbidden:
            return self.error(403, "FORBIDDEN", "User lacks APICLI_RPTAVL_VIAJES permission")
        wait = self._admit()
        if wait is not None:
            resp = self.error(
                429, "RATE_LIMITED", f"Exceeded {self.rate_limit[0]} req/{self.rate_limit[1]:g}s"
            )
            resp.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            return resp
        problem, query = self._validate(req)
        if problem:
            return self.error(400, "VALIDATION_ERROR", problem)
        start, end, devices, idle_min, duration_min, limit, offset = query
        rows = self._rows(start, end, devices, idle_min, duration_min, self._cache_bucket())
        faults = self.report_faults
        page = [faults.apply(r.body) for r in rows[offset : offset + limit]]
        return Response(
            200,
            {
                "success": True,
                "data": page,
                "meta": {
                    "total": faults.total(len(rows), offset),
                    "limit": limit,
                    "offset": offset,
                },
            },
        )

    def _validate(self, req: Request) -> tuple[str | None, tuple]:
        raw_start, raw_end = req.arg("startdate"), req.arg("enddate")
        if not raw_start or not raw_end:
            return "startdate and enddate are required", ()
        start, end = _parse_local(raw_start), _parse_local(raw_end)
        if start is None or end is None:
            return "startdate/enddate must be ISO 8601 date-times (e.g. 2026-03-01T00:00:00)", ()
        start = start.astimezone(self.tz).replace(tzinfo=None) if start.tzinfo else start
        end = end.astimezone(self.tz).replace(tzinfo=None) if end.tzinfo else end
        if end < start:
            return "enddate must not be before startdate", ()
        if end - start > MAX_RANGE:
            return "date range exceeds 31 days", ()
        try:
            limit = int(req.arg("limit", "25") or 25)
            offset = int(req.arg("offset", "0") or 0)
            idle_min = int(req.arg("idle_min", "0") or 0)
            duration_min = int(req.arg("duration_min", "0") or 0)
        except ValueError:
            return "limit, offset, idle_min and duration_min must be integers", ()
        if not 1 <= limit <= MAX_LIMIT:
            return "limit must be between 1 and 100", ()
        if offset < 0 or idle_min < 0 or duration_min < 0:
            return "offset, idle_min and duration_min must not be negative", ()
        raw_devices = req.arg("devices")
        devices: tuple[str, ...] | None = None
        if raw_devices:
            devices = tuple(sorted({d.strip() for d in raw_devices.split(",") if d.strip()}))
            if len(devices) > MAX_DEVICES:
                return "at most 500 devices per request", ()
        return None, (start, end, devices, idle_min, duration_min, limit, offset)

    # --- the report -----------------------------------------------------------------------
    def _cache_bucket(self) -> int:
        """Like the real API, an identical query is answered from a 5-minute cache."""
        return int(self.clock().timestamp() // 300)

    def local(self, ts: datetime) -> datetime:
        return ts.astimezone(self.tz).replace(tzinfo=None)

    def _rows_uncached(
        self,
        start: datetime,
        end: datetime,
        devices: tuple[str, ...] | None,
        idle_min: int,
        duration_min: int,
        cache_bucket: int,
    ) -> list[AvlRow]:
        """Every row for the query, in the API's order (trip start, then device)."""
        now = self.clock()
        vehicles = [
            v
            for v in self.world.vehicles_of("avl")
            if devices is None or v.avl_device_id in devices
        ]
        # Local bounds to UTC with a day of slack either side; exact filter below is local.
        lo = datetime.combine(start.date() - timedelta(days=1), datetime.min.time(), UTC)
        hi = datetime.combine(end.date() + timedelta(days=2), datetime.min.time(), UTC)
        out: list[AvlRow] = []
        for v in vehicles:
            trips = [t for t in self.world.trips(lo, hi, [v.index]) if t.started_at <= now]
            for group in _merge_by_stop(trips, idle_min):
                row = self._row(v, group, now)
                if row is None:
                    continue
                local_start = self.local(group[0].started_at)
                if not (start <= local_start <= end):
                    continue
                if row.body["duration_min"] < duration_min:  # type: ignore[operator]
                    continue
                out.append(row)
            out.extend(self._orphan_rows(v, start, end, lo, hi, now))
        out.sort(key=lambda r: r.sort_key)
        return out

    def _row(self, vehicle, group: list[Trip], now: datetime) -> AvlRow | None:  # noqa: ANN001
        first, last = group[0], group[-1]
        finished = last.ended_at <= now
        distance = sum(t.distance_km for t in group)
        idle_s = sum(t.idle_s for t in group) + sum(
            (b.started_at - a.ended_at).total_seconds() for a, b in itertools.pairwise(group)
        )
        end_at = last.ended_at
        if not finished:  # in progress: what the device has reported so far, no end yet
            share = max(0.0, min(1.0, (now - first.started_at) / (end_at - first.started_at)))
            distance *= share
            idle_s *= share
            end_at = now
        duration_s = (end_at - first.started_at).total_seconds()
        fuel = sum(t.fuel_used_l(vehicle) for t in group) * (1.0 if finished else 0.0)
        configured = vehicle.index % UNCONFIGURED_FUEL_EVERY != UNCONFIGURED_FUEL_EVERY - 1
        slat, slon = first.start_latlon
        elat, elon = last.end_latlon
        body: dict[str, object] = {
            "device_name": vehicle.avl_device_name,
            "trip_start": self.local(first.started_at).strftime(LOCAL_FMT),
            "trip_start_address": first.start_address,
            "trip_start_lat": round(slat, 6),
            "trip_start_lon": round(slon, 6),
            "trip_end": self.local(last.ended_at).strftime(LOCAL_FMT) if finished else None,
            "trip_end_address": last.end_address if finished else None,
            "trip_end_lat": round(elat, 6) if finished else None,
            "trip_end_lon": round(elon, 6) if finished else None,
            "kms": round(distance, 1),
            "duration_min": round(duration_s / 60),
            "idle_min": round(idle_s / 60),
            "max_speed": round(max(t.max_speed_kmh for t in group)),
            "fuel": round(fuel, 2) if configured else 0,
            "cost": round(fuel * vehicle.fuel_price, 2) if configured else 0,
        }
        return AvlRow((first.started_at, vehicle.avl_device_name), body)

    def _orphan_rows(self, vehicle, start, end, lo, hi, now) -> list[AvlRow]:  # noqa: ANN001
        """Ignition records the tracker could not place: no trip_start, zero distance."""
        rows = []
        day = lo.date()
        while day < hi.date():
            rng = random.Random(_seed_of(self.world.seed, "avl-orphan", vehicle.index, day))
            if (
                self.world.start_day <= day <= self.world.end_day
                and rng.random() < ORPHAN_ROW_SHARE
            ):
                at = datetime.combine(day, datetime.min.time(), UTC) + timedelta(
                    seconds=rng.randint(6 * 3600, 20 * 3600)
                )
                local_at = self.local(at)
                if at <= now and start <= local_at <= end:
                    x, y = vehicle.home_xy
                    lat, lon = xy_to_latlon(x, y)
                    rows.append(
                        AvlRow(
                            (at, vehicle.avl_device_name),
                            {
                                "device_name": vehicle.avl_device_name,
                                "trip_start": None,
                                "trip_start_address": None,
                                "trip_start_lat": None,
                                "trip_start_lon": None,
                                "trip_end": local_at.strftime(LOCAL_FMT),
                                "trip_end_address": address_of(x, y),
                                "trip_end_lat": round(lat, 6),
                                "trip_end_lon": round(lon, 6),
                                "kms": 0,
                                "duration_min": 0,
                                "idle_min": 0,
                                "max_speed": 0,
                                "fuel": 0,
                                "cost": 0,
                            },
                        )
                    )
            day += timedelta(days=1)
        return rows

    # --- ground truth for tests -----------------------------------------------------------
    def expected_rows(
        self, start_local: datetime, end_local: datetime, idle_min: int = 0, duration_min: int = 0
    ) -> list[dict[str, object]]:
        rows = self._rows(
            start_local, end_local, None, idle_min, duration_min, self._cache_bucket()
        )
        return [r.body for r in rows]

    def accepted_request_times(self) -> list[float]:
        return [r.at for r in self.requests(PATH) if r.status != 429 and r.status < 500]


def _merge_by_stop(trips: list[Trip], idle_min: int) -> list[list[Trip]]:
    """With `idle_min` > 0 a trip only ends at a stop of at least that many minutes."""
    groups: list[list[Trip]] = []
    for trip in trips:
        if (
            groups
            and idle_min > 0
            and (trip.started_at - groups[-1][-1].ended_at) < timedelta(minutes=idle_min)
        ):
            groups[-1].append(trip)
        else:
            groups.append([trip])
    return groups


def env(server: AvlServer) -> dict[str, str]:
    return {
        "AVL_BASE_URL": server.url,
        "AVL_TOKEN": server.token,
        "AVL_API_KEY": server.api_key,
        "AVL_TENANT": server.tenant,
        "AVL_TIMEZONE": server.timezone,
        "AVL_RATE_LIMIT": f"{server.rate_limit[0]}/{server.rate_limit[1]:g}",
    }
