"""AutoPi export files → lake: typed, lossless, quarantined, and never half-landed."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipelines.lake import Lake
from pipelines.sources.autopi import export
from pipelines.sources.autopi.export import DATAPOINTS_SCHEMA, CorruptExport
from pipelines.sources.autopi.landing import QUARANTINE_SUFFIX, land_export

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
    assert quarantine is not None and quarantine.name == f"trip-a{QUARANTINE_SUFFIX}"
    assert quarantine.parent == lake.files("autopi", "datapoints")[0].parent
    entries = [json.loads(line) for line in quarantine.read_text().splitlines()]
    # line 1 is the trip; datapoint i is line i + 2 (the blank line shifts those after it)
    expected = {i + 2 + (i >= 2000): text for i, text in bad.items()}
    assert {e["line_no"]: e["line"] for e in entries} == expected
    assert all(e["reason"] for e in entries)
    line_nos = [r["line_no"] for r in rows(lake)]
    assert not set(line_nos) & set(expected) and len(line_nos) == len(set(line_nos))


def test_a_value_of_the_wrong_type_moves_to_extra_instead_of_failing(tmp_path: Path) -> None:
    points = datapoints(1200)
    points[601]["obd.speed.value"] = "fast"
    points[602]["@vid"] = 5001.5
    lake, landed = land(tmp_path, points)
    got = {r["line_no"]: r for r in rows(lake)}
    assert got[603]["obd.speed.value"] is None
    assert json.loads(got[603]["extra"])["obd.speed.value"] == "fast"
    assert got[604]["@vid"] is None and json.loads(got[604]["extra"])["@vid"] == 5001.5
    assert landed.stats.moved_to_extra == 2 and landed.stats.malformed == 0


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
    assert list(lake.partition_dir("autopi", "datapoints", T0.date()).glob("*.jsonl"))
    second = write_export(tmp_path / "2.json.gz", datapoints(80))
    land_export(lake, second, task_id=1, trip_id="trip-a", sha256="2")
    assert len(lake.read("autopi", "datapoints")) == 80
    assert len(lake.files("autopi", "trips")) == len(lake.files("autopi", "datapoints")) == 1
    assert not list(lake.partition_dir("autopi", "datapoints", T0.date()).glob("*.jsonl"))
