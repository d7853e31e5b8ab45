"""The raw kt1 tables: which item type lands where, and each table's exact columns.

Kept apart from the typing so the drain and assets, which write and declare these tables,
need not load the DuckDB SQL that fills them.
"""

from __future__ import annotations

import pyarrow as pa

from pipelines.lake import QUARANTINE_SCHEMA, QUARANTINE_TABLE

SOURCE = "kt1"
TABLES = ("telemetry", "trips", "events", "changes")
QUARANTINE = QUARANTINE_TABLE
TABLE_OF_TYPE = {
    "telemetry": "telemetry",
    "trip": "trips",
    "event": "events",
    "changenotification": "changes",
}
UNKNOWN_TABLE = "unknown"
"""Quarantine `table` of an item without a type, or of a body that is not a batch."""

TS = pa.timestamp("us", tz="UTC")
_LANDING = [
    pa.field("batch_id", pa.string()),
    pa.field("item_index", pa.int32(), nullable=False),
    pa.field("fetched_at", TS, nullable=False),
    pa.field("landed_at", TS, nullable=False),
]
_ITEM_JSON = pa.field("item_json", pa.string(), nullable=False)


def _schema(*fields: pa.Field) -> pa.Schema:
    return pa.schema([*_LANDING, *fields, _ITEM_JSON])


SCHEMAS: dict[str, pa.Schema] = {
    "telemetry": _schema(
        pa.field("origin_id", pa.string(), nullable=False),
        pa.field("origin_name", pa.string()),
        pa.field("asset_id", pa.string(), nullable=False),
        pa.field("asset_name", pa.string()),
        pa.field("date", TS, nullable=False),
        pa.field("received", TS),
        pa.field("active", pa.bool_()),
        pa.field("lat", pa.float64()),
        pa.field("lon", pa.float64()),
        pa.field("speed", pa.float64()),
        pa.field("altitude", pa.float64()),
        pa.field("heading", pa.float64()),
        pa.field("accuracy", pa.float64()),
        pa.field("address", pa.string()),
        # Raw device counters, exactly as sent (the reference: not the asset's odometer).
        pa.field("counters_odometer", pa.float64()),
        pa.field("counters_odo_counter", pa.float64()),
        pa.field("counters_engine_hours", pa.float64()),
    ),
    "trips": _schema(
        pa.field("id", pa.string(), nullable=False),
        pa.field("asset_id", pa.string(), nullable=False),
        pa.field("asset_name", pa.string()),
        pa.field("trip_type", pa.string()),
        pa.field("date_start", TS, nullable=False),
        pa.field("date_end", TS),
        pa.field("start_lat", pa.float64()),
        pa.field("start_lon", pa.float64()),
        pa.field("start_address", pa.string()),
        pa.field("end_lat", pa.float64()),
        pa.field("end_lon", pa.float64()),
        pa.field("end_address", pa.string()),
        pa.field("stats_drive_time", pa.float64()),
        pa.field("stats_idle_time", pa.float64()),
        pa.field("stats_distance", pa.float64()),
        pa.field("records", pa.float64()),
        pa.field("maxes_speed", pa.float64()),
    ),
    "events": _schema(
        pa.field("id", pa.string(), nullable=False),
        pa.field("owner", pa.string()),
        pa.field("origin", pa.string()),
        pa.field("event_date", TS, nullable=False),
        pa.field("event_class", pa.string()),
        pa.field("event_type", pa.string()),
        pa.field("asset_id", pa.string()),
        pa.field("lat", pa.float64()),
        pa.field("lon", pa.float64()),
        pa.field("address", pa.string()),
    ),
    "changes": _schema(
        pa.field("operation", pa.string(), nullable=False),
        pa.field("date", TS, nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("doc_type", pa.string()),
    ),
    # The lake's quarantine columns, then where the item came from.
    QUARANTINE: pa.schema(
        [
            *QUARANTINE_SCHEMA,
            pa.field("batch_id", pa.string()),
            pa.field("item_index", pa.int32(), nullable=False),  # -1: the whole body
            pa.field("fetched_at", TS, nullable=False),
            pa.field("item_type", pa.string()),  # the item's `type` as sent (≤ 100 chars)
        ]
    ),
}


QUARANTINE_ROWS = pa.schema([*SCHEMAS[QUARANTINE], pa.field("day", pa.date32())])
"""Quarantine rows before they are split by `day`, the UTC day they go on."""
