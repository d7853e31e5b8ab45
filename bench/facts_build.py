"""Facts build: the DuckLake build by UTC day vs the single-file DuckDB build it replaced.

Per scale (days x vehicles), one deterministic world (seed 7) is landed once into a Parquet lake
through the sources' own clients and writers (_facts_world.py, in a child process), and a
hard-linked copy of it gets one day re-landed: every raw file of that day rewritten, one AVL
trip's `kms` changed. Both builds read that same lake through one symlink:

* new: the DuckLake catalog (FLEET_FACTS_CATALOG / FLEET_FACTS_DATA_PATH), dbt run as a Dagster
  run of every fact asset runs it: one `dbt build` per step of Dagster's execution plan (one
  step: daily and unpartitioned models are one asset definition), with the step's `--select`,
  `dbt_build_args` (`--event-time-start/--event-time-end` of the run's days) and `dbt_env`. Full build: every day of the lake into a fresh catalog. One-day update: the
  re-landed day only (start = that day, end = the next), unpartitioned models included, as a
  run of that one partition does; then, for information, the facts sensor's run for that
  day (the day either side too).
* old: commit 5f7aa80's dbt_models/ and pipelines/lake_listing.py (git archive into a temporary
  folder, PYTHONPATH first), FLEET_DUCKDB_PATH a fresh file, its one `dbt build` (no
  selection, unit tests excluded, as its asset ran it). Its one-day update is the same build
  again after the day changed: its ledgers find the changed day.

Figures: wall seconds per build (sum over its dbt invocations, time.perf_counter), peak RSS of
the dbt process tree (psutil, sampled), update/full and new full/old full ratios measured in
the same process run (the machine is shared: ratios, never absolute seconds, are the result).
Not measured: Dagster's own per-run cost (run launch, step processes, event handling, the
facts sensor's tick): dbt is invoked directly with the steps' arguments, through
dagster-dbt's DbtCliResource like the assets. Checks: the changed trip reaches both builds,
fct_trips' rows per day agree between them, and with --verify a fresh full build of the
changed lake equals the updated catalog's daily marts (EXCEPT ALL both ways).

    .venv/bin/python bench/facts_build.py [--scales 90x50,365x200] [--skip-old] [--verify]
        [--keep DIR] [--build-limit MINUTES]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
from _dbt_calls import Build, dbt_cli
from _facts_builds import (
    NewBuild,
    OldBuild,
    dagster_steps,
    fresh,
    new_project,
    old_env,
    old_project,
    point,
    start_parse,
)
from _facts_checks import check_against_old, compare_catalogs
from _facts_world import FleetSpec, Landing, Relanded, Sampling, in_child, land_lakes, reland_day

from pipelines.dbt import (
    dbt_env,
)
from pipelines.facts import FactsCatalog

SEED = 7
WORLD_END = date(2026, 3, 31)  # the world's last day; the lake holds the days before it
UPDATE_GOALS = {"90x50": 0.25, "365x200": 0.10}  # one-day update / full build, new build
FULL_GOAL = 1.2  # new full build / old full build
DAILY_MARTS = ["fct_trips", "fct_idle_periods", "fct_fuel_events", "fleet_daily"]
DENSE, SPARSE = Sampling(autopi_s=10.0, kt1_s=30.0), Sampling(autopi_s=120.0, kt1_s=300.0)


@dataclass(frozen=True)
class Scale:
    """A fleet of `vehicles` over `days`, written `DAYSxVEHICLES` (`90x50`)."""

    days: int
    vehicles: int

    @classmethod
    def parse(cls, text: str) -> Scale:
        days, _, vehicles = text.strip().partition("x")
        return cls(int(days), int(vehicles))

    @property
    def name(self) -> str:
        return f"{self.days}x{self.vehicles}"

    @property
    def sampling(self) -> Sampling:
        """The earlier bench's: dense up to 90x50, sparser beyond (a year of 200 vehicles at
        the simulators' defaults would not land in this bench's time)."""
        return DENSE if self.days * self.vehicles <= 90 * 50 else SPARSE


# --- one scale -----------------------------------------------------------------------------


@dataclass
class Outcome:
    scale: Scale
    lake: str
    relanded: Relanded
    new_full: Build
    new_update: Build | None = None
    new_sensor: Build | None = None
    old_full: Build | None = None
    old_update: Build | None = None
    checks: list[str] = field(default_factory=list)


def lake_summary(root: Path) -> str:
    files = list(root.glob("*/*/day=*/*.parquet"))
    con = duckdb.connect()
    rows = con.execute(
        "select sum(num_rows) from parquet_file_metadata(?)", [[str(f) for f in files]]
    ).fetchone()[0]
    con.close()
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    return f"{rows:,} rows in {len(files):,} files, {megabytes:,.0f} MB"


def run_scale(scale: Scale, root: Path, args: argparse.Namespace) -> Outcome:
    spec = FleetSpec(SEED, scale.vehicles, scale.days, WORLD_END, scale.sampling)
    world = spec.world()  # vehicles only: the landing child generates the trips
    days = world.day_range()[:-1]
    day = days[len(days) // 2]
    print(
        f"\n== {scale.name}: {scale.days} days x {scale.vehicles} vehicles ({days[0]}..{days[-1]})"
        f", seed {SEED}, AutoPi every {scale.sampling.autopi_s:g}s, kt1 every "
        f"{scale.sampling.kt1_s:g}s; in {root}",
        flush=True,
    )
    root.mkdir(parents=True, exist_ok=True)
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    initial, changed, lake = root / "lake", root / "lake-changed", root / "lake-current"
    point(lake, root)  # a directory, until the lake exists
    catalog_dir = root / "catalog"
    catalog = FactsCatalog.of(f"sqlite:{catalog_dir}/facts.sqlite", str(catalog_dir / "data"))
    fresh(catalog_dir)
    new_env = dbt_env(lake, catalog)  # creates the catalog's folders
    new_dir = new_project(world, root / "dbt-new")
    parses = [start_parse(new_dir, new_env, ("PYTHONPATH",), logs / "parse-new.log")]
    old_db = root / "old" / "fleet.duckdb"
    if not args.skip_old:
        old_dir = old_project(world, root / "old")
        env = old_env(lake, old_db, root / "old")
        drop = ("FLEET_FACTS_CATALOG", "FLEET_FACTS_DATA_PATH")
        parses.append(start_parse(old_dir, env, drop, logs / "parse-old.log"))

    landing: Landing = in_child(land_lakes, spec, initial)
    if landing.initial:
        shares = ", ".join(f"{s} {v:.0f}s" for s, v in sorted(landing.initial.items()))
        print(
            f"   landed {landing.trips:,} trips (world {landing.world_s:.0f}s, lake "
            f"{landing.initial_s:.0f}s: {shares}); not part of any figure",
            flush=True,
        )
    else:
        print("   lake reused from an earlier run of this scale (--keep)", flush=True)
    started = time.perf_counter()
    relanded = reland_day(initial, changed, day)
    summary = lake_summary(initial)
    print(
        f"   lake: {summary}; day {day} re-landed into a hard-linked copy ({relanded.files} "
        f"files rewritten, AVL {relanded.device_name} {relanded.trip_start:%H:%M} kms -> "
        f"{relanded.kms}) in {time.perf_counter() - started:.1f}s",
        flush=True,
    )
    for parse in parses:
        if parse.wait() != 0:
            raise RuntimeError(f"dbt parse failed; see {logs}")

    steps = dagster_steps()
    new = NewBuild(dbt_cli(new_dir), new_env, steps, logs, args.build_limit * 60)
    print(f"   new build: {len(steps)} dbt invocations per run ({', '.join(k for k, _ in steps)})")
    point(lake, initial)
    outcome = Outcome(scale, summary, relanded, new.build("new-full", days[0], days[-1]))
    report(outcome.new_full)
    if outcome.new_full.ok:
        point(lake, changed)
        outcome.new_update = new.build("new-update", day, day)
        report(outcome.new_update)
        if outcome.new_update.ok:
            neighbours = (day - timedelta(days=1), day + timedelta(days=1))
            outcome.new_sensor = new.build("new-sensor", *neighbours)
            report(outcome.new_sensor, f"(the sensor's run: {neighbours[0]}..{neighbours[1]})")

    if not args.skip_old:
        old = OldBuild(dbt_cli(old_dir), env, logs, args.build_limit * 60)
        point(lake, initial)
        fresh(old_db, old_db.with_name(old_db.name + ".wal"))
        outcome.old_full = old.build("old-full")
        report(outcome.old_full)
        if outcome.old_full.ok:
            point(lake, changed)
            outcome.old_update = old.build("old-update")
            report(outcome.old_update)

    if outcome.new_update is not None and outcome.new_update.ok:
        old_ok = outcome.old_update is not None and outcome.old_update.ok
        outcome.checks += check_against_old(catalog, old_db if old_ok else None, relanded)
        if args.verify:
            outcome.checks.append(verify(catalog, root, lake, steps, days, args, new_dir))
    for line in outcome.checks:
        print(f"   check: {line}", flush=True)
    return outcome


def verify(
    updated: FactsCatalog,
    root: Path,
    lake: Path,
    steps: list[tuple[str, list[str]]],
    days: list[date],
    args: argparse.Namespace,
    project: Path,
) -> str:
    """A full build of the changed lake into another catalog (not a figure: its new catalog
    path makes dbt parse again) vs the updated catalog's daily marts."""
    other_dir = root / "catalog-verify"
    fresh(other_dir)
    other = FactsCatalog.of(f"sqlite:{other_dir}/facts.sqlite", str(other_dir / "data"))
    builder = NewBuild(
        dbt_cli(project), dbt_env(lake, other), steps, root / "logs", args.build_limit * 60
    )
    build = builder.build("verify-full", days[0], days[-1])
    if not build.ok:
        return "verify: the full build of the changed lake " + failed(build)
    result = compare_catalogs(updated, other, DAILY_MARTS)
    return (
        f"after the update vs a full build of the changed lake, {', '.join(DAILY_MARTS)}: {result}"
    )


