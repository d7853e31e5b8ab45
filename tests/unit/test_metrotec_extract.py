"""Metrotec pure logic: time and duration parsing, token lifetimes, windows, typing rows."""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pipelines.lake import QUARANTINE_SCHEMA
from pipelines.sources.metrotec.client import (
    format_time,
    parse_time,
    plan_windows,
    token_lifetime_s,
)
from pipelines.sources.metrotec.extract import inconsistent_trips
from pipelines.sources.metrotec.rows import quarantine_by_day, type_rows
from pipelines.sources.metrotec.specs import FUEL_LEVELS, REFUELS, ROUTELOG, STOPS, VEHICLES
from pipelines.sources.metrotec.values import hms_seconds

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SENT_AT = 1_772_452_800.0  # 2026-03-02 12:00:00 UTC on our clock


def jwt(**claims: object) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part(claims)}.signature"


# --- times ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-02-14 06:13:24", datetime(2025, 2, 14, 6, 13, 24, tzinfo=UTC)),
        ("2019-08-24T14:15:22Z", datetime(2019, 8, 24, 14, 15, 22, tzinfo=UTC)),
        ("2025-02-14T08:13:24+02:00", datetime(2025, 2, 14, 6, 13, 24, tzinfo=UTC)),
        (None, None),
        ("", None),
    ],
    ids=["api-format", "iso-z", "iso-offset", "null", "empty"],
)
def test_api_times_read_as_utc(text: str | None, expected: datetime | None) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "2025-02-30 00:00:00", "14.02.2025 06:13"])
def test_unreadable_times_raise(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


def test_parameters_are_formatted_in_utc_and_naive_times_refused() -> None:
    tallinn_noon = datetime(2026, 3, 2, 12, 0, tzinfo=ZoneInfo("Europe/Tallinn"))
    assert format_time(tallinn_noon) == "2026-03-02 10:00:00"
    with pytest.raises(ValueError, match="no zone"):
        format_time(datetime(2026, 3, 2, 10, 0))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:05:02", 302), ("00:00:00", 0), ("01:00:00", 3600), ("125:59:59", 453599), ("42", 42)],
)
def test_running_time_hhmmss_converts_exactly(text: str, seconds: int) -> None:
    assert hms_seconds(text) == seconds


@pytest.mark.parametrize("text", ["5:2", "00:60:00", "-00:00:05", "1h"])
def test_running_time_that_is_not_hhmmss_raises(text: str) -> None:
    with pytest.raises(ValueError):
        hms_seconds(text)


# --- token lifetimes ------------------------------------------------------------------------
def test_expires_below_1e9_is_a_ttl() -> None:
    assert token_lifetime_s(3600, "opaque-token", SENT_AT) == 3600


def test_absolute_expiry_uses_the_tokens_iat_so_clock_skew_does_not_matter() -> None:
    # The server's clock is a day behind ours: `expires` is in our past, yet the token is fresh.
    server_now = SENT_AT - 86_400
    token = jwt(iat=int(server_now), exp=int(server_now) + 900)
    assert token_lifetime_s(int(server_now) + 900, token, SENT_AT) == 900


def test_absolute_expiry_without_iat_is_measured_on_our_clock() -> None:
    assert token_lifetime_s(SENT_AT + 1800, "opaque", SENT_AT) == 1800
    assert token_lifetime_s(str(int(SENT_AT + 1800)), "opaque", SENT_AT) == 1800
    assert token_lifetime_s((SENT_AT + 1800) * 1000, "opaque", SENT_AT) == 1800  # milliseconds
    assert token_lifetime_s("2026-03-02 12:30:00", "opaque", SENT_AT) == 1800


def test_an_expiry_already_past_on_our_clock_is_unknown_not_an_endless_relogin() -> None:
    assert token_lifetime_s(SENT_AT - 5, "opaque", SENT_AT) is None


