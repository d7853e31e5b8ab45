"""What we know about AutoPi exports between runs: the AutoPi ledger, in the shared state.

AutoPi's `tasks/` list cannot say whether a finished export was already taken: a cleared task
stays listed as SUCCESS forever, and a reopened trip's re-export comes back under the *same*
task id with a new result. So the ledger records, per task, the SHA-256 of the result we
landed, when we landed and cleared it, when its result was found gone (404), and when the
task was last seen unfinished after a landing (a re-export on its way). From that, a run or
the sensor knows which SUCCESS tasks may hold a result we have not landed, without
downloading anything. The webhook receiver appends `trip_export_finished` signals to the same
ledger, and the datapoint keys ever seen are kept so drift reports say which keys are new.

It lives in the shared state database (`FLEET_STATE_URL`, pipelines.state), so the webhook,
the sensor and runs on any machine share it; every change is one transaction. Rows are kept
per lake (its location), as a lake's landings are what the ledger describes: two lakes fed
from the same account each land every export once. It holds no secret. An older version kept
it in `$FLEET_LAKE_DIR/autopi/_state/autopi.sqlite3`; that file is imported once and renamed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.state import StateStore, Tx, lake_key

LEGACY_STATE = Path("autopi") / "_state" / "autopi.sqlite3"
"""Where an older version kept the ledger, inside a local lake."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS autopi_exports (
    lake TEXT NOT NULL,
    task_id BIGINT NOT NULL,
    trip_id TEXT NOT NULL,
    sha256 TEXT,               -- of the result file we landed
    day TEXT,                  -- lake day folder the trip's files are in
    landed_at {real},
    cleared_at {real},
    gone_at {real},            -- the result answered 404 (cleared elsewhere, expired)
    unfinished_seen_at {real}, -- seen PENDING/STARTED after we last looked: a re-export
    failed_at {real},
    failure TEXT,
    PRIMARY KEY (lake, task_id)
);
CREATE TABLE IF NOT EXISTS autopi_trips (
    lake TEXT NOT NULL,
    trip_id TEXT NOT NULL,
    task_id BIGINT NOT NULL,
    day TEXT NOT NULL,
    PRIMARY KEY (lake, trip_id)
);
CREATE TABLE IF NOT EXISTS autopi_signals (
    id {id},
    lake TEXT NOT NULL,
    received_at {real} NOT NULL,
    task_id BIGINT NOT NULL,
    trip_id TEXT NOT NULL DEFAULT '',
    finished_at TEXT NOT NULL DEFAULT '',
    rebroadcast INTEGER NOT NULL DEFAULT 0
);
-- One row per signal (task, trip, finished_at): a retry or replay is not a new signal.
CREATE UNIQUE INDEX IF NOT EXISTS autopi_signals_once
    ON autopi_signals (lake, task_id, trip_id, finished_at);
