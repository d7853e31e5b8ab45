"""One AutoPi export file (`TRIP_ID.json.gz`) → a typed trip row + a lossless datapoints table.

Line 1 is the trip object, every further line one datapoint whose keys depend on its type
(`@t`). A thread inflates the gzip into newline-aligned segments, two threads parse segments
side by side, and the caller's thread writes each typed segment as a Parquet row group, so an
export is never whole in memory and ingest runs within a small factor of `gzip -dc` (see
bench/autopi_ingest.py):

* declared keys get typed columns under their AutoPi names (`@ts`, `obd.speed.value`, ...;
  `track.pos.loc` becomes `track.pos.loc.lat` / `track.pos.loc.lon`); numbers are float64;
* every other key is kept in `extra`, a JSON object per row (NULL when a row has none), and
  counted as schema drift, so a key first seen late in a file, or never seen before, is never
  dropped and the file schema never depends on what a sample happened to contain;
* values are validated where they enter: a line that is not a JSON object, or whose declared
  key holds a value that does not parse as its type (`"12,5"` in a number, `"yesterday"` in
  a timestamp), or that holds a number JSON cannot carry anywhere (`NaN`, `Infinity`,
  `1e999`, which many emitters write and Python's json reads), is quarantined with its line
  number, field, value and reason, never landed; no line ever fails the whole trip;
* a segment is first offered to DuckDB's JSON reader (fastpath.py), whose answer is taken
  only when counting proves it exact; otherwise Arrow's JSON reader reads it against the
  declared schema, and a segment Arrow refuses too (a bad line, a duplicate key) or reads
  leniently (a non-finite number) is bisected down to small pieces read line by line in
  Python, which decides what is quarantined. Keys the careful paths find are learned, so the
  following segments are fast again.

The trip object (line 1) is validated the same way: a trip whose numbers or times do not
parse is quarantined (`ParsedTrip.problem`) while its datapoints still land.

The gzip stream must end with its trailer (CRC-32 and length are checked); a truncated or
corrupt file raises `CorruptExport` before anything becomes visible.

This module parses segments and runs the three stages; the pieces it composes live beside it:
schemas.py (the columns), trip.py (line 1), inflate.py (gzip → segments), columns.py (one
datapoint's values), values.py (JSON values and verdicts), tally.py (counts and sinks).
"""

from __future__ import annotations

import itertools
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from pipelines.sources.autopi import fastpath
from pipelines.sources.autopi.columns import (
    dumps,
    extras_json,
    json_text,
    load_object,
    needs_python,
    type_line,
)
from pipelines.sources.autopi.inflate import inflate, segments
from pipelines.sources.autopi.schemas import (
    DATAPOINTS_SCHEMA,
    DECLARED,
    EXTRA,
    F64,
    LOC,
    LOC_FIELDS,
    READ_NAMES,
    READ_SCHEMA,
    STR,
)
from pipelines.sources.autopi.tally import (
    DatapointSink,
    ExportStats,
    QuarantinedLine,
    QuarantineSink,
)
from pipelines.sources.autopi.trip import ParsedTrip, parse_trip
from pipelines.sources.autopi.values import CorruptExport, non_finite_in

SEGMENT_BYTES = 8 << 20  # decompressed bytes Arrow parses in one call
PARSE_WORKERS = 2  # segments parsed side by side (the machine's cores)
PIECE_LINES = 256  # a refused segment is bisected down to pieces of about this many lines
_MAX_REREADS = 4
_REREAD = object()
_SLOW = object()


def _fast_kind(kind: pa.DataType) -> str:
    if pa.types.is_struct(kind):
        return "location"
    if pa.types.is_timestamp(kind):
        return "timestamp"
    if pa.types.is_integer(kind):
        return "integer"
    return "number" if pa.types.is_floating(kind) else "string"


_FAST_COLUMNS = [fastpath.Column(f.name, _fast_kind(f.type)) for f in READ_SCHEMA]


@dataclass
class _Tally:
    """What parsing one segment found besides its rows: counts and quarantined lines."""

    stats: ExportStats = field(default_factory=ExportStats)
    bad: list[QuarantinedLine] = field(default_factory=list)


