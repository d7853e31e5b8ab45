"""The one lake writer: atomic, idempotent Parquet files in `<source>/<table>/day=YYYY-MM-DD/`.

Readers glob `day=*/*.parquet`, so a file is only ever visible complete: it is written to a
dot-named temp file in the same directory (never matching `*.parquet`), fsynced, renamed over
the final name, and the directory fsynced. A killed writer therefore leaves at most a temp
file, which later writes to that partition sweep up once it is clearly abandoned.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PARTITION_KEY = "day"
"""Hive key of every partition folder; files never carry it (the folder would shadow it)."""

COMPRESSION = "zstd"

QUARANTINE_TABLE = "quarantine"
"""Every source keeps input it could not land as `<source>/quarantine/day=D/<unit>.parquet`:
beside the source's tables, never inside one (table folders hold only that table's rows)."""

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("table", pa.string(), nullable=False),  # the raw table the row was meant for
        pa.field("reason", pa.string(), nullable=False),  # one line: what is wrong with it
        pa.field("field", pa.string()),  # the offending field, when one is to blame
        pa.field("value", pa.string()),  # that field's raw value, as text
        pa.field("payload", pa.string(), nullable=False),  # the whole input row, as JSON text
        pa.field("quarantined_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
"""The columns every quarantine file starts with; a source may add its own context after them
(kt1's batch id and item index, Metrotec's vehicle id, AutoPi's line number)."""

STALE_TEMP_SECONDS = 3600.0
"""A temp file untouched this long is abandoned: a live writer keeps touching its file."""

_TEMP_SUFFIX = ".tmp"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]+)\.tmp$")


@dataclass(frozen=True)
class WriteResult:
    """What one atomic write left on disk, for materialization metadata."""

    path: Path
    rows: int
    bytes: int


