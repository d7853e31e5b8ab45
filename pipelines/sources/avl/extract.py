"""AVL rows → a typed, de-duplicated Arrow table keyed by UTC day. No Dagster, no HTTP details."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
    """Rows for the requested days plus the counts a user needs to trust them."""

    table: pa.Table
    rows_received: int = 0
    null_trip_start: int = 0
    duplicates_dropped: int = 0
    outside_range: int = 0
    windows: int = 0
    per_window: list[tuple[str, str, int]] = field(default_factory=list)


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
    devices: Sequence[str] = (),
    idle_min: int = 0,
    duration_min: int = 0,
    progress: Callable[[str], None] | None = None,
) -> AvlExtract:
    """Fetch every row of `days` (UTC) with the minimum number of requests."""
    wanted = set(days)
    windows = plan_windows(days, tz)
    rows: list[dict[str, Any]] = []
    per_window = []
    for n, window in enumerate(windows, 1):
        before = len(rows)
        for batch in device_batches(devices):
            for page in client.iter_trip_pages(
                window, devices=batch, idle_min=idle_min, duration_min=duration_min
            ):
                rows.extend(page.rows)
        got = len(rows) - before
        per_window.append((window.first_day.isoformat(), window.last_day.isoformat(), got))
        if progress:
            progress(
                f"AVL window {n}/{len(windows)} {window.first_day}..{window.last_day}: {got} rows"
            )
    table, nulls, dupes = rows_to_table(rows, tz, datetime.now(UTC))
    # A local-time window maps onto exactly its UTC days; anything else is the API's slack.
    in_range = pc.is_in(table.column("day"), value_set=pa.array(sorted(wanted), pa.date32()))
    outside = len(table) - pc.sum(in_range).as_py() if len(table) else 0
    if outside:
        table = table.filter(in_range)
    return AvlExtract(
        table=table,
        rows_received=len(rows),
        null_trip_start=nulls,
        duplicates_dropped=dupes,
        outside_range=outside,
        windows=len(windows),
        per_window=per_window,
    )