# --- printing ------------------------------------------------------------------------------


def failed(build: Build) -> str:
    return next((f"{s.name}: {s.status()}" for s in build.steps if not s.ok), "not run")


def report(build: Build, note: str = "") -> None:
    state = "ok" if build.ok else failed(build)
    print(
        f"   {build.name}: {build.wall_s:.1f}s in {len(build.steps)} dbt call(s), peak RSS "
        f"{build.peak_rss / 2**30:.2f} GiB, {state} {note}".rstrip(),
        flush=True,
    )


def ratio(a: Build | None, b: Build | None) -> float | None:
    if a is None or b is None or not (a.ok and b.ok):
        return None
    return a.wall_s / b.wall_s


def judged(value: float | None, goal: float | None) -> str:
    if value is None:
        return "unknown (a build did not run or failed)"
    if goal is None:
        return f"{value:.3f} (no goal at this scale)"
    return f"{value:.3f}  goal <= {goal:.2f}: {'PASS' if value <= goal else 'MISS'}"


def print_outcome(o: Outcome) -> None:
    print(f"\n{o.scale.name}: {o.lake}; changed day {o.relanded.day}")
    header = (
        f"   {'build':44} {'wall s':>8} {'dbt calls':>9} {'start+parse':>11} {'models s':>9} "
        f"{'tests s':>8} {'models':>6} {'tests':>6} {'peak GiB':>8}"
    )
    print(header)
    print("   " + "-" * (len(header) - 3))
    rows = (
        ("new full build (DuckLake, every day)", o.new_full),
        ("new one-day update (that day's partition)", o.new_update),
        ("new sensor's run (the day and either side)", o.new_sensor),
        ("old full build (single file, 5f7aa80)", o.old_full),
        ("old one-day update (second dbt build)", o.old_update),
    )
    for label, build in rows:
        if build is None:
            print(f"   {label:44} {'not run':>8}")
            continue
        print(
            f"   {label:44} {build.wall_s:8.1f} {len(build.steps):9} {build.overhead_s:11.1f} "
            f"{build.node_s('model'):9.1f} {build.node_s('test'):8.1f} {build.nodes('model'):6} "
            f"{build.nodes('test'):6} {build.peak_rss / 2**30:8.2f}"
            + ("" if build.ok else f"  {failed(build)}")
        )
    if o.new_update is not None:
        print(
            "   new one-day update per dbt call: "
            + "; ".join(
                f"{s.name} {s.wall_s:.1f}s (start+parse {s.overhead_s:.1f}, "
                f"{s.nodes.get('model', 0)}+{s.nodes.get('seed', 0)} models/seeds "
                f"{s.node_s.get('model', 0.0) + s.node_s.get('seed', 0.0):.1f}s, "
                f"{s.nodes.get('test', 0)} tests {s.node_s.get('test', 0.0):.1f}s)"
                for s in o.new_update.steps
            )
        )
    goal = UPDATE_GOALS.get(o.scale.name)
    print(
        f"   new one-day update / new full build = {judged(ratio(o.new_update, o.new_full), goal)}"
    )
    print(
        f"   old one-day update / old full build = {judged(ratio(o.old_update, o.old_full), None)}"
    )
    print(
        f"   new full build / old full build     = {judged(ratio(o.new_full, o.old_full), FULL_GOAL)}"
    )
    print(
        "   (wall: the dbt invocations from start to exit, summed; start+parse: wall minus dbt's "
        "run_results elapsed_time; models/tests s: node times as dbt reports them; peak: RSS "
        "of the dbt process tree, DuckDB included, the largest of a build's calls. Dagster's "
        "own per-run cost is not included.)",
        flush=True,
    )