class Lake:
    """Writes and reads the hive-style Parquet lake rooted at `root` (settings pass the root in)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ---- layout -------------------------------------------------------------------------

    def table_dir(self, source: str, table: str) -> Path:
        """Folder holding every `day=` partition of one raw table."""
        return self.root / _component(source, "source") / _component(table, "table")

    def partition_dir(self, source: str, table: str, day: date) -> Path:
        """Folder of one day's partition; the path is the contract DuckDB and dbt read."""
        return self.table_dir(source, table) / f"{PARTITION_KEY}={_day(day).isoformat()}"

    def files(self, source: str, table: str) -> list[Path]:
        """Every final Parquet file of a table, sorted (temp files never match)."""
        table_dir = self.table_dir(source, table)
        return sorted(p for p in table_dir.glob(f"{PARTITION_KEY}=*/*.parquet") if p.is_file())

    # ---- writes -------------------------------------------------------------------------

    def replace_partition(
        self, source: str, table: str, day: date, data: pa.Table, *, name: str = "data"
    ) -> WriteResult:
        """Atomically make `data` the whole content of that day's partition.

        The new file lands first and only then are the partition's other `*.parquet` files
        (orphans of earlier runs or layouts) removed, so a reader never sees the day empty.
        An empty table still writes a file so the partition exists and old rows disappear.
        """
        result = self.write_file(source, table, day, name, data)
        directory = result.path.parent
        removed = False
        for other in directory.glob("*.parquet"):
            if other.name != result.path.name and other.is_file():
                other.unlink(missing_ok=True)
                removed = True
        if removed:
            _fsync_dir(directory)
        return result

    def write_file(
        self, source: str, table: str, day: date, name: str, data: pa.Table
    ) -> WriteResult:
        """Atomically create or replace one named file, leaving sibling files alone.

        Per-unit files (an AutoPi trip, a kt1 batch group) use this so re-landing the same
        unit replaces its file instead of adding a copy.
        """
        _check_no_partition_key(data)
        stream = self.open_stream(source, table, day, name, data.schema)
        try:
            stream.write(data)
            return stream.commit()
        except BaseException:
            # Whatever broke the write, the previous file is untouched; leave no debris.
            stream.abort()
            raise

    def open_stream(
        self,
        source: str,
        table: str,
        day: date,
        name: str,
        schema: pa.Schema,
        *,
        use_dictionary: bool | list[str] = True,
    ) -> ParquetStream:
        """`write_file` for data too big to hold: write batch by batch, then `commit()`.

        The file stays invisible (a swept temp file) until `commit`, which makes it durable
        and replaces the named file at once; `abort` leaves the previous file as it was.
        """
        directory = self.partition_dir(source, table, day)
        final = directory / f"{_component(name, 'file name')}.parquet"
        _make_dirs_durably(directory)
        _remove_stale_temps(directory)
        return ParquetStream(final, schema, use_dictionary)

    def remove_file(self, source: str, table: str, day: date, name: str) -> bool:
        """Remove one named file of a partition; False if it was not there."""
        directory = self.partition_dir(source, table, day)
        path = directory / f"{_component(name, 'file name')}.parquet"
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(directory)
        return True

    def replace_partitions(
        self,
        source: str,
        table: str,
        days: Iterable[date],
        data: pa.Table,
        *,
        day_column: str = "day",
        name: str = "data",
    ) -> dict[date, WriteResult]:
        """Replace every partition in `days` with that day's rows of `data` (a backfill range).

        Days without rows get an empty file, so a re-run that finds fewer days clears them.
        `day_column` is dropped from the files because the folder carries it. Rows outside
        `days` are a caller bug and raise before anything is written.
        """
        wanted = sorted({_day(d) for d in days})
        by_day = _split_by_day(data, day_column)
        stray = sorted(set(by_day) - set(wanted))
        if stray:
            shown = ", ".join(d.isoformat() for d in stray[:5])
            more = f" (+{len(stray) - 5} more)" if len(stray) > 5 else ""
            raise ValueError(
                f"{source}/{table}: rows for days outside the partitions being written: "
                f"{shown}{more}; widen `days` or filter the rows"
            )
        file_schema = data.schema.remove(data.schema.get_field_index(day_column))
        empty = file_schema.empty_table()
        return {
            day: self.replace_partition(source, table, day, by_day.get(day, empty), name=name)
            for day in wanted
        }

    def write_quarantine(
        self, source: str, day: date, name: str, rows: pa.Table
    ) -> WriteResult | None:
        """Make `rows` the quarantine of one landing unit (a day of a backfill, a kt1 group, an
        AutoPi trip) on `day`, the day the rows would have landed on (else the landing day).

        Named like the unit's data file, so landing the unit again replaces its quarantine; with
        no rows, a quarantine left by an earlier landing of the unit is removed instead.
        """
        missing = [f.name for f in QUARANTINE_SCHEMA if f.name not in rows.schema.names]
        if missing:
            raise ValueError(f"{source} quarantine rows lack the columns {missing}")
        if rows.num_rows == 0:
            self.remove_file(source, QUARANTINE_TABLE, day, name)
            return None
        return self.write_file(source, QUARANTINE_TABLE, day, name, rows)

    # ---- reads --------------------------------------------------------------------------

    def read(self, source: str, table: str) -> pa.Table:
        """All partitions as one table with `day` (date32) appended, for tests and summaries."""
        parts = []
        for path in self.files(source, table):
            content = pq.read_table(path)
            day = date.fromisoformat(path.parent.name.removeprefix(f"{PARTITION_KEY}="))
            day_values = pa.array([day] * content.num_rows, pa.date32())
            parts.append(content.append_column(PARTITION_KEY, day_values))
        if not parts:
            return pa.table({PARTITION_KEY: pa.array([], pa.date32())})
        return pa.concat_tables(parts, promote_options="permissive")


def quarantine_table(
    records: Iterable[dict[str, object]],
    quarantined_at: datetime,
    extra: Iterable[pa.Field] = (),
) -> pa.Table:
    """Quarantine rows (`table`, `reason`, `field`, `value`, `payload`, plus `extra` columns) in
    the one quarantine schema, all stamped `quarantined_at`."""
    schema = pa.schema([*QUARANTINE_SCHEMA, *extra])
    return pa.Table.from_pylist(
        [{**r, "quarantined_at": quarantined_at} for r in records], schema=schema
    )


# ---- helpers ------------------------------------------------------------------------------


