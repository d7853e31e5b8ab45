"""The simulated Metrotec API over real HTTP: headers, auth, payload shapes, and that every
endpoint is a faithful view of the World's ground truth."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise

import pytest
import requests

from pipelines.simulator.clock import ManualClock as Clock
from pipelines.simulator.metrotec import (
    BAD_TIME,
    FUEL_UNKNOWN,
    IDLE_STOP_MIN_S,
    MetrotecServer,
    env,
)
from pipelines.simulator.world import World

END_DAY = date(2025, 2, 14)
# Seed 10 gives this small fleet a few refuels inside its 7 days.
WORLD = World(seed=10, vehicles=4, days=7, end_day=END_DAY)
WORLD_START = datetime.combine(WORLD.start_day, datetime.min.time(), UTC)
WORLD_END = datetime.combine(END_DAY + timedelta(days=1), datetime.min.time(), UTC)
FMT = "%Y-%m-%d %H:%M:%S"
ACCEPT = "application/json; version=1.1.0"

ROUTELOG_KEYS = {
    "ID", "objectID", "startTime", "previousStopTime", "stopTime", "stopEnd", "routeLengthKM",
    "drivingTimeSeconds", "pauseTimeSeconds", "averageSpeed", "maxSpeed",
    "AddressAtStartingPoint", "AddressAtEndPoint", "status",
}  # fmt: skip
STOP_KEYS = {
    "ID", "objectID", "startTime", "stopTime", "stopEnd", "runningTime", "input", "status",
    "distance", "fuel", "required",
}  # fmt: skip
REFUEL_KEYS = {
    "ID", "objectID", "startTime", "stopTime", "maxTime", "fuelBeforeL", "fuelAfterL",
    "routeLengthKM", "fuelAddress", "required",
}  # fmt: skip
FUEL_LEVEL_KEYS = {
    "GMTime", "fuel", "lat", "lon", "input", "t1", "t2", "t3", "t4", "location", "required",
}  # fmt: skip
VEHICLE_KEYS = {
    "id", "extraDevices", "categoryID", "naviseade", "isDDD", "account_type", "Manufacture",
    "calcByM", "T1min", "T1max", "T2min", "T2max", "tank_vol", "barrel_type", "alias",
    "isPercent", "next_maintenance_km", "isOwn", "odometer_day", "odometer", "mode",
    "fuel_card_nr", "categoryName", "btime", "gps_refresh_interval", "is_fuel_as_pressure",
}  # fmt: skip


def ts(text: str) -> datetime:
    return datetime.strptime(text, FMT).replace(tzinfo=UTC)


class Client:
    """Just enough of a Metrotec client to exercise the server."""

    def __init__(self, server: MetrotecServer) -> None:
        self.base = env(server)["METROTEC_BASE_URL"]
        self.session = requests.Session()
        self.session.headers.update({"Accept": ACCEPT, "User-Agent": "fleet-pipelines-tests/1"})
        self.token: str | None = None

    def login(
        self, username: str = "sim-user", password: str = "sim-password"
    ) -> requests.Response:
        resp = self.session.post(
            f"{self.base}/login", json={"username": username, "password": password}
        )
        if resp.status_code == 200:
            self.token = resp.json()["jwt"]
        return resp

    def get(self, path: str, **params: str) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return self.session.get(f"{self.base}/{path}", params=params, headers=headers)

    def rows(self, path: str, **params: str) -> list[dict]:
        resp = self.get(path, **params)
        assert resp.status_code == 200, resp.text
        return resp.json()


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock(WORLD_END + timedelta(hours=6))


@pytest.fixture(scope="module")
def server(clock: Clock) -> Iterator[MetrotecServer]:
    with MetrotecServer(WORLD, clock=clock) as srv:
        yield srv


@pytest.fixture
def client(server: MetrotecServer) -> Client:
    c = Client(server)
    assert c.login().status_code == 200
    return c


def period(start: datetime, end: datetime, vehicle_id: str) -> dict[str, str]:
    """Inclusive Metrotec period covering [start, end)."""
    return {
        "vehicle_id": vehicle_id,
        "period_start": start.strftime(FMT),
        "period_stop": (end - timedelta(seconds=1)).strftime(FMT),
    }


VEHICLES = WORLD.vehicles_of("metrotec")


# --- headers and auth -----------------------------------------------------------------------
def test_env_points_at_the_api_root(server: MetrotecServer) -> None:
    variables = env(server)
    assert variables["METROTEC_BASE_URL"] == f"{server.url}/api"
    assert variables["METROTEC_API_VERSION"] == "1.1.0"
    assert {"METROTEC_USERNAME", "METROTEC_PASSWORD"} <= variables.keys()


@pytest.mark.parametrize(
    "accept", [None, "application/json", "application/json; version=9.9.9"],
    ids=["no-accept", "no-version", "unknown-version"],
)  # fmt: skip
def test_login_without_a_known_accept_version_is_400(
    server: MetrotecServer, accept: str | None
) -> None:
    headers = {"Accept": accept}  # None drops the header entirely
    resp = requests.post(
        f"{server.url}/api/login",
        json={"username": "sim-user", "password": "sim-password"},
        headers=headers,
    )
    assert resp.status_code == 400
    assert "version" in resp.json()["message"]


def test_data_requests_without_accept_version_are_400(client: Client) -> None:
    resp = client.session.get(
        f"{client.base}/vehicles",
        headers={"Accept": "application/json", "Authorization": f"Bearer {client.token}"},
    )
    assert resp.status_code == 400
    assert "version" in resp.json()["message"]


def test_older_known_version_is_accepted(server: MetrotecServer) -> None:
    c = Client(server)
    c.session.headers["Accept"] = "application/json; version=1.0.0"
    assert c.login().status_code == 200
    assert c.get("vehicles").status_code == 200


def test_login_returns_jwt_expiring_at_clock_plus_ttl(server: MetrotecServer, clock: Clock) -> None:
    c = Client(server)
    body = c.login().json()
    assert body["jwt"].count(".") == 2
    assert body["expires"] == int(clock.now.timestamp()) + int(server.token_ttl_s)


def test_login_with_bad_credentials_is_401(server: MetrotecServer) -> None:
    before = server.counters()["unauthorized"]
    assert Client(server).login(password="wrong").status_code == 401
    assert server.counters()["unauthorized"] == before + 1


@pytest.mark.parametrize(
    "authorization", [None, "Bearer", "Bearer not-a-token", "Basic c2ltOnNpbQ=="],
    ids=["missing", "empty", "garbage", "wrong-scheme"],
)  # fmt: skip
def test_requests_without_a_valid_token_are_401(
    server: MetrotecServer, authorization: str | None
) -> None:
    headers = {"Accept": ACCEPT}
    if authorization:
        headers["Authorization"] = authorization
    resp = requests.get(f"{server.url}/api/vehicles", headers=headers)
    assert resp.status_code == 401
    assert resp.json()["message"]


def test_token_expires_by_the_simulated_clock(server: MetrotecServer, clock: Clock) -> None:
    c = Client(server)
    c.login()
    saved = clock.now
    try:
        clock.now = saved + timedelta(seconds=server.token_ttl_s - 1)
        assert c.get("vehicles").status_code == 200
        clock.now = saved + timedelta(seconds=server.token_ttl_s)
        resp = c.get("vehicles")
        assert resp.status_code == 401
        assert "expired" in resp.json()["message"]
        assert c.login().status_code == 200
        assert c.get("vehicles").status_code == 200
    finally:
        clock.now = saved


def test_expire_tokens_lapses_every_issued_token(server: MetrotecServer) -> None:
    first, second = Client(server), Client(server)
    first.login()
    second.login()
    logins = server.counters()["logins"]
    assert server.expire_tokens() >= 2
    assert first.get("vehicles").status_code == 401
    assert second.get("vehicles").status_code == 401
    assert first.login().status_code == 200
    assert first.get("vehicles").status_code == 200
    assert server.counters()["logins"] == logins + 1


def test_every_request_is_logged_with_its_headers(server: MetrotecServer) -> None:
    server.reset_log()
    c = Client(server)
    c.login()
    c.get("vehicles")
    log = server.requests("/api")
    assert [r.path for r in log] == ["/api/login", "/api/vehicles"]
    assert all(r.headers["accept"] == ACCEPT for r in log)
    assert all(r.headers["user-agent"] == "fleet-pipelines-tests/1" for r in log)


# --- vehicles -------------------------------------------------------------------------------
def test_vehicles_have_the_reference_shape(client: Client) -> None:
    rows = client.rows("vehicles")
    assert [r["id"] for r in rows] == [v.metrotec_object_id for v in VEHICLES]
    for row, vehicle in zip(rows, VEHICLES, strict=True):
        assert set(row) == VEHICLE_KEYS
        assert row["alias"] == vehicle.display_name
        assert row["tank_vol"] == vehicle.tank_l
        assert row["odometer"] > 0
        assert 60 <= row["gps_refresh_interval"] <= 300


def test_trailing_slash_is_accepted(client: Client) -> None:
    assert client.get("vehicles/").status_code == 200


# --- route log ------------------------------------------------------------------------------
@pytest.mark.parametrize("vehicle", VEHICLES, ids=lambda v: v.metrotec_object_id)
def test_routelog_rows_are_the_world_trips_of_the_period(client: Client, vehicle) -> None:
    start, end = WORLD_START + timedelta(days=2), WORLD_START + timedelta(days=5)
    trips = WORLD.trips(start, end, [vehicle.index])
    rows = client.rows("routelog", **period(start, end, vehicle.metrotec_object_id))
    assert len(rows) == len(trips) > 0
    for row, trip in zip(rows, trips, strict=True):
        assert set(row) == ROUTELOG_KEYS
        assert row["objectID"] == vehicle.metrotec_object_id
        assert ts(row["startTime"]) == trip.started_at
        assert ts(row["stopTime"]) == trip.ended_at
        assert row["routeLengthKM"] == pytest.approx(trip.distance_km, abs=0.006)
        assert row["drivingTimeSeconds"] == pytest.approx(trip.driving_s, abs=0.51)
        assert row["averageSpeed"] == pytest.approx(trip.avg_speed_kmh, abs=0.006)
        assert row["AddressAtStartingPoint"] == trip.start_address
        assert row["pauseTimeSeconds"] == (ts(row["stopEnd"]) - trip.ended_at).total_seconds()
    # Parking chains trips: each trip's stopEnd is the next one's start.
    for previous, row in pairwise(rows):
        assert row["previousStopTime"] == previous["stopTime"]
        assert previous["stopEnd"] == row["startTime"]
    assert len({r["ID"] for r in rows}) == len(rows)


def test_routelog_ids_are_stable_across_servers(client: Client, clock: Clock) -> None:
    params = period(WORLD_START, WORLD_END, VEHICLES[0].metrotec_object_id)
    with MetrotecServer(World(seed=10, vehicles=4, days=7, end_day=END_DAY), clock=clock) as other:
        again = Client(other)
        again.login()
        assert again.rows("routelog", **params) == client.rows("routelog", **params)


def test_routelog_hides_trips_not_ended_by_the_clock(client: Client, clock: Clock) -> None:
    vehicle = VEHICLES[1]
    trip = WORLD.trips(WORLD_START + timedelta(days=3), WORLD_END, [vehicle.index])[0]
    params = period(WORLD_START, WORLD_END, vehicle.metrotec_object_id)
    saved = clock.now
    try:
        clock.now = trip.ended_at - timedelta(seconds=1)  # driving: the trip is not reported yet
        rows = client.rows("routelog", **params)
        assert all(ts(r["stopTime"]) <= clock.now for r in rows)
        assert ts(rows[-1]["startTime"]) < trip.started_at
        assert ts(rows[-1]["stopEnd"]) == trip.started_at
        clock.now = trip.started_at - timedelta(seconds=1)  # parked: the pause has no end yet
        last = client.rows("routelog", **params)[-1]
        assert last["stopEnd"] is None and last["pauseTimeSeconds"] is None
    finally:
        clock.now = saved


# --- stops ----------------------------------------------------------------------------------
def test_stops_have_engine_running_rows_for_idles_and_engine_off_rows_between_trips(
    client: Client,
) -> None:
    unknown_fuel = 0
    for vehicle in VEHICLES:
        trips = WORLD.trips(WORLD_START, WORLD_END, [vehicle.index])
        rows = client.rows(
            "routelog/stops", **period(WORLD_START, WORLD_END, vehicle.metrotec_object_id)
        )
        assert all(set(r) == STOP_KEYS for r in rows)
        running = [r for r in rows if r["runningTime"] != "00:00:00"]
        parked = [r for r in rows if r["runningTime"] == "00:00:00"]
        spans = [s for t in trips for s in t.idle_spans(IDLE_STOP_MIN_S)]
        assert len(running) == len(spans)
        for row, span in zip(running, spans, strict=True):
            assert abs((ts(row["startTime"]) - span.started_at).total_seconds()) <= 0.5
            assert abs((ts(row["stopTime"]) - span.ended_at).total_seconds()) <= 0.5
            h, m, s = map(int, row["runningTime"].split(":"))
            assert h * 3600 + m * 60 + s == (ts(row["stopTime"]) - ts(row["startTime"])).seconds
            assert row["input"] & 1 and row["distance"] == 0
        assert [ts(r["startTime"]) for r in parked] == [t.ended_at for t in trips]
        for row, nxt in zip(parked, trips[1:], strict=False):
            assert row["startTime"] == row["stopTime"]
            assert ts(row["stopEnd"]) == nxt.started_at
            assert not row["input"] & 1
        assert parked[-1]["stopEnd"] is None  # still parked at the end of the world
        unknown_fuel += sum(r["fuel"] == FUEL_UNKNOWN for r in rows)
    assert unknown_fuel > 0  # the reference's "-2 = unknown" code appears


# --- refuels --------------------------------------------------------------------------------
def test_refuels_match_the_world(client: Client) -> None:
    total = 0
    for vehicle in VEHICLES:
        truth = WORLD.refuels(WORLD_START, WORLD_END, [vehicle.index])
        rows = client.rows(
            "fuel/refuels", **period(WORLD_START, WORLD_END, vehicle.metrotec_object_id)
        )
        assert len(rows) == len(truth)
        for row, refuel in zip(rows, truth, strict=True):
            assert set(row) == REFUEL_KEYS
            assert ts(row["startTime"]) == refuel.started_at
            assert ts(row["maxTime"]) == ts(row["stopTime"]) == refuel.ended_at
            assert row["fuelAfterL"] - row["fuelBeforeL"] == pytest.approx(refuel.volume_l)
            assert row["routeLengthKM"] == refuel.distance_since_last_km
        total += len(rows)
    assert total >= 2


# --- fuel levels ----------------------------------------------------------------------------
def page_through(
    client: Client, vehicle_id: str, start: datetime, end: datetime
) -> tuple[list[dict], list[int]]:
    """The client's paging: next start_from = last GMTime + 1 s until past the period end."""
    rows: list[dict] = []
    sizes: list[int] = []
    start_from = start
    while start_from < end:
        page = client.rows(
            "fuel/levels", vehicle_id=vehicle_id, start_from=start_from.strftime(FMT)
        )
        sizes.append(len(page))
        if not page:
            break
        rows.extend(r for r in page if ts(r["GMTime"]) < end)
        start_from = ts(page[-1]["GMTime"]) + timedelta(seconds=1)
    return rows, sizes


