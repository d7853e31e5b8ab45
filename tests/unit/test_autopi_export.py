"""AutoPi export files → lake: typed, lossless, quarantined, and never half-landed."""

from __future__ import annotations

import gzip
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipelines.lake import Lake
from pipelines.sources.autopi import export
from pipelines.sources.autopi.landing import (
    LEGACY_QUARANTINE_SUFFIX,
    land_export,
    migrate_legacy_quarantine,
)
from pipelines.sources.autopi.schemas import DATAPOINTS_SCHEMA
from pipelines.sources.autopi.values import CorruptExport

T0 = datetime(2026, 3, 30, 23, 59, 0, tzinfo=UTC)  # starts late: the UTC day is the 30th
TRIP = {
    "id": "trip-a",
    "start_time_utc": "2026-03-30T23:59:00.000000Z",
    "end_time_utc": "2026-03-31T00:40:00.000000Z",
    "start_position_lat": "59.437000",
    "start_position_lng": "24.754000",
    "start_position_display": {"address": "Narva mnt 5, Tallinn"},
    "end_position_lat": "59.440000",
    "end_position_lng": "24.760000",
    "end_position_display": {"address": "Pärnu mnt 10, Tallinn"},
    "device": "dev-1",
    "vehicle": 5001,
    "duration": "00:41:00",
    "distanceKm": 12.5,
    "tag": None,
    "personal": False,
    "last_recalc": "2026-03-31T00:41:00.000000Z",
}


def iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def point(n: int, **values: Any) -> dict[str, Any]:
    ts = T0 + timedelta(seconds=n)
    kind = values.pop("kind", "obd.speed")
    return {"@vid": 5001, "@uid": "unit1", "@ts": iso(ts), "@t": kind, **values, "@rec": iso(ts)}


def datapoints(n: int) -> list[dict[str, Any]]:
    """`n` sparse datapoints: speed ints then floats, a key first appearing after half."""
    out = []
    for i in range(n):
        if i % 3 == 0:
            out.append(
                point(
                    i,
                    kind="track.pos",
                    **{
                        "track.pos.loc": {"lat": 59.4 + i / 1e5, "lon": 24.7},
                        "track.pos.sog": i % 50,
                    },
                )
            )
        elif i % 3 == 1:
            speed = i % 90 if i < n // 3 else (i % 90) + 0.5  # integers first, floats later
            late = {"obd.speed.raw": i} if i > n // 2 else {}
            out.append(point(i, **{"obd.speed.value": speed, "obd.speed.unit": "kph", **late}))
        else:
            out.append(point(i, kind="obd.bat", **{"obd.bat.voltage": 14.1, "obd.bat.state": "ok"}))
    return out


def write_export(
    path: Path, lines: list[str | dict[str, Any]], trip: dict[str, Any] = TRIP
) -> Path:
    text = [json.dumps(trip)] + [x if isinstance(x, str) else json.dumps(x) for x in lines]
    path.write_bytes(gzip.compress(("\n".join(text) + "\n").encode(), mtime=0))
    return path


def land(tmp_path: Path, lines: list[str | dict[str, Any]], **kwargs: Any):
    tmp_path.mkdir(parents=True, exist_ok=True)
    lake = Lake(tmp_path / "lake")
    path = write_export(tmp_path / "trip-a.json.gz", lines)
    landed = land_export(lake, path, task_id=7, trip_id="trip-a", sha256="abc", **kwargs)
    return lake, landed


def rows(lake: Lake) -> list[dict[str, Any]]:
    return lake.read("autopi", "datapoints").to_pylist()


def quarantined(lake: Lake) -> list[dict[str, Any]]:
    return lake.read("autopi", "quarantine").to_pylist()


def not_parquet(lake: Lake) -> list[Path]:
    """Files inside the raw tables' folders that are not their Parquet files."""
    found = []
    for table in ("trips", "datapoints"):
        folder = lake.table_dir("autopi", table)
        found += [p for p in folder.rglob("*") if p.is_file() and p.suffix != ".parquet"]
    return found