@pytest.mark.parametrize("expires", [None, 0, "", "soon"], ids=["missing", "zero", "empty", "text"])
def test_missing_expiry_falls_back_to_the_jwt_claims(expires: object) -> None:
    assert token_lifetime_s(expires, jwt(iat=100, exp=700), SENT_AT) == 600
    assert token_lifetime_s(expires, "opaque", SENT_AT) is None


# --- windows --------------------------------------------------------------------------------
def days(first: date, n: int) -> list[date]:
    return [first + timedelta(days=i) for i in range(n)]


def test_windows_never_exceed_31_days_and_cover_each_day_once() -> None:
    wanted = days(date(2026, 1, 1), 90)
    windows = plan_windows(wanted)
    assert [len(w.days) for w in windows] == [31, 31, 28]
    assert [d for w in windows for d in w.days] == wanted
    first = windows[0]
    assert format_time(first.start) == "2026-01-01 00:00:00"
    assert format_time(first.stop) == "2026-01-31 23:59:59"
    assert first.end == datetime(2026, 2, 1, tzinfo=UTC)


def test_windows_follow_the_configured_size_and_split_at_gaps() -> None:
    assert [len(w.days) for w in plan_windows(days(date(2026, 1, 1), 20), 7)] == [7, 7, 6]
    gappy = [date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 5)]
    assert [(w.first_day, w.last_day) for w in plan_windows(gappy)] == [
        (date(2026, 1, 1), date(2026, 1, 2)),
        (date(2026, 1, 5), date(2026, 1, 5)),
    ]
    with pytest.raises(ValueError, match=r"1\.\.31"):
        plan_windows(gappy, 32)


# --- typing rows ----------------------------------------------------------------------------
STOP = {
    "ID": 129925446,
    "objectID": "000AAA",
    "startTime": "2025-02-14 06:13:24",
    "stopTime": "2025-02-14 06:18:26",
    "stopEnd": "2025-02-14 06:21:24",
    "runningTime": "00:05:02",
    "input": 7,
    "status": 0,
    "distance": 0,
    "fuel": -2,
    "required": None,
}


def test_reference_stop_is_typed_with_its_fuel_code_kept_and_flagged() -> None:
    typed = type_rows(STOPS, [("000AAA", STOP)], NOW)
    (row,) = typed.table.to_pylist()
    assert row["startTime"] == datetime(2025, 2, 14, 6, 13, 24, tzinfo=UTC)
    assert row["runningTime"] == "00:05:02" and row["running_time_s"] == 302
    assert row["fuel"] == -2 and row["fuel_is_code"] is True
    assert row["day"] == date(2025, 2, 14) and row["extra_fields"] is None
    assert typed.table.schema == STOPS.schema


def test_an_optional_bad_value_is_null_and_kept_verbatim_a_row_without_id_is_quarantined() -> None:
    rows = [
        {**STOP, "ID": 1, "status": "n/a", "newField": {"a": 1}},
        {**STOP, "ID": None},
        {**STOP, "ID": 3, "startTime": "14.02.2025"},
        "not an object",
    ]
    typed = type_rows(STOPS, [("000AAA", r) for r in rows], NOW)
    (row,) = typed.table.to_pylist()
    assert row["status"] is None  # optional: nothing is built from a stop's status
    assert json.loads(row["extra_fields"]) == {"status": "n/a", "newField": {"a": 1}}
    assert typed.unparsed_values == 1
    reasons = [q["reason"] for q in typed.quarantined]
    assert reasons == [
        "ID is missing",
        "startTime: '14.02.2025' is not a time (YYYY-MM-DD HH:MM:SS)",
        "not a JSON object",
    ]
    assert [(q["field"], q["value"]) for q in typed.quarantined] == [
        ("ID", None),
        ("startTime", "14.02.2025"),
        (None, None),
    ]
    assert json.loads(typed.quarantined[0]["payload"])["objectID"] == "000AAA"
    # On the row's own day when its time reads, else left to the caller (the window's first day).
    assert [q["day"] for q in typed.quarantined] == [date(2025, 2, 14), None, None]


