"""Staging tables are incremental by lake day (dbt_models/macros/lake_days.sql): a build
re-reads exactly the day folders whose files changed, and ends where a full build does."""

from __future__ import annotations

import os
import shutil
import time
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, materialize

from pipelines.definitions import build_defs
from tests.conftest import FleetEnv, facts_connect, facts_env

FIRST, LAST = date(2026, 3, 1), date(2026, 3, 6)
STAGING = AssetKey(["stg_avl__trips"])
QUERY = "select * from stg_avl__trips order by avl_trip_id"
PER_DAY = "select day, count(*) from stg_avl__trips group by day"


def _land_avl() -> None:
    defs = build_defs()
    tags = {
        "dagster/asset_partition_range_start": FIRST.isoformat(),
        "dagster/asset_partition_range_end": LAST.isoformat(),
    }
    raw = AssetKey(["raw", "avl", "trips"])
    assert materialize(list(defs.assets), resources=defs.resources, selection=[raw], tags=tags)


def _build(catalog_path: Path | None = None) -> None:
    if catalog_path is not None:
        os.environ.update(facts_env(catalog_path))
    defs = build_defs()
    result = materialize(
        list(defs.assets), resources=defs.resources, selection=[STAGING], raise_on_error=False
    )
    assert result.success


def _rows(catalog_path: Path, query: str = QUERY) -> list[tuple]:
    with facts_connect(catalog_path) as con:
        return con.execute(query).fetchall()


def _day_file(lake: Path, day: date) -> Path:
    (path,) = (lake / "avl" / "trips" / f"day={day.isoformat()}").glob("*.parquet")
    return path


def _age(lake: Path, seconds: float) -> None:
    """Date every lake file back, as files landed by yesterday's run are."""
    for path in lake.rglob("*.parquet"):
        stat = path.stat()
        os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


def _full_build(env: FleetEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    fresh = tmp_path / "full" / "fleet_catalog.sqlite"
    for key, value in facts_env(fresh).items():
        monkeypatch.setenv(key, value)
    _build()
    for key, value in facts_env(env.catalog_path).items():
        monkeypatch.setenv(key, value)
    return _rows(fresh)


def test_a_build_reads_only_changed_days_and_ends_as_a_full_build(
    avl_env: FleetEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = avl_env.lake_dir
    _land_avl()
    _age(lake, 3600)
    _build()
    first = _rows(avl_env.catalog_path)
    before = dict(_rows(avl_env.catalog_path, PER_DAY))
    assert all(before.get(date(2026, 3, d), 0) > 0 for d in (2, 4, 5))

    # Day 2 untouched but unreadable (same name, size and time): a build that read it would fail.
    untouched = _day_file(lake, date(2026, 3, 2))
    original, stat = untouched.read_bytes(), untouched.stat()
    untouched.write_bytes(original[:4] + b"\0" * (len(original) - 8) + original[-4:])
    os.utime(untouched, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # Day 4 re-landed without its first trip; day 5 removed altogether.
    changed = _day_file(lake, date(2026, 3, 4))
    table = pq.read_table(changed)
    pq.write_table(table.slice(1), changed)
    shutil.rmtree(lake / "avl" / "trips" / "day=2026-03-05")

    _build()
    second = _rows(avl_env.catalog_path)
    days = dict(_rows(avl_env.catalog_path, PER_DAY))
    assert date(2026, 3, 5) not in days
    assert days[date(2026, 3, 4)] == before[date(2026, 3, 4)] - 1
    assert days[date(2026, 3, 2)] == before[date(2026, 3, 2)]  # kept, not re-read
    assert len(second) == len(first) - 1 - before[date(2026, 3, 5)]

    untouched.write_bytes(original)
    os.utime(untouched, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert second == _full_build(avl_env, tmp_path, monkeypatch)


def test_a_same_second_rewrite_of_the_same_size_is_still_seen(avl_env: FleetEnv) -> None:
    """A file rewritten in the second the last build listed it, at the same size, keeps its
    name, size and (second-resolution) time: the build must not trust that day's listing."""
    lake = avl_env.lake_dir
    _land_avl()
    path = _day_file(lake, date(2026, 3, 3))
    table = pq.read_table(path)
    pq.write_table(table, path, compression="none", use_dictionary=False)
    # Stamp it ahead, so the build lists it within a second of its time, as a build started by
    # the landing's own automation can; a rewrite later in that second keeps the same time.
    ahead = time.time_ns() + 120 * 10**9
    os.utime(path, ns=(ahead, ahead))
    _build()
    stat = path.stat()
    kms = table.column("kms").to_pylist()
    edited = table.set_column(
        table.schema.get_field_index("kms"),
        table.schema.field("kms"),
        [[k + 1.0 if k is not None else None for k in kms]],
    )
    pq.write_table(edited, path, compression="none", use_dictionary=False)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size

    _build()
    got = _rows(
        avl_env.catalog_path,
        "select sum(distance_km) from stg_avl__trips where day = date '2026-03-03'",
    )[0][0]
    known = [k for k in kms if k is not None]
    assert known and got == pytest.approx(sum(known) + len(known))