@pytest.mark.parametrize("n", [300, 3000], ids=["slow-path", "fast-path"])
def test_every_key_of_every_line_survives_typed_or_in_extra(tmp_path: Path, n: int) -> None:
    points = datapoints(n)
    lake, landed = land(tmp_path, points)
    got = rows(lake)
    assert len(got) == n == landed.stats.datapoints
    assert [r["line_no"] for r in got] == list(range(2, n + 2))
    for row, sent in zip(got, points, strict=True):
        assert row["trip_id"] == "trip-a"
        assert row["@ts"] == datetime.fromisoformat(sent["@ts"].replace("Z", "+00:00"))
        extra = json.loads(row["extra"]) if row["extra"] else {}
        for key, value in sent.items():
            if key in ("@ts", "@rec"):
                continue
            if key == "track.pos.loc":
                assert (row["track.pos.loc.lat"], row["track.pos.loc.lon"]) == (
                    value["lat"],
                    value["lon"],
                )
            elif key in export.DECLARED:
                assert row[key] == value, key
            else:
                assert extra[key] == value, key
    assert landed.stats.undeclared == {
        "obd.speed.raw": sum(1 for p in points if "obd.speed.raw" in p)
    }


def test_an_integer_then_float_column_is_float64_with_every_value_exact(tmp_path: Path) -> None:
    lake, _ = land(tmp_path, datapoints(3000))
    table = pq.read_table(lake.files("autopi", "datapoints")[0])
    assert table.schema.field("obd.speed.value").type == "double"
    speeds = [v for v in table["obd.speed.value"].to_pylist() if v is not None]
    assert any(v == int(v) for v in speeds) and any(v != int(v) for v in speeds)
    assert table.schema.remove_metadata() == DATAPOINTS_SCHEMA.remove_metadata()


def test_fast_and_slow_paths_agree_on_the_same_lines(tmp_path: Path) -> None:
    points = datapoints(2000)
    points[700]["obd.speed.note"] = "2026-03-31T00:00:00Z"  # Arrow would read this as a time
    points[900]["obd.speed.nested"] = {"a": [1, 2.5, "x"], "b": None}
    lake, _ = land(tmp_path / "fast", points)
    fast = rows(lake)
    # Pieces this small always go through Python: compare line by line.
    slow = []
    for start in range(0, len(points), 400):
        piece = points[start : start + 400]
        lake_s, _ = land(tmp_path / f"slow{start}", piece)
        slow += [{**r, "line_no": r["line_no"] + start} for r in rows(lake_s)]
    for f, s in zip(fast, slow, strict=True):
        assert {k: v for k, v in f.items() if k != "extra"} == {
            k: v for k, v in s.items() if k != "extra"
        }
        assert json.loads(f["extra"] or "{}") == json.loads(s["extra"] or "{}")
    assert json.loads(fast[700]["extra"]) == {"obd.speed.note": "2026-03-31T00:00:00Z"}
    assert json.loads(fast[900]["extra"]) == {"obd.speed.nested": {"a": [1, 2.5, "x"], "b": None}}


def test_malformed_lines_are_quarantined_with_exact_numbers_and_the_rest_lands(
    tmp_path: Path,
) -> None:
    points: list[str | dict[str, Any]] = list(datapoints(3000))
    bad = {10: '{"@t": "obd.rpm", "obd.rpm.va', 1500: "[1, 2]", 2999: '{"@t":1,"@t":2}'}
    for index, text in bad.items():
        points[index] = text
    points.insert(2000, "")  # a blank line is skipped, not quarantined
    lake, landed = land(tmp_path, points)
    assert landed.stats.malformed == 3 and landed.stats.blank_lines == 1
    assert landed.stats.datapoints == len(points) - 4
    quarantine = landed.quarantine_file
    assert quarantine is not None and quarantine.rows == 3
    assert (
        quarantine.path == lake.partition_dir("autopi", "quarantine", T0.date()) / "trip-a.parquet"
    )
    assert not not_parquet(lake)
    entries = quarantined(lake)
    # line 1 is the trip; datapoint i is line i + 2 (the blank line shifts those after it)
    expected = {i + 2 + (i >= 2000): text for i, text in bad.items()}
    assert {e["line_number"]: e["payload"] for e in entries} == expected
    assert all(e["reason"] and e["table"] == "datapoints" for e in entries)
    assert {e["trip_id"] for e in entries} == {"trip-a"}
    line_nos = [r["line_no"] for r in rows(lake)]
    assert not set(line_nos) & set(expected) and len(line_nos) == len(set(line_nos))