def test_fuel_level_paging_covers_a_period_without_duplicates_or_gaps(clock: Clock) -> None:
    vehicle = next(v for v in VEHICLES if WORLD.refuels(vehicle_indexes=[v.index]))
    refuel = WORLD.refuels(vehicle_indexes=[vehicle.index])[0]
    start, end = WORLD_START + timedelta(days=1), WORLD_END
    with (
        MetrotecServer(WORLD, clock=clock, fuel_levels_page=40) as small,
        MetrotecServer(WORLD, clock=clock, fuel_levels_page=100_000) as big,
    ):
        paged_client, whole_client = Client(small), Client(big)
        paged_client.login()
        whole_client.login()
        paged, sizes = page_through(paged_client, vehicle.metrotec_object_id, start, end)
        everything = whole_client.rows(
            "fuel/levels", vehicle_id=vehicle.metrotec_object_id, start_from=start.strftime(FMT)
        )
    assert max(sizes) == 40 and len(sizes) > 3
    assert paged == everything
    times = [ts(r["GMTime"]) for r in paged]
    assert times == sorted(set(times))  # strictly ascending: no duplicates
    assert times[0] >= start and times[-1] <= clock.now
    assert all(set(r) == FUEL_LEVEL_KEYS for r in paged)
    # Never more than an hour without a point, so parked time is covered too.
    assert max(b - a for a, b in pairwise(times)) <= timedelta(hours=1)
    # The level jumps up at the refuel.
    at = {ts(r["GMTime"]): r["fuel"] for r in paged}
    assert at[refuel.ended_at] == pytest.approx(refuel.level_after_l)
    assert at[refuel.started_at] < at[refuel.ended_at]
    # Points while driving follow the trip's fuel burn.
    trip = WORLD.trips(start, end, [vehicle.index])[0]
    assert at[trip.started_at] >= at[trip.ended_at]