REFUEL = {
    "ID": 1,
    "objectID": "000AAA",
    "startTime": "2025-02-18 07:53:40",
    "stopTime": "2025-02-18 07:58:10",
    "maxTime": "2025-02-18 07:58:10",
    "fuelBeforeL": 12.5,
    "fuelAfterL": 54.0,
    "routeLengthKM": 410.2,
}
TRIP = {
    "ID": 7,
    "objectID": "000AAA",
    "startTime": "2025-02-14 09:00:00",
    "stopTime": "2025-02-14 09:30:00",
    "routeLengthKM": 12.0,
    "drivingTimeSeconds": 1500,
    "maxSpeed": 71,
}
LEVEL = {"GMTime": "2025-02-17 23:54:54", "fuel": 10, "lat": 59.3, "lon": 24.8, "input": 6}


@pytest.mark.parametrize(
    ("spec", "row", "key", "value", "text", "problem"),
    [
        (REFUELS, REFUEL, "fuelAfterL", "12,5", "12,5", "is not a number"),
        (REFUELS, REFUEL, "fuelBeforeL", math.nan, "NaN", "is not a finite number"),
        (REFUELS, REFUEL, "routeLengthKM", math.inf, "Infinity", "is not a finite number"),
        (FUEL_LEVELS, LEVEL, "fuel", math.nan, "NaN", "is not a finite number"),
        (FUEL_LEVELS, LEVEL, "lat", "NaN", "NaN", "is not a finite number"),
        (FUEL_LEVELS, LEVEL, "lon", -math.inf, "-Infinity", "is not a finite number"),
        (FUEL_LEVELS, LEVEL, "input", 6.5, "6.5", "is not an integer"),
        (ROUTELOG, TRIP, "stopTime", "2025-02-30 25:61:00", "2025-02-30 25:61:00",
         "is not a time (YYYY-MM-DD HH:MM:SS)"),
        (ROUTELOG, TRIP, "maxSpeed", "fast", "fast", "is not a number"),
        (ROUTELOG, TRIP, "drivingTimeSeconds", 10**30, str(10**30), "is out of range"),
        (ROUTELOG, TRIP, "routeLengthKM", True, "true", "is not a number"),
        (STOPS, STOP, "runningTime", "1h", "1h", "is not HH:MM:SS"),
        (STOPS, STOP, "fuel", {"l": 2}, '{"l": 2}', "is not a number"),
    ],
)  # fmt: skip
def test_a_value_that_is_not_a_finite_number_or_a_time_quarantines_its_row(
    spec, row: dict, key: str, value: object, text: str, problem: str
) -> None:
    bad = {**row, "ID": 99, key: value} if "ID" in row else {**row, key: value}
    typed = type_rows(spec, [("000AAA", row), ("000AAA", bad)], NOW)
    assert typed.table.num_rows == 1  # the good row lands, the bad one never does
    assert typed.unparsed_values == 0
    (kept,) = typed.quarantined
    assert kept["reason"] == f"{key}: '{text}' {problem}"
    assert (kept["table"], kept["field"], kept["value"], kept["vehicle_id"]) == (
        spec.name,
        key,
        text,
        "000AAA",
    )
    assert kept["day"] == parse_time(row[spec.time_key]).date()
    for number in typed.table.to_pylist()[0].values():
        assert not (isinstance(number, float) and not math.isfinite(number))


def test_quarantine_rows_carry_the_lake_convention_columns_per_day() -> None:
    bad = [
        {**REFUEL, "ID": 2, "fuelAfterL": "12,5"},  # its own day: 2025-02-18
        {**REFUEL, "ID": 3, "startTime": "yesterday"},  # no day of its own: the window's first
    ]
    typed = type_rows(REFUELS, [("000AAA", r) for r in bad], NOW)
    window = [date(2025, 2, 17), date(2025, 2, 18), date(2025, 2, 19)]
    by_day = quarantine_by_day(typed.quarantined, NOW, window)
    assert list(by_day) == window
    assert [by_day[d].num_rows for d in window] == [1, 1, 0]  # an empty day clears an old one
    assert by_day[window[0]].schema.names == [*QUARANTINE_SCHEMA.names, "vehicle_id"]
    (row,) = by_day[window[1]].to_pylist()
    assert (row["table"], row["field"], row["value"], row["quarantined_at"]) == (
        "refuels",
        "fuelAfterL",
        "12,5",
        NOW,
    )


