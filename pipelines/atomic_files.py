"""One lake file written so it appears whole or not at all, and nothing left behind otherwise.

On a local disk a file is written to a dot-named temp file in the same folder (never matching
`*.parquet`), fsynced, renamed over the final name, and the folder fsynced. A killed writer
therefore leaves at most a temp file, which later writes to that folder sweep up once it is
clearly abandoned. For an object store the file is spooled to a local temp file and handed to
pipelines.object_store for one upload. Apart from the lake's layout (pipelines.lake) because
this is about durability on a filesystem, not about tables and days.
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
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.locks import pid_alive
from pipelines.object_store import ObjectStore

COMPRESSION = "zstd"

STALE_TEMP_SECONDS = 3600.0
"""A temp file untouched this long is abandoned: a live writer keeps touching its file."""

_TEMP_SUFFIX = ".tmp"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]+)\.tmp$")

_SPOOL_PREFIX = "fleet-lake-spool"

LakeFile = Path | str
"""One final file of the lake: a Path on a local disk, the object's URL on an object store."""


@dataclass(frozen=True)
class WriteResult:
    """What one atomic write left in the lake, for materialization metadata."""

    path: LakeFile
    rows: int
    bytes: int


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


def spool_path() -> Path:
    """A local file (in TMPDIR) where an object-store write is staged before its upload,
    named so that a later write can sweep one whose writer was killed."""
    spool_dir = Path(tempfile.gettempdir())
    remove_stale_temps(spool_dir, _SPOOL_PREFIX)
    name = f".{_SPOOL_PREFIX}.{os.getpid()}.{secrets.token_hex(6)}{_TEMP_SUFFIX}"
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


def make_dirs_durably(directory: Path) -> None:
    """Create the partition folder (race-safe) and fsync each parent that gained an entry."""
    missing = []
    parent = directory
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    directory.mkdir(parents=True, exist_ok=True)
    for created in missing:
        _fsync_dir(created.parent)


def remove_stale_temps(directory: Path, prefix: str = "") -> None:
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
        if age > STALE_TEMP_SECONDS and not pid_alive(int(match["pid"])):
            temp.unlink(missing_ok=True)


def remove_files(paths: Iterable[Path]) -> bool:
    """Delete files and make each deletion durable (their folders fsynced); gone already is
    fine. Whether any was removed."""
    folders: set[Path] = set()
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        folders.add(path.parent)
    for folder in sorted(folders):
        _fsync_dir(folder)
    return bool(folders)


def _fsync_file(path: Path) -> None:
    """Make a file's bytes durable before it is renamed into place."""
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