def test_a_value_of_the_wrong_type_is_quarantined_with_its_field_instead_of_failing(
    tmp_path: Path,
) -> None:
    points = datapoints(1200)
    points[601]["obd.speed.value"] = "fast"
    points[602]["@vid"] = 5001.5
    lake, landed = land(tmp_path, points)
    got = {r["line_no"]: r for r in rows(lake)}
    assert 603 not in got and 604 not in got and len(got) == 1198
    kept = {q["line_number"]: q for q in quarantined(lake)}
    assert (kept[603]["field"], kept[603]["value"]) == ("obd.speed.value", "fast")
    assert kept[603]["reason"] == "obd.speed.value: 'fast' is not a number"
    assert (kept[604]["field"], kept[604]["value"]) == ("@vid", "5001.5")
    assert json.loads(kept[604]["payload"]) == points[602]
    assert landed.stats.invalid == 2 and landed.stats.malformed == 0


BAD_VALUES = {
    "NaN": ('"obd.speed.value":NaN', "obd.speed.value", "NaN", "is not a finite number"),
    "Infinity": (
        '"obd.speed.value":Infinity',
        "obd.speed.value",
        "Infinity",
        "is not a finite number",
    ),
    "-Infinity": (
        '"obd.rpm.value":-Infinity',
        "obd.rpm.value",
        "-Infinity",
        "is not a finite number",
    ),
    "overflow": ('"obd.speed.value":1e999', "obd.speed.value", "1e999", "is not a finite number"),
    "decimal comma": ('"obd.speed.value":"12,5"', "obd.speed.value", "12,5", "is not a number"),
    "location NaN": (
        '"track.pos.loc":{"lat":NaN,"lon":24.7}',
        "track.pos.loc.lat",
        "NaN",
        "is not a finite number",
    ),
    "undeclared NaN": (
        '"obd.speed.raw":[1,NaN]',
        "obd.speed.raw[1]",
        "NaN",
        "is not a finite number",
    ),
    "bad timestamp": (
        '"@rec":"30/03/2026 23:59:00"',
        "@rec",
        "30/03/2026 23:59:00",
        "is not an ISO-8601 timestamp",
    ),
}


@pytest.mark.parametrize("n", [300, 3000], ids=["slow-path", "fast-path"])
@pytest.mark.parametrize("case", list(BAD_VALUES), ids=list(BAD_VALUES))
def test_a_line_with_an_unparseable_or_non_finite_value_is_quarantined_never_landed(
    tmp_path: Path, case: str, n: int
) -> None:
    text, field, value, why = BAD_VALUES[case]
    points: list[str | dict[str, Any]] = [json.dumps(p) for p in datapoints(n)]
    bad = n // 2
    points[bad] = '{"@ts":"2026-03-30T23:59:30Z","@t":"obd.speed",' + text + "}"
    lake, landed = land(tmp_path, points)
    (kept,) = quarantined(lake)
    assert kept["reason"] == f"{field}: {value!r} {why}"
    assert (kept["table"], kept["field"], kept["value"]) == ("datapoints", field, value)
    assert (kept["trip_id"], kept["line_number"], kept["payload"]) == (
        "trip-a",
        bad + 2,
        points[bad],
    )
    assert landed.stats.invalid == 1 and landed.stats.malformed == 0
    got = rows(lake)
    assert len(got) == n - 1 and bad + 2 not in {r["line_no"] for r in got}
    for row in got:  # nothing non-finite reached the table, typed or in `extra`
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float))
        json.loads(row["extra"] or "{}", parse_constant=pytest.fail)
    assert not not_parquet(lake)


