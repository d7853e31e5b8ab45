"""One export → its files in the lake, all durable before anything is cleared upstream.

D is the UTC day of the trip's start, the same for every file of the trip:

* `autopi/datapoints/day=D/<trip_id>.parquet`: every datapoint that landed (streamed);
* `autopi/quarantine/day=D/<trip_id>.parquet`: what could not land, in the lake's one
  quarantine table (beside the tables, never inside one): lines that are not JSON objects,
  datapoints with a value that does not parse or is not finite, and the trip object itself
  when one of its values is such; each with reason, field, value, the raw line, trip id and
  line number. Only written when there is something to quarantine;
* `autopi/trips/day=D/<trip_id>.parquet`: the trip row, unless the trip object was
  quarantined.

Files are named by trip id, so re-landing a trip (a reopened trip's re-export, a manual re-run)
replaces them and never adds a copy; a landing with nothing to quarantine removes the trip's
earlier quarantine, and one whose trip object is quarantined removes the earlier trip row.

Order: the datapoints and the quarantine are streamed as invisible temp files and committed
together once the export has parsed whole (a corrupt export leaves nothing visible), then the
trip row, then the files of an earlier landing under another day. The caller records the
landing and clears the export only after this returns: nothing is cleared upstream before all
of it is durable.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipelines.atomic_files import LakeFile, ParquetStream, WriteResult, remove_files
from pipelines.lake import PARTITION_KEY, QUARANTINE_TABLE, Lake, quarantine_table
from pipelines.sources.autopi.export import read_export
from pipelines.sources.autopi.schemas import DATAPOINTS_SCHEMA, TRIPS_SCHEMA
from pipelines.sources.autopi.tally import ExportStats, QuarantinedLine
from pipelines.sources.autopi.trip import ParsedTrip

SOURCE = "autopi"
TRIPS = "trips"
DATAPOINTS = "datapoints"
QUARANTINE_EXTRA = (
    pa.field("trip_id", pa.string(), nullable=False),
    pa.field("line_number", pa.int64(), nullable=False),  # as `line_no`: the trip is line 1
)
"""AutoPi's context columns after the lake's quarantine columns."""
LEGACY_QUARANTINE_SUFFIX = ".quarantine.jsonl"
"""Older versions kept quarantined lines in `datapoints/day=D/<trip_id>.quarantine.jsonl`."""
EMPTY_DAY = date(1970, 1, 1)  # the day folder of the schema-only placeholder files
EMPTY_NAME = "_schema"
_QUARANTINE_BATCH = 4096  # rows buffered before they go to the quarantine's Parquet stream


class QuarantineRows:
    """The quarantine of one landing, streamed: rows are buffered, then written to a Parquet
    stream opened at the first batch and invisible until `commit`."""

    def __init__(self, lake: Lake, trip_id: str, day: date, quarantined_at: datetime) -> None:
        self._lake = lake
        self._trip_id = trip_id
        self._day = day
        self._at = quarantined_at
        self._buffer: list[dict[str, Any]] = []
        self._stream: ParquetStream | None = None
        self.reasons: dict[str, Counter[str]] = {}  # table -> reason -> rows

    def add(self, line: QuarantinedLine, table: str = DATAPOINTS) -> None:
        self._buffer.append(
            {
                "table": table,
                "reason": line.reason,
                "field": line.field,
                "value": line.value,
                # Not UTF-8: each bad byte as \\xNN, so the payload stays text and recoverable.
                "payload": line.raw.decode("utf-8", "backslashreplace"),
                "trip_id": self._trip_id,
                "line_number": line.line_no,
            }
        )
        self.reasons.setdefault(table, Counter())[line.reason] += 1
        if len(self._buffer) >= _QUARANTINE_BATCH:
            self._flush()

    def _flush(self) -> None:
        rows = quarantine_table(self._buffer, self._at, extra=QUARANTINE_EXTRA)
        if self._stream is None:
            self._stream = self._lake.open_stream(
                SOURCE, QUARANTINE_TABLE, self._day, self._trip_id, rows.schema
            )
        self._stream.write(rows)
        self._buffer.clear()

    def commit(self) -> WriteResult | None:
        """Make the quarantine durable and visible; with no rows, remove the trip's earlier one."""
        if self._buffer:
            self._flush()
        if self._stream is None:
            empty = quarantine_table([], self._at, extra=QUARANTINE_EXTRA)
            return self._lake.write_quarantine(SOURCE, self._day, self._trip_id, empty)
        result = self._stream.commit()
        self._stream = None
        return result

    def abort(self) -> None:
        if self._stream is not None:
            self._stream.abort()
            self._stream = None


