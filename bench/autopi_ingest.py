"""AutoPi export ingest: `TRIP_ID.json.gz` → Parquet, ours vs `gzip -dc`, a naive json.loads
loop and DuckDB's read_json_auto.

Generates one export of 1,000,000 datapoints (10 datapoint types with their own sparse keys,
integers that turn into floats after 30% of the file, and one key that first appears after
half of it), then times each contender in its own subprocess, so peak RSS figures are each
process's own (`ru_maxrss`). Prints seconds, the ratio to `gzip -dc` (the floor: it only
inflates), peak RSS, and how many distinct keys / late-key values / non-integer floats each
kept. Goals: ours ≤ 2.5x gzip -dc, ≤ 600 MB, nothing lost.

`ours (s3)` lands the same trip into a lake on an S3-compatible server (moto's, started here
on 127.0.0.1, reached through the standard AWS_* variables) and is printed beside the local
figure with the ratio of the two; `--no-s3` leaves it out.

    .venv/bin/python bench/autopi_ingest.py [--datapoints 1000000] [--keep DIR] [--no-s3]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

LATE_KEY = "obd.speed.accuracy"  # undeclared, first seen after half the file
FLOATY_KEY = "obd.coolant_temp.value"  # integers for the first 30% of lines, then floats
TYPES = (
    "track.pos",
    "obd.speed",
    "obd.rpm",
    "obd.engine_load",
    "obd.coolant_temp",
    "obd.fuel_level",
    "obd.bat",
    "obd.intake_temp",
    "obd.maf",
    "event.vehicle.engine",
)


def iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def generate(path: Path, n: int) -> dict[str, int]:
    """Write the export; return the truth: distinct keys, late-key values, non-integer floats."""
    rng = random.Random(7)
    t0 = datetime(2026, 3, 30, 6, 0, tzinfo=UTC)
    trip = {
        "id": "bench-trip",
        "start_time_utc": iso(t0),
        "end_time_utc": iso(t0 + timedelta(seconds=n // 10)),
        "start_position_lat": "59.437000",
        "start_position_lng": "24.754000",
        "device": "bench-device",
        "vehicle": 5001,
        "duration": "27:46:40",
        "distanceKm": 1234.5,
    }
    keys: set[str] = set()
    late = floats = 0
    with gzip.open(path, "wt", compresslevel=6) as out:
        out.write(json.dumps(trip, separators=(",", ":")) + "\n")
        for i in range(n):
            ts = t0 + timedelta(milliseconds=100 * i)
            kind = TYPES[i % len(TYPES)]
            p: dict[str, object] = {
                "@vid": 5001,
                "@uid": "a1b2c3d4e5f6",
                "@ts": iso(ts),
                "@t": kind,
            }
            if kind == "track.pos":
                p["track.pos.loc"] = {
                    "lat": round(59.4 + rng.random() / 50, 6),
                    "lon": round(24.7 + rng.random() / 50, 6),
                }
                p["track.pos.alt"] = round(rng.uniform(20, 60), 1)
                p["track.pos.sog"] = rng.randint(0, 90)
                p["track.pos.cog"] = rng.randint(0, 359)
                p["track.pos.nsat"] = rng.randint(5, 12)
            elif kind == "obd.bat":
                p.update(
                    {
                        "obd.bat.voltage": round(rng.uniform(13.5, 14.4), 2),
                        "obd.bat.state": "charging",
                        "obd.bat.level": rng.randint(60, 100),
                    }
                )
            elif kind == "event.vehicle.engine":
                p["@tag"] = "vehicle/engine/running"
            else:
                value: float = rng.randint(0, 120)
                if kind == "obd.coolant_temp" and i >= 0.3 * n:
                    value = rng.randint(700, 950) / 10 + 0.05
                    floats += 1
                p[f"{kind}.value"] = value
                p[f"{kind}.unit"] = "x"
                if kind == "obd.speed" and i > n // 2:
                    p[LATE_KEY] = round(rng.random(), 3)
                    late += 1
            p["@rec"] = iso(ts + timedelta(seconds=2))
            keys.update(p)
            out.write(json.dumps(p, separators=(",", ":")) + "\n")
    return {"keys": len(keys), "late": late, "floats": floats}


# --- contenders (each runs in its own process) ------------------------------------------------


def run_ours(src: Path, work: Path) -> dict[str, object]:
    return land_ours(str(work / "lake"), src)


def run_ours_s3(src: Path, work: Path) -> dict[str, object]:
    """The same landing into the object-store lake the parent started (BENCH_S3_LAKE)."""
    return land_ours(os.environ[S3_LAKE_VAR], src)


def land_ours(root: str, src: Path) -> dict[str, object]:
    import pyarrow.compute as pc

    from pipelines.lake import Lake
    from pipelines.sources.autopi.inflate import INFLATER
    from pipelines.sources.autopi.landing import land_export
    from pipelines.sources.autopi.schemas import DECLARED

    lake = Lake(root)
    started = time.perf_counter()
    landed = land_export(lake, src, task_id=1, trip_id="bench-trip", sha256="-")
    seconds = time.perf_counter() - started
    rss = peak_rss_mb()  # before the checks below read the whole file back
    table = lake.read_file(landed.datapoints_file.path)
    kept = {k for k in DECLARED if table[k].null_count < len(table)} | {"track.pos.loc"}
    kept -= {"track.pos.loc.lat", "track.pos.loc.lon"}
    kept |= set(landed.stats.undeclared)
    late = sum(1 for e in table["extra"].to_pylist() if e and LATE_KEY in json.loads(e))
    column = table[FLOATY_KEY]
    floats = pc.sum(pc.not_equal(column, pc.floor(column))).as_py()
    return {"seconds": seconds, "rows": table.num_rows, "keys": len(kept), "late": late,
            "floats": floats, "peak_rss_mb": rss, "note": f"inflate: {INFLATER}"}  # fmt: skip


def run_naive(src: Path, work: Path) -> dict[str, object]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    columns: dict[str, list[object]] = {}
    with gzip.open(src, "rt") as lines:
        next(lines)
        for n, line in enumerate(lines):
            for key, value in json.loads(line).items():
                if key not in columns:
                    columns[key] = [None] * n
                columns[key].append(value)
            for values in columns.values():
                if len(values) == n:
                    values.append(None)
    table = pa.table({k: pa.array(v) for k, v in columns.items()})
    pq.write_table(table, work / "naive.parquet", compression="zstd")
    seconds = time.perf_counter() - started
    rss = peak_rss_mb()
    late = len(table) - table[LATE_KEY].null_count
    floats = sum(1 for v in columns[FLOATY_KEY] if v is not None and v != int(v))
    return {
        "seconds": seconds,
        "rows": table.num_rows,
        "keys": len(columns),
        "late": late,
        "floats": floats,
        "peak_rss_mb": rss,
    }


def run_duckdb(src: Path, work: Path) -> dict[str, object]:
    import duckdb

    con = duckdb.connect()
    out = work / "duckdb.parquet"
    note = "default options"
    for options in ("", ", ignore_errors = true"):
        started = time.perf_counter()
        try:
            con.execute(
                f"COPY (SELECT * FROM read_json_auto('{src}'{options})) TO '{out}' (FORMAT parquet)"
            )
        except duckdb.Error as exc:
            # DuckDB refuses a key its sample did not see; its message suggests ignore_errors.
            note = f"default options fail ({str(exc).split(':')[1].strip()[:40]}...); ignore_errors"
            continue
        break
    seconds = time.perf_counter() - started
    rss = peak_rss_mb()
    names = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM '{out}'").fetchall()]
    rows = con.execute(f"SELECT count(*) - 1 FROM '{out}'").fetchone()[0]  # minus the trip line
    trip_keys = {"id", "start_time_utc", "end_time_utc", "start_position_lat", "start_position_lng",
                 "device", "vehicle", "duration", "distanceKm"}  # fmt: skip
    kept = [n for n in names if n not in trip_keys]
    late = (
        con.execute(f"SELECT count(\"{LATE_KEY}\") FROM '{out}'").fetchone()[0]
        if LATE_KEY in names
        else 0
    )
    kind = dict(
        con.execute(f"DESCRIBE SELECT * FROM '{out}'").fetchall()[i][:2] for i in range(len(names))
    )[FLOATY_KEY]
    floats = con.execute(
        f'SELECT count(*) FROM \'{out}\' WHERE "{FLOATY_KEY}" != floor("{FLOATY_KEY}")'
    ).fetchone()[0]
    return {"seconds": seconds, "rows": rows, "keys": len(kept), "late": late, "floats": floats,
            "peak_rss_mb": rss, "note": f"{note}; {FLOATY_KEY} read as {kind}"}  # fmt: skip


CONTENDERS = {"ours": run_ours, "naive": run_naive, "duckdb": run_duckdb}
S3_CONTENDER = "ours (s3)"
S3_LAKE_VAR = "BENCH_S3_LAKE"
S3_BUCKET = "autopi-bench"


@contextlib.contextmanager
def s3_server(log: Path) -> Iterator[dict[str, str]]:
    """moto's S3-compatible server on a free port of 127.0.0.1 with one bucket; yields the
    variables a child needs to land there (fixed test credentials: moto accepts any)."""
    import boto3

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        env = {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench-secret",
            "AWS_REGION": "us-east-1",
            S3_LAKE_VAR: f"s3://{S3_BUCKET}/lake",
        }
        client = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id="bench",
            aws_secret_access_key="bench-secret",
            region_name="us-east-1",
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket=S3_BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"moto's server did not start; see {log}") from None
                time.sleep(0.2)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


def peak_rss_mb() -> float:
    """This process's peak resident set so far (each contender runs in its own process)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, src: Path, work: Path) -> None:
    run = run_ours_s3 if mode == S3_CONTENDER else CONTENDERS[mode]
    print(json.dumps(run(src, work)))


