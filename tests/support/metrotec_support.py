"""Metrotec test helpers: a simulator with auth and payload knobs, and the truth to compare with.

The knobs only change what the reference leaves to the server (when a token stops being
accepted, how `expires` is expressed, where the endpoints live, a damaged row); everything
else is the shared simulator.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pipelines.simulator.httpd import Request, Response
from pipelines.simulator.metrotec import BASE_PATH, MetrotecServer
from pipelines.simulator.world import Trip, World

FMT = "%Y-%m-%d %H:%M:%S"


def ts(text: str) -> datetime:
    return datetime.strptime(text, FMT).replace(tzinfo=UTC)


def day_bounds(first: date, last: date) -> tuple[datetime, datetime]:
    start = datetime.combine(first, datetime.min.time(), UTC)
    return start, datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC)


class ScriptedMetrotecServer(MetrotecServer):
    """MetrotecServer plus test knobs.

    - `expire_every`: every N-th authenticated request first lapses every issued token (a
      token expiring mid-backfill, as the server sees it).
    - `reject_tokens`: every token is refused, fresh ones included.
    - `relative_expiry`: login answers `expires` as a TTL in seconds, not an epoch.
    - `paths`: endpoint paths under /api, to prove the client's are configurable.
    - `damage`: (path suffix, row index, changes) applied to one response row.
    """

    def __init__(
        self,
        world: World,
        *,
        paths: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.paths = {
            "login": "login",
            "vehicles": "vehicles",
            "routelog": "routelog",
            "stops": "routelog/stops",
            "refuels": "fuel/refuels",
            "fuel_levels": "fuel/levels",
            **(paths or {}),
        }
        self.expire_every: int | None = None
        self.reject_tokens = False
        self.relative_expiry = False
        self.damage: list[tuple[str, int, dict[str, Any]]] = []
        self.expiries = 0
        self._authed = 0
        self._knob_lock = threading.Lock()
        super().__init__(world, **kwargs)

    def _register_routes(self) -> None:
        b, p = BASE_PATH, self.paths
        self.route("POST", rf"{b}/{p['login']}", self._guard(self._login_knobbed, auth=False))
        for name, handler in (
            ("vehicles", self._vehicles),
            ("routelog", self._routelog),
            ("stops", self._stops),
            ("refuels", self._refuels),
            ("fuel_levels", self._fuel_levels),
        ):
            self.route("GET", rf"{b}/{p[name]}", self._guard(self._damaged(name, handler)))

    def _check_token(self, req: Request) -> Response | None:
        with self._knob_lock:
            self._authed += 1
            lapse = self.expire_every is not None and self._authed % self.expire_every == 0
        if lapse:
            self.expire_tokens()
            self.expiries += 1
        if self.reject_tokens:
            return self._unauthorized("auth token is not valid")
        return super()._check_token(req)

    def _login_knobbed(self, req: Request) -> Response:
        resp = self._login(req)
        if self.relative_expiry and resp.status == 200:
            resp.body["expires"] = int(self.token_ttl_s)
        return resp

    def _damaged(self, name: str, handler: Any) -> Any:
        def serve(req: Request) -> Response:
            resp = handler(req)
            for target, index, changes in self.damage:
                if target == name and resp.status == 200 and len(resp.body) > index:
                    row = dict(resp.body[index])
                    for key, value in changes.items():
                        if value is _DROP:
                            row.pop(key, None)
                        else:
                            row[key] = value
                    resp.body[index] = row
            return resp

        return serve


_DROP = object()
DROP = _DROP  # as a `damage` value: remove the key from the row


def truth_trips(world: World, first: date, last: date) -> list[Trip]:
    start, end = day_bounds(first, last)
    return [
        t for t in world.trips(start, end) if "metrotec" in world.vehicles[t.vehicle_index].sources
    ]