class ParquetStream:
    """One lake Parquet file written batch by batch, invisible until `commit`.

    The schema is kept exactly as given (tz-aware timestamps stay tz-aware).
    """

    def __init__(self, final: Path, schema: pa.Schema, use_dictionary: bool | list[str]) -> None:
        self.final = final
        self.temp = temp_path(final)
        try:
            self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
                self.temp, schema, compression=COMPRESSION, use_dictionary=use_dictionary
            )
        except BaseException:
            # The writer creates the file before it writes its header: on a full disk the
            # header fails and nothing else would remove the empty file.
            self.temp.unlink(missing_ok=True)
            raise
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        assert self._writer is not None, "written after commit or abort"
        self._writer.write_table(table)
        self.rows += table.num_rows

    def commit(self) -> WriteResult:
        assert self._writer is not None, "committed twice"
        self._writer.close()
        self._writer = None
        size = commit_temp(self.temp, self.final)
        return WriteResult(path=self.final, rows=self.rows, bytes=size)

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        self.temp.unlink(missing_ok=True)


def temp_path(final: Path) -> Path:
    """Where a writer stages `final`: same folder, dot-named, never matching `*.parquet`."""
    return final.parent / f".{final.name}.{os.getpid()}.{secrets.token_hex(6)}{_TEMP_SUFFIX}"


def commit_temp(temp: Path, final: Path) -> int:
    """Make a fully written temp file durable and put it in place at once; its size."""
    _fsync_file(temp)
    size = temp.stat().st_size
    os.replace(temp, final)
    _fsync_dir(final.parent)
    return size


def _split_by_day(data: pa.Table, day_column: str) -> dict[date, pa.Table]:
    """Rows of `data` per value of its date32 `day_column`, without that column, order kept."""
    if day_column not in data.column_names:
        raise ValueError(f"day column {day_column!r} is missing; columns: {data.column_names}")
    column = data[day_column]
    if column.type != pa.date32():
        raise ValueError(f"day column {day_column!r} must be date32, got {column.type}")
    if column.null_count:
        raise ValueError(f"day column {day_column!r} has {column.null_count} null value(s)")
    rows = data.drop_columns([day_column])
    if data.num_rows == 0:
        return {}
    # A stable sort keeps each day's rows in arrival order; runs of equal days are then slices.
    order = pc.sort_indices(column)
    rows = rows.take(order)
    runs = pc.run_end_encode(pc.take(column, order).combine_chunks())
    by_day: dict[date, pa.Table] = {}
    start = 0
    for day, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist(), strict=True):
        by_day[day] = rows.slice(start, end - start)
        start = end
    return by_day


def _check_no_partition_key(data: pa.Table) -> None:
    """A `day` column inside a file would be silently shadowed by the folder in DuckDB."""
    if PARTITION_KEY in data.column_names:
        raise ValueError(
            f"column {PARTITION_KEY!r} would be shadowed by the partition folder; drop it "
            f"or use Lake.replace_partitions(day_column=...) which splits and drops it"
        )


def _component(value: str, what: str) -> str:
    """Reject names that would escape the partition folder or hide from the `*.parquet` glob."""
    if (
        not value
        or value.startswith(".")
        or "/" in value
        or "\\" in value
        or "\0" in value
        or value.endswith(".parquet")
    ):
        raise ValueError(
            f"{what} {value!r} must be a plain, non-empty name without '/', a leading '.', "
            f"or a '.parquet' suffix"
        )
    return value


def _day(day: date) -> date:
    """Partitions are whole UTC days; a datetime here is a caller bug, not something to round."""
    if isinstance(day, datetime) or not isinstance(day, date):
        raise TypeError(f"partition day must be a datetime.date, got {type(day).__name__}")
    return day


def _make_dirs_durably(directory: Path) -> None:
    """Create the partition folder (race-safe) and fsync each parent that gained an entry."""
    missing = []
    parent = directory
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    directory.mkdir(parents=True, exist_ok=True)
    for created in missing:
        _fsync_dir(created.parent)


def _remove_stale_temps(directory: Path) -> None:
    """Sweep temp files of killed writers; a live writer's file is fresh or its pid still runs."""
    now = time.time()
    for temp in directory.glob(f".*{_TEMP_SUFFIX}"):
        match = _TEMP_RE.match(temp.name)
        if match is None:
            continue
        try:
            age = now - temp.stat().st_mtime
        except FileNotFoundError:
            continue
        if age > STALE_TEMP_SECONDS and not _pid_alive(int(match["pid"])):
            temp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (errs towards alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make renames and unlinks in `directory` durable (some filesystems refuse; that is fine)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
