"""Line 1 of an export: the trip object, typed into the trips row.

The trip decides where the export's files belong (its id and its start's UTC day), so a line 1
that is not this task's trip object makes the whole file a `CorruptExport`; a trip value that
does not parse only quarantines the trips row (`ParsedTrip.problem`), while its datapoints land.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pipelines.sources.autopi.values import (
    NOT_FINITE,
    TRIP_DECODER,
    BadValue,
    CorruptExport,
    NonFinite,
    decode,
    parse_utc,
    value_text,
)


@dataclass
class ParsedTrip:
    """The trip object of line 1, typed, and where its files belong. `problem` is set when a
    value of the trip object does not parse: the row is then quarantined, not landed."""

    trip_id: str
    day: date
    row: dict[str, Any]
    problem: BadValue | None = None


_NUMBER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_DURATION_TEXT = re.compile(r"[0-9]+(?::[0-5]?[0-9]){1,2}(?:\.[0-9]+)?")


class _Unparseable(ValueError):
    """A trip object's value that does not parse: why, for its `BadValue`."""


def _float(value: Any) -> float | None:
    """A number, or a number's text (AutoPi sends coordinates as `"56.144..."`); NULL when
    absent or empty. Anything else, or a non-finite number, raises `_Unparseable`."""
    if value is None or value == "":
        return None
    if isinstance(value, NonFinite):
        raise _Unparseable(NOT_FINITE)
    if isinstance(value, str):
        if not _NUMBER_TEXT.fullmatch(value.strip()):  # "12,5", "NaN", "inf", "1_000"
            raise _Unparseable("is not a number")
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise _Unparseable("is not a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float64
        raise _Unparseable(NOT_FINITE) from None
    if not math.isfinite(number):
        raise _Unparseable(NOT_FINITE)
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
    parsed = parse_utc(value)
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
        trip = decode(line, TRIP_DECODER)
    except (ValueError, UnicodeDecodeError):
        raise CorruptExport("line 1 is not JSON (expected the trip object)") from None
    if not isinstance(trip, dict) or not isinstance(trip.get("id"), str) or not trip["id"]:
        raise CorruptExport("line 1 is not a trip object with an `id`")
    trip_id = trip["id"]
    if expected_trip_id is not None and trip_id != expected_trip_id:
        raise CorruptExport(f"export holds trip {trip_id}, the task names {expected_trip_id}")
    started = parse_utc(trip.get("start_time_utc"))
    if started is None:
        raise CorruptExport(f"trip {trip_id} has no readable start_time_utc")
    vehicle = trip.get("vehicle")
    problems: list[BadValue] = []

    def parsed(key: str, parse: Callable[[Any], Any]) -> Any:
        try:
            return parse(trip.get(key))
        except _Unparseable as exc:
            problems.append(BadValue(key, value_text(trip[key]), str(exc)))
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
