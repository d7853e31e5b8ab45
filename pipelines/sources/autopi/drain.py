"""Drain AutoPi's finished exports into the lake: decide, download, land, then clear.

No Dagster here: the asset, the sensor and the re-export job call these functions. The order
per export is fixed and is what makes a run safe to kill at any point: download to a scratch
file → parse and make the trip's files durable → record the landing → clear upstream. A
failure before the clear leaves the export on AutoPi, so the next run takes it again; the
recorded SHA-256 then turns a second download of the same result into just a clear.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from pipelines.http import VendorAPIError
from pipelines.lake import Lake
from pipelines.sources.autopi.client import FINISHED_BAD, AutoPiClient, ExportTask
from pipelines.sources.autopi.landing import (
    LandedTrip,
    ensure_schema_files,
    land_export,
    migrate_legacy_quarantine,
    sha256_of,
)
from pipelines.sources.autopi.state import ExportLedger, ExportRecord
from pipelines.sources.autopi.values import CorruptExport
from pipelines.state import held, lake_key

DOWNLOAD_ATTEMPTS = 3  # a file that fails its gzip check is fetched again this many times
SIGNAL_LOOKBACK_S = 7 * 86400  # webhook signals older than this no longer matter
REEXPORT_POLL_S = 5.0
LOCK_WAIT_S = 900.0
"""A drain that finds another one running waits for it (then finds its exports landed), at most
this long."""
LEASE_TTL_S = 60.0
"""A drainer that dies holding the lease blocks the next drain at most this long."""
LEGACY_QUARANTINE_MIGRATED = "legacy-quarantine-migrated"
"""Ledger marker: the one-off move of `*.quarantine.jsonl` files has run for this lake."""

Log = Callable[[str], None]


@dataclass
class DrainReport:
    """What one drain did, for metadata, checks and the demo summary."""

    listed: int = 0
    probed: int = 0
    landed: list[LandedTrip] = field(default_factory=list)
    already_landed: list[int] = field(default_factory=list)  # same result again: only cleared
    cleared: list[int] = field(default_factory=list)
    pending: list[ExportTask] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    not_cleared: dict[int, str] = field(default_factory=dict)
    redownloads: int = 0
    new_keys: list[str] = field(default_factory=list)
    schema_files: int = 0
    legacy_quarantine_moved: int = 0

    @property
    def datapoints(self) -> int:
        return sum(t.stats.datapoints for t in self.landed)

    @property
    def malformed(self) -> int:
        return sum(t.stats.malformed for t in self.landed)

    @property
    def quarantined_datapoints(self) -> int:
        return sum(t.quarantined_datapoints for t in self.landed)

    @property
    def quarantined_trips(self) -> int:
        return sum(t.trip_quarantined for t in self.landed)

    def quarantine_reasons(self, table: str) -> dict[str, int]:
        """How often each reason was given for rows of `table`, most frequent first."""
        reasons: dict[str, int] = {}
        for trip in self.landed:
            for reason, count in trip.quarantine_reasons.get(table, {}).items():
                reasons[reason] = reasons.get(reason, 0) + count
        return dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0])))

    @property
    def undeclared(self) -> dict[str, int]:
        keys: dict[str, int] = {}
        for trip in self.landed:
            for key, count in trip.stats.undeclared.items():
                keys[key] = keys.get(key, 0) + count
        return dict(sorted(keys.items()))


def _why_probe(
    task: ExportTask,
    record: ExportRecord | None,
    signals: dict[int, float],
    now: float,
    reprobe_window_s: float,
) -> str | None:
    """Why a SUCCESS task may hold a result we have not landed (None: it cannot)."""
    if record is None:
        return "new"
    if record.landed_at is None and record.gone_at is None:
        return "not landed yet"  # an earlier attempt failed
    if record.landed_at is not None and record.cleared_at is None and record.gone_at is None:
        return "clear pending"
    if (record.unfinished_seen_at or 0.0) > record.last_look:
        return "re-exported"  # seen unfinished after our last look: a new result came
    if signals.get(task.task_id, 0.0) > record.last_look:
        return "signalled"
    if record.landed_at is not None and now - record.landed_at < reprobe_window_s:
        return "recent"  # a reopened trip may have re-exported between two polls
    return None


def waiting_exports(
    tasks: Sequence[ExportTask],
    ledger: ExportLedger,
    *,
    reprobe_window_s: float = 0.0,
    now: float | None = None,
) -> dict[int, str]:
    """Finished tasks that may hold a result not landed yet, with the reason.

    The sensor calls this with no window (it asks for a run only on evidence); a run adds the
    window, re-checking recently landed trips in case a re-export slipped between two polls.
    Recording unfinished tasks here is what makes a reopened trip's re-export visible later.
    """
    now = time.time() if now is None else now
    ledger.record_unfinished(t.task_id for t in tasks if not t.finished)
    records = ledger.exports()
    signals: dict[int, float] = {}
    for signal in ledger.signals(since=now - SIGNAL_LOOKBACK_S):
        signals[signal.task_id] = max(signals.get(signal.task_id, 0.0), signal.received_at)
    waiting: dict[int, str] = {}
    for task in tasks:
        if task.finished:
            why = _why_probe(task, records.get(task.task_id), signals, now, reprobe_window_s)
            if why:
                waiting[task.task_id] = why
    return waiting


def drain_exports(
    client: AutoPiClient,
    lake: Lake,
    ledger: ExportLedger,
    *,
    scratch_dir: Path,
    reprobe_window_s: float = 2 * 3600,
    extra_task_ids: Iterable[int] = (),
    tasks: Sequence[ExportTask] | None = None,
    log: Log = print,
    lock_wait_s: float = LOCK_WAIT_S,
) -> DrainReport:
    """Land every finished export not landed yet and clear each one once it is safe.

    One drain per lake at a time, whoever started it on whichever machine (a second Dagster
    instance, a CLI run, a re-export): two would download every export twice and clear it
    twice. A lease in the shared state says who drains; the second waits for the first and
    then finds its exports landed; `state.Busy` after `lock_wait_s`. A drainer that died
    holding the lease blocks others only until it lapses (`LEASE_TTL_S`).
    """
    key = lake_key(lake)
    name = f"autopi-drain:{key}"
    with held(ledger.store, name, "AutoPi drain", lock_wait_s, LEASE_TTL_S, key) as lease:
        if lease.waited_s > 1:
            log(f"AutoPi: waited {lease.waited_s:.0f}s for another drain of this lake to finish")
        return _drain(
            client,
            lake,
            ledger,
            scratch_dir,
            reprobe_window_s,
            extra_task_ids,
            tasks,
            log,
            lease.check,
        )


def _drain(
    client: AutoPiClient,
    lake: Lake,
    ledger: ExportLedger,
    scratch_dir: Path,
    reprobe_window_s: float,
    extra_task_ids: Iterable[int],
    tasks: Sequence[ExportTask] | None,
    log: Log,
    check_lease: Callable[[], None],
) -> DrainReport:
    report = DrainReport()
    report.schema_files = len(ensure_schema_files(lake))
    report.legacy_quarantine_moved = _migrate_legacy_quarantine_once(lake, ledger, log)
    tasks = list(client.export_tasks()) if tasks is None else list(tasks)
    report.listed = len(tasks)
    report.pending = [t for t in tasks if not t.finished and t.state not in FINISHED_BAD]
    for task in tasks:
        if task.state in FINISHED_BAD:
            report.failed[task.task_id] = f"task state {task.state}"
    waiting = waiting_exports(tasks, ledger, reprobe_window_s=reprobe_window_s)
    for task_id in extra_task_ids:
        waiting.setdefault(task_id, "asked for")
    by_id = {t.task_id: t for t in tasks}
    scratch_dir.mkdir(parents=True, exist_ok=True)
    for task_id, why in sorted(waiting.items()):
        task = by_id.get(task_id)
        if task is None or not task.finished:
            continue  # asked for, but not (or no longer) a finished export
        report.probed += 1
        check_lease()  # lapsed: another drain may be clearing these exports now
        _take(client, lake, ledger, task, why, scratch_dir, report, log)
    ledger.prune_signals(SIGNAL_LOOKBACK_S)
    return report


def _migrate_legacy_quarantine_once(lake: Lake, ledger: ExportLedger, log: Log) -> int:
    """Move an older version's quarantine files into the quarantine table, once per lake (the
    search lists every datapoints day folder, so it is not repeated on every drain)."""
    if ledger.done(LEGACY_QUARANTINE_MIGRATED):
        return 0
    moved = migrate_legacy_quarantine(lake)
    if moved:
        log(f"moved {moved} legacy *.quarantine.jsonl file(s) into autopi/quarantine/")
    ledger.mark_done(LEGACY_QUARANTINE_MIGRATED)
    return moved


def _take(
    client: AutoPiClient,
    lake: Lake,
    ledger: ExportLedger,
    task: ExportTask,
    why: str,
    scratch_dir: Path,
    report: DrainReport,
    log: Log,
) -> None:
    """Download, land and clear one export; every outcome goes into `report`."""
    part = scratch_dir / f"{task.task_id}.json.gz.part"
    try:
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                size = client.download_result(task.task_id, part)
            except VendorAPIError as exc:
                report.failed[task.task_id] = str(exc)
                ledger.record_failure(task.task_id, task.trip_id, str(exc))
                log(f"task {task.task_id} ({why}): download failed: {exc}")
                return
            if size is None:
                ledger.record_gone(task.task_id, task.trip_id)
                report.gone.append(task.task_id)
                return
            sha256 = sha256_of(part)
            record = ledger.get(task.task_id)
            if record is not None and record.sha256 == sha256 and record.landed_at is not None:
                report.already_landed.append(task.task_id)  # landed, clear had failed
                break
            previous = ledger.trip_day(task.trip_id)
            try:
                landed = land_export(
                    lake,
                    part,
                    task_id=task.task_id,
                    trip_id=task.trip_id,
                    sha256=sha256,
                    previous_day=date.fromisoformat(previous) if previous else None,
                )
            except CorruptExport as exc:
                if attempt < DOWNLOAD_ATTEMPTS:
                    report.redownloads += 1
                    log(f"task {task.task_id}: {exc}; downloading again ({attempt})")
                    continue
                report.failed[task.task_id] = f"corrupt export: {exc}"
                ledger.record_failure(task.task_id, task.trip_id, f"corrupt export: {exc}")
                log(f"task {task.task_id}: {exc}; left on AutoPi, not cleared")
                return
            ledger.record_landed(task.task_id, task.trip_id, sha256, landed.day.isoformat())
            report.new_keys.extend(ledger.note_keys(landed.stats.undeclared, task.trip_id))
            report.landed.append(landed)
            break
    finally:
        part.unlink(missing_ok=True)
    _clear(client, ledger, task, report, log)


def _clear(
    client: AutoPiClient, ledger: ExportLedger, task: ExportTask, report: DrainReport, log: Log
) -> None:
    """Only ever called once the trip's files are durable and the landing is recorded."""
    try:
        client.clear_result(task.task_id)
    except VendorAPIError as exc:
        report.not_cleared[task.task_id] = str(exc)
        log(f"task {task.task_id}: landed, but clearing failed ({exc}); retried next run")
        return
    ledger.record_cleared(task.task_id)
    report.cleared.append(task.task_id)


