"""The kt1 drain: get → land → acknowledge until the queue is empty or the time budget is spent.

Exactly-once *as seen by any query* from an at-least-once queue:

1. Batches are held in memory, un-acknowledged, in a group (at most `group_max_batches`, or
   `group_max_age_s` old, or until the queue runs short).
2. The group is written to the lake, one file per (table, UTC day), each atomic and fsynced
   (`Lake.write_file`; items that fail validation go to `kt1/quarantine/day=D/` the same way,
   through `Lake.write_quarantine`). Only when *every* file of the group is durable ...
3. ... is each batch of the group DELETEd.

A crash before step 3 finishes leaves batches un-acknowledged: the server hands them out again
(possibly under new ids) and they land again; staging keeps one row per item identity. A crash
after a DELETE loses nothing because that batch was already durable. Groups are flushed well
inside the 2-minute redelivery window so a healthy drain causes no redeliveries.

No Dagster here: the asset wraps `drain_stream`; tests and the benchmark call it directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from pipelines.lake import Lake
from pipelines.sources.kt1.client import REDELIVERY_S, AckOutcome, Kt1Batch, Kt1Client
from pipelines.sources.kt1.extract import ItemSplitter
from pipelines.sources.kt1.schemas import QUARANTINE, SCHEMAS, SOURCE, TABLES
from pipelines.state import Busy, Lease, StateStore, held, lake_key

Stage = str
"""Named points of a drain, reported to `on_stage` (crash tests stop the process there)."""
AFTER_GET: Stage = "after_get"  # a batch is in memory, not landed
MID_WRITE: Stage = "mid_write"  # some files of a group are durable, others not written yet
AFTER_WRITE: Stage = "after_write"  # the whole group is durable, nothing acknowledged
AFTER_DELETE: Stage = "after_delete"  # one more batch of the group acknowledged
STAGES = (AFTER_GET, MID_WRITE, AFTER_WRITE, AFTER_DELETE)

DEFAULT_GROUP_MAX_BATCHES = 50
SCHEMA_FILE = "schema-only"
LEASE_TTL_S = 60.0
"""A drainer that dies holding the lease blocks the next drain at most this long."""


class DrainBusy(RuntimeError):
    """Another drain of the same lake held the lock for longer than this run could wait."""


@dataclass
class TableLanding:
    rows: int = 0
    files: int = 0
    bytes: int = 0
    days: set[date] = field(default_factory=set)  # UTC days whose files this drain wrote


@dataclass
class DrainResult:
    """What one drain fetched, landed and acknowledged, for metadata and tests."""

    stop_reason: str = ""
    batches: int = 0
    items: int = 0
    items_by_type: Counter[str] = field(default_factory=Counter)
    quarantined: int = 0
    quarantined_by_table: Counter[str] = field(default_factory=Counter)  # quarantine `table`
    quarantine_reasons: Counter[str] = field(default_factory=Counter)
    duplicate_items_in_run: int = 0
    groups: int = 0
    acks: int = 0
    acks_expired: int = 0
    acks_failed: int = 0
    tables: dict[str, TableLanding] = field(
        default_factory=lambda: {t: TableLanding() for t in (*TABLES, QUARANTINE)}
    )
    seconds: float = 0.0
    lock_wait_s: float = 0.0

    @property
    def items_landed(self) -> int:
        return sum(t.rows for t in self.tables.values())


@dataclass
class _Group:
    batches: list[Kt1Batch] = field(default_factory=list)
    opened_at: float = 0.0


def group_file_name(batches: list[Kt1Batch]) -> str:
    """`<first batch id>-<n>-<digest of every id>`: re-landing the same group replaces its files,
    and a group that merely starts with a re-used id can never overwrite another group's rows.
    """
    ids = [b.batch_id or f"noid@{b.fetched_at.isoformat()}" for b in batches]
    digest = hashlib.blake2b("\n".join(ids).encode(), digest_size=6).hexdigest()
    first = "".join(c if c.isalnum() or c in "-_" else "_" for c in ids[0])[:64]
    return f"{first}-{len(ids)}-{digest}"


@contextlib.contextmanager
def drain_lock(lake: Lake, wait_s: float, state: StateStore | None = None) -> Iterator[Lease]:
    """One drain per lake at a time, on any machine (two would hold each other's batches until
    redelivery): a lease in the shared state that lapses `LEASE_TTL_S` after a dead drainer's
    last renewal."""
    store = state or StateStore.from_settings()
    try:
        key = lake_key(lake)
        with held(store, f"kt1-drain:{key}", "kt1 drain", wait_s, LEASE_TTL_S, key) as lease:
            yield lease
    except Busy as exc:
        raise DrainBusy(str(exc)) from None


def drain_stream(
    client: Kt1Client,
    lake: Lake,
    *,
    budget_s: float,
    group_max_batches: int = DEFAULT_GROUP_MAX_BATCHES,
    group_max_age_s: float = REDELIVERY_S / 6,
    on_stage: Callable[[Stage], None] | None = None,
    progress: Callable[[str], None] | None = None,
    lock_wait_s: float | None = None,
    state: StateStore | None = None,
) -> DrainResult:
    """Drain the stream into `lake` until it is empty or `budget_s` is spent.

    A run may overrun the budget by one long poll (≤45 s on the real API): a GET sent just
    before the deadline waits for data like any other. Raises what the client raises after
    landing and acknowledging every batch it already holds.
    """
    result = DrainResult()
    started = time.monotonic()
    wait_s = budget_s if lock_wait_s is None else lock_wait_s
    with drain_lock(lake, wait_s, state) as lease:
        waited = result.lock_wait_s = lease.waited_s
        deadline = time.monotonic() + max(budget_s - waited, 0.0)
        with ItemSplitter() as splitter:
            _drain(
                client,
                lake,
                splitter,
                result,
                deadline=deadline,
                group_max_batches=group_max_batches,
                group_max_age_s=group_max_age_s,
                on_stage=on_stage or (lambda _stage: None),
                progress=progress or (lambda _msg: None),
                check_lease=lease.check,
            )
        for table, day in ensure_schema_files(lake):  # files too: days_written lists their day
            result.tables[table].days.add(day)
    result.seconds = time.monotonic() - started
    return result


def _drain(
    client: Kt1Client,
    lake: Lake,
    splitter: ItemSplitter,
    result: DrainResult,
    *,
    deadline: float,
    group_max_batches: int,
    group_max_age_s: float,
    on_stage: Callable[[Stage], None],
    progress: Callable[[str], None],
    check_lease: Callable[[], None],
) -> None:
    group = _Group()
    seen: set[int] = set()  # identity hashes landed in this run
    largest_body = 0

    def flush() -> None:
        _flush(client, lake, splitter, group, result, seen, on_stage, progress, check_lease)

    try:
        while True:
            if group.batches and (
                len(group.batches) >= group_max_batches
                or time.monotonic() - group.opened_at >= group_max_age_s
            ):
                flush()
                group = _Group()
            if time.monotonic() >= deadline:
                result.stop_reason = "time budget spent"
                break
            batch = client.next_batch()
            if batch is None:
                result.stop_reason = "queue empty"
                break
            on_stage(AFTER_GET)
            if not group.batches:
                group.opened_at = time.monotonic()
            group.batches.append(batch)
            result.batches += 1
            # A body under half the largest so far means the queue just ran short: the next GET
            # will likely long-poll, so land and acknowledge what we hold first.
            if len(batch.body) < largest_body / 2:
                flush()
                group = _Group()
            largest_body = max(largest_body, len(batch.body))
    except BaseException:
        # Whatever stopped the drain, batches already in hand are landed and acknowledged
        # (in that order) so they are not redelivered; if that fails too, redelivery covers it.
        if group.batches:
            with contextlib.suppress(Exception):
                flush()
        raise
    if group.batches:
        flush()


def _flush(
    client: Kt1Client,
    lake: Lake,
    splitter: ItemSplitter,
    group: _Group,
    result: DrainResult,
    seen: set[int],
    on_stage: Callable[[Stage], None],
    progress: Callable[[str], None],
    check_lease: Callable[[], None],
) -> None:
    """Land every item of the group durably, then — only then — acknowledge its batches
    (unless the drain lease lapsed: another drain may hold them now, redelivery covers it)."""
    batches = list(group.batches)
    group.batches.clear()  # a failure below must not make the caller flush them twice
    split = splitter.split(batches, datetime.now(UTC), seen)
    name = group_file_name(batches)
    for n, ((table, day), data) in enumerate(sorted(split.tables.items())):
        if table == QUARANTINE:
            quarantined = lake.write_quarantine(SOURCE, day, name, data)
            if quarantined is None:  # no rows, so no file (a split never holds such a table)
                continue
            written = quarantined
        else:
            written = lake.write_file(SOURCE, table, day, name, data)
        landing = result.tables[table]
        landing.rows += written.rows
        landing.files += 1
        landing.bytes += written.bytes
        landing.days.add(day)
        if n == 0:
            on_stage(MID_WRITE)
    on_stage(AFTER_WRITE)
    result.groups += 1
    result.items_by_type.update(split.items_by_type)
    result.quarantined += split.quarantined
    result.quarantined_by_table.update(split.quarantined_by_table)
    result.quarantine_reasons.update(split.quarantine_reasons)
    result.duplicate_items_in_run += split.duplicates
    items = sum(split.rows_by_table.values()) + split.quarantined
    result.items += items
    check_lease()
    for batch in batches:
        if batch.batch_id is None:
            continue  # nothing to acknowledge; it will come back and land again
        outcome = client.acknowledge(batch.batch_id)
        if outcome is AckOutcome.ACKNOWLEDGED:
            result.acks += 1
        elif outcome is AckOutcome.EXPIRED:
            result.acks_expired += 1
        else:
            result.acks_failed += 1
        on_stage(AFTER_DELETE)
    progress(
        f"kt1 group {result.groups}: {len(batches)} batches, {items} items landed in "
        f"{len(split.tables)} files and acknowledged ({result.items} items so far)"
    )


def ensure_schema_files(lake: Lake, today: date | None = None) -> list[tuple[str, date]]:
    """Give each raw table a schema-only file if it has none, so dbt's read_parquet always
    matches a file once the drain has run (even on an empty queue); the (table, day) of each.
    """
    day = today or datetime.now(UTC).date()
    return [
        (table, day)
        for table in TABLES
        if lake.ensure_table(SOURCE, table, SCHEMAS[table], day, name=SCHEMA_FILE) is not None
    ]
