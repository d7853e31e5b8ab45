"""The lake on an object store: the same contract as on a local disk, against a real
S3-compatible server (moto's, over HTTP) reached only through the standard AWS_* variables."""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from pipelines.facts import open_object_store, s3_secret_sql
from pipelines.facts_build import lake_days
from pipelines.lake import QUARANTINE_SCHEMA, Lake, quarantine_table
from pipelines.object_store import LakeError
from pipelines.resources import LakeResource
from pipelines.settings import FleetSettings

D1, D2, D3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)


@pytest.fixture
def bucket(s3_server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A fresh bucket, the AWS_* variables pointing at the server, and the spool folder in
    tmp (so the tests can see that no spooled file is left behind)."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    return s3_server.create_bucket(f"lake-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def lake(bucket: str) -> Lake:
    return Lake(f"s3://{bucket}/lake")


def keys(s3_server, bucket: str) -> list[str]:
    """Every object in the bucket, asked of the server directly (not through the lake)."""
    listed = s3_server.client().list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def trips(*ids: int) -> pa.Table:
    return pa.table({"trip_id": pa.array(ids, pa.int64()), "km": [float(i) for i in ids]})


def test_a_file_is_one_object_at_its_final_key_and_reads_back(s3_server, bucket, lake) -> None:
    written = lake.write_file("autopi", "trips", D1, "trip-7", trips(1, 2, 3))

    assert written.path == f"s3://{bucket}/lake/autopi/trips/day=2026-03-01/trip-7.parquet"
    assert written.rows == 3 and written.bytes > 0
    assert keys(s3_server, bucket) == ["lake/autopi/trips/day=2026-03-01/trip-7.parquet"]
    assert lake.files("autopi", "trips") == [written.path]
    assert lake.files("autopi", "trips", D1) == [written.path]
    assert lake.files("autopi", "trips", D2) == []
    assert lake.exists("autopi", "trips", D1, "trip-7")
    assert not lake.exists("autopi", "trips", D1, "trip-8")
    assert lake.read_metadata(written.path).num_rows == 3
    assert lake.read_file(written.path) == trips(1, 2, 3)
    table = lake.read("autopi", "trips")
    assert table.column("trip_id").to_pylist() == [1, 2, 3]
    assert table.column("day").to_pylist() == [D1] * 3
    assert list(Path(tempfile.gettempdir()).iterdir()) == []  # the spooled file is gone


def test_relanding_a_unit_replaces_its_object_and_leaves_its_siblings(
    s3_server, bucket, lake
) -> None:
    lake.write_file("autopi", "trips", D1, "trip-7", trips(1, 2))
    lake.write_file("autopi", "trips", D1, "trip-8", trips(8))
    lake.write_file("autopi", "trips", D1, "trip-7", trips(1, 2, 3))

    assert keys(s3_server, bucket) == [
        "lake/autopi/trips/day=2026-03-01/trip-7.parquet",
        "lake/autopi/trips/day=2026-03-01/trip-8.parquet",
    ]
    assert sorted(lake.read("autopi", "trips").column("trip_id").to_pylist()) == [1, 2, 3, 8]


def test_replacing_a_partition_leaves_one_object_with_the_new_rows(s3_server, bucket, lake):
    lake.replace_partition("avl", "trips", D1, trips(1, 2))
    # An orphan of an older layout, and a neighbouring table whose name starts the same.
    lake.write_file("avl", "trips", D1, "old-layout", trips(99))
    lake.replace_partition("avl", "trips_archive", D1, trips(5))

    lake.replace_partition("avl", "trips", D1, trips(3))

    assert keys(s3_server, bucket) == [
        "lake/avl/trips/day=2026-03-01/data.parquet",
        "lake/avl/trips_archive/day=2026-03-01/data.parquet",
    ]
    assert lake.read("avl", "trips").column("trip_id").to_pylist() == [3]


def test_a_backfill_range_writes_each_day_and_empties_days_without_rows(lake) -> None:
    rows = trips(1, 2).append_column("day", pa.array([D1, D3], pa.date32()))
    lake.replace_partitions("avl", "trips", [D1, D2, D3], rows)

    assert lake.days("avl", "trips") == [D1, D2, D3]
    assert lake.newest_day("avl", "trips") == D3
    assert [lake.read_metadata(f).num_rows for f in lake.files("avl", "trips")] == [1, 0, 1]
    assert lake.has_files("avl", "trips", D2)
    assert not lake.has_files("avl", "trips", date(2026, 3, 4))
    assert lake.newest_day("avl", "nothing") is None
    assert lake_days(lake.location, ["avl/trips", "avl/nothing"]) == {D1, D2, D3}


def test_removing_files_and_an_emptied_quarantine(s3_server, bucket, lake) -> None:
    lake.write_file("kt1", "telemetry", D1, "batch-1", trips(1))
    rows = quarantine_table(
        [{"table": "telemetry", "reason": "bad", "payload": "{}"}],
        quarantined_at=datetime(2026, 3, 1, 12, tzinfo=UTC),
    )
    assert set(QUARANTINE_SCHEMA.names) <= set(rows.column_names)
    lake.write_quarantine("kt1", D1, "batch-1", rows)
    assert len(keys(s3_server, bucket)) == 2

    lake.write_quarantine("kt1", D1, "batch-1", rows.slice(0, 0))  # landed clean this time
    assert lake.remove_file("kt1", "telemetry", D1, "batch-1")
    assert not lake.remove_file("kt1", "telemetry", D1, "batch-1")
    assert keys(s3_server, bucket) == []
    assert lake.files("kt1", "telemetry") == []
    assert lake.read("kt1", "telemetry").num_rows == 0


def test_duckdb_reads_the_lake_glob_through_httpfs_with_a_secret(lake) -> None:
    lake.replace_partition("avl", "trips", D1, trips(1, 2))
    lake.replace_partition("avl", "trips", D2, trips(3))

    with duckdb.connect() as con:
        open_object_store(con, lake.location)
        rows = con.execute(
            "select day, count(*) from read_parquet(?, hive_partitioning = true) "
            "group by day order by day",
            [lake.glob("avl", "trips")],
        ).fetchall()
        secrets = con.execute("select name, persistent from duckdb_secrets()").fetchall()
    assert rows == [(D1, 2), (D2, 1)]
    assert secrets == [("fleet_facts_s3", False)]  # in memory only, never written to disk


def test_settings_and_resource_keep_an_object_store_url(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_LAKE_DIR", f"s3://{bucket}/lake/")
    settings = FleetSettings()
    assert settings.lake_dir == f"s3://{bucket}/lake"
    lake = LakeResource(lake_dir=str(settings.lake_dir)).lake()
    assert lake.remote and lake.location == f"s3://{bucket}/lake"
    assert lake.table_location("avl", "trips") == f"s3://{bucket}/lake/avl/trips"
    with pytest.raises(LakeError, match="object store"):
        _ = lake.root

    monkeypatch.setenv("FLEET_LAKE_DIR", "relative/lake")
    local = FleetSettings().lake_dir
    assert isinstance(local, Path) and local.is_absolute()
    assert not LakeResource(lake_dir=str(local)).lake().remote


def test_a_missing_bucket_fails_the_write_and_leaves_no_spooled_file(bucket: str) -> None:
    lake = Lake(f"s3://{bucket}-missing/lake")
    with pytest.raises(OSError):
        lake.write_file("avl", "trips", D1, "data", trips(1))
    assert list(Path(tempfile.gettempdir()).iterdir()) == []


def test_duckdbs_secret_comes_from_the_aws_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "it's-secret")
    monkeypatch.setenv("AWS_REGION", "eu-north-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://minio.example:9000")
    sql = s3_secret_sql()
    for option in (
        "TYPE s3",
        "KEY_ID 'key-id'",
        "SECRET 'it''s-secret'",
        "REGION 'eu-north-1'",
        "ENDPOINT 'minio.example:9000'",  # a host, without the scheme
        "URL_STYLE 'path'",
        "USE_SSL true",
    ):
        assert option in sql
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert "USE_SSL false" in s3_secret_sql()
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # AWS itself: its own endpoints, virtual hosts
    assert "ENDPOINT" not in s3_secret_sql() and "URL_STYLE" not in s3_secret_sql()
