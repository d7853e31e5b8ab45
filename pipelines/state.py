"""Shared state of every process on every machine: one database named by `FLEET_STATE_URL`.

Three things must hold across processes, and across machines once a fleet outgrows one: the
vendors' rate limits (pipelines.ratelimit's ledger of request slots), the AutoPi ledger (what was
landed and cleared, so an export is cleared once and never re-landed) and the single-drain
leases (kt1 and AutoPi drains, which would steal each other's work). They live here, not in
the lake: `sqlite:///PATH` on one machine (the default, `./data/fleet_state.sqlite3`),
`postgresql://user:password@host:port/db` beyond it.

Every change is one transaction that first takes a named lock (SQLite: the database's write
lock, `BEGIN IMMEDIATE`; Postgres: a transaction-scoped advisory lock on the name), so
read-then-write logic behaves the same on both. Time comes from the database's clock, not the
machine's: processes on several machines then agree on when a rate-limit slot or a lease ends.
The URL may carry a password: it is never printed; `describe()` names the database without it.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pipelines.locks import pid_alive
from pipelines.settings import get_settings

_SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
_POSTGRES_NOW = "extract(epoch from clock_timestamp())::double precision"


SQLITE_BUSY_S = 60.0
"""How long a SQLite state database may stay locked by other processes before we give up."""


def _open_sqlite(path: Path) -> sqlite3.Connection:
    """A connection to the SQLite state database in WAL mode (readers never wait for writers).

    Processes that open a new database together (a demo's runs, two workers' first runs) race
    to switch it to WAL, and SQLite answers the loser `database is locked` at once, without
    waiting its busy timeout. So that switch alone is retried until `SQLITE_BUSY_S`.
    """
    conn = sqlite3.connect(
        path, timeout=SQLITE_BUSY_S, isolation_level=None, check_same_thread=False
    )
    deadline = time.monotonic() + SQLITE_BUSY_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                conn.close()
                raise
            time.sleep(0.01)
    conn.execute("PRAGMA synchronous=FULL")  # a ledger record survives a crash
    return conn


class StateURLError(ValueError):
    """FLEET_STATE_URL is not a form we can open; the message is the one line to fix it."""


def _lock_id(name: str) -> int:
    """A stable signed 64-bit advisory-lock id for a lock name."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def sqlite_path(url: str) -> Path:
    """The file of a `sqlite:///PATH` URL (`sqlite:////abs/path` for an absolute one)."""
    rest = url.removeprefix("sqlite:///")
    if rest == url or not rest:
        raise StateURLError(
            f"FLEET_STATE_URL={redact(url)!r} is not sqlite:///PATH or postgresql://...; "
            "e.g. sqlite:///data/fleet_state.sqlite3"
        )
    return Path(unquote(rest)).expanduser()


def redact(url: str) -> str:
    """The URL without its password, for messages and metadata."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


class Tx:
    """One open transaction: `?` placeholders on both databases, `now()` from its clock."""

    def __init__(self, cursor: Any, postgres: bool) -> None:
        self._cur = cursor
        self._postgres = postgres

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Tx:
        if self._postgres:
            sql = sql.replace("?", "%s")
        self._cur.execute(sql, tuple(params))
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._cur.fetchone()

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self._cur.fetchall())

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    def insert_id(self, sql: str, params: Sequence[Any]) -> int:
        """Run an INSERT and return the new row's id (its `id` column)."""
        if self._postgres:
            self.execute(sql + " RETURNING id", params)
            row = self.fetchone()
            assert row is not None
            return int(row[0])
        self.execute(sql, params)
        return int(self._cur.lastrowid)

    def now(self) -> float:
        """Seconds since the epoch by the database's clock."""
        row = self.execute(f"SELECT {_POSTGRES_NOW if self._postgres else _SQLITE_NOW}").fetchone()
        assert row is not None
        return float(row[0])