@pytest.mark.parametrize(
    ("key", "sent", "reason"),
    [
        ("distanceKm", float("nan"), "distanceKm: 'NaN' is not a finite number"),
        ("distanceKm", "12,5", "distanceKm: '12,5' is not a number"),
        (
            "start_position_lat",
            float("inf"),
            "start_position_lat: 'Infinity' is not a finite number",
        ),
        (
            "end_time_utc",
            "31.03.2026 00:40",
            "end_time_utc: '31.03.2026 00:40' is not an ISO-8601 timestamp",
        ),
        ("duration", "41 min", "duration: '41 min' is not a number"),
    ],
)
def test_a_trip_object_with_a_bad_value_is_quarantined_and_its_datapoints_still_land(
    tmp_path: Path, key: str, sent: Any, reason: str
) -> None:
    lake = Lake(tmp_path / "lake")
    trip = {**TRIP, key: sent}
    path = write_export(tmp_path / "bad.json.gz", datapoints(40), trip=trip)
    landed = land_export(lake, path, task_id=7, trip_id="trip-a", sha256="1")
    assert landed.trips_file is None and len(lake.read("autopi", "trips")) == 0
    assert len(rows(lake)) == 40 == landed.stats.datapoints
    (kept,) = quarantined(lake)
    assert (kept["table"], kept["reason"], kept["field"]) == ("trips", reason, key)
    assert (kept["line_number"], json.loads(kept["payload"])["id"]) == (1, "trip-a")
    assert kept["value"] == reason.split("'")[1]

    clean = write_export(tmp_path / "clean.json.gz", datapoints(40))
    relanded = land_export(lake, clean, task_id=7, trip_id="trip-a", sha256="2")
    assert relanded.trips_file is not None and len(lake.read("autopi", "trips")) == 1
    assert not quarantined(lake) and not lake.files("autopi", "quarantine")


def test_the_trip_row_is_typed_and_keeps_the_whole_trip_object(tmp_path: Path) -> None:
    lake, landed = land(tmp_path, datapoints(10))
    (trip,) = lake.read("autopi", "trips").to_pylist()
    assert trip["day"] == T0.date() == landed.day
    assert trip["started_at"] == T0 and trip["duration_s"] == 41 * 60
    assert (trip["start_lat"], trip["end_address"]) == (59.437, "Pärnu mnt 10, Tallinn")
    assert (trip["device_id"], trip["vehicle_id"], trip["distance_km"]) == ("dev-1", 5001, 12.5)
    assert (trip["task_id"], trip["export_sha256"], trip["datapoints"]) == (7, "abc", 10)
    assert json.loads(trip["trip_json"]) == TRIP


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],
        lambda b: b[:-8] + bytes([b[-8] ^ 1]) + b[-7:],
        lambda b: b + b"junk",
    ],
    ids=["truncated", "bad-crc", "trailing-garbage"],
)
def test_an_incomplete_or_corrupt_gzip_raises_and_leaves_nothing_visible(
    tmp_path: Path, damage: Any
) -> None:
    lake = Lake(tmp_path / "lake")
    path = write_export(tmp_path / "trip-a.json.gz", list(datapoints(5000)))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CorruptExport):
        land_export(lake, path, task_id=7, trip_id="trip-a", sha256="x")
    leftovers = list((tmp_path / "lake").rglob("*"))
    assert not [p for p in leftovers if p.is_file()], leftovers