def measure(
    mode: str, src: Path, work: Path, env: dict[str, str] | None = None
) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(src), str(work)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def gzip_floor(src: Path) -> dict[str, object]:
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        proc = subprocess.Popen(["gzip", "-dc", str(src)], stdout=sink)
        _, _, usage = os.wait4(proc.pid, 0)
    return {"seconds": time.perf_counter() - started, "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datapoints", type=int, default=1_000_000)
    parser.add_argument("--keep", help="directory to keep (and reuse) the generated export in")
    parser.add_argument(
        "--no-s3", action="store_true", help="skip landing to an S3-compatible server"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, src, work = args.child
        child(mode, Path(src), Path(work))
        return
    with tempfile.TemporaryDirectory(prefix="autopi-bench-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        src = folder / f"bench-{args.datapoints}.json.gz"
        truth_file = src.with_suffix(".truth.json")
        if not (src.exists() and truth_file.exists()):
            print(f"generating {args.datapoints:,} datapoints ...", flush=True)
            truth_file.write_text(json.dumps(generate(src, args.datapoints)))
        truth = json.loads(truth_file.read_text())
        size = src.stat().st_size / 1e6
        print(f"export: {size:.1f} MB gzip, {args.datapoints:,} datapoints, {truth['keys']} distinct "
              f"keys, {truth['late']:,} values of a key first seen after half the file, "
              f"{truth['floats']:,} floats after integers in {FLOATY_KEY}")  # fmt: skip
        floor = gzip_floor(src)
        results = {"gzip -dc": floor}
        for mode in CONTENDERS:
            work = Path(tmp) / mode
            work.mkdir()
            results[mode] = measure(mode, work=work, src=src)
        if not args.no_s3:
            work = Path(tmp) / "s3"
            work.mkdir()
            with s3_server(work / "moto.log") as env:
                results[S3_CONTENDER] = measure(S3_CONTENDER, work=work, src=src, env=env)
        print(
            f"\n{'':10} {'seconds':>8} {'x gzip':>7} {'peak RSS':>9} {'keys':>9} {'late key':>9} {'floats':>9}  note"
        )
        for name, r in results.items():
            keys = f"{r['keys']}/{truth['keys']}" if "keys" in r else ""
            late = f"{r['late']:,}" if "late" in r else ""
            floats = f"{r['floats']:,}" if "floats" in r else ""
            print(f"{name:10} {r['seconds']:8.2f} {r['seconds'] / floor['seconds']:7.2f} "
                  f"{r['peak_rss_mb']:7.0f}MB {keys:>9} {late:>9} {floats:>9}  {r.get('note', '')}")  # fmt: skip
        ours = results["ours"]
        if S3_CONTENDER in results:
            remote = results[S3_CONTENDER]
            print(
                f"\nthe same trip landed to the S3-compatible server: {remote['seconds']:.2f} s "
                f"vs {ours['seconds']:.2f} s to the local lake "
                f"({remote['seconds'] / ours['seconds']:.2f}x)"
            )
        ok = (
            ours["seconds"] <= 2.5 * floor["seconds"]
            and ours["peak_rss_mb"] <= 600
            and ours["keys"] == truth["keys"]
            and ours["late"] == truth["late"]
            and ours["floats"] == truth["floats"]
        )
        print(f"\ngoals (≤ 2.5x gzip -dc, ≤ 600 MB, nothing lost): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