@dataclass(frozen=True)
class LandedTrip:
    """What landing one export left in the lake."""

    task_id: int
    trip_id: str
    day: date
    sha256: str
    stats: ExportStats
    datapoints_file: WriteResult
    trips_file: WriteResult | None  # None: the trip object was quarantined
    quarantine_file: WriteResult | None
    last_recalc_at: datetime | None
    quarantine_reasons: dict[str, dict[str, int]] = field(default_factory=dict)  # by table

    @property
    def trip_quarantined(self) -> bool:
        return self.trips_file is None

    @property
    def quarantined_datapoints(self) -> int:
        return self.stats.quarantined

    @property
    def bytes_written(self) -> int:
        files = (self.datapoints_file, self.trips_file, self.quarantine_file)
        return sum(f.bytes for f in files if f is not None)


def sha256_of(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def land_export(
    lake: Lake,
    export_file: Path,
    *,
    task_id: int,
    trip_id: str,
    sha256: str,
    previous_day: date | None = None,
) -> LandedTrip:
    """Parse one downloaded export and make its files durable in the lake.

    Raises `CorruptExport` (nothing visible changes) for a truncated or corrupt file. When the
    trip landed earlier under another day (its start moved), those files are removed last.
    """
    streams: list[ParquetStream] = []
    quarantines: list[QuarantineRows] = []
    quarantined_at = datetime.now(UTC)

    def open_sink(trip: ParsedTrip) -> ParquetStream:
        # Dictionary pages only where values repeat (types, units, ids); for floats and
        # timestamps they cost CPU and Parquet falls back to plain pages anyway.
        strings = [f.name for f in DATAPOINTS_SCHEMA if pa.types.is_string(f.type)]
        stream = lake.open_stream(
            SOURCE, DATAPOINTS, trip.day, trip.trip_id, DATAPOINTS_SCHEMA, use_dictionary=strings
        )
        streams.append(stream)
        return stream

    def open_quarantine(trip: ParsedTrip) -> QuarantineRows:
        quarantine = QuarantineRows(lake, trip.trip_id, trip.day, quarantined_at)
        quarantines.append(quarantine)
        if trip.problem is not None:
            bad = trip.problem
            line = QuarantinedLine(
                1, bad.reason, trip.row["trip_json"].encode(), bad.field, bad.value
            )
            quarantine.add(line, table=TRIPS)
        return quarantine

    try:
        trip, stats = read_export(
            export_file,
            expected_trip_id=trip_id,
            open_sink=open_sink,
            quarantine=open_quarantine,
        )
        datapoints_file = streams[0].commit()
        quarantine_file = quarantines[0].commit()
    except BaseException:
        for stream in streams:
            stream.abort()
        for quarantine in quarantines:
            quarantine.abort()
        raise
    trips_file = None
    if trip.problem is None:
        row = {
            **trip.row,
            "task_id": task_id,
            "export_sha256": sha256,
            "export_bytes": stats.compressed_bytes,
            "datapoints": stats.datapoints,
            "malformed_lines": stats.quarantined,
            "undeclared_keys": json.dumps(stats.undeclared, sort_keys=True)
            if stats.undeclared
            else None,
            "landed_at": datetime.now(UTC),
        }
        table = pa.Table.from_pylist([row], schema=TRIPS_SCHEMA)
        trips_file = lake.write_file(SOURCE, TRIPS, trip.day, trip.trip_id, table)
    else:
        lake.remove_file(SOURCE, TRIPS, trip.day, trip.trip_id)  # an earlier landing's row
    _remove_legacy_quarantine(lake, trip.trip_id, trip.day)
    if previous_day is not None and previous_day != trip.day:
        remove_trip_files(lake, trip.trip_id, previous_day)
    return LandedTrip(
        task_id=task_id,
        trip_id=trip.trip_id,
        day=trip.day,
        sha256=sha256,
        stats=stats,
        datapoints_file=datapoints_file,
        trips_file=trips_file,
        quarantine_file=quarantine_file,
        last_recalc_at=trip.row["last_recalc_at"],
        quarantine_reasons={t: dict(c) for t, c in quarantines[0].reasons.items()},
    )


def remove_trip_files(lake: Lake, trip_id: str, day: date) -> None:
    """Remove a trip's files from one day (a re-landing put them under another day)."""
    lake.remove_file(SOURCE, DATAPOINTS, day, trip_id)
    lake.remove_file(SOURCE, TRIPS, day, trip_id)
    lake.remove_file(SOURCE, QUARANTINE_TABLE, day, trip_id)
    _remove_legacy_quarantine(lake, trip_id, day)


def _legacy_quarantine(lake: Lake, trip_id: str, day: date) -> Path:
    return lake.partition_dir(SOURCE, DATAPOINTS, day) / f"{trip_id}{LEGACY_QUARANTINE_SUFFIX}"


def _remove_legacy_quarantine(lake: Lake, trip_id: str, day: date) -> None:
    """A re-landed trip's quarantine is in the quarantine table now: drop the old file (only a
    local lake can hold one: object-store lakes began after the quarantine table)."""
    if lake.remote:
        return
    remove_files([_legacy_quarantine(lake, trip_id, day)])


def migrate_legacy_quarantine(lake: Lake) -> int:
    """Move every `<trip_id>.quarantine.jsonl` an older version left in a datapoints day folder
    into the quarantine table (same day, named by trip), so that table folder holds only its
    Parquet files again. Returns how many files were moved.

    Each file is removed only once its rows are durable in the table; a file whose trip has a
    quarantine file already (re-landed since) is stale and just removed. Safe to run again.
    """
    if lake.remote:
        return 0  # object-store lakes began after the quarantine table: nothing to move
    moved = 0
    table_dir = lake.table_dir(SOURCE, DATAPOINTS)
    for path in sorted(table_dir.glob(f"{PARTITION_KEY}=*/*{LEGACY_QUARANTINE_SUFFIX}")):
        day = date.fromisoformat(path.parent.name.removeprefix(f"{PARTITION_KEY}="))
        trip_id = path.name.removesuffix(LEGACY_QUARANTINE_SUFFIX)
        if not lake.exists(SOURCE, QUARANTINE_TABLE, day, trip_id):
            at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            rows = [_legacy_row(line, trip_id) for line in path.read_bytes().splitlines()]
            table = quarantine_table([r for r in rows if r], at, extra=QUARANTINE_EXTRA)
            lake.write_quarantine(SOURCE, day, trip_id, table)
            moved += 1
        _remove_legacy_quarantine(lake, trip_id, day)
    return moved


def _legacy_row(line: bytes, trip_id: str) -> dict[str, Any] | None:
    """One `{"line_no", "reason", "line" | "line_b64"}` entry as a quarantine row."""
    if not line.strip():
        return None
    try:
        entry = json.loads(line)
        if "line" in entry:
            payload = entry["line"]
        else:
            payload = base64.b64decode(entry["line_b64"]).decode("utf-8", "backslashreplace")
        return {
            "table": DATAPOINTS,
            "reason": str(entry["reason"]),
            "payload": payload,
            "trip_id": trip_id,
            "line_number": int(entry["line_no"]),
        }
    except (ValueError, KeyError, TypeError):
        text = line.decode("utf-8", "backslashreplace")
        return {
            "table": DATAPOINTS,
            "reason": "unreadable entry of an older quarantine file",
            "payload": text,
            "trip_id": trip_id,
            "line_number": 0,
        }


def ensure_schema_files(lake: Lake) -> list[LakeFile]:
    """Give each table without files its schema-only file (in `day=1970-01-01`, a day no trip
    lands on) before any trip has landed, so dbt can read it. Returns what it wrote."""
    written = (
        lake.ensure_table(SOURCE, table, schema, EMPTY_DAY, name=EMPTY_NAME)
        for table, schema in ((TRIPS, TRIPS_SCHEMA), (DATAPOINTS, DATAPOINTS_SCHEMA))
    )
    return [file for file in written if file is not None]
