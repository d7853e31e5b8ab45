"""The real servers of tests/support/servers.py answer real clients, and stopping them leaves nothing."""

from __future__ import annotations

import signal
import uuid
from contextlib import closing
from pathlib import Path

import psutil
import psycopg2
import pytest
import redis

from tests.support.servers import (
    PostgresServer,
    Process,
    RedisServer,
    S3Server,
    postgres_bin_dirs,
    start_postgres,
    start_redis,
    start_s3,
)


def _tree(process: Process) -> list[int]:
    """The server and every process it started."""
    return [process.pid] + [p.pid for p in psutil.Process(process.pid).children(recursive=True)]


def _assert_gone(pids: list[int]) -> None:
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert not alive, f"processes left running: {alive}"


def test_postgres_answers_queries_and_creates_databases(postgres_server: PostgresServer) -> None:
    name = postgres_server.create_database("fleet_servers_test")
    assert postgres_server.create_database(name) == name  # idempotent
    with closing(psycopg2.connect(postgres_server.url(name))) as conn, conn.cursor() as cur:
        cur.execute("create table t (x int); insert into t values (41), (1); select sum(x) from t")
        assert cur.fetchone() == (42,)
        cur.execute("show listen_addresses")
        assert cur.fetchone() == ("127.0.0.1",)
    assert postgres_server.libpq(name) == (
        f"dbname={name} host=127.0.0.1 port={postgres_server.port} user=postgres"
    )


def test_a_password_role_needs_its_password(postgres_server: PostgresServer) -> None:
    role = postgres_server.create_role("fleet_secretive", "s3cret-pw")
    url = postgres_server.url_with_password(role, "s3cret-pw")
    with closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        cur.execute("select current_user")
        assert cur.fetchone() == (role,)
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(postgres_server.url_with_password(role, "wrong"))
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(f"host=127.0.0.1 port={postgres_server.port} user={role} dbname=postgres")


def test_s3_puts_and_gets_objects(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket("fleet-servers-test")
    assert s3_server.create_bucket(bucket) == bucket  # idempotent
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="lake/a.txt", Body=b"hello lake")
    assert client.get_object(Bucket=bucket, Key="lake/a.txt")["Body"].read() == b"hello lake"
    assert s3_server.endpoint_url.startswith("http://127.0.0.1:")
    assert s3_server.env["AWS_ENDPOINT_URL"] == s3_server.endpoint_url


def test_s3fs_reads_it_through_the_environment(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the lake's clients see: only the environment variables, no explicit client
    options."""
    import s3fs

    bucket = s3_server.create_bucket("fleet-servers-env")
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.pipe(f"{bucket}/x/y.bin", b"\x00\x01")
    assert fs.cat(f"{bucket}/x/y.bin") == b"\x00\x01"


def test_redis_pings_sets_and_gets(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping()
    key = f"fleet:{uuid.uuid4()}"
    client.set(key, "v")
    assert client.get(key) == b"v"
    assert client.config_get("save") == {"save": ""}  # nothing persisted


def test_stopping_the_servers_leaves_no_process(tmp_path: Path) -> None:
    with start_redis(tmp_path / "redis") as server:
        redis_pids = _tree(server.process)
        assert server.process.pid in redis_pids
    _assert_gone(redis_pids)
    with start_s3(tmp_path / "s3") as s3:
        s3_pids = _tree(s3.process)
        assert s3.process.pid in s3_pids
    _assert_gone(s3_pids)
    with start_postgres() as pg:
        pg.execute("select 1")
        base = pg.socket_dir
        pg_pids = _tree(pg.process)
        assert len(pg_pids) > 1  # the postmaster and its background processes
    _assert_gone(pg_pids)
    assert not base.exists()  # its data directory is deleted too


def test_a_server_killed_outright_takes_its_children_with_it(tmp_path: Path) -> None:
    """A stop that finds the polite signal ignored still ends the server and its children."""
    with start_postgres() as pg:
        children = _tree(pg.process)[1:]
        assert children
        # A hung server: stopped, it cannot exit on its own; only SIGKILL ends it.
        pg.process.stop_signal, pg.process.grace_s = signal.SIGSTOP, 0.5
    assert not pg.process.alive()
    _assert_gone(children)


def test_the_pgserver_wheel_binaries_work_where_the_machine_has_no_postgres() -> None:
    """A fresh machine has no Postgres on the PATH: the binaries inside the `pgserver` wheel
    serve instead."""
    import pgserver

    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin"
    assert bundled in postgres_bin_dirs()
    with start_postgres(bundled) as pg:
        # The wheel's own folder, or a copy the server's OS user can reach (as root in a
        # venv under a private folder).
        assert pg.bin_dir == bundled or pg.bin_dir.parent.name == "pginstall"
        (version,) = pg.execute("show server_version")[0]
        assert version.split(".")[0].isdigit()
        assert pg.create_database("from_wheel") == "from_wheel"
