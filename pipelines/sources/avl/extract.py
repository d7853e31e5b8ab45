"""AVL rows → a typed, de-duplicated Arrow table keyed by UTC day. No Dagster, no HTTP details."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.sources.avl.client import AvlClient, device_batches, plan_windows

TS = pa.timestamp("us", tz="UTC")
TRIPS_SCHEMA = pa.schema(
    [
        pa.field("device_name", pa.string(), nullable=False),
        pa.field("trip_start", TS, nullable=False),
        pa.field("trip_start_local", pa.string()),
        pa.field("trip_start_address", pa.string()),
        pa.field("trip_start_lat", pa.float64()),
        pa.field("trip_start_lon", pa.float64()),
        pa.field("trip_end", TS),
        pa.field("trip_end_local", pa.string()),
        pa.field("trip_end_address", pa.string()),
        pa.field("trip_end_lat", pa.float64()),
        pa.field("trip_end_lon", pa.float64()),
        pa.field("kms", pa.float64()),
        pa.field("duration_min", pa.float64()),
        pa.field("idle_min", pa.float64()),
        pa.field("max_speed", pa.float64()),
        pa.field("fuel", pa.float64()),
        pa.field("cost", pa.float64()),
        pa.field("extracted_at", TS, nullable=False),
        pa.field("day", pa.date32(), nullable=False),
    ]
)
_FLOATS = (
    "trip_start_lat",
    "trip_start_lon",
    "trip_end_lat",
    "trip_end_lon",
    "kms",
    "duration_min",
    "idle_min",
    "max_speed",
    "fuel",
    "cost",
)
_STRINGS = ("trip_start_address", "trip_end_address")


def to_utc(value: str | None, tz: ZoneInfo) -> datetime | None:
    """An offset-less API timestamp read in the account's zone (earliest reading of a DST fold)."""
    if value is None or value == "":
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(UTC)


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


@dataclass
class AvlExtract:
    """What a run fetched and landed, with the counts a user needs to trust it."""

    rows_received: int = 0
    rows_loaded: int = 0
    null_trip_start: int = 0
    duplicates_dropped: int = 0
    outside_range: int = 0
    in_progress: int = 0
    windows: int = 0
    files: int = 0
    bytes: int = 0


# Lands one window's rows (every day of it, empty days too); returns (files, bytes) written.
Lander = Callable[[list[date], pa.Table], tuple[int, int]]


def rows_to_table(
    rows: Sequence[dict[str, Any]], tz: ZoneInfo, extracted_at: datetime
) -> tuple[pa.Table, int, int]:
    """Type rows; drop rows without `trip_start` (not trips) and duplicate natural keys.

    Returns (table, null_trip_start_rows, duplicates_dropped). The natural key is
    (`device_name`, `trip_start`): the API has no trip or device id.
    """
    by_key: dict[tuple[str, datetime], dict[str, Any]] = {}
    nulls = 0
    dupes = 0
    for row in rows:
        start = to_utc(row.get("trip_start"), tz)
        if start is None:
            nulls += 1
            continue
        end = to_utc(row.get("trip_end"), tz)
        record = {
            "device_name": str(row.get("device_name") or ""),
            "trip_start": start,
            "trip_start_local": row.get("trip_start"),
            "trip_end": end,
            "trip_end_local": row.get("trip_end"),
            "extracted_at": extracted_at,
            "day": start.date(),
        }
        for name in _FLOATS:
            record[name] = _float(row.get(name))
        for name in _STRINGS:
            record[name] = row.get(name)
        key = (record["device_name"], start)
        if key in by_key:
            dupes += 1
        by_key[key] = record  # the later page wins: it is the fresher answer
    ordered = sorted(by_key.values(), key=lambda r: (r["trip_start"], r["device_name"]))
    table = pa.Table.from_pylist(ordered, schema=TRIPS_SCHEMA)
    return table, nulls, dupes


def extract_trips(
    client: AvlClient,
    days: Sequence[date],
    *,
    tz: ZoneInfo,
    land: Lander,
    devices: Sequence[str] = (),
    idle_min: int = 0,
    duration_min: int = 0,
    progress: Callable[[str], None] | None = None,
) -> AvlExtract:
    """Fetch every row of `days` (UTC) with the minimum number of requests, and land it.

    Windows cover disjoint UTC days, so each is typed, de-duplicated and landed on its own,
    on a worker thread while the next window's requests wait for the rate limit: the run
    ends about when its last response arrives.
    """
    wanted = pa.array(sorted(set(days)), pa.date32())
    windows = plan_windows(days, tz)
    summary = AvlExtract(windows=len(windows))

    def process(window_days: list[date], rows: list[dict[str, Any]]) -> None:
        table, nulls, dupes = rows_to_table(rows, tz, datetime.now(UTC))
        in_range = pc.is_in(table.column("day"), value_set=wanted)
        kept = table.filter(in_range)
        files, written = land(window_days, kept)
        summary.null_trip_start += nulls
        summary.duplicates_dropped += dupes
        summary.outside_range += len(table) - len(kept)
        summary.rows_loaded += len(kept)
        summary.in_progress += kept.column("trip_end").null_count
        summary.files += files
        summary.bytes += written

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="avl-land") as pool:
        pending = []
        for n, window in enumerate(windows, 1):
            rows: list[dict[str, Any]] = []
            for batch in device_batches(devices):
                for page in client.iter_trip_pages(
                    window, devices=batch, idle_min=idle_min, duration_min=duration_min
                ):
                    rows.extend(page.rows)
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
