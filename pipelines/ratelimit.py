"""The sliding-window rate limiter every vendor client shares: a ledger of request slots in the
shared state database, so the limit holds across threads, processes and machines.

Apart from the HTTP client because it is about the vendors' quotas and the shared state, not
about sending a request: a client only asks it for a slot before each attempt.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import InitVar, dataclass, field
from pathlib import Path

from pipelines.state import StateStore
from pipelines.state import shared as shared_state

_SLOTS_DDL = """
CREATE TABLE IF NOT EXISTS rate_slots (
    id {id},
    key TEXT NOT NULL,
    reserved_at {real} NOT NULL,
    released_at {real}
);
CREATE INDEX IF NOT EXISTS rate_slots_key ON rate_slots(key, released_at)
"""


@dataclass
class Slot:
    """One reserved request slot; released when the response is in hand."""

    limiter: SlidingWindowLimiter | None
    slot_id: int | None
    waited_s: float


@dataclass(eq=False)
class SlidingWindowLimiter:
    """At most `max_requests` in any window of `window_s`, across threads, processes and
    machines sharing one state database (`FLEET_STATE_URL`, see pipelines.state).

    Each request holds a row in the ledger keyed by `key`. A slot counts from when it is
    reserved and, once released, until `window_s` after the *response* arrived: the server saw
    the request no later than that, so spacing releases by a full window can never let N+1
    requests land in one server-side window, whatever the latency. Times come from the
    database's clock, so machines with skewed clocks still agree. Slots of a process that died
    mid-request stop counting after `stale_after_s`.
    """

    key: str
    max_requests: int
    window_s: float
    state: InitVar[StateStore | Path | str]
    margin_s: float = field(default=0.01, kw_only=True)
    stale_after_s: float = field(default=300.0, kw_only=True)
    _store: StateStore = field(init=False, repr=False)

    def __post_init__(self, state: StateStore | Path | str) -> None:
        if isinstance(state, Path):
            state = f"sqlite:///{state}"
        self._store = shared_state(state) if isinstance(state, str) else state
        self._store.ensure_schema("ratelimit", _SLOTS_DDL)

    def _try_reserve(self) -> tuple[int | None, float]:
        """Reserve a slot now, or say how long to wait before trying again."""
        with self._store.transaction(f"ratelimit:{self.key}") as db:
            now = db.now()
            horizon = now - self.window_s - self.margin_s
            stale = now - self.stale_after_s
            db.execute(
                "DELETE FROM rate_slots WHERE key = ? AND ("
                " (released_at IS NOT NULL AND released_at < ?)"
                " OR (released_at IS NULL AND reserved_at < ?))",
                (self.key, horizon, stale - self.window_s),
            )
            rows = db.execute(
                "SELECT reserved_at, released_at FROM rate_slots WHERE key = ? AND ("
                " released_at >= ? OR released_at IS NULL)",
                (self.key, horizon),
            ).fetchall()
            ends = []  # when each counted slot stops counting
            in_flight = 0
            for reserved_at, released_at in rows:
                if released_at is not None:
                    ends.append(released_at + self.window_s + self.margin_s)
                elif reserved_at >= stale:
                    in_flight += 1
                else:  # its process died mid-request: count it as released when it went stale
                    ends.append(reserved_at + self.stale_after_s + self.window_s)
            ends = [e for e in ends if e > now]
            if len(ends) + in_flight < self.max_requests:
                slot_id = db.insert_id(
                    "INSERT INTO rate_slots (key, reserved_at) VALUES (?, ?)", (self.key, now)
                )
                return slot_id, 0.0
        ends.sort()
        must_expire = len(ends) + in_flight - self.max_requests  # 0-based index into ends
        if must_expire < len(ends):
            return None, max(ends[must_expire] - now, 0.001)
        return None, 0.02  # every slot is in flight: poll until one is released

    def acquire(self) -> Slot:
        waited = 0.0
        while True:
            slot_id, wait = self._try_reserve()
            if slot_id is not None:
                return Slot(self, slot_id, waited)
            # Re-check at least once a second: another process may release early.
            pause = min(wait, 1.0)
            time.sleep(pause)
            waited += pause

    def release(self, slot: Slot) -> None:
        with self._store.transaction(f"ratelimit:{self.key}") as db:
            now = db.now()
            db.execute("UPDATE rate_slots SET released_at = ? WHERE id = ?", (now, slot.slot_id))

    @contextmanager
    def slot(self) -> Iterator[Slot]:
        s = self.acquire()
        try:
            yield s
        finally:
            self.release(s)

    def close(self) -> None:
        """Nothing to close: the state connection is the process's, shared by every limiter."""
