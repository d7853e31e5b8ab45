"""`raw/avl/trips` lands only complete answers: a narrower re-pull keeps the day, paging ignores a
wrong `meta.total`, bad values are quarantined. Real Dagster runs against the simulator."""

from __future__ import annotations

import logging
import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq
import pytest
from dagster import (
    AssetCheckSeverity,
    DagsterInstance,
    ExecuteInProcessResult,
)

from pipelines.lake import Lake
from pipelines.settings import SettingError
from pipelines.simulator.avl import AvlServer
from pipelines.sources.avl.client import plan_windows
from pipelines.sources.avl.resources import AvlResource
from tests.integration.test_avl_asset import AVL_KEY, landed, metadata, run_avl, truth

TALLINN = ZoneInfo("Europe/Tallinn")
DAY = date(2026, 3, 30)
ALLOW = {"ops": {"raw__avl__trips": {"config": {"allow_narrower": True}}}}
FLOATS = ("trip_start_lat", "trip_start_lon", "trip_end_lat", "trip_end_lon", "kms")
FLOATS += ("duration_min", "idle_min", "max_speed", "fuel", "cost")


def failure(result: ExecuteInProcessResult):
    assert not result.success
    return result.get_step_failure_events()[0].step_failure_data.user_failure_data


def day_file(env, day: date = DAY):
    return Lake(env.lake_dir).partition_dir("avl", "trips", day) / "data.parquet"


def keys(rows: list[dict]) -> set[tuple[str, datetime]]:
    return {(r["device_name"], r["trip_start"]) for r in rows}


# ---- a re-pull never narrows a day silently ------------------------------------------------


