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
"""

from __future__ import annotations

import itertools
import json
import math
import os
import queue
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from pipelines.sources.autopi import fastpath

try:  # ISA-L inflates 3-4x faster than zlib and checks the same CRC-32 and length
    from isal import isal_zlib as _inflate_lib

    INFLATER = "isal"
except ImportError:  # pragma: no cover - isal is a dependency; zlib keeps this working
    import zlib as _inflate_lib  # type: ignore[no-redef]

    INFLATER = "zlib"
_INFLATE_ERRORS: tuple[type[Exception], ...] = (_inflate_lib.error,)

TS = pa.timestamp("us", tz="UTC")
F64 = pa.float64()
STR = pa.string()

LOC = "track.pos.loc"
LOC_FIELDS = ("lat", "lon")
# Value keys of the common OBD types: `<type>.value` (float64) and `<type>.unit` (string).
OBD_TYPES = (
    "obd.speed",
    "obd.rpm",
    "obd.engine_load",
    "obd.coolant_temp",
    "obd.fuel_level",
    "obd.intake_temp",
    "obd.maf",
    "obd.throttle_pos",
    "obd.ambient_air_temp",
    "obd.fuel_rate",
)
DECLARED: dict[str, pa.DataType] = {
    "@ts": TS,  # when the reading was taken
    "@rec": TS,  # when the cloud received it
    "@t": STR,  # datapoint type
    "@tag": STR,  # event tag, e.g. vehicle/engine/running
    "@vid": pa.int64(),  # AutoPi vehicle id
    "@uid": STR,  # device unit id
    "track.pos.utc": TS,
    f"{LOC}.lat": F64,
    f"{LOC}.lon": F64,
    "track.pos.alt": F64,
    "track.pos.sog": F64,
    "track.pos.cog": F64,
    "track.pos.nsat": F64,
    **{k: t for name in OBD_TYPES for k, t in ((f"{name}.value", F64), (f"{name}.unit", STR))},
    "obd.bat.voltage": F64,
    "obd.bat.level": F64,
    "obd.bat.state": STR,
}
EXTRA = "extra"
DATAPOINTS_SCHEMA = pa.schema(
    [
        pa.field("trip_id", STR, nullable=False),
        pa.field("line_no", pa.int64(), nullable=False),  # line in the export; the trip is 1
        *(pa.field(name, kind) for name, kind in DECLARED.items()),
        pa.field(EXTRA, STR),  # JSON object of every key not declared above
    ]
)
# What Arrow's reader is told: the location is an object in the file.
_READ_FIELDS: list[pa.Field] = []
for _name, _kind in DECLARED.items():
    if _name == f"{LOC}.lat":
        _READ_FIELDS.append(pa.field(LOC, pa.struct([(f, F64) for f in LOC_FIELDS])))
    elif _name != f"{LOC}.lon":
        _READ_FIELDS.append(pa.field(_name, _kind))
READ_SCHEMA = pa.schema(_READ_FIELDS)
_READ_NAMES = frozenset(READ_SCHEMA.names)


def _fast_kind(kind: pa.DataType) -> str:
    if pa.types.is_struct(kind):
        return "location"
    if pa.types.is_timestamp(kind):
        return "timestamp"
    if pa.types.is_integer(kind):
        return "integer"
    return "number" if pa.types.is_floating(kind) else "string"


_FAST_COLUMNS = [fastpath.Column(f.name, _fast_kind(f.type)) for f in READ_SCHEMA]

TRIPS_SCHEMA = pa.schema(
    [
        pa.field("trip_id", STR, nullable=False),
        pa.field("device_id", STR),
        pa.field("vehicle_id", pa.int64()),
        pa.field("started_at", TS),
        pa.field("ended_at", TS),
        pa.field("start_lat", F64),
        pa.field("start_lon", F64),
        pa.field("start_address", STR),
        pa.field("end_lat", F64),
        pa.field("end_lon", F64),
        pa.field("end_address", STR),
        pa.field("duration_s", F64),
        pa.field("distance_km", F64),
        pa.field("tag", STR),
        pa.field("personal", pa.bool_()),
        pa.field("last_recalc_at", TS),
        pa.field("task_id", pa.int64()),
        pa.field("export_sha256", STR),
        pa.field("export_bytes", pa.int64()),
        pa.field("datapoints", pa.int64()),
        pa.field("malformed_lines", pa.int64()),
        pa.field("undeclared_keys", STR),  # JSON {key: values} of keys kept in `extra`
        pa.field("landed_at", TS, nullable=False),
        pa.field("trip_json", STR),  # the trip object exactly as exported
    ]
)

SEGMENT_BYTES = 8 << 20  # decompressed bytes Arrow parses in one call
PARSE_WORKERS = 2  # segments parsed side by side (the machine's cores)
PIECE_LINES = 256  # a refused segment is bisected down to pieces of about this many lines
_READ_CHUNK = 1 << 20
_MAX_REREADS = 4
_REREAD = object()
_SLOW = object()


class CorruptExport(ValueError):
    """The file is not one complete export: truncated gzip, bad CRC, or no trip object."""


class DatapointSink(Protocol):
    """Where parsed datapoints go: a Parquet file that becomes visible only when committed."""

    def write(self, table: pa.Table) -> None: ...


@dataclass(frozen=True)
class BadValue:
    """Why a row cannot land: the field to blame, its value as sent (as text), what is wrong."""

    field: str
    value: str
    why: str

    @property
    def reason(self) -> str:
        return f"{self.field}: {self.value!r} {self.why}"


@dataclass(frozen=True)
class QuarantinedLine:
    """One export line kept out of the lake's tables: its number, why, and its raw bytes;
    `field` / `value` name the offending value when one is to blame (not for broken JSON)."""

    line_no: int
    reason: str
    raw: bytes
    field: str | None = None
    value: str | None = None


class QuarantineSink(Protocol):
    def add(self, line: QuarantinedLine) -> None: ...


@dataclass
class ParsedTrip:
    """The trip object of line 1, typed, and where its files belong. `problem` is set when a
    value of the trip object does not parse: the row is then quarantined, not landed."""

    trip_id: str
    day: date
    row: dict[str, Any]
    problem: BadValue | None = None


@dataclass
class ExportStats:
    """What one export held, for metadata and the trips row."""

    datapoints: int = 0
    malformed: int = 0  # lines quarantined because they are not a JSON object
    invalid: int = 0  # lines quarantined for a value that does not parse or is not finite
    blank_lines: int = 0
    undeclared: dict[str, int] = field(default_factory=dict)  # key -> values kept in `extra`
    slow_lines: int = 0  # lines read one by one in Python
    compressed_bytes: int = 0
    decompressed_bytes: int = 0

    def add(self, other: ExportStats) -> None:
        """Fold one segment's counts in (segments are parsed in parallel, tallied in order)."""
        self.datapoints += other.datapoints
        self.malformed += other.malformed
        self.invalid += other.invalid
        self.blank_lines += other.blank_lines
        self.slow_lines += other.slow_lines
        for key, count in other.undeclared.items():
            self.undeclared[key] = self.undeclared.get(key, 0) + count

    @property
    def quarantined(self) -> int:
        """Datapoint lines quarantined instead of landed."""
        return self.malformed + self.invalid