def test_concatenated_gzip_members_are_one_export(tmp_path: Path) -> None:
    lines = [json.dumps(TRIP)] + [json.dumps(p) for p in datapoints(1000)]
    path = tmp_path / "trip-a.json.gz"
    head, tail = "\n".join(lines[:400]) + "\n", "\n".join(lines[400:]) + "\n"
    path.write_bytes(gzip.compress(head.encode()) + gzip.compress(tail.encode()))
    landed = land_export(Lake(tmp_path / "lake"), path, task_id=1, trip_id="trip-a", sha256="x")
    assert landed.stats.datapoints == 1000


def test_an_export_of_another_trip_is_refused(tmp_path: Path) -> None:
    path = write_export(tmp_path / "x.json.gz", datapoints(5))
    with pytest.raises(CorruptExport, match="task names trip-b"):
        land_export(Lake(tmp_path / "lake"), path, task_id=1, trip_id="trip-b", sha256="x")


def test_relanding_a_trip_replaces_its_files_and_drops_a_stale_quarantine(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    first = write_export(tmp_path / "1.json.gz", [*datapoints(50), "{oops"])
    land_export(lake, first, task_id=1, trip_id="trip-a", sha256="1")
    assert [q["payload"] for q in quarantined(lake)] == ["{oops"]
    again = write_export(tmp_path / "2.json.gz", [*datapoints(60), "[]", "{oops"])
    land_export(lake, again, task_id=1, trip_id="trip-a", sha256="2")
    assert [q["payload"] for q in quarantined(lake)] == ["[]", "{oops"], "replaced, not added"
    # an older version's quarantine file beside the datapoints goes with the next landing
    points_dir = lake.partition_dir("autopi", "datapoints", T0.date())
    (points_dir / f"trip-a{LEGACY_QUARANTINE_SUFFIX}").write_text('{"line_no": 3}\n')
    clean = write_export(tmp_path / "3.json.gz", datapoints(80))
    land_export(lake, clean, task_id=1, trip_id="trip-a", sha256="3")
    assert len(lake.read("autopi", "datapoints")) == 80
    assert len(lake.files("autopi", "trips")) == len(lake.files("autopi", "datapoints")) == 1
    assert not lake.files("autopi", "quarantine") and not not_parquet(lake)


def test_a_relanding_under_another_day_moves_the_quarantine_too(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    first = write_export(tmp_path / "1.json.gz", [*datapoints(20), "{oops"])
    land_export(lake, first, task_id=1, trip_id="trip-a", sha256="1")
    later = {**TRIP, "start_time_utc": "2026-03-31T00:01:00Z"}
    moved = write_export(tmp_path / "2.json.gz", [*datapoints(20), "{oops"], trip=later)
    land_export(lake, moved, task_id=1, trip_id="trip-a", sha256="2", previous_day=T0.date())
    (kept,) = lake.files("autopi", "quarantine")
    assert kept.parent.name == "day=2026-03-31"


def test_legacy_quarantine_files_migrate_into_the_quarantine_table(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    land_export(
        lake,
        write_export(tmp_path / "a.json.gz", datapoints(10)),
        task_id=1,
        trip_id="trip-a",
        sha256="1",
    )
    folder = lake.partition_dir("autopi", "datapoints", T0.date())
    entries = [
        {"line_no": 4, "reason": "invalid JSON: Expecting value", "line": '{"@t":'},
        {"line_no": 9, "reason": "not UTF-8", "line_b64": "/w=="},
    ]
    legacy = folder / f"trip-b{LEGACY_QUARANTINE_SUFFIX}"
    legacy.write_text("".join(json.dumps(e) + "\n" for e in entries))
    assert migrate_legacy_quarantine(lake) == 1
    assert not legacy.exists() and not not_parquet(lake)
    got = quarantined(lake)
    assert [(q["trip_id"], q["line_number"], q["reason"], q["payload"]) for q in got] == [
        ("trip-b", 4, "invalid JSON: Expecting value", '{"@t":'),
        ("trip-b", 9, "not UTF-8", "\\xff"),
    ]
    assert {q["day"] for q in got} == {T0.date()}
    assert migrate_legacy_quarantine(lake) == 0
