"""What we know about AutoPi exports between runs: one small SQLite file beside the lake tables.

AutoPi's `tasks/` list cannot say whether a finished export was already taken: a cleared task
stays listed as SUCCESS forever, and a reopened trip's re-export comes back under the *same*
task id with a new result. So the ledger records, per task, the SHA-256 of the result we
landed, when we landed and cleared it, when its result was found gone (404), and when the
task was last seen unfinished after a landing (a re-export on its way). From that, a run or
the sensor knows which SUCCESS tasks may hold a result we have not landed, without
downloading anything. The webhook receiver appends `trip_export_finished` signals to the same
file, and the datapoint keys ever seen are kept so drift reports say which keys are new.

SQLite (WAL, one transaction per change) makes every record atomic and lets the webhook
process, the sensor and a run share the file safely. It lives at
`$FLEET_LAKE_DIR/autopi/_state/autopi.sqlite3`, outside every `day=*/*.parquet` glob, and holds
no secret.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STATE_DIR = Path("autopi") / "_state"
STATE_FILE = "autopi.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exports (
    task_id INTEGER PRIMARY KEY,
    trip_id TEXT NOT NULL,
    sha256 TEXT,              -- of the result file we landed
    day TEXT,                 -- lake day folder the trip's files are in
    landed_at REAL,
    cleared_at REAL,
    gone_at REAL,             -- the result answered 404 (cleared elsewhere, expired)
    unfinished_seen_at REAL,  -- seen PENDING/STARTED after we last looked: a re-export
    failed_at REAL,
    failure TEXT
);
CREATE TABLE IF NOT EXISTS trips (
    trip_id TEXT PRIMARY KEY,
    task_id INTEGER NOT NULL,
    day TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    task_id INTEGER NOT NULL,
    trip_id TEXT,
    finished_at TEXT,
    rebroadcast INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS signals_task ON signals(task_id, received_at);
-- One row per signal (task, trip, finished_at): a retry or replay is not a new signal. Ledgers
-- written before this kept every copy; keep the latest of each once, then enforce it.
DELETE FROM signals
WHERE NOT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'signals_once')
  AND id NOT IN (
    SELECT max(id) FROM signals GROUP BY task_id, ifnull(trip_id, ''), ifnull(finished_at, '')
  );
CREATE UNIQUE INDEX IF NOT EXISTS signals_once
    ON signals(task_id, ifnull(trip_id, ''), ifnull(finished_at, ''));
CREATE TABLE IF NOT EXISTS datapoint_keys (
    key TEXT PRIMARY KEY,
    first_seen_at REAL NOT NULL,
    first_trip_id TEXT NOT NULL
);
"""


def state_path(lake_dir: Path) -> Path:
    """The ledger of a lake (the webhook and the pipeline must agree on it)."""
    return Path(lake_dir) / STATE_DIR / STATE_FILE


@dataclass(frozen=True)
class ExportRecord:
    task_id: int
    trip_id: str
    sha256: str | None
    day: str | None
    landed_at: float | None
    cleared_at: float | None
    gone_at: float | None
    unfinished_seen_at: float | None
    failed_at: float | None
    failure: str | None

    @property
    def last_look(self) -> float:
        """When we last saw this task's result, or learned it had none."""
        return max(self.landed_at or 0.0, self.gone_at or 0.0)


@dataclass(frozen=True)
class Signal:
    received_at: float
    task_id: int
    trip_id: str | None
    finished_at: str | None
    rebroadcast: bool


