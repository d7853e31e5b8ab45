"""The AVL pull: every window's trips fetched with the fewest requests that prove they are every
row, typed (rows.py) and handed to the caller's lander, one window after another. No Dagster, no
HTTP details; the asset lands through guard.py, which keeps a day from narrowing."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.lake import quarantine_table
from pipelines.sources.avl.client import AvlClient, device_batches, plan_windows
from pipelines.sources.avl.rows import rows_to_table


@dataclass
class AvlExtract:
    """What a run fetched and landed, with the counts a user needs to trust it."""

    rows_received: int = 0
    rows_loaded: int = 0
    null_trip_start: int = 0
    duplicates_dropped: int = 0
    outside_range: int = 0
    in_progress: int = 0
    quarantined: int = 0
    quarantine_examples: list[str] = field(default_factory=list)  # first reasons, for a log
    untrusted_totals: int = 0  # pages whose meta.total was not an integer
    total_mismatches: list[dict[str, Any]] = field(default_factory=list)
    windows: int = 0
    files: int = 0
    bytes: int = 0


# Lands one window's rows (every day of it, empty days too); returns (files, bytes) written.
Lander = Callable[[list[date], pa.Table], tuple[int, int]]
# Writes one window's quarantine per day (a day missing from the mapping has none); after Lander.
Quarantiner = Callable[[list[date], Mapping[date, pa.Table]], None]


def extract_trips(
    client: AvlClient,
    days: Sequence[date],
    *,
    tz: ZoneInfo,
    land: Lander,
    quarantine: Quarantiner | None = None,
    devices: Sequence[str] = (),
    idle_min: int = 0,
    duration_min: int = 0,
    progress: Callable[[str], None] | None = None,
) -> AvlExtract:
    """Fetch every row of `days` (UTC) with the fewest requests that prove it is every row, and
    land it.

    Windows cover disjoint UTC days, so each is typed, de-duplicated and landed on its own,
    on a worker thread while the next window's requests wait for the rate limit: the run
    ends about when its last response arrives. Where `meta.total` disagreed with the rows
    paged, `total_mismatches` says so (paging reads to the last page regardless).
    """
    windows = plan_windows(days, tz)
    summary = AvlExtract(windows=len(windows))
    batches = device_batches(devices)

    def process(window_days: list[date], rows: list[Any]) -> None:
        now = datetime.now(UTC)
        typed = rows_to_table(rows, tz, now, window_days[0])
        table = typed.table
        wanted = pa.array(window_days, pa.date32())
        kept = table.filter(pc.is_in(table.column("day"), value_set=wanted))
        by_day: dict[date, list[dict[str, Any]]] = {}
        outside = len(table) - len(kept)
        for day, record in typed.quarantined:
            if day in window_days:
                by_day.setdefault(day, []).append(record)
            else:
                outside += 1
        files, written = land(window_days, kept)
        if quarantine is not None:
            quarantine(window_days, {d: quarantine_table(r, now) for d, r in by_day.items()})
        quarantined = sum(len(r) for r in by_day.values())
        summary.quarantined += quarantined
        for records in by_day.values():
            room = 5 - len(summary.quarantine_examples)
            summary.quarantine_examples.extend(r["reason"] for r in records[:room])
        summary.null_trip_start += typed.null_trip_start
        summary.duplicates_dropped += typed.duplicates
        summary.outside_range += outside
        summary.rows_loaded += len(kept)
        summary.in_progress += kept.column("trip_end").null_count
        summary.files += files
        summary.bytes += written

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="avl-land") as pool:
        pending = []
        for n, window in enumerate(windows, 1):
            rows: list[Any] = []
            for b, batch in enumerate(batches, 1):
                series: list[Any] = []
                claims: set[int] = set()
                for page in client.iter_trip_pages(
                    window, devices=batch, idle_min=idle_min, duration_min=duration_min
                ):
                    series.extend(page.rows)
                    summary.untrusted_totals += page.total_untrusted
                    if page.total is not None:
                        claims.add(page.total)
                if claims - {len(series)}:
                    mismatch: dict[str, Any] = {
                        "window": f"{window.first_day}..{window.last_day}",
                        "claimed": sorted(claims),
                        "read": len(series),
                    }
                    if len(batches) > 1:
                        mismatch["device_batch"] = f"{b}/{len(batches)}"
                    summary.total_mismatches.append(mismatch)
                rows.extend(series)
            summary.rows_received += len(rows)
            if progress:
                progress(
                    f"AVL window {n}/{len(windows)} {window.first_day}..{window.last_day}: "
                    f"{len(rows)} rows in {client.stats.requests} requests so far"
                )
            pending.append(pool.submit(process, window.days, rows))
        for future in pending:
            future.result()  # re-raise a landing failure
    return summary
