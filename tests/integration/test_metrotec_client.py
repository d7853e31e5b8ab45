"""The Metrotec client against the simulator over real HTTP: headers, token life, paging.

Server and client share one hand-moved clock here, so token expiry is exercised without
waiting for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest

from pipelines.simulator.clock import ManualClock
from pipelines.simulator.metrotec import env
from pipelines.sources.metrotec.client import (
    MetrotecAuthError,
    MetrotecClient,
    MetrotecPaths,
    format_time,
)
from tests.conftest import SIM_NOW
from tests.support.metrotec_support import ScriptedMetrotecServer, day_bounds, ts

FIRST, LAST = date(2026, 3, 9), date(2026, 3, 11)
USER_AGENT = "AcmeFleet/2.1 (fleet-pipelines tests)"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(SIM_NOW)


@pytest.fixture
def server(world, clock: ManualClock) -> Iterator[ScriptedMetrotecServer]:
    with ScriptedMetrotecServer(world, clock=clock, token_ttl_s=600) as s:
        yield s


def make_client(
    server: ScriptedMetrotecServer, clock: ManualClock, *, api_version: str = "1.1.0", **kw
) -> MetrotecClient:
    variables = env(server)
    return MetrotecClient(
        variables["METROTEC_BASE_URL"],
        username=variables["METROTEC_USERNAME"],
        password=variables["METROTEC_PASSWORD"],
        api_version=api_version,
        user_agent=USER_AGENT,
        clock=lambda: clock.now.timestamp(),
        **kw,
    )


def vehicle_id(server: ScriptedMetrotecServer) -> str:
    return server.world.vehicles_of("metrotec")[0].metrotec_object_id


def test_every_request_including_login_carries_the_version_and_user_agent(
    server: ScriptedMetrotecServer, clock: ManualClock
) -> None:
    client = make_client(server, clock, api_version="1.0.0")
    start, end = day_bounds(FIRST, LAST)
    vid = vehicle_id(server)
    assert client.vehicles()
    assert client.routelog(vid, start, end - timedelta(seconds=1))
    assert client.stops(vid, start, end - timedelta(seconds=1))
    assert client.refuels(vid, start, end - timedelta(seconds=1)) is not None
    assert client.fuel_levels(vid, start, end)
    log = server.requests("/api")
    assert log[0].path == "/api/login" and len(log) >= 6
    assert {r.headers["accept"] for r in log} == {"application/json; version=1.0.0"}
    assert {r.headers["user-agent"] for r in log} == {USER_AGENT}
    assert all(r.status == 200 for r in log)


def test_period_parameters_are_utc_seconds_of_whole_days(
    server: ScriptedMetrotecServer, clock: ManualClock
) -> None:
    client = make_client(server, clock)
    start, end = day_bounds(FIRST, LAST)
    client.routelog(vehicle_id(server), start, end - timedelta(seconds=1))
    (request,) = server.requests("/api/routelog")
    assert request.query["period_start"] == ["2026-03-09 00:00:00"]
    assert request.query["period_stop"] == ["2026-03-11 23:59:59"]
    assert request.query["vehicle_id"] == [vehicle_id(server)]


@pytest.mark.parametrize("relative", [False, True], ids=["epoch-expires", "ttl-expires"])
def test_token_is_refreshed_before_it_expires_so_the_api_never_says_401(
    server: ScriptedMetrotecServer, clock: ManualClock, relative: bool
) -> None:
    server.relative_expiry = relative
    client = make_client(server, clock, refresh_margin_s=60)
    client.vehicles()
    assert server.counters()["logins"] == 1
    clock.advance(500)  # 100 s of life left: more than the margin
    client.vehicles()
    assert server.counters()["logins"] == 1
    clock.advance(45)  # 55 s left: inside the 60 s margin, refresh first
    client.vehicles()
    clock.advance(590)  # the second token would have lapsed here too
    client.vehicles()
    assert server.counters() == {"logins": 3, "unauthorized": 0, "tokens_issued": 3}
    assert client.reauthentications == 0


def test_a_token_lapsing_early_costs_one_relogin_and_the_request_still_succeeds(
    server: ScriptedMetrotecServer, clock: ManualClock
) -> None:
    client = make_client(server, clock)
    start, end = day_bounds(FIRST, LAST)
    vid = vehicle_id(server)
    before = client.routelog(vid, start, end - timedelta(seconds=1))
    server.expire_tokens()  # revoked server-side long before its `expires`
    assert client.routelog(vid, start, end - timedelta(seconds=1)) == before
    assert server.counters()["unauthorized"] == 1 and server.counters()["logins"] == 2
    assert client.reauthentications == 1


def test_a_401_right_after_a_fresh_login_fails_with_one_clear_line(
    server: ScriptedMetrotecServer, clock: ManualClock
) -> None:
    server.reject_tokens = True
    client = make_client(server, clock)
    with pytest.raises(MetrotecAuthError) as raised:
        client.vehicles()
    message = str(raised.value)
    assert message == (
        "Metrotec API GET /vehicles failed: HTTP 401 UNAUTHORIZED: refused a token it had just "
        "issued; check the API rights of METROTEC_USERNAME"
    )
    assert server.counters()["logins"] == 2  # the original login and exactly one more
    assert [r.status for r in server.requests("/api/vehicles")] == [401, 401]


def test_wrong_credentials_fail_at_login_without_echoing_them(
    server: ScriptedMetrotecServer, clock: ManualClock
) -> None:
    variables = env(server)
    client = MetrotecClient(
        variables["METROTEC_BASE_URL"],
        username="sim-user",
        password="not-the-password",
        api_version="1.1.0",
        user_agent=USER_AGENT,
    )
    with pytest.raises(MetrotecAuthError) as raised:
        client.vehicles()
    assert str(raised.value) == (
        "Metrotec API POST /login failed: HTTP 401 LOGIN_REFUSED: "
        "check METROTEC_USERNAME and METROTEC_PASSWORD"
    )
    assert [r.path for r in server.requests("/api")] == ["/api/login"]


def test_fuel_level_paging_covers_the_window_exactly_whatever_the_page_size(
    world, clock: ManualClock
) -> None:
    start, end = day_bounds(FIRST, LAST)
    with (
        ScriptedMetrotecServer(world, clock=clock, fuel_levels_page=40) as small,
        ScriptedMetrotecServer(world, clock=clock, fuel_levels_page=100_000) as big,
    ):
        vid = vehicle_id(small)
        paged = make_client(small, clock).fuel_levels(vid, start, end)
        whole = make_client(big, clock).fuel_levels(vid, start, end)
        pages = len(small.requests("/api/fuel/levels"))
    assert paged == whole and len(paged) > 100
    times = [ts(r["GMTime"]) for r in paged]
    assert times == sorted(set(times)) and start <= times[0] and times[-1] < end
    # Each page after the first re-reads only its boundary reading: ⌈n / 39⌉ pages or one more.
    assert pages <= -(-len(paged) // 39) + 1


def test_fuel_levels_stop_at_the_newest_reading(world, clock: ManualClock) -> None:
    with ScriptedMetrotecServer(world, clock=clock, fuel_levels_page=40) as server:
        start = datetime.combine(date(2026, 3, 31), datetime.min.time(), UTC)
        rows = make_client(server, clock).fuel_levels(
            vehicle_id(server), start, start + timedelta(days=7)
        )
        log = server.requests("/api/fuel/levels")
    newest = ts(rows[-1]["GMTime"])
    assert newest <= SIM_NOW
    # It stopped after a short page that brought nothing new (the newest second, re-read),
    # with no error and no further request.
    assert [r.status for r in log] == [200] * len(log)
    assert log[-1].query["start_from"] == [format_time(newest)]
    assert len(log) == -(-len(rows) // 39) + 1


@pytest.mark.parametrize("endpoint", ["routelog", "stops", "refuels", "fuel_levels"])
def test_an_unknown_vehicle_is_none_not_an_error(
    server: ScriptedMetrotecServer, clock: ManualClock, endpoint: str
) -> None:
    start, end = day_bounds(FIRST, LAST)
    fetch = getattr(make_client(server, clock), endpoint)
    assert fetch("NOPE00", start, end) is None


def test_endpoint_paths_are_configurable(world, clock: ManualClock) -> None:
    paths = {"login": "auth/token", "vehicles": "v2/objects", "routelog": "v2/route-log"}
    with ScriptedMetrotecServer(world, clock=clock, paths=paths) as server:
        client = make_client(
            server,
            clock,
            paths=MetrotecPaths(login="auth/token", vehicles="v2/objects", routelog="v2/route-log"),
        )
        start, end = day_bounds(FIRST, LAST)
        assert client.routelog(client.vehicles()[0]["id"], start, end - timedelta(seconds=1))
        assert {r.path for r in server.requests("/api")} == {
            "/api/auth/token",
            "/api/v2/objects",
            "/api/v2/route-log",
        }
