"""The lake listing dbt builds start from (pipelines/lake_listing.py): what counts as a day's
data, and that any change to a day's files changes its fingerprint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb

from pipelines.lake_listing import Plugin, lake_listing_json, list_lake


def _land(lake: Path, table: str, day: str, name: str, payload: bytes) -> Path:
    path = lake / table / f"day={day}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def _by_day(lake: Path, tables: list[str]) -> dict[tuple[str, str], dict]:
    return {(r["lake_table"], r["day"]): r for r in list_lake(str(lake), tables)}


def test_only_parquet_files_of_day_folders_count(tmp_path: Path) -> None:
    _land(tmp_path, "avl/trips", "2026-03-01", "a.parquet", b"12345")
    _land(tmp_path, "avl/trips", "2026-03-01", "b.parquet", b"123")
    _land(tmp_path, "avl/trips", "2026-03-01", ".b.parquet.123.ab.tmp", b"half-written")
    _land(tmp_path, "avl/trips", "2026-03-02", ".c.parquet.9.ff.tmp", b"only a temp file")
    (tmp_path / "avl" / "trips" / "notes").mkdir()
    (tmp_path / "avl" / "trips" / "day=yesterday").mkdir()
    (tmp_path / "avl" / "trips" / ".drain.lock").write_text("")

    rows = _by_day(tmp_path, ["avl/trips", "metrotec/stops"])  # stops never landed

    assert list(rows) == [("avl/trips", "2026-03-01")]
    day = rows["avl/trips", "2026-03-01"]
    assert (day["files"], day["bytes"]) == (2, 8)
    newest = max(
        p.stat().st_mtime_ns for p in (tmp_path / "avl/trips/day=2026-03-01").glob("*.parquet")
    )
    assert day["newest_ns"] == newest


def test_any_change_to_a_days_files_changes_its_fingerprint(tmp_path: Path) -> None:
    tables = ["autopi/trips"]
    first = _land(tmp_path, "autopi/trips", "2026-03-01", "t1.parquet", b"aaaa")
    other = _land(tmp_path, "autopi/trips", "2026-03-02", "t9.parquet", b"zzzz")
    seen = {_by_day(tmp_path, tables)["autopi/trips", "2026-03-01"]["fingerprint"]}
    other_day = _by_day(tmp_path, tables)["autopi/trips", "2026-03-02"]["fingerprint"]

    stat = first.stat()
    first.write_bytes(b"bbbb")  # same size, rewritten a nanosecond-visible moment later
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    seen.add(_by_day(tmp_path, tables)["autopi/trips", "2026-03-01"]["fingerprint"])
    first.write_bytes(b"bbbbb")  # another size, same time
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    seen.add(_by_day(tmp_path, tables)["autopi/trips", "2026-03-01"]["fingerprint"])
    _land(tmp_path, "autopi/trips", "2026-03-01", "t2.parquet", b"cc")  # a new file
    seen.add(_by_day(tmp_path, tables)["autopi/trips", "2026-03-01"]["fingerprint"])
    first.rename(first.with_name("t0.parquet"))  # renamed
    seen.add(_by_day(tmp_path, tables)["autopi/trips", "2026-03-01"]["fingerprint"])

    assert len(seen) == 5
    assert _by_day(tmp_path, tables)["autopi/trips", "2026-03-02"]["fingerprint"] == other_day
    other.unlink()
    assert ("autopi/trips", "2026-03-02") not in _by_day(tmp_path, tables)


def test_the_plugin_gives_dbts_connection_the_listing_as_sql(tmp_path: Path) -> None:
    _land(tmp_path, "kt1/events", "2026-03-05", "part-0.parquet", b"123456")
    con = duckdb.connect()
    Plugin(name="lake_listing", plugin_config={}).configure_connection(con)
    got = con.execute("select fleet_lake_listing(?, ['kt1/events'])", [str(tmp_path)]).fetchone()[0]
    assert json.loads(got) == json.loads(lake_listing_json(str(tmp_path), ["kt1/events"]))
    # A cursor (dbt runs each node on one) sees the function, and a second call lists again.
    _land(tmp_path, "kt1/events", "2026-03-06", "part-0.parquet", b"1")
    again = con.cursor().execute("select fleet_lake_listing(?, ['kt1/events'])", [str(tmp_path)])
    assert [r["day"] for r in json.loads(again.fetchone()[0])] == ["2026-03-05", "2026-03-06"]