@dataclass
class _Tally:
    """What parsing one segment found besides its rows: counts and quarantined lines."""

    stats: ExportStats = field(default_factory=ExportStats)
    bad: list[QuarantinedLine] = field(default_factory=list)


# --- JSON with its non-finite numbers kept visible --------------------------------------------

_NOT_FINITE = "is not a finite number"


class _NonFinite:
    """A number JSON cannot carry (`NaN`, `Infinity`, `-Infinity`, or one beyond float64 such
    as `1e999`), in place of the float Python's json would make of it: nothing can land it by
    mistake, and the quarantine shows the text that was sent."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _parse_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


class _DuplicateKey(ValueError):
    pass


def _pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object, unless a key repeats (which value counts would be a guess)."""
    obj = dict(items)
    if len(obj) != len(items):
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


# Built once: json.loads with hooks builds a decoder per call, which doubles its cost.
_LINE_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_float=_parse_float, parse_constant=_NonFinite
)
_TRIP_DECODER = json.JSONDecoder(parse_float=_parse_float, parse_constant=_NonFinite)


def _decode(raw: bytes, decoder: json.JSONDecoder) -> Any:
    """`json.loads(raw)` (same encoding detection) with `decoder`'s hooks."""
    return decoder.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


def _value_text(value: Any) -> str:
    """A value as it was sent: a string as itself, anything else as its JSON text."""
    if isinstance(value, str):
        return value
    if isinstance(value, _NonFinite):
        return value.text
    return json.dumps(value, ensure_ascii=False, default=repr)


