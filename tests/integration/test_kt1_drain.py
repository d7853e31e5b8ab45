"""`raw/kt1/*` end to end: real Dagster runs draining the simulated stream over real HTTP."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    DagsterRunStatus,
    ExecuteInProcessResult,
    build_schedule_context,
    instance_for_test,
)
from dagster._core.storage.dagster_run import DagsterRun

from pipelines.cli.summaries import kt1_line
from pipelines.lake import QUARANTINE_SCHEMA, Lake
from pipelines.simulator.httpd import Request, Response
from pipelines.simulator.kt1 import Kt1Server, env
from pipelines.sources.kt1.assets import QUEUE_TAG
from pipelines.sources.kt1.client import Kt1Client
from pipelines.sources.kt1.drain import SCHEMA_FILE, drain_lock, drain_stream
from pipelines.sources.kt1.schemas import QUARANTINE, TABLE_OF_TYPE, TABLES
from tests.conftest import settings_in
from tests.support.kt1_support import (
    BEFORE_ANY_DATA,
    TOKEN,
    bad_value,
    identities,
    identity,
    item_of,
    lake_rows,
    lands,
    metadata,
    run_drain,
    small_world,
    start_server,
)
from tests.support.polling import wait_for


def no_wait(seconds: float) -> None:
    """Retries back off for real in production; here the backoff itself is not under test."""


def canonical(items) -> list[str]:
    return sorted(json.dumps(i, sort_keys=True) for i in items)


class DurabilityWitness(Kt1Server):
    """A stream that, on every DELETE, looks in the lake for the batch it is asked to forget."""

    def __init__(self, *args, lake_dir: Path, **kwargs) -> None:
        self.lake_dir = lake_dir
        self.witnessed: list[tuple[str, int, int]] = []  # (batch id, items, rows on disk)
        super().__init__(*args, **kwargs)

    def _delete_batch(self, req: Request, batch_id: str) -> Response:
        batch = self._in_flight.get(batch_id)
        if batch is not None:
            on_disk = 0
            for table in (*TABLES, QUARANTINE):
                for path in Lake(self.lake_dir).files("kt1", table):
                    ids = pq.read_table(path, columns=["batch_id"]).column("batch_id")
                    on_disk += ids.to_pylist().count(batch_id)
            self.witnessed.append((batch_id, len(batch.items), on_disk))
        return super()._delete_batch(req, batch_id)


@pytest.fixture(scope="module")
def world():
    return small_world()


@dataclass
class Witnessed:
    server: DurabilityWitness
    result: ExecuteInProcessResult
    lake_dir: Path
    queued: int


@pytest.fixture(scope="module")
def witnessed(world, tmp_path_factory) -> Iterator[Witnessed]:
    """One real drain of a stream with 4% malformed items and 4% spoiled values (NaN,
    Infinity, "12,5", a date that is no date), shared by the read-only tests."""
    tmp = tmp_path_factory.mktemp("kt1-witnessed")
    with settings_in(tmp, clear=("KT1_", "FLEET_")):
        # Redelivery is not what this drain is about: a batch held past 1.5 s on a loaded
        # machine came back and was counted twice (deliveries > acks). Redelivery has its own
        # tests below.
        server = start_server(
            world,
            server_class=DurabilityWitness,
            lake_dir=tmp / "lake",
            batch_size=25,
            redelivery_s=120.0,
        )
        server.faults.malformed_rate = 0.04
        server.bad_value_rate = 0.04
        try:
            queued = server.pending()
            result = run_drain(server)
            yield Witnessed(server, result, tmp / "lake", queued)
        finally:
            server.stop()


@pytest.fixture
def empty_stream(world, fleet_env) -> Iterator[Kt1Server]:
    server = start_server(world, now=BEFORE_ANY_DATA)
    yield server
    server.stop()


def test_nothing_is_acknowledged_before_it_is_on_disk_and_every_item_lands(
    witnessed: Witnessed,
) -> None:
    server, result = witnessed.server, witnessed.result
    assert result.success
    stats = server.stats()
    assert stats["acks"] == stats["deliveries"] == len(server.witnessed) > 4
    for batch_id, items, on_disk in server.witnessed:
        assert on_disk == items, f"batch {batch_id} acknowledged with {on_disk}/{items} landed"
    assert server.pending() == server.in_flight() == 0
    # The lake holds exactly what was acknowledged, malformed and spoiled items included.
    landed = lake_rows(witnessed.lake_dir)
    kept = [item_of(r) for rows in landed.values() for r in rows]
    assert len(kept) == witnessed.queued
    assert canonical(kept) == canonical(server.acknowledged_items())
    assert stats["malformed_items"] > 0 and stats["bad_value_items"] > 0
    assert len(landed[QUARANTINE]) == stats["malformed_items"] + stats["bad_value_items"]


def test_metadata_reports_rows_files_bytes_requests_and_the_queue(witnessed: Witnessed) -> None:
    server, result = witnessed.server, witnessed.result
    landed = lake_rows(witnessed.lake_dir)
    stats = server.stats()
    for table in TABLES:
        meta = metadata(result, table)
        files = [p for p in Lake(witnessed.lake_dir).files("kt1", table) if p.stem != SCHEMA_FILE]
        assert meta["rows"] == len(landed[table])
        assert meta["files"] == len(files)
        assert meta["bytes"] == sum(p.stat().st_size for p in files)
    meta = metadata(result)
    assert meta["api_requests"] == len(server.requests("/v2/stream"))
    assert (meta["retries"], meta["http_429s"], meta["rate_limit_wait_s"]) == (0, 0, 0)
    assert meta["batches"] == meta["acks"] == stats["deliveries"]
    assert meta["items_received"] == meta["items_landed"] == stats["delivered_items"]
    assert meta["quarantined_items"] == len(landed[QUARANTINE])
    assert meta["quarantined_items"] == stats["malformed_items"] + stats["bad_value_items"]
    assert meta["rows_by_table"] == {t: len(rows) for t, rows in landed.items()}
    assert meta["stop_reason"] == "queue empty"
    assert meta["duplicate_items_in_run"] == 0 and meta["acks_expired"] == 0
    assert kt1_line(result).startswith(f"items={meta['items_landed']} (telemetry ")


def test_items_land_on_the_utc_day_of_their_own_timestamp(witnessed: Witnessed) -> None:
    lake = Lake(witnessed.lake_dir)
    stamp = {"telemetry": "date", "trips": "date_start", "events": "event_date", "changes": "date"}
    checked = 0
    for table, column in stamp.items():
        for path in lake.files("kt1", table):
            day = path.parent.name.removeprefix("day=")
            for value in pq.read_table(path, columns=[column]).column(column).to_pylist():
                assert value.astimezone(UTC).date().isoformat() == day
                checked += 1
    assert checked > 100


def test_rows_per_table_are_the_well_formed_items_of_each_type(witnessed: Witnessed) -> None:
    served = Counter(
        TABLE_OF_TYPE[item["type"]] if lands(item) else QUARANTINE
        for item in witnessed.server.acknowledged_items()
    )
    rows = metadata(witnessed.result)["rows_by_table"]
    assert rows == {t: served[t] for t in (*TABLES, QUARANTINE)}
    assert served["telemetry"] and served["trips"] and served["events"] and served[QUARANTINE]


def test_spoiled_values_are_quarantined_with_field_and_value_and_never_land(
    witnessed: Witnessed,
) -> None:
    served = witnessed.server.acknowledged_items()
    spoiled = [(i, problem) for i in served if (problem := bad_value(i)) is not None]
    problems = {p for _, p in spoiled}
    assert {v for _, v in problems} >= {"NaN", "Infinity", "12,5", "31.02.2024 25:61"}
    landed = lake_rows(witnessed.lake_dir)
    for table in TABLES:  # nothing spoiled reached a table, and every number there is finite
        assert all(bad_value(item_of(r)) is None for r in landed[table])
        for row in landed[table]:
            assert all(math.isfinite(v) for v in row.values() if isinstance(v, float))
    by_payload = {json.dumps(item_of(r), sort_keys=True): r for r in landed[QUARANTINE]}
    for item, (field, value) in spoiled:
        row = by_payload[json.dumps(item, sort_keys=True)]
        assert (row["table"], row["field"], row["value"]) == (
            TABLE_OF_TYPE[item["type"]],
            field,
            value,
        )
        assert row["reason"].startswith(f"{field}: '{value}' is not ")
    expected = Counter(TABLE_OF_TYPE[i["type"]] for i, _ in spoiled)
    for table in TABLES:
        quarantined = sum(
            1 for r in landed[QUARANTINE] if r["table"] == table
        )  # spoiled, or missing an id or date
        assert metadata(witnessed.result, table)["quarantined_rows"] == quarantined
        assert quarantined >= expected[table]


def test_quarantine_files_follow_the_lake_convention_outside_the_table_folders(
    witnessed: Witnessed,
) -> None:
    lake = Lake(witnessed.lake_dir)
    files = lake.files("kt1", QUARANTINE)
    assert files and all(
        f.parent.parent == witnessed.lake_dir / "kt1" / "quarantine" for f in files
    )
    columns = [*QUARANTINE_SCHEMA.names, "batch_id", "item_index", "fetched_at", "item_type"]
    for path in files:
        table = pq.read_table(path)
        assert table.schema.names == columns
        day = path.parent.name.removeprefix("day=")
        for row in table.to_pylist():  # on the item's own day when it has a readable one
            item = item_of(row)
            if identity(item) is not None:
                stamp = {"telemetry": "date", "trip": "dateStart", "event": "eventDate"}
                own = item.get(stamp.get(item["type"], "date"))
                assert datetime.fromisoformat(own).astimezone(UTC).date().isoformat() == day
    for table in TABLES:  # table folders hold only their own rows
        for path in lake.files("kt1", table):
            assert "reason" not in pq.read_schema(path).names


def test_the_quarantine_check_warns_on_each_table_that_lost_items(witnessed: Witnessed) -> None:
    checks = {
        e.asset_key.path[-1]: e
        for e in witnessed.result.get_asset_check_evaluations()
        if e.check_name == "no_quarantined_rows"
    }
    assert set(checks) == set(TABLES)
    for table, check in checks.items():
        meta = {k: v.value for k, v in check.metadata.items()}
        assert not check.passed and check.severity == AssetCheckSeverity.WARN
        assert meta["quarantined_rows"] == metadata(witnessed.result, table)["quarantined_rows"]
        assert meta["quarantine_dir"] == str(witnessed.lake_dir / "kt1" / "quarantine")


def test_days_written_lists_the_utc_days_of_each_tables_files(witnessed: Witnessed) -> None:
    lake = Lake(witnessed.lake_dir)
    for table in TABLES:
        days = sorted({p.parent.name.removeprefix("day=") for p in lake.files("kt1", table)})
        assert metadata(witnessed.result, table)["days_written"] == days
        assert days


def test_a_clean_drain_passes_the_quarantine_check_and_lists_only_its_days(
    world, fleet_env
) -> None:
    server = start_server(world, batch_size=50)
    try:
        first = run_drain(server)
        server.enqueue(
            [
                {
                    "type": "changenotification",
                    "operation": "update",
                    "date": "2023-01-02T03:04:05.000Z",  # an old day, landed again
                    "doc": {"id": "a1", "type": "asset"},
                }
            ]
        )
        second = run_drain(server)
    finally:
        server.stop()
    assert first.success and second.success
    for result in (first, second):
        checks = [
            e for e in result.get_asset_check_evaluations() if e.check_name == "no_quarantined_rows"
        ]
        assert len(checks) == len(TABLES) and all(c.passed for c in checks)
        assert all(metadata(result, t)["quarantined_rows"] == 0 for t in TABLES)
    assert metadata(second, "changes")["days_written"] == ["2023-01-02"]
    assert metadata(second, "telemetry")["days_written"] == []
    assert not Lake(fleet_env.lake_dir).files("kt1", QUARANTINE)


def test_the_token_never_reaches_logs_metadata_or_the_lake(
    world, fleet_env, monkeypatch, caplog
) -> None:
    server = start_server(world, batch_size=50)
    try:
        for key, value in env(server).items():  # the deployment path: KT1_TOKEN through EnvVar
            monkeypatch.setenv(key, value)
        with caplog.at_level(logging.DEBUG):
            result = run_drain()
    finally:
        server.stop()
    assert result.success
    texts = [caplog.text]
    texts += [str(e.message) for e in result.all_events]
    texts += [json.dumps(metadata(result, t), default=str) for t in TABLES]
    blob = b"".join(p.read_bytes() for p in fleet_env.lake_dir.rglob("*") if p.is_file())
    assert all(TOKEN not in text for text in texts)
    assert TOKEN.encode() not in blob
    assert all(r.query == {} for r in server.requests("/v2/stream"))


def test_an_empty_queue_ends_the_drain_cleanly_and_leaves_a_schema_file_per_table(
    empty_stream, fleet_env
) -> None:
    result = run_drain(empty_stream)
    assert result.success
    meta = metadata(result)
    assert meta["stop_reason"] == "queue empty" and meta["items_received"] == 0
    assert meta["api_requests"] == 1 and meta["retries"] == 0
    for table in TABLES:
        (path,) = Lake(fleet_env.lake_dir).files("kt1", table)
        assert path.stem == SCHEMA_FILE and pq.read_metadata(path).num_rows == 0
        assert metadata(result, table)["rows"] == 0


@pytest.mark.parametrize("variable", ["KT1_TOKEN", "KT1_BASE_URL"])
def test_a_missing_credential_fails_the_run_with_one_line_naming_it(
    empty_stream, fleet_env, monkeypatch, variable
) -> None:
    for key, value in env(empty_stream).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(variable)
    result = run_drain()
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert failure.user_failure_data.description == f"{variable} is not set (needed by raw/kt1/*)"
    assert empty_stream.requests("/v2/stream") == []


def test_the_time_budget_stops_a_drain_with_everything_taken_landed_and_acknowledged(
    empty_stream, fleet_env
) -> None:
    empty_stream.batch_size = 5
    empty_stream.fill_synthetic(20_000)  # thousands of round trips: far beyond the budget
    result = run_drain(empty_stream, drain_seconds=0.3)
    assert result.success
    meta = metadata(result)
    assert meta["stop_reason"] == "time budget spent"
    assert meta["acks"] == meta["batches"] > 0
    assert empty_stream.in_flight() == 0 and 0 < empty_stream.pending() < 20_000
    assert len(lake_rows(fleet_env.lake_dir, ["telemetry"])["telemetry"]) == meta["items_landed"]


def test_cut_responses_and_5xx_bursts_lose_nothing(world, fleet_env) -> None:
    server = start_server(world, batch_size=25)
    lake = Lake(fleet_env.lake_dir)
    client = Kt1Client(server.url, token=TOKEN, long_poll_s=server.long_poll_s, sleep=no_wait)
    try:
        expected = server.pending()
        server.faults.update(next_cut=2, next_5xx=3)
        first = drain_stream(client, lake, budget_s=30, group_max_batches=4)
        # The cut GETs took batches we never read: wait until they are redelivered.
        wait_for("no batch in flight", lambda: server.in_flight() == 0, 10, poll_s=0.05)
        second = drain_stream(client, lake, budget_s=30, group_max_batches=4)
    finally:
        client.close()
        server.stop()
    assert client.stats.retries == 5
    assert first.stop_reason == second.stop_reason == "queue empty"
    # The batches the cut GETs took come back in whichever drain runs after their redelivery.
    assert first.items + second.items >= expected
    assert server.stats()["redeliveries"] >= 1
    landed = lake_rows(fleet_env.lake_dir, TABLES)
    keys = identities(json.loads(r["item_json"]) for rows in landed.values() for r in rows)
    assert len(set(keys)) == expected  # nothing lost; copies are staging's job
    assert set(keys) == set(identities(server.acknowledged_items()))


def test_a_second_drain_waits_for_the_first_and_gives_up_with_one_line(
    empty_stream, fleet_env
) -> None:
    lake = Lake(fleet_env.lake_dir)
    with drain_lock(lake, wait_s=0):
        result = run_drain(empty_stream, drain_seconds=0.3)
    assert not result.success
    description = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert description.description.startswith("another kt1 drain is running on ")
    assert empty_stream.requests("/v2/stream") == []
    assert run_drain(empty_stream).success  # the lock went with its holder


def test_a_drain_waiting_for_the_lock_runs_once_it_is_free(empty_stream, fleet_env) -> None:
    lake = Lake(fleet_env.lake_dir)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with drain_lock(lake, wait_s=0):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    threading.Timer(0.3, release.set).start()
    result = run_drain(empty_stream, drain_seconds=30)
    holder.join()
    assert result.success and metadata(result)["api_requests"] == 1


def test_the_schedule_runs_every_5_minutes_and_skips_while_a_drain_is_in_progress(
    fleet_env,
) -> None:
    from pipelines.definitions import build_defs

    defs = build_defs()
    schedule = defs.resolve_schedule_def("kt1_drain_every_5_minutes")
    assert schedule.cron_schedule == "*/5 * * * *"
    job = defs.resolve_job_def(schedule.job_name)
    assert job.asset_layer.selected_asset_keys == {AssetKey(["raw", "kt1", t]) for t in TABLES}
    with instance_for_test() as instance:
        tick = datetime(2026, 4, 1, 12, 5, tzinfo=UTC)
        (request,) = schedule.evaluate_tick(
            build_schedule_context(instance=instance, scheduled_execution_time=tick)
        ).run_requests
        assert request.tags[QUEUE_TAG] == "kt1"
        instance.add_run(
            DagsterRun(
                job_name=schedule.job_name,
                status=DagsterRunStatus.STARTED,
                tags={QUEUE_TAG: "kt1"},
            )
        )
        data = schedule.evaluate_tick(
            build_schedule_context(instance=instance, scheduled_execution_time=tick)
        )
    assert data.run_requests == [] and "still queued or running" in data.skip_message


def test_the_drain_holds_the_kt1_stream_pool(fleet_env) -> None:
    from pipelines.definitions import build_defs

    drain = build_defs().resolve_assets_def(AssetKey(["raw", "kt1", "telemetry"]))
    assert drain.op.pool == "kt1_stream"
    assert drain.keys == {AssetKey(["raw", "kt1", t]) for t in TABLES}
