"""`raw/metrotec/*` end to end: real Dagster runs against the simulator over real HTTP,
compared with the World's ground truth."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pyarrow.parquet as pq
import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetKey,
    DagsterEventType,
    ExecuteInProcessResult,
    materialize,
)

from pipelines.cli.summaries import metrotec_line
from pipelines.definitions import build_defs
from pipelines.lake import QUARANTINE_SCHEMA, Lake
from pipelines.simulator.metrotec import IDLE_STOP_MIN_S, env
from pipelines.sources.metrotec.assets import (
    JOB_NAME,
    QUARANTINE_CHECK,
    SCHEDULE_NAME,
)
from pipelines.sources.metrotec.client import parse_time
from pipelines.sources.metrotec.values import hms_seconds
from tests.conftest import SIM_NOW
from tests.support.metrotec_support import DROP, ScriptedMetrotecServer, day_bounds, truth_trips

VEHICLES = AssetKey(["raw", "metrotec", "vehicles"])
TABLES = ("routelog", "stops", "refuels", "fuel_levels")
KEYS = {t: AssetKey(["raw", "metrotec", t]) for t in TABLES}
ALL = [VEHICLES, *KEYS.values()]
USER_AGENT = "AcmeFleet/2.1 (fleet-pipelines tests)"


@pytest.fixture
def metrotec_sim(world) -> Iterator[ScriptedMetrotecServer]:
    with ScriptedMetrotecServer(world, clock=lambda: SIM_NOW) as server:
        yield server


@pytest.fixture
def metrotec_env(fleet_env, metrotec_sim: ScriptedMetrotecServer, monkeypatch):
    for key, value in env(metrotec_sim).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("METROTEC_RATE_LIMIT", "1000/1")
    monkeypatch.setenv("METROTEC_USER_AGENT", USER_AGENT)
    return fleet_env


def run(selection: list[AssetKey], first: date, last: date | None = None) -> ExecuteInProcessResult:
    defs = build_defs()
    return materialize(
        list(defs.assets),
        resources=defs.resources,
        selection=selection,
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": (last or first).isoformat(),
        },
        raise_on_error=False,
    )


def metadata(result: ExecuteInProcessResult, key: AssetKey) -> dict:
    event = [e for e in result.get_asset_materialization_events() if e.asset_key == key][-1]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def day_metadata(result: ExecuteInProcessResult, key: AssetKey) -> dict[str, dict]:
    """Each partition's metadata for `key`, by day."""
    return {
        e.partition: {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
        if e.asset_key == key
    }


def failure_line(result: ExecuteInProcessResult) -> str:
    (event,) = result.get_step_failure_events()
    return event.step_failure_data.user_failure_data.description


def landed(env_, table: str) -> list[dict]:
    rows = Lake(env_.lake_dir).read("metrotec", table).drop_columns(["extracted_at"])
    return rows.to_pylist()


def test_a_backfill_lands_every_table_per_utc_day_matching_the_world(
    metrotec_env, metrotec_sim: ScriptedMetrotecServer
) -> None:
    first, last = date(2026, 2, 9), date(2026, 3, 15)  # 35 days: windows of 31 and 4 days
    result = run(ALL, first, last)
    assert result.success
    world = metrotec_sim.world
    vehicles = {v.metrotec_object_id: v for v in world.vehicles_of("metrotec")}
    lake = Lake(metrotec_env.lake_dir)

    # Route log: exactly the world's trips, to the second.
    trips = {(vehicles_id(world, t), t.started_at): t for t in truth_trips(world, first, last)}
    routelog = landed(metrotec_env, "routelog")
    assert len(routelog) == len(trips)
    for row in routelog:
        trip = trips[(row["objectID"], row["startTime"])]
        assert row["stopTime"] == trip.ended_at and row["day"] == trip.started_at.date()
        assert row["drivingTimeSeconds"] == round(trip.driving_s)
        assert row["routeLengthKM"] == pytest.approx(trip.distance_km, abs=0.006)

    # Stops: runningTime converted exactly; idle rows are the world's idle spans (≥ 60 s).
    stops = landed(metrotec_env, "stops")
    for row in stops:
        assert row["running_time_s"] == hms_seconds(row["runningTime"])
        assert row["running_time_s"] == (row["stopTime"] - row["startTime"]).total_seconds()
        assert row["fuel_is_code"] == (row["fuel"] == -2)
    spans = {
        (vehicles_id(world, t), span.started_at.replace(microsecond=0)): span
        for t in trips.values()
        for span in t.idle_spans(IDLE_STOP_MIN_S)
    }
    idling = [r for r in stops if r["running_time_s"] > 0]
    assert len(idling) == len(spans)
    for row in idling:
        span = (
            spans.get((row["objectID"], row["startTime"]))
            or spans[(row["objectID"], row["startTime"] - timedelta(seconds=1))]
        )
        assert abs(row["running_time_s"] - span.duration_s) <= 1
    assert any(r["fuel_is_code"] for r in stops)

    # Refuels and fuel levels: the world's refuels; a reading at each trip's engine on.
    start, end = day_bounds(first, last)
    refuels = landed(metrotec_env, "refuels")
    assert sorted((r["objectID"], r["startTime"], r["fuelAfterL"]) for r in refuels) == sorted(
        (vehicles_id(world, r), r.started_at, r.level_after_l) for r in world.refuels(start, end)
    )
    levels = landed(metrotec_env, "fuel_levels")
    assert all(r["GMTime"].date() == r["day"] for r in levels)
    level_at = {(r["objectID"], r["GMTime"]): r["fuel"] for r in levels}
    for (vid, started), trip in trips.items():
        assert level_at[(vid, started)] == pytest.approx(
            world.trip_state(trip).fuel_level_l, abs=0.06
        )

    # One file per table per day, and metadata that adds up.
    for table in TABLES:
        files = lake.files("metrotec", table)
        assert len(files) == 35 and all(f.name == "data.parquet" for f in files)
        meta = metadata(result, KEYS[table])
        days = day_metadata(result, KEYS[table])
        by_day = Counter(r["day"].isoformat() for r in landed(metrotec_env, table))
        assert len(days) == 35  # each day of the run: its own rows and file
        assert {d: m["rows"] for d, m in days.items()} == {d: by_day.get(d, 0) for d in days}
        assert all(m["files"] == 1 for m in days.values())
        assert meta["dagster/row_count"] == len(landed(metrotec_env, table))
        assert meta["vehicles"] == len(vehicles) and meta["api_windows"] == 2
        assert meta["quarantined_rows"] == 0 and meta["http_429s"] == 0
        assert meta["days_written"] == [(first + timedelta(days=i)).isoformat() for i in range(35)]
    snapshot = metadata(result, VEHICLES)
    assert snapshot["days_written"] == [snapshot["snapshot_day"]]
    checks = [c for c in result.get_asset_check_evaluations() if c.check_name == QUARANTINE_CHECK]
    assert {c.asset_key for c in checks} == set(ALL) and all(c.passed for c in checks)
    assert not lake.files("metrotec", "quarantine")
    # One request series per vehicle per window: one period request per endpoint, ≤ 31 days.
    for path in ("/api/routelog", "/api/routelog/stops", "/api/fuel/refuels"):
        series = Counter(
            (r.query["vehicle_id"][0], r.query["period_start"][0], r.query["period_stop"][0])
            for r in metrotec_sim.requests(path)
            if r.path == path
        )
        assert set(series.values()) == {1} and len(series) == 2 * len(vehicles)
        assert {(s, e) for _, s, e in series} == {
            ("2026-02-09 00:00:00", "2026-03-11 23:59:59"),
            ("2026-03-12 00:00:00", "2026-03-15 23:59:59"),
        }
    requests = sum(metadata(result, KEYS[t])["api_requests"] for t in TABLES)
    assert requests == metadata(result, KEYS["routelog"])["run_api_requests"]
    assert requests + metadata(result, VEHICLES)["api_requests"] == len(
        metrotec_sim.requests("/api")
    )
    summary = metrotec_line(result)
    assert f"routelog={len(routelog)} " in summary and f"stops={len(stops)} " in summary
    assert f"requests={len(metrotec_sim.requests('/api'))} 429s=0" in summary


def vehicles_id(world, thing) -> str:
    return world.vehicles[thing.vehicle_index].metrotec_object_id


def test_rematerializing_a_day_gives_identical_rows(metrotec_env) -> None:
    day = date(2026, 3, 4)
    assert run(ALL, day).success
    before = {t: landed(metrotec_env, t) for t in TABLES}
    files = {t: Lake(metrotec_env.lake_dir).files("metrotec", t) for t in TABLES}
    assert run(list(KEYS.values()), day).success
    assert {t: landed(metrotec_env, t) for t in TABLES} == before
    assert {t: Lake(metrotec_env.lake_dir).files("metrotec", t) for t in TABLES} == files
    assert all(before[t] for t in ("routelog", "stops", "fuel_levels"))


def test_days_and_vehicles_without_data_give_empty_partitions_not_errors(
    metrotec_env, metrotec_sim: ScriptedMetrotecServer
) -> None:
    world = metrotec_sim.world
    before_world = world.start_day - timedelta(days=1)  # a partition with no data at all
    # A weekend day on which some vehicle did not drive while others did.
    quiet_day, idle_vehicle = next(
        (day, v)
        for day in world.day_range()
        if day.weekday() >= 5 and day > world.start_day
        for v in world.vehicles_of("metrotec")
        if not world.trips_on(v.index, day)
        and any(world.trips_on(o.index, day) for o in world.vehicles_of("metrotec"))
    )
    assert run(ALL, before_world).success
    assert run(list(KEYS.values()), quiet_day).success
    lake = Lake(metrotec_env.lake_dir)
    for table in TABLES:
        empty = lake.partition_dir("metrotec", table, before_world) / "data.parquet"
        assert pq.read_table(empty).num_rows == 0
    routelog = landed(metrotec_env, "routelog")
    assert routelog and all(r["day"] == quiet_day for r in routelog)
    assert idle_vehicle.metrotec_object_id not in {r["objectID"] for r in routelog}
    asked = {r.query["vehicle_id"][0] for r in metrotec_sim.requests("/api/routelog")}
    assert idle_vehicle.metrotec_object_id in asked


def test_a_token_expiring_mid_backfill_is_renewed_and_no_request_fails_the_run(
    metrotec_env, metrotec_sim: ScriptedMetrotecServer
) -> None:
    metrotec_sim.expire_every = 6  # every 6th authenticated request finds its token lapsed
    first, last = date(2026, 3, 1), date(2026, 3, 10)
    result = run(ALL, first, last)
    assert result.success and not result.get_step_failure_events()
    counters = metrotec_sim.counters()
    assert metrotec_sim.expiries >= 5
    assert counters["unauthorized"] == metrotec_sim.expiries
    assert counters["logins"] == 2 + metrotec_sim.expiries  # one per step, one per lapse
    # The vehicles step makes one authenticated request: every lapse hit the tables' step.
    assert metadata(result, KEYS["routelog"])["reauthentications"] == metrotec_sim.expiries
    assert len(landed(metrotec_env, "routelog")) == len(
        truth_trips(metrotec_sim.world, first, last)
    )
    assert all(metadata(result, KEYS[t])["retries"] == 0 for t in TABLES)


def test_a_401_after_a_fresh_login_fails_the_run_with_one_line_and_keeps_the_lake(
    metrotec_env, metrotec_sim: ScriptedMetrotecServer
) -> None:
    day = date(2026, 3, 4)
    assert run(ALL, day).success
    before = {t: landed(metrotec_env, t) for t in TABLES}
    metrotec_sim.reject_tokens = True
    result = run(list(KEYS.values()), day)
    assert not result.success
    line = failure_line(result)
    assert line == (
        "Metrotec API GET /routelog failed: HTTP 401 UNAUTHORIZED: refused a token it had "
        "just issued; check the API rights of METROTEC_USERNAME"
    )
    assert {t: landed(metrotec_env, t) for t in TABLES} == before


def test_a_missing_password_fails_with_one_line_naming_it(
    metrotec_env, metrotec_sim: ScriptedMetrotecServer, monkeypatch
) -> None:
    monkeypatch.delenv("METROTEC_PASSWORD")
    result = run([VEHICLES], date(2026, 3, 4))
    assert not result.success
    assert failure_line(result) == "METROTEC_PASSWORD is not set (needed by raw/metrotec/vehicles)"
    assert metrotec_sim.requests("/api") == []


def test_the_tables_refuse_to_run_without_a_vehicle_snapshot(
    metrotec_env, metrotec_sim: ScriptedMetrotecServer
) -> None:
    result = run([KEYS["routelog"]], date(2026, 3, 4))
    assert not result.success
    assert failure_line(result).startswith("no raw/metrotec/vehicles snapshot in the lake")
    assert metrotec_sim.requests("/api") == []


def test_malformed_rows_are_quarantined_and_counted_the_rest_lands(
    metrotec_env, metrotec_sim: ScriptedMetrotecServer
) -> None:
    # In every route log answer, the first trip loses its startTime and the second's maxSpeed
    # is text: neither can land (no day; a speed that is no number), the rest does.
    metrotec_sim.damage = [
        ("routelog", 0, {"startTime": DROP}),
        ("routelog", 1, {"maxSpeed": "fast"}),
    ]
    first = last = date(2026, 3, 4)
    result = run([VEHICLES, KEYS["routelog"]], first, last)
    assert result.success
    per_vehicle = Counter(
        vehicles_id(metrotec_sim.world, t) for t in truth_trips(metrotec_sim.world, first, last)
    )
    second_trips = sum(n >= 2 for n in per_vehicle.values())
    meta = metadata(result, KEYS["routelog"])
    assert meta["quarantined_rows"] == len(per_vehicle) + second_trips
    assert meta["unparsed_values"] == 0
    assert meta["rows"] == sum(per_vehicle.values()) - len(per_vehicle) - second_trips
    rows = landed(metrotec_env, "routelog")
    assert len(rows) == meta["rows"] and all(r["maxSpeed"] is not None for r in rows)
    quarantined = Lake(metrotec_env.lake_dir).read("metrotec", "quarantine").to_pylist()
    assert len(quarantined) == meta["quarantined_rows"]
    assert Counter(q["reason"] for q in quarantined) == {
        "startTime is missing": len(per_vehicle),
        "maxSpeed: 'fast' is not a number": second_trips,
    }
    assert {q["vehicle_id"] for q in quarantined} == set(per_vehicle)
    assert {q["table"] for q in quarantined} == {"routelog"}


def quarantine_rows(env_) -> list[dict]:
    return Lake(env_.lake_dir).read("metrotec", "quarantine").to_pylist()


def check(result: ExecuteInProcessResult, key: AssetKey) -> AssetCheckEvaluation:
    (evaluation,) = [
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == key and e.check_name == QUARANTINE_CHECK
    ]
    return evaluation


def test_unreadable_values_are_quarantined_with_field_and_value_and_the_check_warns(
    metrotec_env, metrotec_sim: ScriptedMetrotecServer
) -> None:
    # A refuel volume with a decimal comma, a NaN fuel level (a bare token on the wire), a trip
    # whose stopTime is no time: each row is quarantined, never landed; its neighbours land.
    metrotec_sim.damage = [
        ("refuels", 0, {"fuelAfterL": "12,5"}),
        ("fuel_levels", 5, {"fuel": math.nan}),
        ("routelog", 0, {"stopTime": "2026-02-30 25:61:00"}),
    ]
    first, last = date(2026, 3, 2), date(2026, 3, 8)
    result = run(ALL, first, last)
    assert result.success
    rows = quarantine_rows(metrotec_env)
    by_table = Counter(r["table"] for r in rows)
    assert set(by_table) == {"refuels", "fuel_levels", "routelog"}
    expected = {
        "refuels": ("fuelAfterL", "12,5", "fuelAfterL: '12,5' is not a number"),
        "fuel_levels": ("fuel", "NaN", "fuel: 'NaN' is not a finite number"),
        "routelog": (
            "stopTime",
            "2026-02-30 25:61:00",
            "stopTime: '2026-02-30 25:61:00' is not a time (YYYY-MM-DD HH:MM:SS)",
        ),
    }
    for row in rows:
        assert (row["field"], row["value"], row["reason"]) == expected[row["table"]]
        assert row["quarantined_at"] is not None and row["vehicle_id"]
        payload = json.loads(row["payload"])
        assert first <= row["day"] <= last  # the row's own UTC day
        assert parse_time(payload.get("startTime") or payload["GMTime"]).date() == row["day"]
    for table in ("refuels", "fuel_levels", "routelog"):
        meta = metadata(result, KEYS[table])
        assert meta["quarantined_rows"] == by_table[table]
        evaluation = check(result, KEYS[table])
        assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.WARN
        assert evaluation.metadata["quarantined_rows"].value == by_table[table]
        for row in landed(metrotec_env, table):  # nothing unreadable reached a table
            assert all(math.isfinite(v) for v in row.values() if isinstance(v, float))
    assert check(result, KEYS["stops"]).passed and check(result, VEHICLES).passed
    # The files follow the convention, beside the tables, one per table and day.
    files = Lake(metrotec_env.lake_dir).files("metrotec", "quarantine")
    assert {f.name for f in files} == {f"{t}.parquet" for t in by_table}
    for path in files:
        assert pq.read_schema(path).names == [*QUARANTINE_SCHEMA.names, "vehicle_id"]
    levels = landed(metrotec_env, "fuel_levels")
    days = day_metadata(result, KEYS["fuel_levels"])
    assert levels and len(levels) == sum(m["rows"] for m in days.values())

    # Landing the days again from a healed API replaces their quarantine: nothing is left.
    metrotec_sim.damage = []
    again = run(list(KEYS.values()), first, last)
    assert again.success and all(check(again, KEYS[t]).passed for t in TABLES)
    assert not Lake(metrotec_env.lake_dir).files("metrotec", "quarantine")


def test_the_simulators_spoiled_values_are_exactly_what_is_quarantined(
    metrotec_env, metrotec_sim: ScriptedMetrotecServer
) -> None:
    first, last = date(2026, 3, 9), date(2026, 3, 12)
    assert run([VEHICLES], first).success
    metrotec_sim.bad_value_rate = 0.05
    result = run(list(KEYS.values()), first, last)
    assert result.success
    spoiled = {
        (table, vehicle, at, field_)
        for table, rows in metrotec_sim.spoiled.items()
        for (vehicle, at), (field_, _value) in rows.items()
        if first <= parse_time(at).date() <= last
    }
    assert {t for t, *_ in spoiled} >= {"routelog", "stops", "fuel_levels"}  # refuels are rare
    got = {
        (r["table"], r["vehicle_id"], json.loads(r["payload"]).get("startTime"), r["field"])
        for r in quarantine_rows(metrotec_env)
        if r["table"] != "fuel_levels"
    }
    got |= {
        (r["table"], r["vehicle_id"], json.loads(r["payload"])["GMTime"], r["field"])
        for r in quarantine_rows(metrotec_env)
        if r["table"] == "fuel_levels"
    }
    assert got == spoiled
    for table in TABLES:
        assert metadata(result, KEYS[table])["quarantined_rows"] == sum(
            1 for t, *_ in spoiled if t == table
        )


def test_429s_and_5xx_are_retried_counted_and_lose_nothing(
    metrotec_env, metrotec_sim: ScriptedMetrotecServer
) -> None:
    first, last = date(2026, 3, 2), date(2026, 3, 3)
    assert run([VEHICLES], first).success  # the snapshot, before the faults
    metrotec_sim.faults.update(next_429=1, next_5xx=2, next_cut=1)
    result = run(list(KEYS.values()), first, last)
    assert result.success
    retries = sum(metadata(result, KEYS[t])["retries"] for t in TABLES)
    assert retries == 4 and sum(metadata(result, KEYS[t])["http_429s"] for t in TABLES) == 1
    assert len(landed(metrotec_env, "routelog")) == len(
        truth_trips(metrotec_sim.world, first, last)
    )


def test_settings_reach_every_request_version_user_agent_and_paths(
    metrotec_env, world, monkeypatch
) -> None:
    paths = {"login": "auth/token", "vehicles": "v2/objects", "refuels": "v2/refills"}
    with ScriptedMetrotecServer(world, clock=lambda: SIM_NOW, paths=paths) as server:
        monkeypatch.setenv("METROTEC_BASE_URL", env(server)["METROTEC_BASE_URL"])
        monkeypatch.setenv("METROTEC_API_VERSION", "1.0.0")
        monkeypatch.setenv("METROTEC_PATH_LOGIN", "auth/token")
        monkeypatch.setenv("METROTEC_PATH_VEHICLES", "v2/objects")
        monkeypatch.setenv("METROTEC_PATH_REFUELS", "v2/refills")
        monkeypatch.setenv("METROTEC_WINDOW_DAYS", "7")
        result = run([VEHICLES, KEYS["refuels"]], date(2026, 3, 1), date(2026, 3, 10))
        log = server.requests("/api")
    assert result.success
    assert {r.path for r in log} == {"/api/auth/token", "/api/v2/objects", "/api/v2/refills"}
    assert {r.headers["accept"] for r in log} == {"application/json; version=1.0.0"}
    assert {r.headers["user-agent"] for r in log} == {USER_AGENT}
    periods = {(r.query["period_start"][0], r.query["period_stop"][0]) for r in log if r.query}
    assert periods == {
        ("2026-03-01 00:00:00", "2026-03-07 23:59:59"),
        ("2026-03-08 00:00:00", "2026-03-10 23:59:59"),
    }


def test_secrets_never_reach_the_lake_metadata_or_query_strings(
    metrotec_env, metrotec_sim: ScriptedMetrotecServer
) -> None:
    result = run(ALL, date(2026, 3, 4))
    assert result.success
    tokens = list(metrotec_sim._tokens)
    blob = b"".join(p.read_bytes() for p in metrotec_env.lake_dir.rglob("*.parquet"))
    text = " ".join(str(metadata(result, k)) for k in ALL)
    logs = " ".join(e.message or "" for e in result.all_events)
    for secret in [metrotec_sim.password, *tokens]:
        assert secret.encode() not in blob and secret not in text and secret not in logs
    for request in metrotec_sim.requests("/api"):
        assert metrotec_sim.password not in str(request.query)
        assert not any(t in str(request.query) for t in tokens)


def test_the_daily_job_refreshes_vehicles_first_then_repulls_the_last_two_days(
    metrotec_env, metrotec_sim: ScriptedMetrotecServer
) -> None:
    from dagster import build_schedule_context

    defs = build_defs()
    schedule = defs.resolve_schedule_def(SCHEDULE_NAME)
    tick = datetime(2026, 4, 1, 3, 45, tzinfo=UTC)
    (request,) = schedule.evaluate_tick(
        build_schedule_context(scheduled_execution_time=tick)
    ).run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "2026-03-30"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-03-31"
    assert schedule.job_name == JOB_NAME
    result = defs.resolve_job_def(JOB_NAME).execute_in_process(
        tags=request.tags, raise_on_error=False
    )
    assert result.success
    order = [
        e.step_key
        for e in result.all_events
        if e.event_type in (DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS)
        # the job also runs the assets' checks (anomaly warnings) after them
        and e.step_key in ("raw__metrotec__vehicles", "metrotec_activity")
    ]
    assert order == [
        "raw__metrotec__vehicles",
        "raw__metrotec__vehicles",
        "metrotec_activity",
        "metrotec_activity",
    ]
    assert [p.path for p in metrotec_sim.requests("/api")][:2] == ["/api/login", "/api/vehicles"]
    partitions = {
        e.partition
        for e in result.get_asset_materialization_events()
        if e.asset_key in KEYS.values()
    }
    assert partitions == {"2026-03-30", "2026-03-31"}
