"""The lake on an S3-compatible server (moto's, over real HTTP): a writer SIGKILLed mid-upload
leaves nothing partial or doubled for a reader, and a real Dagster run of AVL lands there, is
checked and built into the facts exactly as from a local lake, without the secret key showing
anywhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from dagster import AssetKey, Definitions, materialize

from pipelines.definitions import build_defs
from pipelines.facts import FactsCatalog, connect, open_object_store
from pipelines.facts_build import FactRange
from pipelines.lake import Lake
from pipelines.simulator.avl import AvlServer
from tests.conftest import SIM_NOW, facts_env

REPO = Path(__file__).resolve().parents[2]
DAY = date(2026, 3, 1)
FIRST, LAST = date(2026, 3, 1), date(2026, 3, 7)
AVL_KEY = AssetKey(["raw", "avl", "trips"])

# The child lands `rows` random doubles (incompressible) as the one file of a partition. It
# says `uploading` when the finished file starts going to the store and `uploaded` (with the
# seconds the upload took) once the store has it; PART_SIZE is lowered when the test wants a
# multipart upload of a small file, whose parts it sends one at a time.
CHILD = """
import sys
import time
import numpy as np
import pyarrow as pa
import pipelines.object_store as store_module
from pipelines.lake import Lake
from datetime import date, timedelta

url, rows, part_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store_module.PART_SIZE = part_size
put = store_module.ObjectStore.put

def announced(self, local, target):
    self.fs.max_concurrency = 1  # parts one after another, so a kill can fall between them
    print("uploading", flush=True)
    started = time.monotonic()
    size = put(self, local, target)
    print("uploaded", f"took={time.monotonic() - started:.3f}", flush=True)
    return size

store_module.ObjectStore.put = announced
values = np.random.default_rng(rows).random(rows)
table = pa.table({"seq": pa.array(range(rows), pa.int64()), "value": values})
Lake(url).replace_partition("bench", "points", date(2026, 3, 1), table)
"""


@pytest.fixture
def s3_env(s3_server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The AWS_* variables of the server, with a secret key unique to this test (moto takes
    any), so a search for it cannot match anything but a leak."""
    env = {**s3_server.env, "AWS_SECRET_ACCESS_KEY": f"fleet-{uuid.uuid4().hex}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def bucket(
    s3_server, s3_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A fresh bucket; children spool their files in tmp (a killed one leaves its spool)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    return s3_server.create_bucket(f"lake-{uuid.uuid4().hex[:12]}")


def objects(s3_server, bucket: str) -> dict[str, int]:
    """Key → size of every object in the bucket, asked of the server directly."""
    listed = s3_server.client().list_objects_v2(Bucket=bucket)
    return {o["Key"]: o["Size"] for o in listed.get("Contents", [])}


KILL_AFTER_S = 0.05
SETTLE_S = 1.0  # longer than the server takes to store a whole PUT it has received


def land(url: str, rows: int, part_size: int, kill: bool = False) -> list[str]:
    """Run the child; with `kill`, SIGKILL it KILL_AFTER_S into its upload. Its output words,
    `took=` left out."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(rows), str(part_size)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    if not kill:
        out, _ = child.communicate(timeout=300)
        assert child.returncode == 0
        words = out.split()
        took = [float(w.removeprefix("took=")) for w in words if w.startswith("took=")]
        UPLOAD_S.extend(took)
        return [w for w in words if not w.startswith("took=")]
    assert child.stdout.readline().strip() == "uploading"
    time.sleep(KILL_AFTER_S)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    return ["uploading", *child.stdout.read().split(), f"killed:{child.returncode}"]


UPLOAD_S: list[float] = []
"""How long the children's completed uploads took."""


def reader_view(lake: Lake) -> tuple[list[str], int, int]:
    """What a reader sees: the files listed, the rows of reading each of them whole, and the
    rows DuckDB reads over the table's glob through httpfs."""
    files = [str(f) for f in lake.files("bench", "points")]
    whole = sum(lake.read_file(f).num_rows for f in files)
    with duckdb.connect() as con:
        open_object_store(con, lake.location)
        try:
            (through_duckdb,) = con.execute(
                "select count(*) from read_parquet(?)", [lake.glob("bench", "points")]
            ).fetchone()
        except duckdb.IOException as exc:  # an empty glob: nothing landed
            assert "No files found" in str(exc)
            through_duckdb = 0
    return files, whole, through_duckdb


SMALL, BIG = 1_000, 3_000_000  # BIG: ~48 MB of Parquet


@pytest.mark.parametrize("earlier", [False, True], ids=["first-landing", "relanding"])
def test_a_writer_killed_mid_put_leaves_nothing_partial_and_the_rerun_lands_once(
    s3_server, bucket: str, earlier: bool
) -> None:
    url = f"s3://{bucket}/lake"
    lake = Lake(url)
    key = "lake/bench/points/day=2026-03-01/data.parquet"
    if earlier:
        land(url, SMALL, 50 * 2**20)
    before = objects(s3_server, bucket)

    lines = land(url, BIG, 50 * 2**20, kill=True)

    assert lines == ["uploading", f"killed:{-signal.SIGKILL}"]  # killed before `uploaded`
    # Whatever of the PUT reached the server before the kill, once the server is done with it
    # a reader sees the old object whole (none on a first landing), or the new one whole.
    time.sleep(SETTLE_S)
    files, whole, through_duckdb = reader_view(lake)
    if objects(s3_server, bucket) == before:
        assert files == ([f"s3://{bucket}/{key}"] if earlier else [])
        assert whole == through_duckdb == (SMALL if earlier else 0)
    else:  # the whole body was sent before the kill: the PUT completed without the writer
        assert files == [f"s3://{bucket}/{key}"] and whole == through_duckdb == BIG

    UPLOAD_S.clear()
    assert land(url, BIG, 50 * 2**20) == ["uploading", "uploaded"]
    # The whole PUT takes far longer than the child was given: the kill was mid-PUT.
    assert UPLOAD_S[0] > 4 * KILL_AFTER_S
    assert list(objects(s3_server, bucket)) == [key]
    files, whole, through_duckdb = reader_view(lake)
    assert len(files) == 1 and whole == through_duckdb == BIG
    table = lake.read("bench", "points")
    assert table.column("seq").to_pylist() == list(range(BIG))  # every row, once


def test_a_writer_killed_mid_multipart_upload_shows_no_object_and_the_rerun_lands_once(
    s3_server, bucket: str
) -> None:
    url = f"s3://{bucket}/lake"
    lake = Lake(url)
    client = s3_server.client()
    part = 5 * 2**20  # S3's smallest part: ~48 MB go as ten parts, one after another
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(BIG), str(part)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "uploading"
    # Killed once the server holds a part of the upload: mid-upload, provably.
    deadline = time.monotonic() + 60
    while True:
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        parts = (
            client.list_parts(
                Bucket=bucket, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]
            ).get("Parts", [])
            if uploads
            else []
        )
        if parts:
            break
        assert time.monotonic() < deadline and child.poll() is None, "no part was uploaded"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.stdout.read() == ""  # never `uploaded`

    # The unfinished upload holds data, but no reader sees any of it, then or later.
    time.sleep(SETTLE_S)
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert objects(s3_server, bucket) == {}
    assert reader_view(lake) == ([], 0, 0)

    assert land(url, BIG, part) == ["uploading", "uploaded"]
    (key,) = objects(s3_server, bucket)
    assert key == "lake/bench/points/day=2026-03-01/data.parquet"
    files, whole, through_duckdb = reader_view(lake)
    assert len(files) == 1 and whole == through_duckdb == BIG
    assert lake.read("bench", "points").column("seq").to_pylist() == list(range(BIG))