def test_fuel_levels_stop_at_the_clock(client: Client, clock: Clock) -> None:
    vehicle_id = VEHICLES[2].metrotec_object_id
    saved = clock.now
    try:
        clock.now = WORLD_START + timedelta(days=2, hours=12)
        rows, _ = page_through(client, vehicle_id, WORLD_START + timedelta(days=2), WORLD_END)
        assert rows and ts(rows[-1]["GMTime"]) <= clock.now
    finally:
        clock.now = saved


# --- parameter errors and empty results -----------------------------------------------------
@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("routelog", {"period_start": "2025-02-10T00:00:00", "period_stop": "2025-02-10 23:59:59"}),
        ("routelog/stops", {"period_start": "2025-02-10", "period_stop": "2025-02-10 23:59:59"}),
        ("fuel/refuels", {"period_start": "2025-02-10 00:00:00"}),
        ("routelog", {"period_start": "2025-02-11 00:00:00", "period_stop": "2025-02-10 00:00:00"}),
        ("fuel/levels", {"start_from": "yesterday"}),
        ("fuel/levels", {}),
    ],
    ids=[
        "iso-t",
        "date-only",
        "missing-stop",
        "stop-before-start",
        "levels-garbage",
        "levels-missing",
    ],
)
def test_malformed_or_missing_times_are_400(client: Client, path: str, params: dict) -> None:
    resp = client.get(path, vehicle_id=VEHICLES[0].metrotec_object_id, **params)
    assert resp.status_code == 400
    assert resp.json()["message"]


