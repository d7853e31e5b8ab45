"""The one lake writer: atomic, idempotent Parquet files in `<source>/<table>/day=YYYY-MM-DD/`.

The root is a local folder or an object-store URL (`s3://bucket/prefix`). Readers glob
`day=*/*.parquet`, so a file is only ever visible complete. This module knows the layout
(sources, tables, days, file names) and what a write means for a partition; how one file is made
durable is pipelines.atomic_files', and how it reaches an object store pipelines.object_store's.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.atomic_files import (
    LakeFile,
    ParquetStream,
    WriteResult,
    make_dirs_durably,
    remove_files,
    remove_stale_temps,
)
from pipelines.object_store import LakeError, ObjectStore, is_object_store

PARTITION_KEY = "day"
"""Hive key of every partition folder; files never carry it (the folder would shadow it)."""

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

_FILE = re.compile(r"^[^/]+\.parquet$")
_DAY_FILE = re.compile(rf"^{PARTITION_KEY}=(?P<day>[^/]+)/(?P<name>[^/]+)\.parquet$")


class Lake:
    """Writes and reads the hive-style Parquet lake rooted at `root`: a local folder, or an
    object-store URL such as `s3://bucket/prefix` (settings pass the root in).

    Callers name tables, days and files; only this class knows whether they are paths or keys,
    so no source's code is specific to a store.
    """

    def __init__(self, root: str | Path) -> None:
        if is_object_store(str(root)):
            self.location = str(root).rstrip("/")
            self._root: Path | None = None
            self._store: ObjectStore | None = ObjectStore(self.location)
        else:
            self._root = Path(root)
            self.location = str(self._root)
            self._store = None

    @property
    def remote(self) -> bool:
        """Whether the lake is on an object store."""
        return self._store is not None

    @property
    def root(self) -> Path:
        """The local folder of the lake; an object-store lake has none (use `location`)."""
        if self._root is None:
            raise LakeError(
                f"the lake {self.location} is on an object store and has no local folder"
            )
        return self._root

    # ---- layout -------------------------------------------------------------------------

    def table_dir(self, source: str, table: str) -> Path:
        """Folder holding every `day=` partition of one raw table (local lake only)."""
        return self.root / _component(source, "source") / _component(table, "table")

    def partition_dir(self, source: str, table: str, day: date) -> Path:
        """Folder of one day's partition (local lake only)."""
        return self.table_dir(source, table) / f"{PARTITION_KEY}={_day(day).isoformat()}"

    def table_location(self, source: str, table: str) -> str:
        """Where a table's partitions are, as a path or URL: for metadata and messages."""
        return _join(self.location, _component(source, "source"), _component(table, "table"))

    def partition_location(self, source: str, table: str, day: date) -> str:
        """Where one day's partition is, as a path or URL: the contract DuckDB and dbt read."""
        return _join(self.table_location(source, table), f"{PARTITION_KEY}={_day(day)}")

    def file_location(self, source: str, table: str, day: date, name: str) -> str:
        """Where one named file of a partition is, as a path or URL."""
        partition = self.partition_location(source, table, day)
        return _join(partition, f"{_component(name, 'file name')}.parquet")

    def glob(self, source: str, table: str, day: date | None = None) -> str:
        """The `read_parquet` pattern of a table's files (of one day's, given `day`)."""
        if day is None:
            return _join(self.table_location(source, table), f"{PARTITION_KEY}=*", "*.parquet")
        return _join(self.partition_location(source, table, day), "*.parquet")

    # ---- listing ------------------------------------------------------------------------

    def files(self, source: str, table: str, day: date | None = None) -> list[LakeFile]:
        """Every final Parquet file of a table (of one day, given `day`), sorted (temp files
        never match): Paths on a local disk, URLs on an object store."""
        if self._store is None:
            if day is not None:
                folder = self.partition_dir(source, table, day)
                return sorted(p for p in folder.glob("*.parquet") if p.is_file())
            table_dir = self.table_dir(source, table)
            return sorted(p for p in table_dir.glob(f"{PARTITION_KEY}=*/*.parquet") if p.is_file())
        if day is not None:
            prefix = self.partition_location(source, table, day)
            return [url for url in self._store.find(prefix) if _FILE.match(url[len(prefix) + 1 :])]
        prefix = self.table_location(source, table)
        return [url for url in self._store.find(prefix) if _DAY_FILE.match(url[len(prefix) + 1 :])]

    def days(self, source: str, table: str) -> list[date]:
        """The days whose partition holds at least one Parquet file, sorted."""
        if self._store is None:
            return sorted(day for day, folder in self._day_folders(source, table) if _any(folder))
        found = set()
        for file in self.files(source, table):
            with contextlib.suppress(ValueError):
                found.add(self.day_of(file))
        return sorted(found)

    def newest_day(self, source: str, table: str) -> date | None:
        """The newest day holding a Parquet file (locally a folder walk from the newest, no
        file opened); None before anything landed."""
        if self._store is not None:
            days = self.days(source, table)
            return days[-1] if days else None
        for day, folder in sorted(self._day_folders(source, table), reverse=True):
            if _any(folder):
                return day
        return None

    def _day_folders(self, source: str, table: str) -> list[tuple[date, Path]]:
        prefix = f"{PARTITION_KEY}="
        folders = []
        for folder in self.table_dir(source, table).glob(f"{prefix}*"):
            with contextlib.suppress(ValueError):
                folders.append((date.fromisoformat(folder.name.removeprefix(prefix)), folder))
        return folders

    def has_files(self, source: str, table: str, day: date) -> bool:
        """Whether the day's partition holds a Parquet file."""
        if self._store is None:
            try:
                with os.scandir(self.partition_dir(source, table, day)) as entries:
                    return any(e.name.endswith(".parquet") and e.is_file() for e in entries)
            except (FileNotFoundError, NotADirectoryError):
                return False
        return bool(self.files(source, table, day))

    def exists(self, source: str, table: str, day: date, name: str) -> bool:
        """Whether one named file of a partition is there."""
        location = self.file_location(source, table, day, name)
        if self._store is None:
            return Path(location).is_file()
        return self._store.exists(location)

    @staticmethod
    def day_of(file: LakeFile) -> date:
        """The partition day a file of the lake sits in."""
        folder = str(file).replace("\\", "/").rsplit("/", 2)[-2]
        return date.fromisoformat(folder.removeprefix(f"{PARTITION_KEY}="))

    @staticmethod
    def name_of(file: LakeFile) -> str:
        """A file's name without `.parquet`: the unit it holds (`data`, a trip id, a batch)."""
        return str(file).replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".parquet")

    # ---- writes -------------------------------------------------------------------------

    def replace_partition(
        self, source: str, table: str, day: date, data: pa.Table, *, name: str = "data"
    ) -> WriteResult:
        """Atomically make `data` the whole content of that day's partition.

        The new file lands first (over the same name as the last run's) and only then are the
        partition's other `*.parquet` files (orphans of earlier runs or layouts) removed, so a
        reader never sees the day empty. An empty table still writes a file so the partition
        exists and old rows disappear.
        """
        result = self.write_file(source, table, day, name, data)
        if self._store is not None:
            others = [f for f in self.files(source, table, day) if f != result.path]
            self._store.remove(*others)
            return result
        assert isinstance(result.path, Path)
        others = result.path.parent.glob("*.parquet")
        remove_files(f for f in others if f.name != result.path.name and f.is_file())
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

        The file stays invisible (a swept temp file, or a local spool file for an object
        store) until `commit`, which replaces the named file at once; `abort` leaves the
        previous file as it was.
        """
        if self._store is not None:
            final = self.file_location(source, table, day, name)
            return ParquetStream(final, schema, use_dictionary, store=self._store)
        directory = self.partition_dir(source, table, day)
        final_path = directory / f"{_component(name, 'file name')}.parquet"
        make_dirs_durably(directory)
        remove_stale_temps(directory)
        return ParquetStream(final_path, schema, use_dictionary)

    def remove_file(self, source: str, table: str, day: date, name: str) -> bool:
        """Remove one named file of a partition; False if it was not there."""
        location = self.file_location(source, table, day, name)
        if self._store is not None:
            if not self._store.exists(location):
                return False
            self._store.remove(location)
            return True
        return remove_files([Path(location)])

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

    def ensure_table(
        self, source: str, table: str, schema: pa.Schema, day: date, *, name: str
    ) -> LakeFile | None:
        """Give a table that has no file a schema-only one (0 rows) named `name` on `day`: a
        `read_parquet` glob over a table without files fails, so dbt needs one before anything
        has landed. Returns the file written; None when the table had a file already."""
        if self.files(source, table):
            return None
        return self.write_file(source, table, day, name, schema.empty_table()).path

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

    def read_file(self, file: LakeFile, columns: list[str] | None = None) -> pa.Table:
        """One file's rows (its own columns, without `day`)."""
        if self._store is None:
            return pq.read_table(file, columns=columns)
        with self._store.open(str(file)) as handle:
            return pq.read_table(handle, columns=columns)

    def read_metadata(self, file: LakeFile) -> pq.FileMetaData:
        """One file's Parquet footer (row count, key-value metadata): no data is read."""
        if self._store is None:
            return pq.read_metadata(file)
        with self._store.open(str(file)) as handle:
            return pq.read_metadata(handle)

    def read(self, source: str, table: str) -> pa.Table:
        """All partitions as one table with `day` (date32) appended, for tests and summaries."""
        parts = []
        for file in self.files(source, table):
            content = self.read_file(file)
            day_values = pa.array([self.day_of(file)] * content.num_rows, pa.date32())
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


def _any(folder: Path) -> bool:
    """Whether a local day folder holds a final Parquet file (stops at the first)."""
    return folder.is_dir() and any(p.is_file() for p in folder.glob("*.parquet"))


def _join(location: str, *parts: str) -> str:
    """`location` (a local path or a URL) with path components appended."""
    if is_object_store(location):
        return "/".join([location.rstrip("/"), *parts])
    return str(Path(location, *parts))


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