def test_rows_outside_the_wanted_days_are_counted_not_landed() -> None:
    later = {**STOP, "ID": 2, "startTime": "2025-02-15 00:00:00"}
    typed = type_rows(STOPS, [("000AAA", STOP), ("000AAA", later)], NOW, days={date(2025, 2, 14)})
    assert typed.table.num_rows == 1 and typed.outside_range == 1


def test_duplicates_keep_the_later_row_and_order_is_deterministic() -> None:
    trip = {"ID": 7, "objectID": "B", "startTime": "2025-02-14 09:00:00", "stopTime": None}
    rows = [
        ("B", {**trip, "routeLengthKM": 1.0}),
        ("A", {**trip, "ID": 9, "objectID": "A", "startTime": "2025-02-14 10:00:00"}),
        ("B", {**trip, "routeLengthKM": 2.0}),
    ]
    typed = type_rows(ROUTELOG, rows, NOW)
    assert typed.duplicates_dropped == 1
    assert [(r["objectID"], r["ID"], r["routeLengthKM"]) for r in typed.table.to_pylist()] == [
        ("A", 9, None),
        ("B", 7, 2.0),
    ]
    assert inconsistent_trips(typed.table) == 2  # neither has a stopTime


def test_fuel_levels_take_the_asked_vehicle_and_refuel_codes_are_flagged() -> None:
    reading = {"GMTime": "2025-02-17 23:54:54", "fuel": 10, "lat": 59.3, "lon": 24.8}
    (row,) = type_rows(FUEL_LEVELS, [("000AAA", reading)], NOW).table.to_pylist()
    assert row["objectID"] == "000AAA" and row["fuel"] == 10.0 and not row["fuel_is_code"]
    refuel = {"ID": 1, "startTime": "2025-02-18 07:53:40", "fuelBeforeL": -2, "fuelAfterL": 54}
    (row,) = type_rows(REFUELS, [("000AAA", refuel)], NOW).table.to_pylist()
    assert row["fuel_is_code"] is True and row["fuelBeforeL"] == -2


def test_a_vehicle_with_an_unreadable_setting_is_kept_with_that_value_null() -> None:
    # A vehicle row is configuration: quarantining it would stop its trips being pulled.
    vehicle = {"id": "010PNR", "tank_vol": "12,5", "odometer": math.nan, "isPercent": "x"}
    typed = type_rows(VEHICLES, [(None, vehicle)], NOW)
    (row,) = typed.table.to_pylist()
    assert (row["id"], row["tank_vol"], row["odometer"], row["isPercent"]) == (
        "010PNR",
        None,
        None,
        None,
    )
    assert typed.unparsed_values == 3 and not typed.quarantined
    extra = json.loads(row["extra_fields"])
    assert extra["tank_vol"] == "12,5" and extra["isPercent"] == "x"
    assert math.isnan(extra["odometer"])  # kept verbatim, never landed as a number


def test_vehicles_snapshot_has_no_day_column_and_keeps_unknown_fields() -> None:
    vehicle = {"id": "010PNR", "tank_vol": 0, "odometer_day": "2023-09-07 11:04:17", "x": 1}
    typed = type_rows(VEHICLES, [(None, vehicle)], NOW)
    (row,) = typed.table.to_pylist()
    assert "day" not in typed.table.column_names
    assert row["odometer_day"] == datetime(2023, 9, 7, 11, 4, 17, tzinfo=UTC)
    assert json.loads(row["extra_fields"]) == {"x": 1}
