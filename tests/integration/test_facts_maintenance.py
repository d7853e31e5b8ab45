"""Facts maintenance on a real DuckLake catalog: old snapshots and the files only they needed
go, the facts readers see stay exactly as they were, and time travel within the retention works."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from pipelines.facts import ALIAS, FactsCatalog, attach, connect, mark_build
from pipelines.facts_maintenance import facts_maintenance, maintain


def _catalog(tmp_path: Path) -> FactsCatalog:
    return FactsCatalog.of(f"sqlite:{tmp_path / 'cat.sqlite'}", str(tmp_path / "facts"))


def _build(catalog: FactsCatalog, rounds: int) -> None:
    """`rounds` builds of a small fct_trips, each replacing one day, each ending with a
    marker as a dbt build does; then a half build (no marker), as a killed build leaves."""
    con = duckdb.connect()
    attach(con, catalog, read_only=False)
    # Real Parquet files, as big builds write, rather than rows inlined in the catalog.
    con.execute(f"CALL {ALIAS}.set_option('data_inlining_row_limit', 0)")
    con.execute("CREATE TABLE IF NOT EXISTS fct_trips (trip_id VARCHAR, day DATE, km DOUBLE)")
    for n in range(rounds):
        con.execute("DELETE FROM fct_trips WHERE day = DATE '2026-03-01'")
        con.execute(
            "INSERT INTO fct_trips SELECT 't' || i, DATE '2026-03-01', ? FROM range(50) r(i)",
            [float(n)],
        )
        mark_build(con, f"build {n}")
    con.execute("INSERT INTO fct_trips VALUES ('half', DATE '2026-03-02', 1.0)")
    con.close()


def _files(catalog: FactsCatalog) -> int:
    return sum(1 for _ in Path(catalog.data_path).rglob("*.parquet"))


def test_maintenance_expires_old_snapshots_and_files_and_keeps_what_readers_see(
    tmp_path: Path,
) -> None:
    catalog = _catalog(tmp_path)
    _build(catalog, rounds=4)
    with connect(catalog=catalog) as con:
        before = con.execute("SELECT * FROM fct_trips ORDER BY trip_id").fetchall()
        versions = con.execute(f"SELECT count(*) FROM {ALIAS}.snapshots()").fetchone()[0]
    files_before = _files(catalog)
    assert {row[2] for row in before} == {3.0}  # the last complete build, not the half one

    report = maintain(catalog, retention=timedelta(0), now=datetime.now(UTC) + timedelta(days=2))

    assert report.expired_snapshots > 0 and report.deleted_files > 0
    assert _files(catalog) < files_before
    with connect(catalog=catalog) as con:
        assert con.execute("SELECT * FROM fct_trips ORDER BY trip_id").fetchall() == before
        left = con.execute(f"SELECT count(*) FROM {ALIAS}.snapshots()").fetchone()[0]
    assert left < versions
    with connect(catalog=catalog, latest=True) as con:  # the half build is still there
        assert con.execute("SELECT count(*) FROM fct_trips WHERE trip_id = 'half'").fetchone() == (
            1,
        )


def test_snapshots_within_the_retention_stay_readable_by_time_travel(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    _build(catalog, rounds=3)
    with connect(catalog=catalog) as con:
        first_build = con.execute(
            f"SELECT min(snapshot_id) FROM {ALIAS}.snapshots() WHERE commit_message IS NOT NULL"
        ).fetchone()[0]

    maintain(catalog, retention=timedelta(days=7))

    with connect(catalog=catalog) as con:
        old = con.execute(
            f"SELECT DISTINCT km FROM fct_trips AT (VERSION => {first_build})"
        ).fetchall()
    assert old == [(0.0,)]


def test_the_maintenance_job_runs_through_dagster_and_a_bad_retention_fails_it_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = _catalog(tmp_path)
    _build(catalog, rounds=2)
    monkeypatch.setenv("FLEET_FACTS_CATALOG", catalog.catalog)
    monkeypatch.setenv("FLEET_FACTS_DATA_PATH", catalog.data_path)
    monkeypatch.setenv("FLEET_FACTS_RETENTION_DAYS", "0")
    result = facts_maintenance.execute_in_process()
    assert result.success
    [output] = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    assert output.event_specific_data.metadata["expired_snapshots"].value > 0

    monkeypatch.setenv("FLEET_FACTS_RETENTION_DAYS", "a week")
    failed = facts_maintenance.execute_in_process(raise_on_error=False)
    assert not failed.success
    failure = failed.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert failure.description == (
        "FLEET_FACTS_RETENTION_DAYS='a week' is not a whole number of days >= 0 "
        "(needed by facts maintenance)"
    )