def _non_finite_in(value: Any, path: str) -> BadValue | None:
    """The first non-finite number nested in `value`, named by its key path."""
    if isinstance(value, _NonFinite):
        return BadValue(path, value.text, _NOT_FINITE)
    if isinstance(value, dict):
        items: Any = ((f"{path}.{k}" if path else k, v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub_path, sub in items:
        if found := _non_finite_in(sub, sub_path):
            return found
    return None


# --- the trip object -----------------------------------------------------------------------


def _ts(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


_NUMBER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_DURATION_TEXT = re.compile(r"[0-9]+(?::[0-5]?[0-9]){1,2}(?:\.[0-9]+)?")


class _Unparseable(ValueError):
    """A trip object's value that does not parse: why, for its `BadValue`."""


def _float(value: Any) -> float | None:
    """A number, or a number's text (AutoPi sends coordinates as `"56.144..."`); NULL when
    absent or empty. Anything else, or a non-finite number, raises `_Unparseable`."""
    if value is None or value == "":
        return None
    if isinstance(value, _NonFinite):
        raise _Unparseable(_NOT_FINITE)
    if isinstance(value, str):
        if not _NUMBER_TEXT.fullmatch(value.strip()):  # "12,5", "NaN", "inf", "1_000"
            raise _Unparseable("is not a number")
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise _Unparseable("is not a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float64
        raise _Unparseable(_NOT_FINITE) from None
    if not math.isfinite(number):
        raise _Unparseable(_NOT_FINITE)
    return number


def _duration_s(value: Any) -> float | None:
    """`"HH:MM:SS"` (as exported) or a number of seconds; `_Unparseable` otherwise."""
    if isinstance(value, str) and ":" in value:
        if not _DURATION_TEXT.fullmatch(value.strip()):
            raise _Unparseable("is not a duration (HH:MM:SS or seconds)")
        seconds = 0.0
        for p in value.strip().split(":"):
            seconds = seconds * 60 + float(p)
        return seconds
    return _float(value)


def _time(value: Any) -> datetime | None:
    """An ISO-8601 time; NULL when absent or empty, `_Unparseable` otherwise."""
    if value is None or value == "":
        return None
    parsed = _ts(value)
    if parsed is None:
        raise _Unparseable("is not an ISO-8601 timestamp")
    return parsed


def _address(display: Any) -> str | None:
    if isinstance(display, dict):
        address = display.get("address")
        return str(address) if address else None
    return None


def parse_trip(line: bytes, expected_trip_id: str | None = None) -> ParsedTrip:
    """Line 1 of an export; raises `CorruptExport` when it is not this task's trip object."""
    try:
        trip = _decode(line, _TRIP_DECODER)
    except (ValueError, UnicodeDecodeError):
        raise CorruptExport("line 1 is not JSON (expected the trip object)") from None
    if not isinstance(trip, dict) or not isinstance(trip.get("id"), str) or not trip["id"]:
        raise CorruptExport("line 1 is not a trip object with an `id`")
    trip_id = trip["id"]
    if expected_trip_id is not None and trip_id != expected_trip_id:
        raise CorruptExport(f"export holds trip {trip_id}, the task names {expected_trip_id}")
    started = _ts(trip.get("start_time_utc"))
    if started is None:
        raise CorruptExport(f"trip {trip_id} has no readable start_time_utc")
    vehicle = trip.get("vehicle")
    problems: list[BadValue] = []

    def parsed(key: str, parse: Callable[[Any], Any]) -> Any:
        try:
            return parse(trip.get(key))
        except _Unparseable as exc:
            problems.append(BadValue(key, _value_text(trip[key]), str(exc)))
            return None

    row = {
        "trip_id": trip_id,
        "device_id": str(trip["device"]) if trip.get("device") is not None else None,
        "vehicle_id": vehicle
        if isinstance(vehicle, int) and not isinstance(vehicle, bool)
        else None,
        "started_at": started,
        "ended_at": parsed("end_time_utc", _time),
        "start_lat": parsed("start_position_lat", _float),
        "start_lon": parsed("start_position_lng", _float),
        "start_address": _address(trip.get("start_position_display")),
        "end_lat": parsed("end_position_lat", _float),
        "end_lon": parsed("end_position_lng", _float),
        "end_address": _address(trip.get("end_position_display")),
        "duration_s": parsed("duration", _duration_s),
        "distance_km": parsed("distanceKm", _float),
        "tag": str(trip["tag"]) if trip.get("tag") is not None else None,
        "personal": trip.get("personal") if isinstance(trip.get("personal"), bool) else None,
        "last_recalc_at": parsed("last_recalc", _time),
        "trip_json": line.decode("utf-8", errors="replace").rstrip("\r\n"),
    }
    problem = problems[0] if problems else None
    return ParsedTrip(trip_id=trip_id, day=started.date(), row=row, problem=problem)


# --- gzip → newline-aligned segments --------------------------------------------------------


def _inflate(path: Path, stats: ExportStats) -> Iterator[bytes]:
    """Decompressed chunks of every gzip member; raises `CorruptExport` unless the file ends
    exactly with a complete member (the inflater verifies each trailer's CRC-32 and length)."""
    inflater = _inflate_lib.decompressobj(wbits=31)
    fresh = False  # a member was completed and nothing of a next one was fed yet
    with path.open("rb") as fh:
        pending = b""
        while True:
            if not pending:
                pending = fh.read(_READ_CHUNK)
                if not pending:
                    break
                stats.compressed_bytes += len(pending)
            fresh = False
            try:
                out = inflater.decompress(pending)
            except _INFLATE_ERRORS as exc:
                raise CorruptExport(f"gzip data is corrupt ({exc})") from None
            if out:
                yield out
            if inflater.eof:  # a member ended; what follows must be another member
                pending = inflater.unused_data
                inflater = _inflate_lib.decompressobj(wbits=31)
                fresh = True
            else:
                pending = b""
    if not fresh:
        raise CorruptExport("gzip stream ends before its trailer (truncated download)")


def _segments(chunks: Iterator[bytes], size: int) -> Iterator[bytes]:
    """Runs of whole lines of about `size` bytes, each ending with a newline (a longer line
    makes a longer run; one inflated chunk can hold many runs)."""
    buffer = b""
    for chunk in chunks:
        buffer = buffer + chunk if buffer else chunk
        start = 0
        while len(buffer) - start >= size:
            cut = buffer.find(b"\n", start + size - 1) + 1
            if cut == 0:
                break  # the line continues in the next chunk
            yield buffer[start:cut]
            start = cut
        buffer = buffer[start:]
    if buffer:
        yield buffer if buffer.endswith(b"\n") else buffer + b"\n"


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
        taken = {k.casefold() for k in itertools.chain(_READ_NAMES, self.learned)}
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
                EXTRA: _extras_json(segment.extras, n),
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
            (name, table.column(name)) for name in table.column_names if name not in _READ_NAMES
        ]
        extras += [(f"{LOC}.{f}", pc.struct_field(loc, f)) for f in nested if f not in LOC_FIELDS]
        temporal = [k for k, col in extras if pa.types.is_temporal(col.type)]
        if any(k.startswith(f"{LOC}.") for k in temporal):
            return _SLOW
        if temporal:
            self.overrides.update(dict.fromkeys(temporal, STR))
            return _REREAD
        if any(_needs_python(col.type) for _, col in extras):
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
        columns[EXTRA] = _extras_json([(k, _json_text(col)) for k, col in present], n)
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
            reason, point = _load_object(raw)
            if point is None:
                stats.malformed += 1
                tally.bad.append(QuarantinedLine(line_no, reason, raw))
                continue
            extras: dict[str, Any] = {}
            typed: dict[str, Any] = {}
            problem = _type_line(point, typed, extras)
            extra_text = None
            if problem is None and extras:
                try:
                    extra_text = _dumps(extras)
                except TypeError:  # only a _NonFinite is not JSON-serializable
                    problem = _non_finite_in(extras, "")
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


def _type_line(
    point: dict[str, Any], typed: dict[str, Any], extras: dict[str, Any]
) -> BadValue | None:
    """Split one datapoint into typed declared values and undeclared ones (kept as sent), or
    say which declared value does not fit its type."""
    for key, value in point.items():
        if value is None:  # null and absent are one thing, in every path
            continue
        if key == LOC:
            if not isinstance(value, dict):
                return BadValue(LOC, _value_text(value), "is not an object")
            for sub, subvalue in value.items():
                if subvalue is None:
                    continue
                name = f"{LOC}.{sub}"
                if name not in DECLARED:
                    extras[name] = subvalue
                elif problem := _convert(name, subvalue, typed):
                    return problem
        elif key not in DECLARED:
            extras[key] = value
        elif problem := _convert(key, value, typed):
            return problem
    return None


def _load_object(raw: bytes) -> tuple[str, dict[str, Any] | None]:
    """(reason, object): an object, or why the line is quarantined."""
    try:
        point = _decode(raw, _LINE_DECODER)
    except UnicodeDecodeError:
        return "not UTF-8", None
    except _DuplicateKey as exc:
        return f"duplicate key {exc.args[0]!r}", None
    except ValueError as exc:
        return f"invalid JSON: {str(exc).split(':')[0]}", None
    if not isinstance(point, dict):
        return f"not a JSON object ({type(point).__name__})", None
    return "", point


def _convert(key: str, value: Any, typed: dict[str, Any]) -> BadValue | None:
    """Put the declared key's typed value in `typed`, or say why its value does not fit."""
    kind = DECLARED[key]
    why = None
    if isinstance(value, _NonFinite):
        why = _NOT_FINITE
    elif kind == F64:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                typed[key] = float(value)
            except OverflowError:  # an integer beyond float64
                why = _NOT_FINITE
        else:
            why = "is not a number"
    elif kind == pa.int64():
        if not isinstance(value, int) or isinstance(value, bool):
            why = "is not an integer"
        elif not -(2**63) <= value < 2**63:
            why = "is beyond a 64-bit integer"
        else:
            typed[key] = value
    elif kind == STR:
        if isinstance(value, str):
            typed[key] = value
        else:
            why = "is not a string"
    elif (ts := _ts(value)) is not None:  # TS, the only other declared type
        typed[key] = ts
    else:
        why = "is not an ISO-8601 timestamp"
    return None if why is None else BadValue(key, _value_text(value), why)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _needs_python(kind: pa.DataType) -> bool:
    """Types whose JSON text Arrow compute cannot rebuild exactly (nested values)."""
    return not (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_null(kind)
    )


def _json_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Each scalar value as JSON text (NULL stays NULL)."""
    if pa.types.is_string(column.type):
        if not pc.any(pc.match_substring_regex(column, r'[\x00-\x1f\\"]')).as_py():
            return pc.binary_join_element_wise('"', column, '"', "")
        return pa.chunked_array(
            [pa.array([None if v is None else _dumps(v) for v in column.to_pylist()], STR)]
        )
    return pc.cast(column, STR)  # numbers in their shortest round-trip form; true/false


def _extras_json(extras: list[tuple[str, pa.ChunkedArray]], n: int) -> pa.ChunkedArray:
    """One JSON object per row of the undeclared keys it has (NULL when it has none), from
    each key's values as JSON text."""
    if not extras:
        return pa.chunked_array([pa.nulls(n, STR)])
    # Each fragment carries its own leading comma, so joining needs no separator logic.
    fragments = [
        pc.binary_join_element_wise("," + _dumps(key) + ":", text, "") for key, text in extras
    ]
    joined = pc.binary_join_element_wise(
        *fragments, "", null_handling="replace", null_replacement=""
    )
    body = pc.binary_join_element_wise("{", pc.utf8_slice_codeunits(joined, 1), "}", "")
    return pc.if_else(pc.equal(joined, ""), pa.scalar(None, STR), body)


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
    chunks = _inflate(path, stats)
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
                for segment in _segments(inflated, segment_bytes):
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
