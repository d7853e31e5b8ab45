"""The facts are Dagster partitions by UTC day: materializing one day's partition re-reads and
rebuilds that day only, records its rows per day, and ends where a full build does."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterInstance

from tests.conftest import FleetEnv, facts_connect, facts_env
from tests.support.facts_compare import differences
from tests.support.runs import fact_keys, range_tags, run_assets

FIRST, LAST = date(2026, 3, 1), date(2026, 3, 6)
DAY = date(2026, 3, 4)
PER_DAY = "select day, count(*) from stg_avl__trips group by day"


def _run(selection: list[AssetKey], tags: dict[str, str], instance: DagsterInstance) -> None:
    assert run_assets(selection, tags=tags, instance=instance, raise_on_error=False).success


def _day_file(lake: Path, day: date) -> Path:
    (path,) = (lake / "avl" / "trips" / f"day={day.isoformat()}").glob("*.parquet")
    return path


def test_one_day_partition_rebuilds_that_day_only_and_ends_as_a_full_build(
    avl_env: FleetEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = avl_env.lake_dir
    with DagsterInstance.ephemeral() as instance:
        _run([AssetKey(["raw", "avl", "trips"])], range_tags(FIRST, LAST), instance)
        _run(fact_keys(), range_tags(FIRST, LAST), instance)
        with avl_env.facts(latest=True) as con:
            before = dict(con.execute(PER_DAY).fetchall())
        assert all(before.get(date(2026, 3, d), 0) > 0 for d in (2, 4, 5))

        # Day 2 unreadable: a build that read it would fail. Day 4 re-landed without a trip.
        unreadable = _day_file(lake, date(2026, 3, 2))
        original = unreadable.read_bytes()
        unreadable.write_bytes(b"not parquet")
        changed = _day_file(lake, DAY)
        pq.write_table(pq.read_table(changed).slice(1), changed)

        _run(fact_keys(), range_tags(DAY, DAY), instance)
        with avl_env.facts(latest=True) as con:
            after = dict(con.execute(PER_DAY).fetchall())
        assert after[DAY] == before[DAY] - 1
        assert {d: n for d, n in after.items() if d != DAY} == {
            d: n for d, n in before.items() if d != DAY
        }
        event = instance.get_latest_materialization_event(AssetKey(["stg_avl__trips"]))
        assert event is not None and event.asset_materialization is not None
        materialization = event.asset_materialization
        assert materialization.partition == DAY.isoformat()
        assert materialization.metadata["rows_by_day"].value == {DAY.isoformat(): after[DAY]}
        unreadable.write_bytes(original)

    # The same lake built whole, into a fresh catalog: every model holds the same rows.
    fresh = tmp_path / "full" / "fleet_catalog.sqlite"
    for key, value in facts_env(fresh).items():
        monkeypatch.setenv(key, value)
    with DagsterInstance.ephemeral() as instance:
        _run(fact_keys(), range_tags(FIRST, LAST), instance)
    with facts_connect(fresh, latest=True) as con:
        assert con.execute("select count(*) from fct_trips").fetchone()[0] > 0
    assert differences(avl_env.catalog_path, fresh) == {}


def test_a_day_without_raw_data_builds_empty(avl_env: FleetEnv) -> None:
    """A partition whose lake days are gone (or never landed) holds no rows: its old rows go."""
    with DagsterInstance.ephemeral() as instance:
        _run([AssetKey(["raw", "avl", "trips"])], range_tags(FIRST, LAST), instance)
        _run(fact_keys(), range_tags(FIRST, LAST), instance)
        shutil.rmtree(avl_env.lake_dir / "avl" / "trips" / f"day={DAY.isoformat()}")
        _run(fact_keys(), range_tags(DAY, DAY), instance)
    with avl_env.facts(latest=True) as con:
        days = dict(con.execute(PER_DAY).fetchall())
        trips = con.execute(
            "select count(*) from fct_trips where cast(started_at at time zone 'UTC' as date) = ?",
            [DAY],
        ).fetchone()[0]
    assert DAY not in days and trips == 0 and len(days) >= 3