def test_a_narrower_avl_devices_keeps_the_day_and_says_why_in_one_line(
    avl_env, avl_sim: AvlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_avl(DAY, DAY).success
    before, raw = landed(avl_env), day_file(avl_env).read_bytes()
    assert len({r["device_name"] for r in before}) >= 4

    monkeypatch.setenv("AVL_DEVICES", "1001")
    instance = DagsterInstance.ephemeral()
    result = run_avl(DAY, DAY, instance=instance)
    line = failure(result).description
    assert "\n" not in line
    assert "kept 1 day(s)" in line and "AVL_DEVICES=1001 asks for fewer" in line
    assert '{"ops": {"raw__avl__trips": {"config": {"allow_narrower": true}}}}' in line
    assert landed(avl_env) == before and day_file(avl_env).read_bytes() == raw
    warned = [
        e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING
    ]
    assert len([w for w in warned if "2026-03-30" in w]) == 1
    assert any(w.startswith("AVL kept 2026-03-30 as landed (") for w in warned)
    assert failure(result).metadata["days_written"].value == []


def test_an_unknown_device_id_answers_nothing_and_keeps_the_day(
    avl_env, avl_sim: AvlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_avl(DAY, DAY).success
    before = landed(avl_env)
    monkeypatch.setenv("AVL_DEVICES", "9999")
    line = failure(run_avl(DAY, DAY)).description
    assert f"2026-03-30 ({len(before)} rows kept, 0 answered): AVL_DEVICES=9999" in line
    assert landed(avl_env) == before and before


def test_an_answer_with_fewer_vehicles_or_none_keeps_the_day_with_the_same_settings(
    avl_env, avl_sim: AvlServer
) -> None:
    assert run_avl(DAY, DAY).success
    before = landed(avl_env)
    # The tenant suddenly sees the day only up to 07:00 UTC: rows, but not every vehicle.
    avl_sim.clock = lambda: datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
    line = failure(run_avl(DAY, DAY)).description
    assert "the answer has fewer vehicles than the day holds" in line
    avl_sim.clock = lambda: datetime(2026, 3, 29, 12, 0, tzinfo=UTC)  # ... and then nothing
    assert "the API answered no rows" in failure(run_avl(DAY, DAY)).description
    assert landed(avl_env) == before


def test_a_range_lands_every_other_day_and_records_only_those(
    avl_env, avl_sim: AvlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_avl(DAY, DAY).success
    before = [r for r in landed(avl_env) if r["day"] == DAY]
    monkeypatch.setenv("AVL_DEVICES", "1001")
    instance = DagsterInstance.ephemeral()
    result = run_avl(DAY - timedelta(days=1), DAY + timedelta(days=1), instance=instance)
    data = failure(result)
    assert "kept 1 day(s)" in data.description and "2 other day(s) landed" in data.description
    assert data.metadata["days_written"].value == ["2026-03-29", "2026-03-31"]
    assert data.metadata["days_kept"].value == ["2026-03-30"]
    rows = landed(avl_env)
    assert [r for r in rows if r["day"] == DAY] == before
    assert {r["device_name"] for r in rows if r["day"] != DAY} == {"Truck A-101"}
    assert instance.get_materialized_partitions(AVL_KEY) == {"2026-03-29", "2026-03-31"}


def test_allow_narrower_replaces_the_day_and_records_the_new_device_filter(
    avl_env, avl_sim: AvlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_avl(DAY, DAY).success
    recorded = pq.read_metadata(day_file(avl_env)).metadata
    assert recorded[b"avl.devices"] == b"all" and int(recorded[b"avl.rows"]) == len(landed(avl_env))
    monkeypatch.setenv("AVL_DEVICES", "1001")
    result = run_avl(DAY, DAY, run_config=ALLOW)
    assert result.success
    assert {r["device_name"] for r in landed(avl_env)} == {"Truck A-101"}
    assert metadata(result)["days_written"] == ["2026-03-30"]
    recorded = pq.read_metadata(day_file(avl_env)).metadata
    assert recorded[b"avl.devices"] == b"1001"
    assert recorded[b"avl.device_names"] == b'["Truck A-101"]'
    # Widening again needs no override.
    monkeypatch.setenv("AVL_DEVICES", "")
    assert run_avl(DAY, DAY).success
    assert keys(landed(avl_env)) == truth(avl_sim, DAY, DAY)


# ---- paging reads to the end whatever meta.total says -------------------------------------


def test_a_stale_total_on_the_first_page_still_lands_every_row(avl_env, avl_sim: AvlServer) -> None:
    first, last = date(2026, 3, 1), date(2026, 3, 10)
    (window,) = plan_windows([first + timedelta(days=i) for i in range(10)], TALLINN)
    real = len(avl_sim.expected_rows(window.startdate, window.enddate))
    avl_sim.report_faults.stale_first_total = 100
    result = run_avl(first, last)
    assert result.success
    assert keys(landed(avl_env)) == truth(avl_sim, first, last)
    meta = metadata(result)
    assert meta["rows_received"] == real
    assert meta["meta_total_mismatches"] == [
        {"window": "2026-03-01..2026-03-10", "claimed": [100, real], "read": real}
    ]
    assert meta["days_written"] == [(first + timedelta(days=i)).isoformat() for i in range(10)]


def test_a_total_that_is_not_a_number_is_counted_not_fatal(avl_env, avl_sim: AvlServer) -> None:
    avl_sim.report_faults.total_text = "many"
    result = run_avl(DAY, DAY)
    assert result.success
    assert keys(landed(avl_env)) == truth(avl_sim, DAY, DAY)
    meta = metadata(result)
    assert meta["meta_total_untrusted"] == meta["api_requests"] == 1
    assert meta["quarantined_rows"] == 0


# ---- bad values are quarantined, never landed, never fatal --------------------------------


def _a_trip(server: AvlServer) -> dict:
    (window,) = plan_windows([DAY], TALLINN)
    return next(
        r for r in server.expected_rows(window.startdate, window.enddate) if r["trip_start"]
    )


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("fuel", "12,5", "fuel: '12,5' is not a number"),
        ("fuel", float("nan"), "fuel: NaN is not a finite number"),
        ("kms", float("inf"), "kms: Infinity is not a finite number"),
        ("max_speed", "NaN", "max_speed: 'NaN' is not a number"),
        (
            "trip_start",
            "30/03/2026 09:15:00",
            "trip_start: '30/03/2026 09:15:00' is not an ISO 8601 date-time",
        ),
        ("device_name", None, "device_name: null is missing: the row has no vehicle"),
    ],
    ids=["comma-decimal", "json-nan", "json-infinity", "text-nan", "dd/mm/yyyy", "null-device"],
)
def test_a_bad_value_is_quarantined_with_its_reason_and_the_good_rows_land(
    avl_env, avl_sim: AvlServer, field: str, value: object, reason: str
) -> None:
    row = _a_trip(avl_sim)
    avl_sim.report_faults.values[(row["device_name"], row["trip_start"])] = {field: value}
    result = run_avl(DAY, DAY)
    assert result.success
    start = datetime.fromisoformat(row["trip_start"]).replace(tzinfo=TALLINN).astimezone(UTC)
    assert keys(landed(avl_env)) == truth(avl_sim, DAY, DAY) - {(row["device_name"], start)}
    for landed_row in landed(avl_env):
        assert all(v is None or math.isfinite(v) for v in map(landed_row.get, FLOATS))
    quarantine = Lake(avl_env.lake_dir).read("avl", "quarantine").to_pylist()
    assert [(q["table"], q["reason"], q["field"], q["day"]) for q in quarantine] == [
        ("trips", reason, field, DAY)
    ]
    assert row["trip_end"] in quarantine[0]["payload"]
    assert metadata(result)["quarantined_rows"] == 1
    (check,) = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "no_quarantined_rows"
    ]
    assert not check.passed and check.severity == AssetCheckSeverity.WARN


def test_a_clean_repull_removes_the_days_quarantine(avl_env, avl_sim: AvlServer) -> None:
    row = _a_trip(avl_sim)
    avl_sim.report_faults.values[(row["device_name"], row["trip_start"])] = {"fuel": "12,5"}
    assert run_avl(DAY, DAY).success
    assert Lake(avl_env.lake_dir).files("avl", "quarantine")
    avl_sim.report_faults.values.clear()
    result = run_avl(DAY, DAY)
    assert result.success and metadata(result)["quarantined_rows"] == 0
    assert Lake(avl_env.lake_dir).files("avl", "quarantine") == []
    assert keys(landed(avl_env)) == truth(avl_sim, DAY, DAY)


# ---- settings -------------------------------------------------------------------------------


def test_an_invalid_setting_fails_the_run_with_its_one_line(
    avl_env, avl_sim: AvlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def zone(self: AvlResource) -> ZoneInfo:
        raise SettingError("AVL_TIMEZONE='Mars/Base' is not a time zone (needed by raw/avl/trips)")

    monkeypatch.setattr(AvlResource, "zone", property(zone))
    line = failure(run_avl(DAY, DAY)).description
    assert line == "AVL_TIMEZONE='Mars/Base' is not a time zone (needed by raw/avl/trips)"
    assert avl_sim.requests() == []