# --- re-export ------------------------------------------------------------------------------


def request_reexports(
    client: AutoPiClient,
    trip_ids: Sequence[str],
    *,
    wait_s: float,
    poll_s: float = REEXPORT_POLL_S,
    sleep: Callable[[float], None] = time.sleep,
    log: Log = print,
) -> tuple[list[ExportTask], dict[str, str]]:
    """`POST tasks/` a re-run per trip, then poll `tasks/` until they finish or `wait_s` runs
    out. Returns (the latest listing of tasks, {trip_id: error}) for trips AutoPi refused."""
    started: dict[int, str] = {}
    refused: dict[str, str] = {}
    for trip_id in dict.fromkeys(trip_ids):
        try:
            task = client.rerun_export(trip_id)
        except VendorAPIError as exc:
            refused[trip_id] = str(exc)
            log(f"trip {trip_id}: re-export refused: {exc}")
            continue
        started[task.task_id] = trip_id
        log(f"trip {trip_id}: re-export task {task.task_id} started")
    deadline = time.monotonic() + wait_s
    while True:
        tasks = client.export_tasks()
        states = {t.task_id: t for t in tasks if t.task_id in started}
        running = [i for i in started if i not in states or not states[i].finished]
        running = [i for i in running if i not in states or states[i].state not in FINISHED_BAD]
        if not running or time.monotonic() >= deadline:
            if running:
                log(f"{len(running)} re-export(s) still running; the sensor lands them later")
            return tasks, refused
        sleep(poll_s)