def print_summary(outcomes: list[Outcome]) -> None:
    header = (
        f"{'scale':8} {'new full':>9} {'new 1-day':>9} {'new upd/full':>12} {'goal':>5} "
        f"{'old full':>9} {'old 1-day':>9} {'old upd/full':>12} {'new/old full':>12} {'goal':>5} "
        f"{'new GiB':>7} {'old GiB':>7}"
    )
    print("\n" + header)
    print("-" * len(header))

    def s(build: Build | None, attr: str = "wall") -> str:
        if build is None:
            return "-"
        return f"{build.wall_s:.1f}" if attr == "wall" else f"{build.peak_rss / 2**30:.2f}"

    def verdict(value: float | None, goal: float | None) -> str:
        return "-" if value is None or goal is None else ("PASS" if value <= goal else "MISS")

    for o in outcomes:
        upd, old_upd, full = (
            ratio(o.new_update, o.new_full),
            ratio(o.old_update, o.old_full),
            ratio(o.new_full, o.old_full),
        )
        print(
            f"{o.scale.name:8} {s(o.new_full):>9} {s(o.new_update):>9} "
            f"{'-' if upd is None else f'{upd:.3f}':>12} "
            f"{verdict(upd, UPDATE_GOALS.get(o.scale.name)):>5} {s(o.old_full):>9} "
            f"{s(o.old_update):>9} {'-' if old_upd is None else f'{old_upd:.3f}':>12} "
            f"{'-' if full is None else f'{full:.2f}':>12} {verdict(full, FULL_GOAL):>5} "
            f"{s(o.new_full, 'rss'):>7} {s(o.old_full, 'rss'):>7}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scales", default="90x50,365x200", help="comma-separated DAYSxVEHICLES (default both)"
    )
    parser.add_argument(
        "--skip-old", action="store_true", help="the new build only (no 5f7aa80 build)"
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="also build the changed lake from scratch and compare the daily marts with the "
        "updated catalog (EXCEPT ALL both ways; one more full build)",
    )
    parser.add_argument(
        "--keep",
        help="directory to keep each scale's lake, catalogs and logs in; a lake landed there "
        "for the same scale is reused",
    )
    parser.add_argument(
        "--build-limit", type=float, default=60.0, help="minutes after which a dbt call is stopped"
    )
    args = parser.parse_args()
    try:
        scales = [Scale.parse(s) for s in args.scales.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--scales: DAYSxVEHICLES[,...], not {args.scales!r}")
    print(
        "Facts build, DuckLake by UTC day vs the single-file DuckDB build of 5f7aa80: dbt "
        "invoked directly with the Dagster steps' arguments; Dagster's per-run overhead is not "
        "measured. Ratios are taken within this run (a shared machine).",
        flush=True,
    )
    started = time.perf_counter()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="facts-bench-") as tmp:
        base = Path(args.keep).resolve() if args.keep else Path(tmp)
        for scale in scales:
            outcome = run_scale(scale, base / scale.name, args)
            print_outcome(outcome)
            outcomes.append(outcome)
    print_summary(outcomes)
    print(f"\nbench wall time {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
