"""One export datapoint → its declared values typed and its undeclared ones kept as JSON text.

The careful path of export.py (line by line in Python) and its fast paths (whole Arrow columns)
both end here, so a value is judged and an `extra` object spelled the same way on every path.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.sources.autopi.schemas import DECLARED, F64, LOC, STR
from pipelines.sources.autopi.values import (
    LINE_DECODER,
    NOT_FINITE,
    BadValue,
    DuplicateKey,
    NonFinite,
    decode,
    parse_utc,
    value_text,
)


def type_line(
    point: dict[str, Any], typed: dict[str, Any], extras: dict[str, Any]
) -> BadValue | None:
    """Split one datapoint into typed declared values and undeclared ones (kept as sent), or
    say which declared value does not fit its type."""
    for key, value in point.items():
        if value is None:  # null and absent are one thing, in every path
            continue
        if key == LOC:
            if not isinstance(value, dict):
                return BadValue(LOC, value_text(value), "is not an object")
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


def load_object(raw: bytes) -> tuple[str, dict[str, Any] | None]:
    """(reason, object): an object, or why the line is quarantined."""
    try:
        point = decode(raw, LINE_DECODER)
    except UnicodeDecodeError:
        return "not UTF-8", None
    except DuplicateKey as exc:
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
    if isinstance(value, NonFinite):
        why = NOT_FINITE
    elif kind == F64:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                typed[key] = float(value)
            except OverflowError:  # an integer beyond float64
                why = NOT_FINITE
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
    elif (ts := parse_utc(value)) is not None:  # TS, the only other declared type
        typed[key] = ts
    else:
        why = "is not an ISO-8601 timestamp"
    return None if why is None else BadValue(key, value_text(value), why)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def needs_python(kind: pa.DataType) -> bool:
    """Types whose JSON text Arrow compute cannot rebuild exactly (nested values)."""
    return not (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_null(kind)
    )


def json_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Each scalar value as JSON text (NULL stays NULL)."""
    if pa.types.is_string(column.type):
        if not pc.any(pc.match_substring_regex(column, r'[\x00-\x1f\\"]')).as_py():
            return pc.binary_join_element_wise('"', column, '"', "")
        return pa.chunked_array(
            [pa.array([None if v is None else dumps(v) for v in column.to_pylist()], STR)]
        )
    return pc.cast(column, STR)  # numbers in their shortest round-trip form; true/false


def extras_json(extras: list[tuple[str, pa.ChunkedArray]], n: int) -> pa.ChunkedArray:
    """One JSON object per row of the undeclared keys it has (NULL when it has none), from
    each key's values as JSON text."""
    if not extras:
        return pa.chunked_array([pa.nulls(n, STR)])
    # Each fragment carries its own leading comma, so joining needs no separator logic.
    fragments = [
        pc.binary_join_element_wise("," + dumps(key) + ":", text, "") for key, text in extras
    ]
    joined = pc.binary_join_element_wise(
        *fragments, "", null_handling="replace", null_replacement=""
    )
    body = pc.binary_join_element_wise("{", pc.utf8_slice_codeunits(joined, 1), "}", "")
    return pc.if_else(pc.equal(joined, ""), pa.scalar(None, STR), body)