# --- datapoints -----------------------------------------------------------------------------


class _Reader:
    """Per-export parsing: Arrow's JSON reader against the declared schema, plus string
    overrides learned on the way for undeclared keys Arrow would otherwise turn into
    timestamps (shared by the parallel segments; an override only makes a later read exact)."""

    def __init__(self, trip_id: str, spool: Path | None = None) -> None:
        self.trip_id = trip_id
        self.overrides: dict[str, pa.DataType] = {}
        # Undeclared top-level keys seen so far: the fast path reads them as JSON text.
        self.learned: dict[str, None] = {}
        self._spool = spool  # where segments are written for DuckDB (None: no fast path)
        self._local = threading.local()
        self._connections: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()

    def learn(self, keys: Iterator[str] | list[str]) -> None:
        """Read these undeclared keys on the fast path from now on (if DuckDB can name them:
        not nested in the location, not equal to another column but for case)."""
        taken = {k.casefold() for k in itertools.chain(READ_NAMES, self.learned)}
        for key in keys:
            if len(self.learned) >= fastpath.MAX_LEARNED_KEYS:
                return
            folded = key.casefold()
            if key and folded not in taken and not key.startswith(f"{LOC}."):
                self.learned[key] = None
                taken.add(folded)

    def options(self, size: int) -> tuple[pj.ReadOptions, pj.ParseOptions]:
        schema = READ_SCHEMA
        for name, kind in dict(self.overrides).items():
            schema = schema.append(pa.field(name, kind))
        return (
            # One block, one thread: parallelism comes from parsing segments side by side.
            pj.ReadOptions(block_size=max(size, 1 << 16), use_threads=False),
            pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"),
        )

    def parse(self, data: bytes, first_line: int, lines: int) -> tuple[pa.Table, _Tally]:
        tally = _Tally()
        table = self._fast(data, first_line, lines, tally)
        if table is None:
            table = self.segment(data, first_line, tally, lines)
        return table, tally

    # --- the fast path: DuckDB, accepted only when proven exact (see fastpath.py) ----------
    def _connection(self) -> duckdb.DuckDBPyConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            # One thread per query: the parallelism is segments side by side.
            connection = duckdb.connect(config={"threads": 1})
            with self._lock:
                self._connections.append(connection)
            self._local.connection = connection
        return connection

    def _fast(self, data: bytes, first_line: int, lines: int, tally: _Tally) -> pa.Table | None:
        if self._spool is None or lines <= PIECE_LINES * 2:
            return None
        columns = _FAST_COLUMNS + [fastpath.Column(k, "any") for k in list(self.learned)]
        path = self._spool / f"segment-{first_line}.json"
        path.write_bytes(data)
        try:
            segment = fastpath.read_segment(
                self._connection(),
                path,
                data,
                lines,
                columns,
                location_fields=LOC_FIELDS,
                types=DECLARED,
            )
        finally:
            path.unlink(missing_ok=True)
        if segment is None:
            return None
        n = lines
        table = pa.Table.from_pydict(
            {
                "trip_id": pa.repeat(pa.scalar(self.trip_id, STR), n),
                "line_no": pa.array(range(first_line, first_line + n), pa.int64()),
                **{name: segment.typed[name] for name in DECLARED},
                EXTRA: extras_json(segment.extras, n),
            },
            schema=DATAPOINTS_SCHEMA,
        )
        undeclared = tally.stats.undeclared
        for key, column in segment.extras:
            undeclared[key] = undeclared.get(key, 0) + len(column) - column.null_count
        tally.stats.datapoints += n
        return table

    def segment(
        self, data: bytes, first_line: int, tally: _Tally, lines: int | None = None
    ) -> pa.Table:
        """A newline-terminated run of `lines` lines starting at line `first_line`, typed."""
        lines = data.count(b"\n") if lines is None else lines
        if lines <= PIECE_LINES * 2:
            return self._slow(data, first_line, tally)
        for _ in range(_MAX_REREADS):
            read_opts, parse_opts = self.options(len(data))
            try:
                table = pj.read_json(pa.BufferReader(data), read_opts, parse_opts)
            except pa.ArrowInvalid:
                break  # a malformed line, a mistyped value or a duplicate key: bisect
            if table.num_rows != lines:
                break  # blank lines: the numbering needs the slow path's count
            outcome = self._normalize(table, first_line, tally)
            if outcome is _REREAD:
                continue  # an undeclared key is now read as text
            if outcome is _SLOW:
                break
            return outcome
        middle = data.find(b"\n", len(data) // 2) + 1
        head, tail = data[:middle], data[middle:]
        left = self.segment(head, first_line, tally)
        if not tail:
            return left
        right = self.segment(tail, first_line + head.count(b"\n"), tally)
        return pa.concat_tables([left, right])

    # --- the fast path ----------------------------------------------------------------------
    def _normalize(self, table: pa.Table, first_line: int, tally: _Tally) -> Any:
        """Arrow's table → DATAPOINTS_SCHEMA, or `_REREAD` when an undeclared key must be read
        as text (Arrow inferred a timestamp, which would rewrite the value), or `_SLOW` when an
        undeclared key holds nested values whose exact JSON only the slow path keeps, or when
        Arrow read a `NaN` or `Infinity` (which it accepts) that must be quarantined."""
        n = table.num_rows
        loc = table.column(LOC)
        loc_type: pa.StructType = loc.type
        nested = [loc_type.field(i).name for i in range(loc_type.num_fields)]
        extras: list[tuple[str, pa.ChunkedArray]] = [
            (name, table.column(name)) for name in table.column_names if name not in READ_NAMES
        ]
        extras += [(f"{LOC}.{f}", pc.struct_field(loc, f)) for f in nested if f not in LOC_FIELDS]
        temporal = [k for k, col in extras if pa.types.is_temporal(col.type)]
        if any(k.startswith(f"{LOC}.") for k in temporal):
            return _SLOW
        if temporal:
            self.overrides.update(dict.fromkeys(temporal, STR))
            return _REREAD
        if any(needs_python(col.type) for _, col in extras):
            return _SLOW
        columns: dict[str, Any] = {
            "trip_id": pa.repeat(pa.scalar(self.trip_id, STR), n),
            "line_no": pa.array(range(first_line, first_line + n), pa.int64()),
        }
        for name in DECLARED:
            if name in (f"{LOC}.lat", f"{LOC}.lon"):
                columns[name] = pc.struct_field(loc, name.rsplit(".", 1)[1])
            else:
                columns[name] = table.column(name)
        numbers = [columns[k] for k, kind in DECLARED.items() if kind == F64]
        numbers += [col for _, col in extras if pa.types.is_floating(col.type)]
        if not all(fastpath.all_finite(col) for col in numbers):
            return _SLOW
        present = [(k, col) for k, col in extras if col.null_count < len(col)]
        columns[EXTRA] = extras_json([(k, json_text(col)) for k, col in present], n)
        self.learn([k for k, _ in extras])
        undeclared = tally.stats.undeclared
        for key, col in present:
            undeclared[key] = undeclared.get(key, 0) + len(col) - col.null_count
        tally.stats.datapoints += n
        return pa.Table.from_pydict(columns, schema=DATAPOINTS_SCHEMA)

    # --- the slow path: one line at a time ---------------------------------------------------
    def _slow(self, data: bytes, first_line: int, tally: _Tally) -> pa.Table:
        stats = tally.stats
        values: dict[str, list[Any]] = {name: [] for name in DATAPOINTS_SCHEMA.names}
        for offset, raw in enumerate(data.split(b"\n")[:-1]):
            line_no = first_line + offset
            stats.slow_lines += 1
            if not raw.strip():
                stats.blank_lines += 1
                continue
            reason, point = load_object(raw)
            if point is None:
                stats.malformed += 1
                tally.bad.append(QuarantinedLine(line_no, reason, raw))
                continue
            extras: dict[str, Any] = {}
            typed: dict[str, Any] = {}
            problem = type_line(point, typed, extras)
            extra_text = None
            if problem is None and extras:
                try:
                    extra_text = dumps(extras)
                except TypeError:  # only a NonFinite is not JSON-serializable
                    problem = non_finite_in(extras, "")
                    if problem is None:
                        raise
            if problem is not None:
                stats.invalid += 1
                tally.bad.append(
                    QuarantinedLine(line_no, problem.reason, raw, problem.field, problem.value)
                )
                continue
            values["trip_id"].append(self.trip_id)
            values["line_no"].append(line_no)
            for name in DECLARED:
                values[name].append(typed.get(name))
            values[EXTRA].append(extra_text)
            for key in extras:
                stats.undeclared[key] = stats.undeclared.get(key, 0) + 1
            if extras:
                self.learn(list(extras))
            stats.datapoints += 1
        return pa.Table.from_pydict(values, schema=DATAPOINTS_SCHEMA)


# --- the pipeline: inflate → parse → write --------------------------------------------------


class _Stage(threading.Thread):
    """A daemon stage that keeps its exception for the caller to re-raise."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # re-raised by the caller
            self.error = exc


_DONE = object()


def _put(target: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put unless the consumer gave up; False if it did."""
    while not stop.is_set():
        try:
            target.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def read_export(
    path: Path,
    *,
    expected_trip_id: str | None,
    open_sink: Callable[[ParsedTrip], DatapointSink],
    quarantine: Callable[[ParsedTrip], QuarantineSink],
    segment_bytes: int = SEGMENT_BYTES,
    workers: int = PARSE_WORKERS,
) -> tuple[ParsedTrip, ExportStats]:
    """Stream one export file into the sink `open_sink(trip)` returns.

    Three stages overlap: a thread inflates the gzip into newline-aligned segments, `workers`
    threads parse segments side by side, and this thread writes the typed tables (and the
    quarantined lines) in file order. Raises `CorruptExport` when the file is not a
    complete gzip export; the caller then discards its sinks, so nothing becomes visible.
    """
    stats = ExportStats()
    chunks = inflate(path, stats)
    head = b""
    for chunk in chunks:
        head += chunk
        if b"\n" in head:
            break
    first, newline, rest = head.partition(b"\n")
    if not first.strip():
        raise CorruptExport("the export is empty (expected the trip object on line 1)")
    trip = parse_trip(first, expected_trip_id)
    sink = open_sink(trip)
    bad_lines = quarantine(trip)
    stats.decompressed_bytes = len(first) + len(newline)
    with tempfile.TemporaryDirectory(prefix="fleet-autopi-", dir=_spool_root()) as spool:
        reader = _Reader(trip.trip_id, Path(spool))
        try:
            _stream_datapoints(
                reader,
                itertools.chain([rest] if rest else [], chunks),
                sink,
                bad_lines,
                stats,
                segment_bytes,
                workers,
            )
        finally:
            reader.close()
    return trip, stats


def _spool_root() -> str | None:
    """Memory-backed /dev/shm when there is one: segments live there for milliseconds."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def _stream_datapoints(
    reader: _Reader,
    inflated: Iterator[bytes],
    sink: DatapointSink,
    bad_lines: QuarantineSink,
    stats: ExportStats,
    segment_bytes: int,
    workers: int,
) -> None:
    """Inflate (a thread) → parse (`workers` threads) → write (this thread), in file order."""
    in_flight: queue.Queue[Any] = queue.Queue(workers * 2)
    stop = threading.Event()
    with ThreadPoolExecutor(workers, thread_name_prefix="autopi-parse") as pool:

        def produce() -> None:
            line = 2
            try:
                for segment in segments(inflated, segment_bytes):
                    stats.decompressed_bytes += len(segment)
                    lines = segment.count(b"\n")
                    future = pool.submit(reader.parse, segment, line, lines)
                    line += lines
                    if not _put(in_flight, future, stop):
                        future.cancel()
                        return
            finally:
                _put(in_flight, _DONE, stop)

        producer = _Stage("autopi-inflate", produce)
        producer.start()
        try:
            while (future := in_flight.get()) is not _DONE:
                table, tally = future.result()
                sink.write(table)
                stats.add(tally.stats)
                for line in tally.bad:
                    bad_lines.add(line)
        finally:
            stop.set()
            producer.join()
            while not in_flight.empty():  # whatever was queued when we gave up
                leftover = in_flight.get_nowait()
                if leftover is not _DONE:
                    leftover.cancel()
    if producer.error is not None:
        raise producer.error
