"""The Metrotec pull: every vehicle's rows of each window fetched, typed and landed, with the
counts a run reports. No Dagster, no URLs; rows.py types the rows, the caller lands them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from pipelines.http import RequestStats
from pipelines.sources.metrotec.client import MetrotecClient, Window, plan_windows
from pipelines.sources.metrotec.rows import Typed, quarantine_by_day, type_rows
from pipelines.sources.metrotec.specs import SPECS, TABLES


@dataclass
class TableResult:
    """What one table's share of a run fetched and landed (its materialization metadata)."""

    stats: RequestStats = field(default_factory=RequestStats)
    rows_received: int = 0
    rows: int = 0
    files: int = 0
    bytes: int = 0
    days: set[date] = field(default_factory=set)  # partition days replaced
    quarantined: int = 0
    unparsed_values: int = 0
    duplicates_dropped: int = 0
    outside_range: int = 0
    not_found: int = 0  # vehicles the endpoint answered 404 for (treated as no data)
    fuel_code_rows: int = 0
    inconsistent_trips: int = 0

    def add_typed(self, typed: Typed) -> None:
        self.rows += typed.table.num_rows
        self.quarantined += len(typed.quarantined)
        self.unparsed_values += typed.unparsed_values
        self.duplicates_dropped += typed.duplicates_dropped
        self.outside_range += typed.outside_range
        if "fuel_is_code" in typed.table.column_names:
            self.fuel_code_rows += sum(bool(v) for v in typed.table["fuel_is_code"].to_pylist())
        if "drivingTimeSeconds" in typed.table.column_names:
            self.inconsistent_trips += inconsistent_trips(typed.table)


def inconsistent_trips(routelog: pa.Table) -> int:
    """Route log rows whose idle time, (stop - start) - driving, is unknown or negative."""
    bad = 0
    for row in routelog.select(["startTime", "stopTime", "drivingTimeSeconds"]).to_pylist():
        start, stop, driving = row["startTime"], row["stopTime"], row["drivingTimeSeconds"]
        duration = (stop - start).total_seconds() if stop is not None else -1.0
        bad += duration < 0 or (driving is not None and driving > duration)
    return bad


# Lands one table's rows for every day of a window (empty days too); returns (files, bytes).
Lander = Callable[[str, list[date], pa.Table], tuple[int, int]]
# Makes each day's quarantine of one table what the window found (an empty table: none).
Quarantiner = Callable[[str, dict[date, pa.Table]], None]


class _StatsDelta:
    """Attributes the client's traffic during a block to one table."""

    def __init__(self, client: MetrotecClient, into: RequestStats) -> None:
        self.client, self.into = client, into

    def __enter__(self) -> None:
        s = self.client.stats
        self.before = (s.requests, s.retries, s.http_429, s.rate_limit_wait_s, s.bytes_received)

    def __exit__(self, *exc: object) -> None:
        s = self.client.stats
        requests, retries, http_429, waited, received = self.before
        self.into.requests += s.requests - requests
        self.into.retries += s.retries - retries
        self.into.http_429 += s.http_429 - http_429
        self.into.rate_limit_wait_s += s.rate_limit_wait_s - waited
        self.into.bytes_received += s.bytes_received - received


def _fetch(client: MetrotecClient, table: str, vehicle_id: str, window: Window) -> list[Any] | None:
    if table == "fuel_levels":
        return client.fuel_levels(vehicle_id, window.start, window.end)
    endpoint = {"routelog": client.routelog, "stops": client.stops, "refuels": client.refuels}
    return endpoint[table](vehicle_id, window.start, window.stop)


def extract_range(
    client: MetrotecClient,
    vehicle_ids: Sequence[str],
    days: Sequence[date],
    *,
    tables: Sequence[str],
    land: Lander,
    quarantine: Quarantiner,
    window_days: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, TableResult]:
    """Pull `tables` for every vehicle over `days` and land each window once it is complete.

    One request series per vehicle per window (≤ `window_days` days): route log, stops and
    refuels take one request each, fuel levels page through the window. A window is landed
    only when every vehicle's rows are in hand, on a worker thread while the next window's
    requests run; a failure leaves that window's partitions as they were. Its quarantine is
    written first, so a day's data never shows without the rows it lost.
    """
    unknown = set(tables) - set(TABLES)
    if unknown:
        raise ValueError(f"unknown Metrotec tables {sorted(unknown)}; known: {TABLES}")
    windows = plan_windows(days, window_days)
    results = {t: TableResult() for t in tables}

    def process(window: Window, fetched: dict[str, list[tuple[str, Any]]]) -> None:
        extracted_at = datetime.now(UTC)
        for table, rows in fetched.items():
            typed = type_rows(SPECS[table], rows, extracted_at, days=set(window.days))
            quarantine(table, quarantine_by_day(typed.quarantined, extracted_at, window.days))
            files, written = land(table, window.days, typed.table)
            result = results[table]
            result.add_typed(typed)
            result.files += files
            result.bytes += written
            result.days.update(window.days)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrotec-land") as pool:
        pending: list[Future[None]] = []
        for n, window in enumerate(windows, 1):
            fetched: dict[str, list[tuple[str, Any]]] = {t: [] for t in tables}
            for vehicle_id in vehicle_ids:
                for table in tables:
                    with _StatsDelta(client, results[table].stats):
                        rows = _fetch(client, table, vehicle_id, window)
                    if rows is None:
                        results[table].not_found += 1
                        continue
                    results[table].rows_received += len(rows)
                    fetched[table].extend((vehicle_id, row) for row in rows)
            if progress:
                counts = ", ".join(f"{t} {len(r)}" for t, r in fetched.items())
                progress(
                    f"Metrotec window {n}/{len(windows)} {window.first_day}..{window.last_day}, "
                    f"{len(vehicle_ids)} vehicles: {counts} rows; "
                    f"{client.stats.requests} requests so far"
                )
            pending.append(pool.submit(process, window, fetched))
            # Surface a landing failure before spending more requests.
            for done in [f for f in pending if f.done()]:
                done.result()
        for future in pending:
            future.result()
    return results
