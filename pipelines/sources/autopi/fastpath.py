"""The fast path for clean segments: DuckDB's JSON reader, proven lossless by counting.

DuckDB (yyjson) parses JSON lines about twice as fast as Arrow's reader, but it is lenient
where we must not be: asked for a DOUBLE it turns `"12.5"` and `true` into numbers, asked for
a VARCHAR it stringifies anything, it accepts trailing commas, `NaN` and `Infinity`, and it
ignores every key it was not asked for. So we ask it for every declared key (and every
undeclared key this export has shown so far) as `JSON` — the value's JSON text — and accept
its answer only when checks prove nothing was lost or bent:

* every declared value's text starts like its JSON type (`"` for strings and timestamps, a
  digit or `-` for numbers) and converts in Arrow, numbers to finite ones;
* no undeclared value's text holds `NaN`, `Infinity` or a number that may overflow float64
  (`1e999`): the careful path quarantines such lines, so they must not land from here;
* the segment holds no backslash, so every string's text is exactly its raw bytes, and then
  the colons of the raw bytes must equal one per key read plus the colons inside the texts
  read: an undeclared key, a key whose value is `null`, or a key DuckDB skipped leaves a colon
  unaccounted for;
* the commas must equal the separators between the keys read plus the commas inside their
  texts, which rules out trailing commas (and empty objects, which are left to the careful
  path);
* the row count equals the line count (DuckDB skips blank lines).

Anything else returns None and the caller parses the segment the careful way (Arrow, then
Python line by line), which also learns the new key so the next segment stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

MAX_LEARNED_KEYS = 256  # beyond this an export's segments simply take the careful path
# Texts that may hold a number Python reads as non-finite: the constants, 3-digit exponents,
# and 309+ digit runs. Errs towards refusing (a string "NaN..." just takes the careful path).
NON_FINITE_TEXT = r"NaN|Infinity|[0-9][eE][+-]?0*[0-9]{3}|[0-9]{309}"


@dataclass(frozen=True)
class Column:
    """One key read from the segment: its name in the file and what it must hold."""

    name: str
    kind: str  # "number", "integer", "string", "timestamp", "location", "any"


@dataclass
class FastSegment:
    """What the fast path read: typed columns by output name, and undeclared JSON texts."""

    typed: dict[str, pa.ChunkedArray]
    extras: list[tuple[str, pa.ChunkedArray]]  # (key, JSON text) of undeclared keys present


def duckdb_type(column: Column, location_fields: tuple[str, ...]) -> str:
    if column.kind == "location":
        return "STRUCT(" + ", ".join(f"{_sql_name(f)} JSON" for f in location_fields) + ")"
    return "JSON"


def _sql_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _all(mask: pa.ChunkedArray | pa.Array) -> bool:
    """True when every non-null entry is true (an all-null column passes)."""
    return pc.all(mask, skip_nulls=True, min_count=0).as_py() is not False


def _count(column: pa.ChunkedArray, needle: bytes) -> int:
    """Occurrences of a one-byte `needle` in the column's values, counted over each chunk's
    value bytes at once (only when those bytes are exactly the non-null values)."""
    total = 0
    for chunk in column.chunks:
        if chunk.null_count == len(chunk):
            continue
        wide = pa.types.is_large_string(chunk.type)
        offsets = memoryview(chunk.buffers()[1]).cast("q" if wide else "i")
        start, end = offsets[chunk.offset], offsets[chunk.offset + len(chunk)]
        if end - start != pc.sum(pc.binary_length(chunk)).as_py():
            # null slots own bytes: count value by value
            total += int(pc.sum(pc.count_substring(chunk, needle.decode())).as_py() or 0)
            continue
        total += chunk.buffers()[2].slice(start, end - start).to_pybytes().count(needle)
    return total


def all_finite(column: pa.ChunkedArray | pa.Array) -> bool:
    """True when no float in the column is NaN or infinite (nulls pass)."""
    return _all(pc.is_finite(column))


def _present(column: pa.ChunkedArray | pa.Array) -> int:
    return len(column) - column.null_count


class _Refused(Exception):
    """A check failed: the careful path must read this segment."""


def read_segment(
    connection: duckdb.DuckDBPyConnection,
    path: Path,
    data: bytes,
    lines: int,
    columns: list[Column],
    *,
    location_fields: tuple[str, ...],
    types: dict[str, pa.DataType],
) -> FastSegment | None:
    """Parse the newline-terminated `data` (already written to `path`) or return None.

    `columns` are the keys to read (declared ones with their kinds, undeclared ones as
    "any"); `types` maps each typed output name to its Arrow type.
    """
    if b"\\" in data:
        return None  # escapes would make texts differ from raw bytes; counting needs them equal
    spec = {c.name: duckdb_type(c, location_fields) for c in columns}
    try:
        table = connection.read_json(
            str(path), format="newline_delimited", columns=spec
        ).to_arrow_table()
    except duckdb.Error:
        return None  # malformed line, duplicate key, non-object line, ...
    if table.num_rows != lines:
        return None
    try:
        return _check_and_type(table, data, columns, location_fields, types)
    except (_Refused, pa.ArrowInvalid):
        return None


def _check_and_type(
    table: pa.Table,
    data: bytes,
    columns: list[Column],
    location_fields: tuple[str, ...],
    types: dict[str, pa.DataType],
) -> FastSegment:
    keys = 0  # keys read (each owns one colon and, but the first of an object, one comma)
    objects = 0  # objects read (a row, a location): each has one comma fewer than keys
    colons = 0  # colons inside texts and key names
    commas = 0  # commas inside texts and key names
    typed: dict[str, pa.ChunkedArray] = {}
    extras: list[tuple[str, pa.ChunkedArray]] = []
    rows = table.num_rows
    for i, column in enumerate(columns):
        values = table.column(i)
        present = _present(values)
        if present == 0:
            if column.kind == "location":
                for sub in location_fields:
                    typed[f"{column.name}.{sub}"] = pa.chunked_array([pa.nulls(rows, pa.float64())])
            elif column.kind != "any":
                typed[column.name] = pa.chunked_array([pa.nulls(rows, types[column.name])])
            continue
        keys += present
        colons += present * column.name.count(":")
        commas += present * column.name.count(",")
        if column.kind == "location":
            objects += present
            for sub in location_fields:
                field_values = pc.struct_field(values, sub)
                sub_present = _present(field_values)
                keys += sub_present
                name = f"{column.name}.{sub}"
                typed[name] = (
                    _number(field_values, pa.float64())
                    if sub_present
                    else (pa.chunked_array([pa.nulls(rows, pa.float64())]))
                )
            continue
        if column.kind in ("number", "integer"):
            typed[column.name] = _number(values, types[column.name])
            continue
        colons += _count(values, b":")
        commas += _count(values, b",")
        if column.kind == "any":
            if not _all(pc.invert(pc.match_substring_regex(values, NON_FINITE_TEXT))):
                raise _Refused  # the careful path quarantines the line
            extras.append((column.name, values))
            continue
        if not _all(pc.starts_with(values, '"')):
            raise _Refused
        text = _unquote(values)
        typed[column.name] = (
            pc.cast(text, types[column.name]) if column.kind == "timestamp" else text
        )
    objects += rows
    if data.count(b":") != keys + colons:
        raise _Refused  # an undeclared key, a null value, or a key nobody asked for
    if data.count(b",") != keys - objects + commas:
        raise _Refused  # a trailing comma (or a key the colons did not reveal)
    return FastSegment(typed=typed, extras=extras)


def _number(values: pa.ChunkedArray, kind: pa.DataType) -> pa.ChunkedArray:
    """Number texts → `kind`. A string (`"1"`), boolean, object or array text fails the cast;
    NaN and Infinity, which DuckDB accepts and the cast too, are refused after it."""
    typed = pc.cast(values, kind)
    if pa.types.is_floating(kind) and not all_finite(typed):
        raise _Refused
    return typed


def _unquote(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """String texts without their quotes: with no backslash in the segment, exactly the
    string (the bytes between the quotes are valid UTF-8, as the whole text was)."""
    sliced = pc.binary_slice(values.cast(pa.binary()), 1, -1)
    return pa.chunked_array([chunk.view(pa.string()) for chunk in sliced.chunks], pa.string())
