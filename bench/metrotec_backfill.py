"""Metrotec 3-month backfill of 50 vehicles: the vehicles snapshot, then route log, stops,
refuels and fuel levels for every vehicle, through Dagster against the simulator.

Two runs in this process over the same simulator: an unthrottled baseline (what the pipeline
itself costs: HTTP, typing, landing, Dagster events) and the real thing at the default polite
METROTEC_RATE_LIMIT of 5 requests/s. Prints requests (vs the minimum for one request series
per vehicle per window), wall time vs the rate-limit floor ⌊(R-1)/N⌋·W, and rows per table.

    .venv/bin/python bench/metrotec_backfill.py [--vehicles 50] [--days 90] [--rate 5/1]
"""

from __future__ import annotations

import argparse
import bisect
import math
import os
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta

from _common import print_header, run_days, temp_home
from dagster import AssetKey

from pipelines.lake import Lake
from pipelines.settings import RateLimitSpec
from pipelines.simulator.metrotec import MetrotecServer
from pipelines.simulator.metrotec import env as metrotec_env
from pipelines.simulator.world import World
from pipelines.sources.metrotec.client import plan_windows

TABLES = ("routelog", "stops", "refuels", "fuel_levels")
KEYS = [AssetKey(["raw", "metrotec", t]) for t in ("vehicles", *TABLES)]


def run(server: MetrotecServer, days: list[date], rate: str, label: str) -> dict:
    os.environ.update(metrotec_env(server))
    tmp = temp_home("metrotec-bench-", days[0], METROTEC_RATE_LIMIT=rate)
    from pipelines.definitions import build_defs

    defs = build_defs()
    server.reset_log()
    started = time.monotonic()
    result = run_days(defs, KEYS, days)
    wall = time.monotonic() - started
    assert result.success
    meta = {}
    for event in result.get_asset_materialization_events():
        meta[event.asset_key.path[-1]] = {
            k: v.value for k, v in event.materialization.metadata.items()
        }
    log = server.requests("/api")
    return {
        "label": label,
        "rate": rate,
        "requests": len(log),
        "by_path": Counter(r.path for r in log),
        "statuses": Counter(r.status for r in log),
        "wall_s": wall,
        "request_phase_s": log[-1].at - log[0].at,
        "meta": meta,
        "lake": tmp / "lake",
    }


def floor_s(requests: int, rate: str) -> float:
    spec = RateLimitSpec.parse(rate)
    return (requests - 1) // spec.max_requests * spec.window_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vehicles", type=int, default=50)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--rate", default="5/1", help="METROTEC_RATE_LIMIT of the real run")
    args = parser.parse_args()
    last = date(2026, 10, 31)
    days = [last - timedelta(days=i) for i in range(args.days - 1, -1, -1)]
    world = World(seed=1, vehicles=args.vehicles, end_day=last, days=args.days + 2)
    now = datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=6)
    t0 = time.monotonic()
    world.trips()
    print(
        f"world: {args.vehicles} vehicles x {args.days} days ({days[0]}..{days[-1]}), "
        f"{len(world.trips())} trips, generated in {time.monotonic() - t0:.1f}s"
    )
    windows = len(plan_windows(days))
    with MetrotecServer(world, clock=lambda: now) as server:
        # The simulator builds each vehicle's history on first use: warm it so that neither
        # measured run pays for it.
        run(server, days, "100000/1", "warm-up")
        baseline = run(server, days, "100000/1", "baseline (unthrottled)")
        real = run(server, days, args.rate, f"polite ({args.rate} requests/s)")
        page = server.fuel_levels_page

    series = args.vehicles * windows
    print(
        f"\n{windows} windows of <=31 days; one request series per vehicle per window = "
        f"{series} series"
    )
    header = f"{'run':32} {'requests':>8} {'wall s':>8} {'floor s':>8} {'wall/floor':>10} {'req-phase/floor':>15}"
    print_header(header)
    for r in (baseline, real):
        floor = floor_s(r["requests"], r["rate"])
        ratio = f"{r['wall_s'] / floor:10.3f}" if floor else f"{'-':>10}"
        phase = f"{r['request_phase_s'] / floor:15.3f}" if floor else f"{'-':>15}"
        print(f"{r['label']:32} {r['requests']:8d} {r['wall_s']:8.1f} {floor:8.1f} {ratio} {phase}")
    by_path = real["by_path"]
    fuel_pages = by_path["/api/fuel/levels"]
    period_requests = sum(
        by_path[p] for p in ("/api/routelog", "/api/routelog/stops", "/api/fuel/refuels")
    )
    readings = Lake(real["lake"]).read("metrotec", "fuel_levels")
    starts = [w.first_day for w in plan_windows(days)]
    per_series = Counter(
        (vehicle, bisect.bisect_right(starts, day))
        for vehicle, day in zip(
            readings["objectID"].to_pylist(), readings["day"].to_pylist(), strict=True
        )
    )
    fuel_floor = sum(math.ceil(n / page) for n in per_series.values())
    print(
        f"\nrequests of the polite run: {dict(sorted(by_path.items()))}; "
        f"statuses {dict(real['statuses'])}"
    )
    print(
        f"period endpoints: {period_requests} requests, minimum 3 x {series} series = "
        f"{3 * series}; fuel level pages: {fuel_pages}, minimum sum of ceil(readings/{page}) "
        f"per series = {fuel_floor} (+1 per vehicle: its newest window ends on a page that "
        f"brings nothing new)"
    )
    print(
        f"\n{'table':12} {'rows':>9} {'files':>6} {'MB':>7} {'api_requests':>12} {'retries':>7} {'429s':>5} {'limit wait s':>12}"
    )
    for table in ("vehicles", *TABLES):
        m = real["meta"][table]
        print(
            f"{table:12} {m['rows']:9d} {m['files']:6d} {m['bytes'] / 1e6:7.2f} "
            f"{m['api_requests']:12d} {m['retries']:7d} {m['http_429s']:5d} {m['rate_limit_wait_s']:12.1f}"
        )
    overhead = baseline["wall_s"]
    print(
        f"\nthe pipeline's own cost (unthrottled run): {overhead:.1f}s for {baseline['requests']} "
        f"requests; the polite run is {real['wall_s'] / overhead:.1f}x that, bounded by the rate "
        f"limit: wall/floor {real['wall_s'] / floor_s(real['requests'], real['rate']):.3f}"
    )


if __name__ == "__main__":
    main()
