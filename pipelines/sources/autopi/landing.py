"""One export → its three files in the lake, all durable before anything is cleared upstream.

`datapoints/day=D/<trip_id>.parquet` (streamed), `datapoints/day=D/<trip_id>.quarantine.jsonl`
(malformed lines, only when there are some) and `trips/day=D/<trip_id>.parquet` (one row);
D is the UTC day of the trip's start. Files are named by trip id, so re-landing a trip (a
reopened trip's re-export, a manual re-run) replaces them and never adds a copy.

An export can hold millions of datapoints, so they are streamed through `Lake.open_stream`
(invisible until committed); the quarantine file is staged and committed with the lake's
`temp_path` / `commit_temp`, so every guarantee is the lake's.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from pipelines.lake import (
    Lake,
    ParquetStream,
    WriteResult,
    _component,
    _fsync_dir,
    _make_dirs_durably,
    commit_temp,
    temp_path,
)
from pipelines.sources.autopi.export import (
    DATAPOINTS_SCHEMA,
    TRIPS_SCHEMA,
    ExportStats,
    ParsedTrip,
    read_export,
)

SOURCE = "autopi"
TRIPS = "trips"
DATAPOINTS = "datapoints"
QUARANTINE_SUFFIX = ".quarantine.jsonl"
EMPTY_DAY = date(1970, 1, 1)  # the day folder of the schema-only placeholder files
EMPTY_NAME = "_schema"


class QuarantineFile:
    """Malformed lines of one export, one JSON object each: `{"line_no", "reason", "line"}`
    (`line_b64` instead when the bytes are not UTF-8). Created only if a line arrives."""

    def __init__(self, directory: Path, trip_id: str) -> None:
        self.final = directory / f"{_component(trip_id, 'trip id')}{QUARANTINE_SUFFIX}"
        self._temp = temp_path(self.final)
        self._fh: IO[str] | None = None
        self.lines = 0

    def add(self, line_no: int, reason: str, raw: bytes) -> None:
        if self._fh is None:
            _make_dirs_durably(self.final.parent)
            self._fh = self._temp.open("w", encoding="utf-8")
        record: dict[str, Any] = {"line_no": line_no, "reason": reason}
        try:
            record["line"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            record["line_b64"] = base64.b64encode(raw).decode("ascii")
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.lines += 1

    def commit(self) -> Path | None:
        """Make the quarantine visible; with no bad lines, remove one left by an earlier landing."""
        if self._fh is None:
            if self.final.exists():
                self.final.unlink()
                _fsync_dir(self.final.parent)
            return None
        self._fh.close()
        self._fh = None
        commit_temp(self._temp, self.final)
        return self.final

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._temp.unlink(missing_ok=True)


@dataclass(frozen=True)
class LandedTrip:
    """What landing one export left in the lake."""

    task_id: int
    trip_id: str
    day: date
    sha256: str
    stats: ExportStats
    datapoints_file: WriteResult
    trips_file: WriteResult
    quarantine_file: Path | None
    last_recalc_at: datetime | None

    @property
    def bytes_written(self) -> int:
        return self.datapoints_file.bytes + self.trips_file.bytes


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
    quarantines: list[QuarantineFile] = []

    def open_sink(trip: ParsedTrip) -> ParquetStream:
        # Dictionary pages only where values repeat (types, units, ids); for floats and
        # timestamps they cost CPU and Parquet falls back to plain pages anyway.
        strings = [f.name for f in DATAPOINTS_SCHEMA if pa.types.is_string(f.type)]
        stream = lake.open_stream(
            SOURCE, DATAPOINTS, trip.day, trip.trip_id, DATAPOINTS_SCHEMA, use_dictionary=strings
        )
        streams.append(stream)
        return stream

    def open_quarantine(trip: ParsedTrip) -> QuarantineFile:
        directory = lake.partition_dir(SOURCE, DATAPOINTS, trip.day)
        quarantine = QuarantineFile(directory, trip.trip_id)
        quarantines.append(quarantine)
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
    row = {
        **trip.row,
        "task_id": task_id,
        "export_sha256": sha256,
        "export_bytes": stats.compressed_bytes,
        "datapoints": stats.datapoints,
        "malformed_lines": stats.malformed,
        "undeclared_keys": json.dumps(stats.undeclared, sort_keys=True)
        if stats.undeclared
        else None,
        "landed_at": datetime.now(UTC),
    }
    trips_file = lake.write_file(
        SOURCE, TRIPS, trip.day, trip.trip_id, pa.Table.from_pylist([row], schema=TRIPS_SCHEMA)
    )
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
    )


def remove_trip_files(lake: Lake, trip_id: str, day: date) -> None:
    """Remove a trip's files from one day (a re-landing put them under another day)."""
    lake.remove_file(SOURCE, DATAPOINTS, day, trip_id)
    lake.remove_file(SOURCE, TRIPS, day, trip_id)
    quarantine = lake.partition_dir(SOURCE, DATAPOINTS, day) / f"{trip_id}{QUARANTINE_SUFFIX}"
    if quarantine.exists():
        quarantine.unlink()
        _fsync_dir(quarantine.parent)


def ensure_schema_files(lake: Lake) -> list[Path]:
    """dbt's `read_parquet` glob fails on a table without files: give each table a schema-only
    file (0 rows, in `day=1970-01-01`) before any trip has landed. Returns what it wrote."""
    written = []
    for table, schema in ((TRIPS, TRIPS_SCHEMA), (DATAPOINTS, DATAPOINTS_SCHEMA)):
        if not lake.files(SOURCE, table):
            written.append(
                lake.write_file(SOURCE, table, EMPTY_DAY, EMPTY_NAME, schema.empty_table()).path
            )
    return written