CREATE INDEX IF NOT EXISTS autopi_signals_received ON autopi_signals(lake, received_at);
CREATE TABLE IF NOT EXISTS autopi_datapoint_keys (
    lake TEXT NOT NULL,
    key TEXT NOT NULL,
    first_seen_at {real} NOT NULL,
    first_trip_id TEXT NOT NULL,
    PRIMARY KEY (lake, key)
);
CREATE TABLE IF NOT EXISTS autopi_markers (
    lake TEXT NOT NULL,
    name TEXT NOT NULL,
    done_at {real} NOT NULL,
    PRIMARY KEY (lake, name)
)
"""
_COLUMNS = (
    "task_id, trip_id, sha256, day, landed_at, cleared_at, gone_at, unfinished_seen_at,"
    " failed_at, failure"
)


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
    """The landed-state record of one lake; safe to share between threads and processes."""

    @classmethod
    def of(cls, lake: Any, state: StateStore | None = None) -> ExportLedger:
        """The ledger of `lake` (a `Lake`) in `state` (default: `FLEET_STATE_URL`)."""
        try:
            root = lake.root
        except Exception:  # an object-store lake has no local folder
            root = None
        legacy = root if isinstance(root, Path) else None
        return cls(state or StateStore.from_settings(), lake_key(lake), legacy_root=legacy)

    def __init__(self, store: StateStore, lake: str, legacy_root: Path | None = None) -> None:
        """`lake` names the lake (its location); `legacy_root`, a local lake's folder, is where
        an older version's ledger file may wait to be imported."""
        self.store = store
        self.lake = lake
        store.ensure_schema("autopi_ledger", _SCHEMA)
        if legacy_root is not None:
            self._import_legacy(Path(legacy_root) / LEGACY_STATE)

    def close(self) -> None:
        """Nothing to close: the state connection is the process's."""

    def __enter__(self) -> ExportLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tx(self):  # noqa: ANN202 - the store's transaction context manager
        return self.store.transaction(f"autopi-ledger:{self.lake}")

    # --- exports ----------------------------------------------------------------------------
    def exports(self) -> dict[int, ExportRecord]:
        with self._tx() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM autopi_exports WHERE lake = ?", (self.lake,)
            ).fetchall()
        return {int(r[0]): ExportRecord(*r) for r in rows}

    def get(self, task_id: int) -> ExportRecord | None:
        if not task_id:
            return None
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM autopi_exports WHERE lake = ? AND task_id = ?",
                (self.lake, task_id),
            ).fetchone()
        return ExportRecord(*row) if row else None

    def trip_day(self, trip_id: str) -> str | None:
        """The day folder holding a trip's files now, whichever task landed them."""
        with self._tx() as db:
            row = db.execute(
                "SELECT day FROM autopi_trips WHERE lake = ? AND trip_id = ?", (self.lake, trip_id)
            ).fetchone()
        return row[0] if row else None

    def _ensure(self, db: Tx, task_id: int, trip_id: str) -> None:
        db.execute(
            "INSERT INTO autopi_exports (lake, task_id, trip_id) VALUES (?, ?, ?)"
            " ON CONFLICT (lake, task_id) DO NOTHING",
            (self.lake, task_id, trip_id),
        )

    def record_landed(self, task_id: int, trip_id: str, sha256: str, day: str) -> None:
        with self._tx() as db:
            now = db.now()
            self._ensure(db, task_id, trip_id)
            db.execute(
                "UPDATE autopi_exports SET sha256 = ?, day = ?, landed_at = ?, cleared_at = NULL,"
                " gone_at = NULL, failed_at = NULL, failure = NULL WHERE lake = ? AND task_id = ?",
                (sha256, day, now, self.lake, task_id),
            )
            db.execute(
                "INSERT INTO autopi_trips (lake, trip_id, task_id, day) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (lake, trip_id) DO UPDATE SET task_id = excluded.task_id,"
                " day = excluded.day",
                (self.lake, trip_id, task_id, day),
            )

    def _stamp(self, column: str, task_id: int, trip_id: str | None) -> None:
        with self._tx() as db:
            now = db.now()
            if trip_id is not None:
                self._ensure(db, task_id, trip_id)
            db.execute(
                f"UPDATE autopi_exports SET {column} = ? WHERE lake = ? AND task_id = ?",
                (now, self.lake, task_id),
            )

    def record_cleared(self, task_id: int) -> None:
        self._stamp("cleared_at", task_id, None)

    def record_gone(self, task_id: int, trip_id: str) -> None:
        self._stamp("gone_at", task_id, trip_id)

    def record_failure(self, task_id: int, trip_id: str, failure: str) -> None:
        with self._tx() as db:
            now = db.now()
            self._ensure(db, task_id, trip_id)
            db.execute(
                "UPDATE autopi_exports SET failed_at = ?, failure = ?"
                " WHERE lake = ? AND task_id = ?",
                (now, failure[:500], self.lake, task_id),
            )

    def record_unfinished(self, task_ids: Iterable[int]) -> int:
        """Tasks listed as not finished: for one we already looked at, a re-export is coming.
        Returns how many were newly marked."""
        ids = list(task_ids)
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        with self._tx() as db:
            now = db.now()
            return db.execute(
                f"UPDATE autopi_exports SET unfinished_seen_at = ? WHERE lake = ?"
                f" AND task_id IN ({marks})"
                " AND (landed_at IS NOT NULL OR gone_at IS NOT NULL)"
                " AND (unfinished_seen_at IS NULL"
                "      OR unfinished_seen_at < coalesce(landed_at, 0)"
                "      OR unfinished_seen_at < coalesce(gone_at, 0))",
                (now, self.lake, *ids),
            ).rowcount

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
        key = (self.lake, task_id, trip_id or "", finished_at or "")
        with self._tx() as db:
            now = db.now()
            row = db.execute(
                "SELECT id, received_at FROM autopi_signals WHERE lake = ? AND task_id = ?"
                " AND trip_id = ? AND finished_at = ?",
                key,
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO autopi_signals"
                    " (lake, task_id, trip_id, finished_at, received_at, rebroadcast)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (*key, now, int(rebroadcast)),
                )
                return True
            if not rebroadcast:
                return False
            look = db.execute(
                "SELECT landed_at, gone_at FROM autopi_exports WHERE lake = ? AND task_id = ?",
                (self.lake, task_id),
            ).fetchone()
            if look is None or row[1] > max(look[0] or 0.0, look[1] or 0.0):
                return False  # not looked at since: the sensor already treats it as waiting
            db.execute(
                "UPDATE autopi_signals SET received_at = ?, rebroadcast = 1 WHERE id = ?",
                (now, row[0]),
            )
            return True

    def signals(self, since: float = 0.0) -> list[Signal]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT received_at, task_id, trip_id, finished_at, rebroadcast"
                " FROM autopi_signals WHERE lake = ? AND received_at >= ? ORDER BY id",
                (self.lake, since),
            ).fetchall()
        return [Signal(r[0], int(r[1]), r[2] or None, r[3] or None, bool(r[4])) for r in rows]

    def prune_signals(self, older_than_s: float) -> int:
        with self._tx() as db:
            now = db.now()
            return db.execute(
                "DELETE FROM autopi_signals WHERE lake = ? AND received_at < ?",
                (self.lake, now - older_than_s),
            ).rowcount

    # --- datapoint keys ---------------------------------------------------------------------
    def note_keys(self, keys: Iterable[str], trip_id: str) -> list[str]:
        """Remember undeclared datapoint keys; returns those never seen before."""
        new: list[str] = []
        with self._tx() as db:
            now = db.now()
            for key in sorted(set(keys)):
                taken = db.execute(
                    "INSERT INTO autopi_datapoint_keys (lake, key, first_seen_at, first_trip_id)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (lake, key) DO NOTHING",
                    (self.lake, key, now, trip_id),
                ).rowcount
                if taken:
                    new.append(key)
        return new

    # --- one-off steps ----------------------------------------------------------------------
    def done(self, name: str) -> bool:
        """Whether the one-off step `name` (e.g. a migration) already ran for this lake."""
        with self._tx() as db:
            row = db.execute(
                "SELECT 1 FROM autopi_markers WHERE lake = ? AND name = ?", (self.lake, name)
            ).fetchone()
        return row is not None

    def mark_done(self, name: str) -> None:
        with self._tx() as db:
            now = db.now()
            db.execute(
                "INSERT INTO autopi_markers (lake, name, done_at) VALUES (?, ?, ?)"
                " ON CONFLICT (lake, name) DO NOTHING",
                (self.lake, name, now),
            )

    def _import_legacy(self, path: Path) -> None:
        """Take an older version's in-lake ledger file into the shared state, once, and rename
        it so the lake no longer holds state (nothing is lost: the file stays, renamed)."""
        if not path.is_file():
            return
        old = sqlite3.connect(path, timeout=30)

        def rows(sql: str) -> list[tuple[Any, ...]]:
            try:
                return old.execute(sql).fetchall()
            except sqlite3.Error:  # a table an older version did not have yet
                return []

        try:
            exports = rows(f"SELECT {_COLUMNS} FROM exports")
            trips = rows("SELECT trip_id, task_id, day FROM trips")
            # Newest first: versions before de-duplication kept every copy; the latest wins.
            signals = rows(
                "SELECT received_at, task_id, trip_id, finished_at, rebroadcast FROM signals"
                " ORDER BY received_at DESC, id DESC"
            )
            keys = rows("SELECT key, first_seen_at, first_trip_id FROM datapoint_keys")
        finally:
            old.close()
        with self._tx() as db:
            for r in exports:
                db.execute(
                    f"INSERT INTO autopi_exports (lake, {_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (lake, task_id) DO NOTHING",
                    (self.lake, *r),
                )
            for r in trips:
                db.execute(
                    "INSERT INTO autopi_trips (lake, trip_id, task_id, day) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (lake, trip_id) DO NOTHING",
                    (self.lake, *r),
                )
            for received_at, task_id, trip_id, finished_at, rb in signals:
                db.execute(
                    "INSERT INTO autopi_signals"
                    " (lake, task_id, trip_id, finished_at, received_at, rebroadcast)"
                    " VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (lake, task_id, trip_id, finished_at) DO NOTHING",
                    (
                        self.lake,
                        task_id,
                        trip_id or "",
                        finished_at or "",
                        received_at,
                        rb,
                    ),
                )
            for r in keys:
                db.execute(
                    "INSERT INTO autopi_datapoint_keys (lake, key, first_seen_at, first_trip_id)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (lake, key) DO NOTHING",
                    (self.lake, *r),
                )
        path.rename(path.with_name(path.name + ".imported"))