class StateStore:
    """One connection to the shared-state database, safe to share between threads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        if not self.postgres:
            self.path = sqlite_path(url)
        self._lock = threading.RLock()
        self._conn: Any = None
        self._ready: set[str] = set()
        self._pid = os.getpid()
        self._connect()

    @classmethod
    def from_settings(cls) -> StateStore:
        return shared(get_settings().fleet_state_url)

    def describe(self) -> str:
        """Which database this is, without any password."""
        return redact(self.url)

    def _connect(self) -> None:
        if self.postgres:
            import psycopg2

            try:
                self._conn = psycopg2.connect(self.url, connect_timeout=10)
            except psycopg2.Error as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConnectionError(
                    f"shared state {self.describe()} cannot be opened: {redact(first)}; check "
                    "FLEET_STATE_URL and that the server is reachable"
                ) from None
            self._conn.autocommit = True
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = _open_sqlite(self.path)
            except (OSError, sqlite3.Error) as exc:
                raise ConnectionError(
                    f"shared state {self.describe()} cannot be opened: {exc}; check "
                    "FLEET_STATE_URL (sqlite:///PATH needs a writable folder)"
                ) from None

    def _alive(self) -> bool:
        if not self.postgres:
            return True
        return self._conn is not None and not self._conn.closed

    @contextmanager
    def transaction(self, lock: str) -> Iterator[Tx]:
        """One transaction holding the named lock until it commits (or rolls back)."""
        with self._lock:
            if not self._alive():
                self._connect()
            cursor = self._conn.cursor()
            tx = Tx(cursor, self.postgres)
            if self.postgres:
                cursor.execute("BEGIN")
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id(lock),))
            else:
                cursor.execute("BEGIN IMMEDIATE")
            try:
                yield tx
            except BaseException:
                try:
                    cursor.execute("ROLLBACK")
                except Exception:  # a broken connection: the server rolled back already
                    self._drop()
                raise
            cursor.execute("COMMIT")

    def _drop(self) -> None:
        with suppress(Exception):
            self._conn.close()
        self._conn = None

    def ensure_schema(self, name: str, ddl: str) -> None:
        """Create one consumer's tables once per process. `ddl` is `;`-separated; `{id}` is an
        auto-numbered primary key, `{real}` a double; both databases run the same statements."""
        if name in self._ready:
            return
        serial = "BIGSERIAL PRIMARY KEY" if self.postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"
        real = "DOUBLE PRECISION" if self.postgres else "REAL"
        text = ddl.replace("{id}", serial).replace("{real}", real)
        with self.transaction(f"schema:{name}") as tx:
            for statement in (s.strip() for s in text.split(";")):
                if statement:
                    tx.execute(statement)
        self._ready.add(name)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._drop()


_SHARED: dict[tuple[str, int], StateStore] = {}
_SHARED_LOCK = threading.Lock()


def shared(url: str) -> StateStore:
    """This process's store for `url` (one connection per process; a forked child opens its
    own, since a connection must never be used from two processes)."""
    key = (url, os.getpid())
    with _SHARED_LOCK:
        store = _SHARED.get(key)
        if store is None:
            store = _SHARED[key] = StateStore(url)
        return store


# --- single-holder leases ----------------------------------------------------------------

_LEASES_DDL = """
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    acquired_at {real} NOT NULL,
    expires_at {real} NOT NULL
)
"""
LEASE_POLL_S = 0.5


def _dead_here(holder: str) -> bool:
    """Whether a lease's holder ran on this machine and its process is gone: then its lease
    is free at once (a killed drain on one machine blocks nothing); elsewhere it lapses."""
    node, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    return node == os.uname().nodename and pid_text.isdigit() and not pid_alive(int(pid_text))


class Busy(RuntimeError):
    """A lease stayed held by another holder for the whole wait; the message says by whom."""


class LeaseLost(RuntimeError):
    """A held lease could not be renewed before it expired; another holder may have it now."""


class Lease:
    """`name` held by one holder at a time, across processes and machines, until released or,
    if its holder dies, until `ttl_s` after its last renewal (by the database's clock; at
    once when the dead holder ran on this machine).

    A daemon thread renews the lease every `ttl_s / 3`; work that must not overlap another
    holder's calls `check()` before each step that would (e.g. acknowledging a batch).
    """

    def __init__(
        self, store: StateStore, name: str, what: str, ttl_s: float = 60.0, where: str = ""
    ) -> None:
        self.store = store
        self.name = name
        self.what = what
        self.where = where
        self.ttl_s = ttl_s
        self.holder = f"{os.uname().nodename}:{os.getpid()}:{os.urandom(4).hex()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None
        self.waited_s = 0.0
        store.ensure_schema("leases", _LEASES_DDL)

    def _try(self) -> tuple[bool, str, float]:
        """Take the lease if free or expired: (taken, current holder, seconds it has left)."""
        with self.store.transaction(f"lease:{self.name}") as tx:
            now = tx.now()
            row = tx.execute(
                "SELECT holder, expires_at FROM leases WHERE name = ?", (self.name,)
            ).fetchone()
            if (
                row is not None
                and row[1] > now
                and row[0] != self.holder
                and not _dead_here(str(row[0]))
            ):
                return False, str(row[0]), float(row[1]) - now
            tx.execute("DELETE FROM leases WHERE name = ?", (self.name,))
            tx.execute(
                "INSERT INTO leases (name, holder, acquired_at, expires_at) VALUES (?, ?, ?, ?)",
                (self.name, self.holder, now, now + self.ttl_s),
            )
            return True, self.holder, self.ttl_s

    def acquire(self, wait_s: float) -> float:
        """Take the lease, waiting up to `wait_s`; the seconds waited. Raises `Busy`."""
        started = time.monotonic()
        while True:
            taken, holder, left = self._try()
            if taken:
                break
            waited = time.monotonic() - started
            if waited >= wait_s:
                on = f" on {self.where}" if self.where else ""
                raise Busy(
                    f"another {self.what} is running{on} (held by {holder}, lapsing in "
                    f"{left:.0f}s unless renewed; waited {wait_s:.0f}s)"
                )
            time.sleep(min(LEASE_POLL_S, max(wait_s - waited, 0.01)))
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease {self.name}")
        self._thread.daemon = True
        self._thread.start()
        return time.monotonic() - started

    def _renew_loop(self) -> None:
        renewed_at = time.monotonic()
        while not self._stop.wait(self.ttl_s / 3):
            try:
                with self.store.transaction(f"lease:{self.name}") as tx:
                    now = tx.now()
                    renewed = tx.execute(
                        "UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?"
                        " AND expires_at > ?",
                        (now + self.ttl_s, self.name, self.holder, now),
                    ).rowcount
                if not renewed:
                    self._lost = f"the {self.what} lease {self.name!r} expired before renewal"
                    return
                renewed_at = time.monotonic()
            except Exception as exc:  # the database is unreachable: retry until the lease ends
                if time.monotonic() - renewed_at >= self.ttl_s:
                    self._lost = f"the {self.what} lease {self.name!r} lapsed: {exc}"
                    return

    def check(self) -> None:
        """Raise `LeaseLost` if the lease lapsed: another holder may already be at work."""
        if self._lost:
            raise LeaseLost(self._lost)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with suppress(Exception), self.store.transaction(f"lease:{self.name}") as tx:
            # unreachable, the lease simply expires
            tx.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (self.name, self.holder))


@contextmanager
def held(
    store: StateStore, name: str, what: str, wait_s: float, ttl_s: float = 60.0, where: str = ""
) -> Iterator[Lease]:
    """Hold a lease for the block (see `Lease`); `Busy` after `wait_s`."""
    lease = Lease(store, name, what, ttl_s, where)
    lease.waited_s = lease.acquire(wait_s)
    try:
        yield lease
    finally:
        lease.release()


def lake_key(lake: Any) -> str:
    """A lake's identity in the shared state (its URL, or its folder's absolute path): the
    AutoPi ledger and the drain leases are kept per lake."""
    location = str(getattr(lake, "location", None) or lake.root)
    if "://" in location:
        return location.rstrip("/")
    return str(Path(location).expanduser().resolve())