class ExportLedger:
    """The landed-state record; safe to share between threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a landing record must survive a crash
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ExportLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- exports ----------------------------------------------------------------------------
    def exports(self) -> dict[int, ExportRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT task_id, trip_id, sha256, day, landed_at, cleared_at, gone_at,"
                " unfinished_seen_at, failed_at, failure FROM exports"
            ).fetchall()
        return {r[0]: ExportRecord(*r) for r in rows}

    def get(self, task_id: int) -> ExportRecord | None:
        return self.exports().get(task_id) if task_id else None

    def trip_day(self, trip_id: str) -> str | None:
        """The day folder holding a trip's files now, whichever task landed them."""
        with self._lock:
            row = self._db.execute("SELECT day FROM trips WHERE trip_id = ?", (trip_id,)).fetchone()
        return row[0] if row else None

    def _ensure(self, db: sqlite3.Connection, task_id: int, trip_id: str) -> None:
        db.execute(
            "INSERT INTO exports (task_id, trip_id) VALUES (?, ?) ON CONFLICT(task_id) DO NOTHING",
            (task_id, trip_id),
        )

    def record_landed(self, task_id: int, trip_id: str, sha256: str, day: str) -> None:
        now = time.time()
        with self._tx() as db:
            self._ensure(db, task_id, trip_id)
            db.execute(
                "UPDATE exports SET sha256 = ?, day = ?, landed_at = ?, cleared_at = NULL,"
                " gone_at = NULL, failed_at = NULL, failure = NULL WHERE task_id = ?",
                (sha256, day, now, task_id),
            )
            db.execute(
                "INSERT INTO trips (trip_id, task_id, day) VALUES (?, ?, ?)"
                " ON CONFLICT(trip_id) DO UPDATE SET task_id = excluded.task_id,"
                " day = excluded.day",
                (trip_id, task_id, day),
            )

    def record_cleared(self, task_id: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE exports SET cleared_at = ? WHERE task_id = ?", (time.time(), task_id)
            )

    def record_gone(self, task_id: int, trip_id: str) -> None:
        with self._tx() as db:
            self._ensure(db, task_id, trip_id)
            db.execute("UPDATE exports SET gone_at = ? WHERE task_id = ?", (time.time(), task_id))

    def record_failure(self, task_id: int, trip_id: str, failure: str) -> None:
        with self._tx() as db:
            self._ensure(db, task_id, trip_id)
            db.execute(
                "UPDATE exports SET failed_at = ?, failure = ? WHERE task_id = ?",
                (time.time(), failure[:500], task_id),
            )

    def record_unfinished(self, task_ids: Iterable[int]) -> int:
        """Tasks listed as not finished: for one we already looked at, a re-export is coming.
        Returns how many were newly marked."""
        ids = list(task_ids)
        if not ids:
            return 0
        now = time.time()
        marks = ",".join("?" * len(ids))
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE exports SET unfinished_seen_at = ? WHERE task_id IN ({marks})"
                " AND (landed_at IS NOT NULL OR gone_at IS NOT NULL)"
                " AND (unfinished_seen_at IS NULL"
                "      OR unfinished_seen_at < max(coalesce(landed_at, 0), coalesce(gone_at, 0)))",
                (now, *ids),
            )
            return cur.rowcount

    # --- webhook signals ----------------------------------------------------------------------
    def add_signal(
        self,
        task_id: int,
        *,
        trip_id: str | None = None,
        finished_at: str | None = None,
        rebroadcast: bool = False,
    ) -> bool:
        """Record a webhook signal once; True if the ledger took it, False for a repeat.

        The same (task, trip, finished_at) again is a retry or a replay and changes nothing, so
        a replayed body cannot grow the table. One exception keeps AutoPi's daily rebroadcast
        meaningful: a rebroadcast arriving after our last look at the task (landing or 404)
        says the export is still there (our clear did not take), so the signal's arrival time
        moves forward and the sensor probes the task once more. A re-export comes with a new
        `finished_at` and is a new signal.
        """
        now = time.time()
        key = (task_id, trip_id or "", finished_at or "")
        with self._tx() as db:
            row = db.execute(
                "SELECT id, received_at FROM signals WHERE task_id = ?"
                " AND ifnull(trip_id, '') = ? AND ifnull(finished_at, '') = ?",
                key,
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO signals (received_at, task_id, trip_id, finished_at, rebroadcast)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (now, task_id, trip_id, finished_at, int(rebroadcast)),
                )
                return True
            if not rebroadcast:
                return False
            look = db.execute(
                "SELECT max(ifnull(landed_at, 0), ifnull(gone_at, 0)) FROM exports"
                " WHERE task_id = ?",
                (task_id,),
            ).fetchone()
            if look is None or row[1] > look[0]:
                return False  # not looked at since: the sensor already treats it as waiting
            db.execute(
                "UPDATE signals SET received_at = ?, rebroadcast = 1 WHERE id = ?", (now, row[0])
            )
            return True

    def signals(self, since: float = 0.0) -> list[Signal]:
        with self._lock:
            rows = self._db.execute(
                "SELECT received_at, task_id, trip_id, finished_at, rebroadcast FROM signals"
                " WHERE received_at >= ? ORDER BY id",
                (since,),
            ).fetchall()
        return [Signal(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]

    def prune_signals(self, older_than_s: float) -> int:
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM signals WHERE received_at < ?", (time.time() - older_than_s,)
            )
            return cur.rowcount

    # --- datapoint keys ---------------------------------------------------------------------
    def note_keys(self, keys: Iterable[str], trip_id: str) -> list[str]:
        """Remember undeclared datapoint keys; returns those never seen before."""
        now = time.time()
        new: list[str] = []
        with self._tx() as db:
            for key in sorted(set(keys)):
                cur = db.execute(
                    "INSERT INTO datapoint_keys (key, first_seen_at, first_trip_id)"
                    " VALUES (?, ?, ?) ON CONFLICT(key) DO NOTHING",
                    (key, now, trip_id),
                )
                if cur.rowcount:
                    new.append(key)
        return new
