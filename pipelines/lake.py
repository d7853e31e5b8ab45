"""The one lake writer: atomic, idempotent Parquet files in `<source>/<table>/day=YYYY-MM-DD/`.

The root is a local folder or an object-store URL (`s3://bucket/prefix`). Readers glob
`day=*/*.parquet`, so a file is only ever visible complete.

On a local disk a file is written to a dot-named temp file in the same directory (never
matching `*.parquet`), fsynced, renamed over the final name, and the directory fsynced. A killed
writer therefore leaves at most a temp file, which later writes to that partition sweep up once
it is clearly abandoned.

An object store has no rename: the file is spooled to a local temp file and then stored with
one upload to its final key (a single PUT; past 100 MiB a multipart upload, which the store only
makes visible when it is completed, and which a failure aborts). A reader sees the old object or
the new one, never part of one; a killed writer leaves nothing on the store.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

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

_SPOOL_PREFIX = "fleet-lake-spool"

PART_SIZE = 50 * 2**20
"""Part size of a multipart upload (s3fs's default): files under two parts go in one PUT."""

MAX_PARTS = 10_000
"""S3's most parts in one multipart upload."""

OBJECT_STORE = re.compile(r"^(s3|s3a|gs|gcs|az|abfs|abfss)://", re.IGNORECASE)
"""Roots the lake reaches through fsspec (s3fs; gcsfs and adlfs when installed)."""

_FILE = re.compile(r"^[^/]+\.parquet$")
_DAY_FILE = re.compile(rf"^{PARTITION_KEY}=(?P<day>[^/]+)/(?P<name>[^/]+)\.parquet$")

LakeFile = Path | str
"""One final file of the lake: a Path on a local disk, the object's URL on an object store."""


class LakeError(RuntimeError):
    """The lake cannot do what was asked; the message is one line saying why."""


def is_object_store(location: str | Path) -> bool:
    """Whether a FLEET_LAKE_DIR value names an object store rather than a local folder."""
    return isinstance(location, str) and bool(OBJECT_STORE.match(location))


@dataclass(frozen=True)
class WriteResult:
    """What one atomic write left in the lake, for materialization metadata."""

    path: LakeFile
    rows: int
    bytes: int


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

        The file stays invisible (a swept temp file, or a local spool file for an object
        store) until `commit`, which replaces the named file at once; `abort` leaves the
        previous file as it was.
        """
        if self._store is not None:
            final = self.file_location(source, table, day, name)
            return ParquetStream(final, schema, use_dictionary, store=self._store)
        directory = self.partition_dir(source, table, day)
        final_path = directory / f"{_component(name, 'file name')}.parquet"
        _make_dirs_durably(directory)
        _remove_stale_temps(directory)
        return ParquetStream(final_path, schema, use_dictionary)

    def remove_file(self, source: str, table: str, day: date, name: str) -> bool:
        """Remove one named file of a partition; False if it was not there."""
        location = self.file_location(source, table, day, name)
        if self._store is not None:
            if not self._store.exists(location):
                return False
            self._store.remove(location)
            return True
        path = Path(location)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(path.parent)
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


class ParquetStream:
    """One lake Parquet file written batch by batch, invisible until `commit`.

    The schema is kept exactly as given (tz-aware timestamps stay tz-aware). On an object store
    the file is spooled to a local temp file and `commit` stores it with one upload.
    """

    def __init__(
        self,
        final: LakeFile,
        schema: pa.Schema,
        use_dictionary: bool | list[str],
        *,
        store: ObjectStore | None = None,
    ) -> None:
        self.final = final
        self.store = store
        if store is None:
            assert isinstance(final, Path)
            self.temp = temp_path(final)
        else:
            self.temp = spool_path()
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
        if self.store is None:
            assert isinstance(self.final, Path)
            size = commit_temp(self.temp, self.final)
        else:
            try:
                size = self.store.put(self.temp, str(self.final))
            finally:
                self.temp.unlink(missing_ok=True)
        return WriteResult(path=self.final, rows=self.rows, bytes=size)

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        self.temp.unlink(missing_ok=True)


class ObjectStore:
    """The lake's object store, through fsspec: s3fs for `s3://` (gcsfs, adlfs for `gs://`,
    `az://` when installed). Endpoint and credentials come from the standard variables
    (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION) that botocore
    reads itself, so the lake has no settings of its own and never holds a secret."""

    def __init__(self, location: str) -> None:
        self.protocol = location.split("://", 1)[0].lower()
        try:
            import fsspec

            # Listings are never cached: a partition's files are listed right after a write.
            self.fs: AbstractFileSystem = fsspec.filesystem(
                self.protocol, skip_instance_cache=True, use_listings_cache=False
            )
        except ImportError as exc:
            raise LakeError(
                f"the lake {location} needs fsspec's {self.protocol}:// filesystem: {exc}"
            ) from None

    def url(self, key: str) -> str:
        return f"{self.protocol}://{key}"

    def key(self, url: str) -> str:
        return url.split("://", 1)[1] if "://" in url else url

    def put(self, local: Path, url: str) -> int:
        """Store a finished local file at `url` in one upload; its size.

        s3fs sends a file under two parts' size as one PUT (the object appears whole or not at
        all) and a bigger one as a multipart upload of the finished file, which the store only
        shows once it is completed and which s3fs aborts when any part fails; a killed writer's
        upload is never completed, so nothing of it becomes visible.
        """
        size = local.stat().st_size
        options: dict[str, int] = {}
        if self.protocol in {"s3", "s3a"}:
            # An explicit part size bypasses s3fs's own scaling: keep within S3's 10,000 parts.
            options["chunksize"] = max(PART_SIZE, -(-size // MAX_PARTS))
        self.fs.put_file(str(local), self.key(url), **options)
        return size

    def find(self, prefix: str) -> list[str]:
        """URLs of every object under the folder `prefix`, sorted."""
        key = self.key(prefix).rstrip("/")
        try:
            found = self.fs.find(key + "/")
        except FileNotFoundError:
            return []
        return sorted(self.url(k) for k in found if k.startswith(key + "/"))

    def exists(self, url: str) -> bool:
        return bool(self.fs.exists(self.key(url)))

    def remove(self, *urls: LakeFile) -> None:
        """Delete objects (one request for many); gone already is fine."""
        if urls:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm([self.key(str(u)) for u in urls])

    def open(self, url: str) -> BinaryIO:
        return self.fs.open(self.key(url), "rb")


def spool_path() -> Path:
    """A local file (in TMPDIR) where an object-store write is staged before its upload,
    named so that a later write can sweep one whose writer was killed."""
    spool_dir = Path(tempfile.gettempdir())
    _remove_stale_temps(spool_dir, _SPOOL_PREFIX)
    name = f"{_SPOOL_PREFIX}.{os.getpid()}.{secrets.token_hex(6)}{_TEMP_SUFFIX}"
    (spool_dir / name).touch(exist_ok=False)
    return spool_dir / name


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


def _remove_stale_temps(directory: Path, prefix: str = "") -> None:
    """Sweep temp files of killed writers; a live writer's file is fresh or its pid still runs."""
    now = time.time()
    for temp in directory.glob(f".{prefix}*{_TEMP_SUFFIX}"):
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
