"""`raw/avl/trips` end to end: real Dagster runs against the simulator over real HTTP."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pyarrow.compute as pc
import pytest
from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult

from pipelines.definitions import build_defs
from pipelines.lake import Lake
from pipelines.simulator.avl import AvlServer
from pipelines.sources.avl.client import plan_windows
from tests.conftest import WORLD_END
from tests.support.runs import range_tags, run_assets

AVL_KEY = AssetKey(["raw", "avl", "trips"])
TALLINN = ZoneInfo("Europe/Tallinn")


def run_avl(
    first: date,
    last: date,
    run_config: dict | None = None,
    instance: DagsterInstance | None = None,
) -> ExecuteInProcessResult:
    return run_assets(
        [AVL_KEY],
        tags=range_tags(first, last),
        run_config=run_config,
        instance=instance,
        raise_on_error=False,
    )


def metadata(result: ExecuteInProcessResult) -> dict:
    event = result.get_asset_materialization_events()[-1]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def check_of(result: ExecuteInProcessResult, name: str):
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == name]
    return check


def truth(server: AvlServer, first: date, last: date) -> set[tuple[str, datetime]]:
    """(device_name, UTC start) of every real trip the API reports for those UTC days."""
    start = datetime.combine(first, datetime.min.time(), UTC)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC)
    return {
        (server.world.vehicles[t.vehicle_index].avl_device_name, t.started_at)
        for t in server.world.trips(start, end)
        if "avl" in server.world.vehicles[t.vehicle_index].sources
    }


def landed(env) -> list[dict]:
    table = Lake(env.lake_dir).read("avl", "trips")
    return (
        table.drop_columns(["extracted_at"])
        .sort_by([("trip_start", "ascending"), ("device_name", "ascending")])
        .to_pylist()
    )


def test_three_month_backfill_makes_zero_429s_and_the_minimum_requests(
    avl_env, avl_sim: AvlServer
) -> None:
    first, last = date(2026, 1, 1), date(2026, 3, 31)
    assert avl_sim.rate_limit == (
        10,
        3.0,
    )  # the simulator enforces 10 per 3 s, as does AVL_RATE_LIMIT
    result = run_avl(first, last)
    assert result.success
    windows = plan_windows([first + timedelta(days=i) for i in range(90)], TALLINN)
    # Paging ends on a short page: a window of n rows takes n // 100 + 1 requests (a full last
    # page is confirmed by an empty one; none of these windows is an exact multiple of 100).
    minimum = sum(len(avl_sim.expected_rows(w.startdate, w.enddate)) // 100 + 1 for w in windows)
    statuses = [r.status for r in avl_sim.requests()]
    assert statuses == [200] * minimum
    meta = metadata(result)
    assert meta["api_requests"] == minimum and meta["http_429s"] == 0 and meta["retries"] == 0
    rows = landed(avl_env)
    keys = {(r["device_name"], r["trip_start"]) for r in rows}
    assert len(keys) == len(rows)  # no duplicates
    assert keys == truth(avl_sim, first, last)
    orphans = sum(
        1
        for w in windows
        for r in avl_sim.expected_rows(w.startdate, w.enddate)
        if r["trip_start"] is None
    )
    assert orphans > 0 and meta["null_trip_start_rows"] == orphans
    # One materialization per day, each with that day's own figures (not the run's).
    days = day_metadata(result)
    assert len(days) == 90 and all(m["files"] == 1 and m["bytes"] > 0 for m in days.values())
    assert sum(m["rows"] for m in days.values()) == len(rows)
    assert meta["dagster/row_count"] == len(rows)


def day_metadata(result: ExecuteInProcessResult) -> dict[str, dict]:
    """Each partition's metadata, by day."""
    return {
        e.partition: {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }


def test_each_day_of_a_backfill_shows_its_own_rows_and_a_day_without_data_shows_zero(
    avl_env, avl_sim: AvlServer
) -> None:
    first, last = WORLD_END - timedelta(days=2), WORLD_END + timedelta(days=2)
    result = run_avl(first, last)
    assert result.success
    lake = Lake(avl_env.lake_dir)
    table = lake.read("avl", "trips")
    held = {d.isoformat(): n for d, n in Counter(table["day"].to_pylist()).items()}
    days = day_metadata(result)
    assert sorted(days) == [(first + timedelta(days=i)).isoformat() for i in range(5)]
    for day, meta in days.items():
        assert meta["rows"] == meta["dagster/partition_row_count"] == held.get(day, 0), day
    assert days[(WORLD_END + timedelta(days=1)).isoformat()]["rows"] == 0  # past the data
    assert days[WORLD_END.isoformat()]["rows"] > 0
    # The run's API figures and the table's size are the run's and the table's, said once each.
    assert {m["api_requests"] for m in days.values()} == {len(avl_sim.requests())}
    assert {m["dagster/row_count"] for m in days.values()} == {table.num_rows}


def test_rows_land_in_the_partition_of_their_utc_start_day(avl_env, avl_sim: AvlServer) -> None:
    assert run_avl(date(2026, 3, 20), date(2026, 3, 31)).success
    lake = Lake(avl_env.lake_dir)
    table = lake.read("avl", "trips")
    assert pc.all(pc.equal(pc.cast(table["trip_start"], "date32"), table["day"])).as_py()
    # Local timestamps were read in Europe/Tallinn (UTC+2, UTC+3 from 2026-03-29).
    for row in table.to_pylist():
        local = datetime.fromisoformat(row["trip_start_local"]).replace(tzinfo=TALLINN)
        assert local.astimezone(UTC) == row["trip_start"]
    assert len(lake.files("avl", "trips")) == 12


def test_rematerializing_a_range_gives_the_same_rows(avl_env, avl_sim: AvlServer) -> None:
    first, last = date(2026, 2, 10), date(2026, 2, 24)
    assert run_avl(first, last).success
    before = landed(avl_env)
    files_before = Lake(avl_env.lake_dir).files("avl", "trips")
    assert run_avl(first, last).success
    assert landed(avl_env) == before
    assert Lake(avl_env.lake_dir).files("avl", "trips") == files_before


def test_a_5xx_burst_and_cut_connections_lose_nothing_and_duplicate_nothing(
    avl_env, avl_sim: AvlServer
) -> None:
    first, last = date(2026, 2, 1), date(2026, 2, 20)
    avl_sim.faults.next_5xx = 3
    avl_sim.faults.next_cut = 2
    with DagsterInstance.ephemeral() as instance:
        result = run_avl(first, last, instance=instance)
        logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert result.success
    rows = landed(avl_env)
    keys = [(r["device_name"], r["trip_start"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert set(keys) == truth(avl_sim, first, last)
    assert metadata(result)["retries"] == 5
    # Each retry is in the run's own logs (the UI's), with its attempt number.
    retries = [m for m in logs if ", retrying in " in m]
    assert len(retries) == 5 and all(" of " in m and "attempt " in m for m in retries)
    assert any("HTTP 503" in m and "attempt 2 of" in m for m in retries), retries


@pytest.mark.parametrize("variable", ["AVL_TOKEN", "AVL_BASE_URL"])
def test_a_missing_credential_fails_the_run_with_one_line_naming_it(
    avl_env, avl_sim: AvlServer, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.delenv(variable)
    result = run_avl(date(2026, 3, 1), date(2026, 3, 1))
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert (
        failure.user_failure_data.description == f"{variable} is not set (needed by raw/avl/trips)"
    )
    assert avl_sim.requests() == []


def test_secrets_never_reach_the_lake_or_metadata(avl_env, avl_sim: AvlServer) -> None:
    result = run_avl(date(2026, 3, 30), date(2026, 3, 31))
    assert result.success
    blob = b"".join(p.read_bytes() for p in Lake(avl_env.lake_dir).files("avl", "trips"))
    text = str(metadata(result))
    for secret in (avl_sim.token, avl_sim.api_key):
        assert secret.encode() not in blob and secret not in text
    assert all("token" not in r.query for r in avl_sim.requests())


def test_daily_schedule_repulls_the_last_two_complete_days(fleet_env) -> None:
    from dagster import build_schedule_context

    schedule = build_defs().resolve_schedule_def("avl_trips_daily")
    context = build_schedule_context(
        scheduled_execution_time=datetime(2026, 4, 1, 3, 15, tzinfo=UTC)
    )
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "2026-03-30"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-03-31"


def test_a_trip_in_progress_is_landed_without_end_warned_and_completed_by_a_later_pull(
    avl_env, avl_sim: AvlServer
) -> None:
    day = date(2026, 3, 31)
    trip = avl_sim.world.trips(
        datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12),
        datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC),
    )[0]
    avl_sim.clock = lambda: trip.started_at + timedelta(minutes=2)
    first = run_avl(day, day)
    assert first.success
    check = check_of(first, "no_trips_in_progress")
    assert not check.passed and check.metadata["in_progress_trips"].value >= 1
    name = avl_sim.world.vehicles[trip.vehicle_index].avl_device_name
    row = next(
        r for r in landed(avl_env) if (r["device_name"], r["trip_start"]) == (name, trip.started_at)
    )
    assert row["trip_end"] is None

    avl_sim.clock = lambda: datetime(2026, 4, 1, 12, tzinfo=UTC)
    second = run_avl(day, day)
    assert check_of(second, "no_trips_in_progress").passed
    row = next(
        r for r in landed(avl_env) if (r["device_name"], r["trip_start"]) == (name, trip.started_at)
    )
    assert row["trip_end"] == trip.ended_at
