"""kt1 stream drain: 100,000 items in batches of 100 over loopback, ours vs a naive loop.

Each run gets its own simulated stream in a child process (so the server does not share our
GIL), pre-filled with `fill_synthetic(N)`; no long-poll waits while data is queued, one empty
poll (`--long-poll`) ends each run. Both land every item durably before acknowledging it, in a
fresh temporary lake on the same disk:

* ours: `drain_stream` — one keep-alive gzip session, batches grouped into one file per table
  and day (≤50 batches or 20 s), then every batch of the group DELETEd;
* naive: per batch one GET, one write (the same typed files, one per batch), one DELETE, each
  request on a new connection.

Prints items/s of each and the ratio; the goal is ≥ 5,000 items/s and ≥ 3x the naive loop.

    .venv/bin/python bench/kt1_drain.py [--items 100000] [--batch 100]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import tempfile
import time
from datetime import UTC, date, datetime
from multiprocessing.connection import Connection
from pathlib import Path

import pyarrow.parquet as pq
import requests
from _common import print_header

from pipelines.lake import Lake
from pipelines.sources.kt1.client import Kt1Client, parse_batch
from pipelines.sources.kt1.drain import drain_stream
from pipelines.sources.kt1.extract import ItemSplitter
from pipelines.sources.kt1.schemas import SOURCE

TOKEN = "bench-kt1-token"


def serve(conn: Connection, items: int, batch: int, long_poll_s: float) -> None:
    """Child process: a kt1 stream holding `items` synthetic telemetry items, until told to stop."""
    from pipelines.simulator.kt1 import Kt1Server
    from pipelines.simulator.world import World

    world = World(seed=1, vehicles=3, days=1, end_day=date(2026, 3, 1))
    server = Kt1Server(
        world,
        token=TOKEN,
        clock=lambda: datetime(2000, 1, 1, tzinfo=UTC),  # no world items: only the synthetic ones
        long_poll_s=long_poll_s,
        batch_size=batch,
    ).start()
    server.fill_synthetic(items)
    conn.send(server.url)
    conn.recv()  # "stats?"
    conn.send(server.stats())
    conn.recv()  # "stop"
    server.stop()


class Stream:
    """A stream server in its own process."""

    def __init__(self, items: int, batch: int, long_poll_s: float) -> None:
        self._conn, child = mp.Pipe()
        self._proc = mp.Process(target=serve, args=(child, items, batch, long_poll_s), daemon=True)
        self._proc.start()
        self.url: str = self._conn.recv()

    def stats(self) -> dict[str, int]:
        self._conn.send("stats?")
        return self._conn.recv()

    def stop(self) -> None:
        self._conn.send("stop")
        self._proc.join(10)


def lake_rows(lake: Lake) -> int:
    return sum(pq.read_metadata(p).num_rows for p in lake.files(SOURCE, "telemetry"))


def outcome(
    name: str, wall: float, stream: Stream, lake: Lake, requests_made: int, stop: str
) -> dict:
    """One drain's figures, the stream's counts among them; the stream is stopped."""
    stats = stream.stats()
    stream.stop()
    return {
        "name": name,
        "wall_s": wall,
        "acked": stats["acked_items"],
        "landed": lake_rows(lake),
        "files": len(lake.files(SOURCE, "telemetry")),
        "requests": requests_made,
        "redelivered": stats.get("redelivered_items", 0),
        "stop": stop,
    }


def run_ours(args: argparse.Namespace, root: Path) -> dict:
    stream = Stream(args.items, args.batch, args.long_poll)
    lake = Lake(root / "ours")
    client = Kt1Client(stream.url, token=TOKEN, long_poll_s=args.long_poll)
    started = time.perf_counter()
    result = drain_stream(client, lake, budget_s=600)
    wall = time.perf_counter() - started
    client.close()
    name = "ours (keep-alive, grouped files)"
    return outcome(name, wall, stream, lake, client.stats.requests, result.stop_reason)


def run_naive(args: argparse.Namespace, root: Path) -> dict:
    stream = Stream(args.items, args.batch, args.long_poll)
    lake = Lake(root / "naive")
    headers = {"x-access-token": TOKEN}
    url = f"{stream.url}/v2/stream"
    requests_made = 0
    splitter = ItemSplitter()  # the same typing as ours, opened once like ours
    started = time.perf_counter()
    spent = {"http": 0.0, "typing": 0.0, "writing": 0.0}
    while True:
        t0 = time.perf_counter()
        response = requests.get(url, headers=headers, timeout=60)  # a new connection each time
        requests_made += 1
        if response.status_code == 500:
            break
        response.raise_for_status()
        batch = parse_batch(response.content, datetime.now(UTC))
        t1 = time.perf_counter()
        split = splitter.split([batch], datetime.now(UTC))
        t2 = time.perf_counter()
        for (table, day), data in split.tables.items():
            lake.write_file(SOURCE, table, day, batch.batch_id, data)
        t3 = time.perf_counter()
        requests.delete(f"{url}/{batch.batch_id}", headers=headers, timeout=60).raise_for_status()
        requests_made += 1
        spent["http"] += (t1 - t0) + (time.perf_counter() - t3)
        spent["typing"] += t2 - t1
        spent["writing"] += t3 - t2
    wall = time.perf_counter() - started
    splitter.close()
    name = "naive (GET, write, DELETE; new conns)"
    return {**outcome(name, wall, stream, lake, requests_made, "queue empty"), "spent": spent}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--long-poll", type=float, default=0.2, help="server's empty-queue wait")
    parser.add_argument("--keep", action="store_true", help="keep the two lakes for inspection")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kt1-bench-"))
    print(
        f"kt1 drain: {args.items:,} items in batches of {args.batch}, loopback, lake in {root} "
        f"(one {args.long_poll:g}s empty poll ends each run)"
    )
    results = [run_ours(args, root), run_naive(args, root)]
    header = (
        f"{'drain':40} {'items/s':>9} {'wall s':>7} {'requests':>8} {'files':>6} "
        f"{'acked':>8} {'landed':>8} {'redeliv.':>8}"
    )
    print_header(header)
    for r in results:
        print(
            f"{r['name']:40} {r['acked'] / r['wall_s']:9,.0f} {r['wall_s']:7.2f} "
            f"{r['requests']:8d} {r['files']:6d} {r['acked']:8d} {r['landed']:8d} "
            f"{r['redelivered']:8d}"
        )
        if r["acked"] != args.items or r["landed"] != args.items:
            print(f"  !! {r['name']}: expected {args.items} acknowledged and landed")
    ours, naive = results
    shares = ", ".join(f"{k} {v / naive['wall_s']:.0%}" for k, v in naive["spent"].items())
    print(f"naive loop time: {shares} (per batch: typing has a fixed cost that groups amortise)")
    rate = ours["acked"] / ours["wall_s"]
    ratio = naive["wall_s"] / ours["wall_s"]
    print(
        f"\nours: {rate:,.0f} items/s (goal >= 5,000: {'met' if rate >= 5000 else 'NOT met'}); "
        f"{ratio:.2f}x the naive loop (goal >= 3x: {'met' if ratio >= 3 else 'NOT met'})"
    )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
