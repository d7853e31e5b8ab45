"""Metrotec API client: JWT login kept fresh, the versioned Accept header, per-vehicle periods.

Knows nothing of Dagster. Every request, login included, goes through the shared `ApiClient`
(one keep-alive session, retries, the machine-wide limiter) and carries
`Accept: application/json; version=<METROTEC_API_VERSION>` and our User-Agent, because the
API refuses unversioned production requests and asks integrations to identify themselves.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import requests

from pipelines.http import ApiClient, VendorAPIError
from pipelines.ratelimit import SlidingWindowLimiter
from pipelines.windows import day_runs

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # every time parameter and value: UTC, no offset
MAX_WINDOW_DAYS = 31
EPOCH_MIN = 1_000_000_000  # 2001-09-09: a smaller `expires` is a TTL in seconds, not an epoch
EPOCH_MS_MIN = 100_000_000_000  # a larger one is epoch milliseconds
DEFAULT_REFRESH_MARGIN_S = 60.0
MAX_FUEL_LEVEL_PAGES = 10_000  # per vehicle and window: only a server ignoring start_from gets here


@dataclass(frozen=True)
class MetrotecPaths:
    """Endpoint paths relative to METROTEC_BASE_URL (docs/metrotec.md has the defaults; env
    vars override)."""

    login: str = "login"
    vehicles: str = "vehicles"
    routelog: str = "routelog"
    stops: str = "routelog/stops"
    refuels: str = "fuel/refuels"
    fuel_levels: str = "fuel/levels"


class MetrotecAuthError(VendorAPIError):
    """The API refused our login, or a token it had just issued: retrying cannot help."""


@dataclass(frozen=True)
class Window:
    """Whole UTC days [first_day, last_day]; the API's periods are inclusive to the second."""

    first_day: date
    last_day: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first_day, datetime.min.time(), UTC)

    @property
    def end(self) -> datetime:
        """Exclusive end: midnight after `last_day`."""
        return datetime.combine(self.last_day + timedelta(days=1), datetime.min.time(), UTC)

    @property
    def stop(self) -> datetime:
        """The inclusive `period_stop`: the last second of `last_day`."""
        return self.end - timedelta(seconds=1)

    @property
    def days(self) -> list[date]:
        n = (self.last_day - self.first_day).days + 1
        return [self.first_day + timedelta(days=i) for i in range(n)]


def plan_windows(days: Sequence[date], max_days: int = MAX_WINDOW_DAYS) -> list[Window]:
    """Cover the days with the fewest windows of consecutive days, each at most `max_days`."""
    if not 1 <= max_days <= MAX_WINDOW_DAYS:
        raise ValueError(f"window must be 1..{MAX_WINDOW_DAYS} days, got {max_days}")
    return [Window(first, last) for first, last in day_runs(days, max_days)]


def format_time(ts: datetime) -> str:
    """A UTC parameter as the API wants it: `YYYY-MM-DD HH:MM:SS`."""
    if ts.tzinfo is None:
        raise ValueError(f"time {ts!r} has no zone; pass an aware UTC datetime")
    return ts.astimezone(UTC).strftime(TIME_FORMAT)


def parse_time(value: Any) -> datetime | None:
    """An API time as aware UTC; None for null/empty. Accepts ISO forms other endpoints use.

    Values without an offset are UTC (the reference: "Timestamps in the API are in UTC").
    Raises ValueError for anything else, so the row can be quarantined rather than guessed.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    text = value.strip()
    try:
        parsed = datetime.strptime(text, TIME_FORMAT)
    except ValueError:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def jwt_claims(token: str) -> dict[str, Any]:
    """The token's payload claims, unverified (only read to learn its lifetime); {} if opaque."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip():
        try:
            return float(value)
        except ValueError:
            try:
                parsed = parse_time(value)
            except ValueError:
                return None
            return parsed.timestamp() if parsed else None
    return None


def token_lifetime_s(expires: Any, token: str, sent_at: float) -> float | None:
    """How long a token just issued stays valid, in seconds; None when it cannot be known.

    `expires` may be an absolute epoch (seconds or milliseconds, or a UTC time string) or, in
    some deployments, a relative TTL: values below 10^9 are a TTL. An absolute epoch becomes a
    lifetime through the token's own `iat` claim when present, so a skewed local clock cannot
    make every token look expired on arrival; without `iat` it is measured against `sent_at`
    (our clock when the login was sent, which errs towards refreshing early). An unknown
    lifetime means: use the token until the API answers 401.
    """
    claims = jwt_claims(token)
    value = _number(expires)
    if value is None or value <= 0:
        exp, iat = _number(claims.get("exp")), _number(claims.get("iat"))
        return exp - iat if exp is not None and iat is not None and exp > iat else None
    if value < EPOCH_MIN:
        return value
    if value >= EPOCH_MS_MIN:
        value /= 1000.0
    iat = _number(claims.get("iat"))
    if iat is not None and 0 < iat < value:
        return value - iat
    lifetime = value - sent_at
    return lifetime if lifetime > 0 else None