@pytest.mark.parametrize("path", ["routelog", "routelog/stops", "fuel/refuels", "fuel/levels"])
def test_unknown_vehicle_is_404(client: Client, path: str) -> None:
    params = period(WORLD_START, WORLD_END, "NOPE00")
    params["start_from"] = params["period_start"]
    resp = client.get(path, **params)
    assert resp.status_code == 404
    assert "NOPE00" in resp.json()["message"]


@pytest.mark.parametrize("path", ["routelog", "routelog/stops", "fuel/refuels", "fuel/levels"])
def test_a_period_without_data_is_an_empty_list(client: Client, path: str) -> None:
    start = WORLD_START - timedelta(days=30)
    params = period(start, start + timedelta(days=1), VEHICLES[0].metrotec_object_id)
    params["start_from"] = (WORLD_END + timedelta(days=1)).strftime(FMT)
    assert client.rows(path, **params) == []


# --- spoiled values -------------------------------------------------------------------------
def test_bad_value_rate_spoils_that_share_of_rows_raw_and_the_same_rows_again(clock: Clock) -> None:
    with MetrotecServer(WORLD, clock=clock) as spoiling:
        c = Client(spoiling)
        assert c.login().status_code == 200
        faults = c.session.post(f"{spoiling.url}/_sim/faults", json={"bad_value_rate": 0.25})
        assert faults.status_code == 200 and spoiling.bad_value_rate == 0.25
        vehicle = VEHICLES[0].metrotec_object_id
        params = period(WORLD_START, WORLD_END, vehicle)
        first = c.get("routelog", **params)
        again = c.get("routelog", **params)
        levels = c.get("fuel/levels", vehicle_id=vehicle, start_from=WORLD_START.strftime(FMT))
    assert first.text == again.text  # chosen by content: asking again gives the same faults
    assert ":NaN" in levels.text or ":Infinity" in levels.text  # bare tokens, not strings
    rows = first.json()
    spoiled = spoiling.spoiled["routelog"]
    assert 0.1 * len(rows) < len(spoiled) < 0.4 * len(rows)
    kinds = Counter()
    for row in rows:
        hit = spoiled.get((vehicle, row["startTime"]))
        if hit is None:
            assert isinstance(row["routeLengthKM"], float) and math.isfinite(row["routeLengthKM"])
            continue
        name, value = hit
        assert row[name] == value or (value != value and row[name] != row[name])
        kinds["NaN" if value != value else str(value)] += 1
    assert set(kinds) <= {"NaN", "inf", "12,5", BAD_TIME} and len(kinds) >= 3
    assert all(set(r) == ROUTELOG_KEYS for r in rows)  # the shape stays intact
