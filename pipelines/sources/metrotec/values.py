"""Metrotec values as sent → typed values, or `BadValue` saying what is wrong with them.

One parser per column kind (`TYPES`), shared by every table spec, so a number, a time or a
duration is judged the same way in every table.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pyarrow as pa

from pipelines.sources.metrotec.client import parse_time

TS = pa.timestamp("us", tz="UTC")
_HMS = re.compile(r"^(\d+):([0-5]\d):([0-5]\d)$")
_INT64 = (-(2**63), 2**63 - 1)


class BadValue(ValueError):
    """A value that does not read as its type; the message says how ("is not a number")."""


def _finite(value: Any) -> float:
    """A number (or a string holding one) as a finite float."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadValue("is not a number")
    try:
        number = float(value)
    except ValueError:
        raise BadValue("is not a number") from None
    except OverflowError:  # an int beyond a double
        raise BadValue("is not a finite number") from None
    if not math.isfinite(number):
        raise BadValue("is not a finite number")
    return number


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number: int | float = value
    else:
        number = _finite(value)
        if not number.is_integer():
            raise BadValue("is not an integer")
    if not _INT64[0] <= number <= _INT64[1]:
        raise BadValue("is out of range")
    return int(number)


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return _finite(value)


def _str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def _time(value: Any) -> datetime | None:
    try:
        return parse_time(value)
    except (ValueError, OverflowError):
        raise BadValue("is not a time (YYYY-MM-DD HH:MM:SS)") from None


def hms_seconds(value: Any) -> int | None:
    """`runningTime` "HH:MM:SS" (hours may exceed 23) → whole seconds; ints are seconds already."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    match = _HMS.match(str(value).strip())
    if match is None:
        raise BadValue("is not HH:MM:SS")
    hours, minutes, seconds = (int(g) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def value_text(value: Any) -> str:
    """A value as the API sent it, as text: NaN and Infinity as the bare tokens."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


TYPES: dict[str, tuple[pa.DataType, Callable[[Any], Any]]] = {
    "int": (pa.int64(), _int),
    "float": (pa.float64(), _float),
    "str": (pa.string(), _str),
    "time": (TS, _time),
}