@dataclass(frozen=True)
class _Token:
    jwt: str
    refresh_at: float | None  # our wall clock; None = until the API says 401


class MetrotecClient(ApiClient):
    """The Metrotec endpoints the fleet needs, with login handled out of sight.

    A token is refreshed on our wall clock `refresh_margin_s` before it expires (at most half
    its lifetime early, so short-lived tokens are still used). A 401 anyway (revoked, or the
    server's clock ran ahead) triggers one fresh login and a retry of that request; a 401 on
    the retry raises `MetrotecAuthError` with one line.
    """

    vendor = "Metrotec"

    def __init__(
        self,
        base_url: str,
        *,
        username: str,
        password: str,
        api_version: str,
        user_agent: str,
        paths: MetrotecPaths | None = None,
        limiter: SlidingWindowLimiter | None = None,
        refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S,
        clock: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            base_url,
            limiter=limiter,
            user_agent=user_agent,
            headers={"Accept": f"application/json; version={api_version}"},
            **kwargs,
        )
        self.paths = paths or MetrotecPaths()
        self.refresh_margin_s = refresh_margin_s
        self._username = username
        self._password = password
        self._clock = clock
        self._token: _Token | None = None
        self.logins = 0
        self.reauthentications = 0  # 401s answered with a fresh login

    # --- auth -------------------------------------------------------------------------------
    def login(self) -> None:
        """POST the credentials; keep the JWT and when to refresh it. Never logs either."""
        sent_at = self._clock()
        where = f"POST /{self.paths.login.lstrip('/')}"
        response = self.request(
            "POST",
            self.paths.login,
            json={"username": self._username, "password": self._password},
            passthrough=(401, 403),
        )
        if response.status_code in (401, 403):
            response.close()
            raise MetrotecAuthError(
                self.vendor,
                response.status_code,
                "LOGIN_REFUSED",
                "check METROTEC_USERNAME and METROTEC_PASSWORD",
                where,
            )
        body = self._json(response, where)
        token = body.get("jwt") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise VendorAPIError(
                self.vendor, response.status_code, "BAD_RESPONSE", "login answer has no jwt", where
            )
        lifetime = token_lifetime_s(body.get("expires"), token, sent_at)
        refresh_at = None
        if lifetime is not None:
            refresh_at = sent_at + lifetime - min(self.refresh_margin_s, lifetime / 2)
        self._token = _Token(token, refresh_at)
        self.logins += 1

    def _current_token(self) -> str:
        token = self._token
        if token is None or (token.refresh_at is not None and self._clock() >= token.refresh_at):
            self.login()
            token = self._token
            assert token is not None
        return token.jwt

    def get_rows(self, path: str, params: dict[str, str]) -> list[Any] | None:
        """GET a list endpoint with a valid token; None when the API says 404 (no such vehicle)."""
        where = f"GET /{path.lstrip('/')}"
        for attempt in (1, 2):
            response = self.request(
                "GET",
                path,
                params=params,
                headers={"Authorization": f"Bearer {self._current_token()}"},
                passthrough=(401, 404),
            )
            if response.status_code == 401:
                response.close()
                self._token = None
                if attempt == 1:
                    self.reauthentications += 1
                    continue
                raise MetrotecAuthError(
                    self.vendor,
                    401,
                    "UNAUTHORIZED",
                    "refused a token it had just issued; check the API rights of METROTEC_USERNAME",
                    where,
                )
            if response.status_code == 404:
                response.close()
                return None
            if response.status_code == 204 or not response.content:
                return []
            body = self._json(response, where)
            if isinstance(body, dict) and isinstance(body.get("data"), list):
                body = body["data"]
            if not isinstance(body, list):
                raise VendorAPIError(
                    self.vendor,
                    response.status_code,
                    "BAD_RESPONSE",
                    f"expected a JSON list, got {type(body).__name__}",
                    where,
                )
            return body
        raise AssertionError("unreachable")

    def _json(self, response: requests.Response, where: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise VendorAPIError(
                self.vendor, response.status_code, "BAD_JSON", "response body is not JSON", where
            ) from None

    # --- endpoints --------------------------------------------------------------------------
    def vehicles(self) -> list[Any]:
        rows = self.get_rows(self.paths.vehicles, {})
        if rows is None:
            raise VendorAPIError(
                self.vendor,
                404,
                "NOT_FOUND",
                "no vehicles endpoint here; check METROTEC_BASE_URL and METROTEC_PATH_VEHICLES",
                f"GET /{self.paths.vehicles}",
            )
        return rows

    def _period(
        self, path: str, vehicle_id: str, start: datetime, stop: datetime
    ) -> list[Any] | None:
        return self.get_rows(
            path,
            {
                "vehicle_id": vehicle_id,
                "period_start": format_time(start),
                "period_stop": format_time(stop),
            },
        )

    def routelog(self, vehicle_id: str, start: datetime, stop: datetime) -> list[Any] | None:
        """Trips that started in [start, stop] (both inclusive, whole seconds)."""
        return self._period(self.paths.routelog, vehicle_id, start, stop)

    def stops(self, vehicle_id: str, start: datetime, stop: datetime) -> list[Any] | None:
        """Stops (engine running, then engine off) that started in [start, stop]."""
        return self._period(self.paths.stops, vehicle_id, start, stop)

    def refuels(self, vehicle_id: str, start: datetime, stop: datetime) -> list[Any] | None:
        """Refuels that started in [start, stop]."""
        return self._period(self.paths.refuels, vehicle_id, start, stop)

    def fuel_levels(self, vehicle_id: str, start: datetime, end: datetime) -> list[Any] | None:
        """Fuel level readings with start <= GMTime < end, in the API's order.

        The endpoint only takes `start_from` and returns a page of readings from it onwards.
        The next page starts at the last GMTime seen (inclusive, dropping rows already taken),
        so two readings in one second are never skipped at a page boundary. A page that brings
        nothing new and is shorter than an earlier page means the log ends there; one as long
        (a whole page of one second) moves past that second. Paging also stops at the first
        reading at or past `end` and at an empty page, so it costs what `+1 s` paging would.
        Rows without a readable GMTime are passed on for the caller to quarantine. None when
        the API says 404 on the first page.
        """
        path = self.paths.fuel_levels
        rows: list[Any] = []
        start_from = start
        taken_at_boundary: set[str] = set()
        longest = 0  # the longest page so far: a shorter one is the end of the log
        for page_no in range(MAX_FUEL_LEVEL_PAGES):
            page = self.get_rows(
                path, {"vehicle_id": vehicle_id, "start_from": format_time(start_from)}
            )
            if page is None:
                return None if page_no == 0 else rows
            if not page:
                return rows
            last: datetime | None = None
            fresh = 0
            for row in page:
                key = json.dumps(row, sort_keys=True, default=str)
                if key in taken_at_boundary:
                    continue
                fresh += 1
                at = _reading_time(row)
                if at is not None:
                    last = at if last is None else max(last, at)
                    if at >= end:
                        continue
                rows.append(row)
            shorter = len(page) < longest
            longest = max(longest, len(page))
            if last is None:
                if fresh == 0:  # only the boundary second's rows again
                    if shorter:
                        return rows
                    start_from += timedelta(seconds=1)
                    taken_at_boundary = set()
                    continue
                raise VendorAPIError(
                    self.vendor,
                    200,
                    "BAD_RESPONSE",
                    "a page without a readable GMTime",
                    f"GET /{path}",
                )
            if last >= end:
                return rows
            if last < start_from:
                raise VendorAPIError(
                    self.vendor,
                    200,
                    "BAD_RESPONSE",
                    f"readings before start_from {format_time(start_from)}: paging cannot advance",
                    f"GET /{path}",
                )
            boundary = {
                json.dumps(row, sort_keys=True, default=str)
                for row in page
                if _reading_time(row) == last
            }
            taken_at_boundary = boundary | (taken_at_boundary if last == start_from else set())
            start_from = last
        raise VendorAPIError(
            self.vendor,
            200,
            "TOO_MANY_PAGES",
            f"more than {MAX_FUEL_LEVEL_PAGES} pages for one vehicle and window",
            f"GET /{path}",
        )


def _reading_time(row: Any) -> datetime | None:
    if not isinstance(row, dict):
        return None
    try:
        return parse_time(row.get("GMTime"))
    except ValueError:
        return None