# ---- a real Dagster run and facts build on the object store ---------------------------------


@pytest.fixture(scope="module")
def avl_sim(world) -> Iterator[AvlServer]:
    server = AvlServer(world, rate_limit=(10, 1.0), clock=lambda: SIM_NOW).start()
    yield server
    server.stop()


@contextmanager
def fleet_defs(
    tmp: Path,
    lake_dir: str,
    env: dict[str, str],
    *,
    clear: tuple[str, ...] = ("FLEET_",),
    facts_data: str | None = None,
) -> Iterator[Definitions]:
    """The project's definitions, run from `tmp` with only `env` and this test's lake, catalog
    (its data in `facts_data` when given) and state set: every `clear`-prefixed variable of
    the outer environment is unset for the block."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        for key in [k for k in os.environ if k.startswith(clear)]:
            mp.delenv(key)
        for key, value in {
            **env,
            "FLEET_LAKE_DIR": lake_dir,
            **facts_env(tmp / "fleet_catalog.sqlite"),
            **({"FLEET_FACTS_DATA_PATH": facts_data} if facts_data else {}),
            "FLEET_STATE_URL": f"sqlite:///{tmp / 'state.sqlite3'}",
            "FLEET_START_DATE": "2025-12-01",
        }.items():
            mp.setenv(key, value)
        yield build_defs()


def build(
    tmp: Path, lake_dir: str, avl_sim: AvlServer, env: dict[str, str], facts_data: str | None = None
) -> dict:
    """Land AVL's FIRST..LAST into `lake_dir`, build the facts into a catalog in `tmp` (their
    data beside it, or in `facts_data`); what came out."""
    from pipelines.simulator.avl import env as avl_env

    tags = FactRange(FIRST, LAST).tags()
    avl = {**env, **avl_env(avl_sim)}
    cleared = ("FLEET_", "AVL_", "AUTOPI_")
    with fleet_defs(tmp, lake_dir, avl, clear=cleared, facts_data=facts_data) as defs:
        raw = materialize(
            list(defs.assets), resources=defs.resources, selection=[AVL_KEY], tags=tags
        )
        assert raw.success
        facts = materialize(
            list(defs.assets), resources=defs.resources, selection="kind:dbt", tags=tags
        )
        assert facts.success  # every dbt data test too
    data_path = facts_data or str(tmp / "facts")
    catalog = FactsCatalog.of(f"sqlite:{tmp / 'fleet_catalog.sqlite'}", data_path)
    with connect(catalog=catalog) as con:
        trips = con.execute(
            "select * exclude (trip_id) from fct_trips where source = 'avl' "
            "order by vehicle_id, started_at"
        ).fetchall()
    events = [str(e) for r in (raw, facts) for e in r.all_events]
    checks = sorted(
        (c.check_name, c.passed, str(c.metadata.get("anomalies")))
        for c in raw.get_asset_check_evaluations()
    )
    uri = raw.get_asset_materialization_events()[-1].materialization.metadata["dagster/uri"]
    return {"trips": trips, "events": events, "checks": checks, "uri": uri.value}


def test_avl_lands_on_s3_and_builds_the_same_facts_as_a_local_lake_without_leaking_the_key(
    tmp_path: Path, s3_server, s3_env: dict[str, str], bucket: str, avl_sim: AvlServer
) -> None:
    secret = s3_env["AWS_SECRET_ACCESS_KEY"]
    (tmp_path / "local").mkdir()
    (tmp_path / "s3").mkdir()
    local = build(tmp_path / "local", str(tmp_path / "local" / "lake"), avl_sim, s3_env)
    # The facts' data on the store too: the same secret serves the lake and DuckLake's files.
    remote = build(tmp_path / "s3", f"s3://{bucket}/lake", avl_sim, s3_env, f"s3://{bucket}/facts/")

    assert remote["uri"] == f"s3://{bucket}/lake/avl/trips"
    assert len(remote["trips"]) > 0
    assert remote["trips"] == local["trips"]
    assert remote["checks"] and remote["checks"] == local["checks"]  # read through httpfs
    stored = objects(s3_server, bucket)
    days = {k.split("/")[3] for k in stored if k.startswith("lake/avl/trips/")}
    assert days == {f"day={FIRST + timedelta(days=i)}" for i in range((LAST - FIRST).days + 1)}
    assert all(k.endswith(".parquet") for k in stored)
    assert any(k.startswith("facts/") for k in stored)  # DuckLake wrote its files there
    assert not list((tmp_path / "s3").glob("**/lake")), "nothing of the lake went to disk"

    # The secret key is in no event, no metadata, no lake object, no file of the facts build
    # (the catalog, its Parquet data, dbt's target and logs).
    assert not [e for e in remote["events"] if secret in e]
    client = s3_server.client()
    for key in stored:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert secret.encode() not in body, key
    for path in (tmp_path / "s3").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


METROTEC_TABLES = ("vehicles", "routelog", "stops", "refuels", "fuel_levels")


def land_metrotec(tmp: Path, lake_dir: str, env: dict[str, str]) -> dict[str, list[dict]]:
    """Land Metrotec's vehicles and FIRST..LAST into `lake_dir`; every table's rows, sorted."""
    keys = [AssetKey(["raw", "metrotec", t]) for t in METROTEC_TABLES]
    with fleet_defs(tmp, lake_dir, env) as defs:
        result = materialize(
            list(defs.assets),
            resources=defs.resources,
            selection=keys,
            tags=FactRange(FIRST, LAST).tags(),
        )
        assert result.success
        lake = Lake(lake_dir)
        rows = {}
        for table in METROTEC_TABLES:
            landed = lake.read("metrotec", table)
            stable = [c for c in landed.column_names if c not in {"extracted_at", "quarantined_at"}]
            rows[table] = sorted(landed.select(stable).to_pylist(), key=repr)
        return rows


def test_metrotec_lands_the_same_rows_on_s3_as_on_a_local_lake(
    tmp_path: Path, s3_server, s3_env: dict[str, str], bucket: str, world
) -> None:
    from pipelines.simulator.metrotec import env as metrotec_env
    from tests.support.metrotec_support import ScriptedMetrotecServer

    with ScriptedMetrotecServer(world, clock=lambda: SIM_NOW) as server:
        env = {**s3_env, **metrotec_env(server), "METROTEC_RATE_LIMIT": "1000/1"}
        (tmp_path / "local").mkdir()
        (tmp_path / "s3").mkdir()
        local = land_metrotec(tmp_path / "local", str(tmp_path / "local" / "lake"), env)
        remote = land_metrotec(tmp_path / "s3", f"s3://{bucket}/lake", env)

    assert all(local[t] for t in ("vehicles", "routelog", "fuel_levels"))
    assert remote == local
    stored = objects(s3_server, bucket)
    days = (LAST - FIRST).days + 1
    for table in METROTEC_TABLES[1:]:  # one file per day of the range, named `data`
        files = [k for k in stored if k.startswith(f"lake/metrotec/{table}/")]
        assert len(files) == days and all(k.endswith("/data.parquet") for k in files)
