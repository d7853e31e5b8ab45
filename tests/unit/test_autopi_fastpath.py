"""DuckDB's fast path may only answer when its answer is exactly the careful path's.

Each case puts one tricky line among clean ones and parses the segment both ways: the fast
path must either refuse it or produce the same rows, extras and counts as Arrow + Python.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipelines.sources.autopi import export, fastpath

CLEAN = 599  # lines around the tricky one: above the size that goes straight to Python


def clean_line(i: int) -> str:
    ts = f"2026-03-30T10:{i // 60 % 60:02d}:{i % 60:02d}.{i % 7}00000Z"
    if i % 3 == 0:
        body = {
            "@t": "track.pos",
            "track.pos.loc": {"lat": 59.4 + i / 1e4, "lon": 24.7},
            "track.pos.sog": i % 50,
            "track.pos.alt": 12.25,
        }
    elif i % 3 == 1:
        body = {"@t": "obd.speed", "obd.speed.value": i % 90 + 0.5, "obd.speed.unit": "km/h"}
    else:
        body = {"@t": "obd.bat", "obd.bat.voltage": 14, "obd.bat.state": "ok, charging: yes"}
    return json.dumps({"@vid": 5001, "@uid": "u1", "@ts": ts, **body, "@rec": ts})


TS = '"@ts":"2026-03-30T10:00:00Z"'
TRICKY = {
    "string in a number": "{" + TS + ',"obd.speed.value":"12.5"}',
    "boolean in a number": "{" + TS + ',"obd.speed.value":true}',
    "number in a string": "{" + TS + ',"obd.speed.unit":5}',
    "object in a string": "{" + TS + ',"obd.speed.unit":{"a":"x:y"}}',
    "array in a number": "{" + TS + ',"obd.speed.value":[1,2]}',
    "null value": "{" + TS + ',"obd.speed.value":null}',
    "undeclared key": "{" + TS + ',"obd.speed.raw":7}',
    "undeclared nested": "{" + TS + ',"x.y":{"a":"b:c,d","e":[1,{"f":null}]}}',
    "undeclared in location": "{" + TS + ',"track.pos.loc":{"lat":1,"lon":2,"acc":3}}',
    "location not an object": "{" + TS + ',"track.pos.loc":"59,24"}',
    "empty location": "{" + TS + ',"track.pos.loc":{}}',
    "trailing comma": "{" + TS + ',"obd.speed.value":1,}',
    "trailing comma in array": "{" + TS + ',"x.y":[1,2,]}',
    "NaN": "{" + TS + ',"obd.speed.value":NaN}',
    "Infinity": "{" + TS + ',"obd.speed.value":Infinity}',
    "-Infinity": "{" + TS + ',"track.pos.loc":{"lat":-Infinity,"lon":2}}',
    "NaN in an undeclared key": "{" + TS + ',"obd.speed.raw":NaN}',
    "decimal comma": "{" + TS + ',"obd.speed.value":"12,5"}',
    "huge exponent": "{" + TS + ',"obd.speed.value":1e999}',
    "exponent and sign": "{" + TS + ',"obd.speed.value":-1.5e2,"obd.maf.value":-0}',
    "float vehicle id": "{" + TS + ',"@vid":5001.0}',
    "vehicle id beyond int64": "{" + TS + ',"@vid":9223372036854775808}',
    "whitespace around colons": '{ "@ts" : "2026-03-30T10:00:00Z" , "@t" :"obd.rpm" }',
    "escaped quote": "{" + TS + ',"obd.bat.state":"a\\"b"}',
    "escaped colon": "{" + TS + ',"obd.bat.state":"a\\u003ab"}',
    "non-ASCII": "{" + TS + ',"obd.bat.state":"lädt: ja"}',
    "duplicate key": "{" + TS + ',"@t":"a","@t":"b"}',
    "empty object": "{}",
    "blank line": "",
    "not an object": "[1,2]",
    "broken JSON": '{"@ts":"2026-03-30T10:00:00Z","obd.speed.value":}',
    "naive timestamp": '{"@ts":"2026-03-30T10:00:00"}',
    "timestamp with offset": '{"@ts":"2026-03-30T12:00:00+02:00"}',
    "timestamp not a time": '{"@ts":"yesterday"}',
    "number as timestamp": '{"@ts":1743328800}',
    "key differing in case": "{" + TS + ',"@TS":"2026-03-30T10:00:00Z"}',
    "key with colon and comma": "{" + TS + ',"a:b,c":1}',
}


# Lines the fast path must accept (so the comparison above is not vacuous for them).
FAST = {"exponent and sign", "whitespace around colons", "non-ASCII", "timestamp with offset"}


def segment(tricky: str | None) -> bytes:
    lines = [clean_line(i) for i in range(CLEAN)]
    if tricky is not None:
        lines.insert(CLEAN // 2, tricky)
    return ("\n".join(lines) + "\n").encode()


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    """NaN compares unequal to itself; both paths may keep one."""
    return {k: "NaN" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def parse_both(data: bytes, tmp_path: Path) -> tuple[Any, Any, bool]:
    lines = data.count(b"\n")
    fast_reader = export._Reader("t", tmp_path)
    try:
        fast_table, fast_tally = fast_reader.parse(data, 2, lines)
        path = tmp_path / "probe.json"
        path.write_bytes(data)
        used_fast = (
            fastpath.read_segment(
                duckdb.connect(),
                path,
                data,
                lines,
                export._FAST_COLUMNS,
                location_fields=export.LOC_FIELDS,
                types=export.DECLARED,
            )
            is not None
        )
    finally:
        fast_reader.close()
    careful = export._Tally()
    careful_table = export._Reader("t").segment(data, 2, careful, lines)
    fast = (fast_table.to_pylist(), fast_tally.stats, fast_tally.bad)
    slow = (careful_table.to_pylist(), careful.stats, careful.bad)
    return fast, slow, used_fast


def test_a_clean_segment_takes_the_fast_path_and_matches(tmp_path: Path) -> None:
    fast, slow, used_fast = parse_both(segment(None), tmp_path)
    assert used_fast
    assert fast == slow
    assert len(fast[0]) == CLEAN and fast[1].slow_lines == 0


@pytest.mark.parametrize("case", list(TRICKY), ids=list(TRICKY))
def test_a_tricky_line_is_refused_or_read_exactly_alike(case: str, tmp_path: Path) -> None:
    (fast_rows, fast_stats, fast_bad), (slow_rows, slow_stats, slow_bad), used_fast = parse_both(
        segment(TRICKY[case]), tmp_path
    )
    assert used_fast or case not in FAST
    assert len(fast_rows) == len(slow_rows)
    for got, want in zip(fast_rows, slow_rows, strict=True):
        extra_got, extra_want = got.pop("extra"), want.pop("extra")
        assert comparable(got) == comparable(want)
        assert json.loads(extra_got or "{}") == json.loads(extra_want or "{}")
    for counter in ("datapoints", "malformed", "invalid", "blank_lines", "undeclared"):
        assert getattr(fast_stats, counter) == getattr(slow_stats, counter), counter
    assert fast_bad == slow_bad


def test_an_undeclared_key_is_learned_and_later_segments_stay_fast(tmp_path: Path) -> None:
    reader = export._Reader("t", tmp_path)
    late = [json.loads(clean_line(i)) | {"obd.speed.raw": i} for i in range(CLEAN)]
    data = ("\n".join(json.dumps(p) for p in late) + "\n").encode()
    try:
        _, first = reader.parse(data, 2, CLEAN)  # learns the key the careful way
        assert list(reader.learned) == ["obd.speed.raw"]
        table, second = reader.parse(data, 2 + CLEAN, CLEAN)
    finally:
        reader.close()
    assert first.stats.undeclared == second.stats.undeclared == {"obd.speed.raw": CLEAN}
    assert second.stats.slow_lines == 0
    extras = [json.loads(e) for e in table.column("extra").to_pylist()]
    assert extras == [{"obd.speed.raw": i} for i in range(CLEAN)]


def test_learned_keys_keep_nested_values_colons_and_commas_exactly(tmp_path: Path) -> None:
    values = [{"a": "b:c,d", "e": [1, {"f": None}], "g": 1.5e-7}, "x:y, z", 12, True, []]
    points = [
        json.loads(clean_line(i)) | {"x.y": values[i % len(values)], "a:b,c": i}
        for i in range(CLEAN)
    ]
    data = ("\n".join(json.dumps(p) for p in points) + "\n").encode()
    reader = export._Reader("t", tmp_path)
    reader.learn(["x.y", "a:b,c"])
    try:
        table, tally = reader.parse(data, 2, CLEAN)
    finally:
        reader.close()
    assert tally.stats.slow_lines == 0  # no Arrow refusal, no Python: the fast path read it
    extras = [json.loads(e) for e in table.column("extra").to_pylist()]
    want = [{k: p[k] for k in ("x.y", "a:b,c")} for p in points]
    assert extras == want


@pytest.mark.parametrize("value", ["NaN", "-Infinity", "1e999", '{"a":[1,Infinity]}'], ids=str)
def test_a_learned_key_holding_a_non_finite_number_is_never_landed_by_the_fast_path(
    value: str, tmp_path: Path
) -> None:
    """DuckDB hands an undeclared key's value over as its text, `NaN` included: the fast path
    must leave that segment to the careful path, which quarantines the line."""
    lines = [clean_line(i)[:-1] + f',"obd.speed.raw":{i}}}' for i in range(CLEAN)]
    lines[300] = clean_line(300)[:-1] + f',"obd.speed.raw":{value}}}'
    data = ("\n".join(lines) + "\n").encode()
    reader = export._Reader("t", tmp_path)
    reader.learn(["obd.speed.raw"])
    try:
        table, tally = reader.parse(data, 2, CLEAN)
    finally:
        reader.close()
    assert table.num_rows == CLEAN - 1 and 302 not in table.column("line_no").to_pylist()
    (bad,) = tally.bad
    assert (bad.line_no, bad.field) == (302, "obd.speed.raw" + (".a[1]" if "[" in value else ""))
    assert tally.stats.invalid == 1
    for extra in table.column("extra").to_pylist():
        json.loads(extra, parse_constant=pytest.fail)
