"""dbt build of the fleet facts: full build vs the daily one-day update, against a scan floor.

For each size, a deterministic world (seed 7) is landed into a fresh Parquet lake through the
sources' own clients and writers (see _facts_world.py; in a child process, so its gigabytes
are gone before dbt runs), then:

* full build: `dbt build` of every model, seed and data test into a fresh DuckDB file;
* one-day update: one more day lands for every source, as the daily schedules land it (AVL
  and Metrotec re-pull the last two days, kt1 drains, AutoPi lands the new exports), into a
  hard-linked copy of the lake (unchanged files keep their times), and the same `dbt build`
  runs again on that DuckDB file;
* build with nothing new: the same `dbt build` once more, no lake change: what any build costs
  (dbt's start-up, parse, and its per-node work over every model and test);
* dbt start-up: the same `dbt build` selecting no node (start-up, partial parse, exit), the
  least any dbt build of this project costs here;
* floor: DuckDB's time for one plain COUNT(*) over every raw table of the lake.

With --repeat N each build is timed N times (every update from a copy of the same full build)
and the median run is reported.

dbt runs as the `fleet_dbt_models` asset runs it (DbtCliResource, `build` with the asset's
default run config, a fresh target path per invocation seeded with the parse of the warm-up,
FLEET_LAKE_DIR/FLEET_DUCKDB_PATH from `pipelines.dbt.dbt_env`, the lake path a symlink that
moves to the updated lake), in a copy of
dbt_models/ whose seeds map this world's vehicles (the shipped seeds cover 200 vehicles of the
simulator's fleet), so the bench never touches dbt_models/target while other builds run. A build is
stopped after --build-limit minutes. Goal (the issue): update <= 10% of the full build.

    .venv/bin/python bench/facts_build.py [--sizes small|90x50|365x200[,...]] [--keep DIR]
        [--build-limit MINUTES] [--verify] [--repeat N]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import psutil
from _facts_world import FleetSpec, Landing, Sampling, in_child, land_lakes

from pipelines.dbt import (
    DBT_PROJECT_DIR,
    FactsBuildConfig,
    dbt_build_args,
    dbt_env,
    dbt_executable,
)
from pipelines.simulator.world import World

SEED = 7
UPDATE_DAY = date(2026, 3, 31)  # the day the update lands; the full build covers the days before
GOAL = 0.10
PROJECT_COPY_IGNORE = shutil.ignore_patterns("target", "logs", "dbt_packages", ".user.yml")


@dataclass(frozen=True)
class Size:
    name: str
    days: int
    vehicles: int
    sampling: Sampling


SIZES = {
    s.name: s
    for s in (
        Size("small", 7, 5, Sampling(autopi_s=30.0, kt1_s=60.0)),
        Size("90x50", 90, 50, Sampling(autopi_s=10.0, kt1_s=30.0)),
        Size("365x200", 365, 200, Sampling(autopi_s=120.0, kt1_s=300.0)),
    )
}


@dataclass
class TableSize:
    rows: int
    files: int
    bytes: int


@dataclass
class BuildRun:
    """One `dbt build`: wall time, peak memory, and what dbt's run_results.json says about it
    (nothing when dbt did not finish: killed at the time limit or by the kernel)."""

    wall_s: float
    peak_rss: int  # bytes, of the dbt process (DuckDB runs inside it)
    returncode: int
    log: Path
    dbt_s: float | None = None  # run_results elapsed_time: execution after parsing
    node_s: dict[str, float] = field(default_factory=dict)  # summed per node kind
    problems: dict[str, int] = field(default_factory=dict)  # non-passing statuses, counted
    slowest: list[tuple[str, float]] = field(default_factory=list)
    nodes: str = ""  # what the project builds, from the invocation's manifest
    timed_out: bool = False

    @property
    def finished(self) -> bool:
        return self.dbt_s is not None

    @property
    def ok(self) -> bool:
        return self.finished and self.returncode == 0

    @property
    def overhead_s(self) -> float | None:
        """dbt's start-up, (partial) parse and artifact writing: wall time outside the nodes."""
        return None if self.dbt_s is None else self.wall_s - self.dbt_s

    def status(self) -> str:
        if self.timed_out:
            return f"STOPPED at the {self.wall_s / 60:.0f}-minute limit"
        if not self.finished:
            return f"dbt DIED (exit {self.returncode}; -9 is a SIGKILL, e.g. the OOM killer)"
        if self.ok:
            return "ok"
        return "FAILED: " + ", ".join(f"{n} {s}" for s, n in self.problems.items())


# --- the lake ------------------------------------------------------------------------------


def lake_tables(root: Path) -> list[str]:
    """`<source>/<table>` of every raw table holding at least one file."""
    return sorted(
        f"{t.parent.name}/{t.name}"
        for t in root.glob("*/*")
        if t.is_dir() and any(t.glob("day=*/*.parquet"))
    )


def scan_floor(root: Path) -> tuple[float, dict[str, int]]:
    """One plain COUNT(*) over every raw table (one statement); its seconds and rows per table."""
    parts = [
        f"select '{table}' as raw_table, count(*) as n "
        f"from read_parquet('{root / table}/day=*/*.parquet')"
        for table in lake_tables(root)
    ]
    con = duckdb.connect()
    started = time.perf_counter()
    rows = con.execute(" union all ".join(parts)).fetchall()
    seconds = time.perf_counter() - started
    con.close()
    return seconds, {table: n for table, n in rows}


def lake_sizes(root: Path, rows: dict[str, int]) -> dict[str, TableSize]:
    out = {}
    for table in lake_tables(root):
        files = list((root / table).glob("day=*/*.parquet"))
        out[table] = TableSize(rows[table], len(files), sum(f.stat().st_size for f in files))
    return out


# --- dbt -----------------------------------------------------------------------------------


def project_copy(world: World, target: Path) -> Path:
    """dbt_models/ as it is now, with seeds that map this world's vehicles."""
    shutil.copytree(DBT_PROJECT_DIR, target, ignore=PROJECT_COPY_IGNORE)
    identities = world.identity_rows()
    with (target / "seeds" / "vehicle_map.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["source", "source_vehicle_id", "vehicle_id", "display_name"])
        writer.writeheader()
        writer.writerows(identities)
    with (target / "seeds" / "autopi_vehicle_tanks.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source_vehicle_id", "tank_l"])
        writer.writerows((v.autopi_device_id, f"{v.tank_l:g}") for v in world.vehicles_of("autopi"))
    return target


def point(link: Path, target: Path) -> None:
    """Make `link` a symlink to `target`, replacing it atomically."""
    staged = link.with_name(link.name + ".new")
    staged.unlink(missing_ok=True)
    staged.symlink_to(target.resolve(), target_is_directory=True)
    staged.replace(link)


def dbt_cli(project_dir: Path) -> Any:
    from dagster_dbt import DbtCliResource, DbtProject

    project = DbtProject(project_dir=project_dir, profiles_dir=project_dir)
    return DbtCliResource(project_dir=project, dbt_executable=dbt_executable())


class Watch(threading.Thread):
    """Samples the dbt process tree's memory; terminates it past `limit_s` (a shared machine)."""

    def __init__(self, process: Any, limit_s: float) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(process.pid)
        self.limit_s = limit_s
        self.peak_rss = 0
        self.timed_out = False
        self.done = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.done.wait(0.5):
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                self.peak_rss = max(self.peak_rss, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                continue  # a process of the tree just ended
            if time.monotonic() - started > self.limit_s:
                self.timed_out = True
                for proc in reversed(tree):
                    with contextlib.suppress(psutil.Error):
                        proc.terminate()
                return


def dbt_build(cli: Any, log: Path, limit_s: float) -> BuildRun:
    """`dbt build` as the asset invokes it (its default run config, no selection, a fresh
    target path); dbt's own log lines, which dagster-dbt re-emits on stdout, go to `log`."""
    started = time.perf_counter()
    with log.open("w") as sink, contextlib.redirect_stdout(sink):
        invocation = cli.cli(dbt_build_args(FactsBuildConfig()), raise_on_error=False)
        watch = Watch(invocation.process, limit_s)
        watch.start()
        try:
            invocation.wait()
        finally:
            watch.done.set()
            watch.join()
    run = BuildRun(
        wall_s=time.perf_counter() - started,
        peak_rss=watch.peak_rss,
        returncode=invocation.process.returncode,
        log=log,
        timed_out=watch.timed_out,
    )
    if not (invocation.target_path / "run_results.json").exists():
        return run
    results = invocation.get_artifact("run_results.json")
    models = []
    for node in results["results"]:
        kind = node["unique_id"].split(".")[0]
        run.node_s[kind] = run.node_s.get(kind, 0.0) + node["execution_time"]
        if node["status"] not in ("success", "pass"):
            run.problems[node["status"]] = run.problems.get(node["status"], 0) + 1
        if kind == "model":
            models.append((node["unique_id"].split(".")[-1], node["execution_time"]))
    run.slowest = sorted(models, key=lambda m: -m[1])[:3]
    run.dbt_s = results["elapsed_time"]
    run.nodes = describe_nodes(invocation.get_artifact("manifest.json"))
    return run


def describe_nodes(manifest: dict[str, Any]) -> str:
    """`36 models (27 view, 7 table, 2 incremental), 180 data tests, ...` of the project."""
    kinds: dict[str, int] = {}
    materialized: dict[str, int] = {}
    for node in [*manifest["nodes"].values(), *manifest.get("unit_tests", {}).values()]:
        kind = node["resource_type"]
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "model":
            how = node["config"]["materialized"]
            materialized[how] = materialized.get(how, 0) + 1
    how = ", ".join(f"{n} {m}" for m, n in sorted(materialized.items(), key=lambda i: -i[1]))
    names = {"model": "models", "test": "data tests", "unit_test": "unit tests", "seed": "seeds"}
    parts = [f"{kinds.get(k, 0)} {name}" for k, name in names.items()]
    return f"{parts[0]} ({how}), {', '.join(parts[1:])}"


# --- one size ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """Each build's runs (--repeat); the figures are each's median run by wall time."""

    size: Size
    lake: dict[str, TableSize]
    floor_s: float
    fulls: list[BuildRun]
    updates: list[BuildRun]  # none when the full build did not finish
    unchanged_runs: list[BuildRun] = field(default_factory=list)  # dbt's fixed cost
    start_up_s: float | None = None  # a build selecting no node: dbt's own floor

    @property
    def full(self) -> BuildRun:
        return median_run(self.fulls)

    @property
    def update(self) -> BuildRun | None:
        return median_run(self.updates) if self.updates else None

    @property
    def unchanged(self) -> BuildRun | None:
        return median_run(self.unchanged_runs) if self.unchanged_runs else None


def run_size(
    size: Size, root: Path, limit_s: float, verify: bool = False, repeat: int = 1
) -> Outcome:
    """Land (or reuse) the lakes, then time the floor, the full build and the update build."""
    spec = FleetSpec(SEED, size.vehicles, size.days, UPDATE_DAY, size.sampling)
    world = spec.world()  # vehicles only: the landing child generates the trips
    first, last = world.day_range()[0], world.day_range()[-2]
    print(
        f"\n== {size.name}: {size.days} days x {size.vehicles} vehicles ({first}..{last}, then "
        f"{UPDATE_DAY}), seed {SEED}; lake in {root}",
        flush=True,
    )
    print(
        f"   sampling: AutoPi datapoints every {size.sampling.autopi_s:g}s, kt1 telemetry "
        f"every {size.sampling.kt1_s:g}s while driving (simulator defaults 5s / 30s); "
        "Metrotec fuel levels at each device's 60-300s",
        flush=True,
    )
    initial, updated, duckdb_path = root / "lake", root / "lake-update", root / "fleet.duckdb"
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / "dbt", ignore_errors=True)
    project = project_copy(world, root / "dbt")
    # dbt sees one lake path throughout, as a deployment does (a changed FLEET_LAKE_DIR would
    # also make dbt re-parse the sources): a symlink, moved to the updated lake between builds.
    current = root / "lake-current"
    point(current, initial)
    os.environ.update(dbt_env(current, duckdb_path))
    with (root / "dbt-parse.log").open("w") as log:
        # Warm-up beside the landing (imports, OS caches), as a deploy parses: not timed.
        warm_up = subprocess.Popen(
            [dbt_executable(), "parse", "--project-dir", project, "--profiles-dir", project],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
        )
    landing: Landing = in_child(land_lakes, spec, initial, updated)
    report_landing(landing)
    if warm_up.wait() != 0:
        raise RuntimeError(f"dbt parse failed; see {root / 'dbt-parse.log'}")
    floor_s, rows = scan_floor(initial)
    sizes = lake_sizes(initial, rows)

    cli = dbt_cli(project)
    after_full = root / "fleet-after-full.duckdb"

    def fresh_duckdb() -> None:
        remove_duckdb(duckdb_path)
        point(current, initial)

    def after_full_build() -> None:  # every update starts from the same full build
        remove_duckdb(duckdb_path)
        shutil.copyfile(after_full, duckdb_path)
        point(current, updated)

    fulls = timed_builds(cli, "full build", root / "dbt-full.log", limit_s, repeat, fresh_duckdb)
    full = median_run(fulls)
    if full.nodes:
        print(f"   dbt project: {full.nodes}", flush=True)
    if not all(run.finished for run in fulls):
        print("   one-day update: not run (the full build did not finish)", flush=True)
        return Outcome(size, sizes, floor_s, fulls, [])
    remove_duckdb(after_full)
    shutil.copyfile(duckdb_path, after_full)  # not timed: the state every update starts from
    updates = timed_builds(
        cli, "one-day update", root / "dbt-update.log", limit_s, repeat, after_full_build
    )
    unchanged: list[BuildRun] = []
    if all(run.ok for run in updates):
        unchanged = timed_builds(
            cli, "build with nothing new", root / "dbt-unchanged.log", limit_s, repeat
        )
    remove_duckdb(after_full)
    start_up_s = dbt_start_up(cli, root / "dbt-start-up.log", repeat)
    print(f"   dbt start-up (a build that selects no node): {start_up_s:.1f}s", flush=True)
    if verify and unchanged and all(run.ok for run in unchanged):
        check_against_full_build(cli, root, duckdb_path, limit_s)
    return Outcome(size, sizes, floor_s, fulls, updates, unchanged, start_up_s)


def dbt_start_up(cli: Any, log: Path, repeat: int) -> float:
    """Median wall time of the same `dbt build` selecting no node: dbt's start-up, partial
    parse and exit, the least any build of this project costs on this machine."""
    walls = []
    for _ in range(repeat):
        started = time.perf_counter()
        with log.open("w") as sink, contextlib.redirect_stdout(sink):
            args = [*dbt_build_args(FactsBuildConfig()), "--select", "fleet_bench_no_such_node"]
            cli.cli(args, raise_on_error=False).wait()
        walls.append(time.perf_counter() - started)
    return sorted(walls)[(len(walls) - 1) // 2]


def remove_duckdb(path: Path) -> None:
    for stale in (path, path.with_name(path.name + ".wal")):
        stale.unlink(missing_ok=True)


def timed_builds(
    cli: Any,
    name: str,
    log: Path,
    limit_s: float,
    repeat: int,
    prepare: Callable[[], None] | None = None,
) -> list[BuildRun]:
    """`repeat` timed builds, each after `prepare` (not timed); stops at one that fails."""
    runs: list[BuildRun] = []
    for n in range(repeat):
        if prepare is not None:
            prepare()
        run = dbt_build(cli, log.with_name(f"{log.stem}-{n + 1}{log.suffix}"), limit_s)
        runs.append(run)
        report_build(name if repeat == 1 else f"{name} {n + 1}/{repeat}", run)
        if not run.ok:
            break
    return runs


def median_run(runs: list[BuildRun]) -> BuildRun:
    """The run of median wall time (the lower middle of an even count)."""
    return sorted(runs, key=lambda r: r.wall_s)[(len(runs) - 1) // 2]


def check_against_full_build(cli: Any, root: Path, built: Path, limit_s: float) -> None:
    """Build the updated lake from scratch into another DuckDB file (not timed) and compare
    every model table and view with the incrementally updated one, doubles to 6 decimals."""
    fresh = root / "fleet-verify.duckdb"
    for stale in (fresh, fresh.with_name(fresh.name + ".wal")):
        stale.unlink(missing_ok=True)
    os.environ["FLEET_DUCKDB_PATH"] = str(fresh)
    try:
        run = dbt_build(cli, root / "dbt-verify.log", limit_s)
    finally:
        os.environ["FLEET_DUCKDB_PATH"] = str(built)
    if not run.ok:
        print(f"   verify: the full build of the updated lake {run.status()}", flush=True)
        return
    compare_models(built, fresh)


def compare_models(built: Path, fresh: Path) -> None:
    """Print whether two builds hold the same model tables and views."""
    con = duckdb.connect()
    con.execute("set enable_progress_bar = false")
    # Attached under their own names: dbt's views name the catalog (the file's stem).
    inc, ful = f'"{built.stem}"', f'"{fresh.stem}"'
    con.execute(f"attach '{built}' as {inc} (read_only); attach '{fresh}' as {ful} (read_only)")
    relations = con.execute(
        "select table_name from information_schema.tables where table_catalog = ? "
        "and table_schema = 'main' order by 1",
        [fresh.stem],
    ).fetchall()
    differing = []
    for (name,) in relations:
        columns = con.execute(
            "select column_name, data_type from information_schema.columns where "
            "table_catalog = ? and table_schema = 'main' and table_name = ? "
            "order by ordinal_position",
            [fresh.stem, name],
        ).fetchall()
        select = ", ".join(
            f'round("{c}", 6)' if t in ("DOUBLE", "FLOAT") else f'"{c}"' for c, t in columns
        )
        query = (
            f"select count(*) from (select {select} from {inc}.main.{name} except all "
            f"select {select} from {ful}.main.{name}) union all select count(*) from "
            f"(select {select} from {ful}.main.{name} except all select {select} from "
            f"{inc}.main.{name})"
        )
        extra, missing = (n for (n,) in con.execute(query).fetchall())
        if extra or missing:
            differing.append(f"{name} (+{extra}/-{missing} rows)")
    con.close()
    verdict = "identical" if not differing else "DIFFERENT: " + ", ".join(differing)
    print(
        f"   verify: after the update, {len(relations)} model tables and views vs a full build "
        f"of the updated lake: {verdict}",
        flush=True,
    )


def report_landing(landing: Landing) -> None:
    def shares(seconds: dict[str, float]) -> str:
        return ", ".join(f"{s} {v:.0f}s" for s, v in sorted(seconds.items()))

    initial = (
        f"initial lake in {landing.initial_s:.0f}s on 2 processes ({shares(landing.initial)})"
        if landing.initial
        else "initial lake reused from an earlier run of this size (--keep)"
    )
    print(
        f"   landed ({landing.trips} trips, world in {landing.world_s:.0f}s): {initial}; "
        f"update day into a hard-linked copy in {landing.update_s:.0f}s "
        f"({shares(landing.update)}); not part of any figure",
        flush=True,
    )


def report_build(name: str, run: BuildRun) -> None:
    slowest = ", ".join(f"{m} {s:.1f}s" for m, s in run.slowest)
    print(
        f"   {name}: {run.wall_s:.1f}s, {run.status()}, dbt peak RSS "
        f"{run.peak_rss / 2**30:.1f} GiB" + (f"; slowest models: {slowest}" if slowest else ""),
        flush=True,
    )
    if not run.ok:
        print(f"   (dbt's log: {run.log})", flush=True)


# --- printing ------------------------------------------------------------------------------


def _s(value: float | None, width: int, digits: int = 1) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def verdict(o: Outcome) -> tuple[float | None, str]:
    """update/full on wall time, and whether the goal is met."""
    if o.update is None or not (o.full.finished and o.update.finished):
        return None, "unknown"
    ratio = o.update.wall_s / o.full.wall_s
    return ratio, "met" if ratio <= GOAL else "NOT met"


def print_outcome(o: Outcome) -> None:
    print(f"\n{o.size.name}: raw lake (as the full build read it)")
    header = f"   {'source/table':24} {'rows':>12} {'files':>8} {'MB':>9}"
    print(header)
    print("   " + "-" * (len(header) - 3))
    for table, t in o.lake.items():
        print(f"   {table:24} {t.rows:12,} {t.files:8,} {t.bytes / 1e6:9.1f}")
    total = TableSize(
        sum(t.rows for t in o.lake.values()),
        sum(t.files for t in o.lake.values()),
        sum(t.bytes for t in o.lake.values()),
    )
    print(f"   {'total':24} {total.rows:12,} {total.files:8,} {total.bytes / 1e6:9.1f}")
    print(f"\n{o.size.name}: timings")
    header = (
        f"   {'':34} {'wall s':>8} {'start+parse':>11} {'dbt s':>8} {'models s':>9} "
        f"{'tests s':>8} {'seeds s':>8} {'peak GiB':>8} {'x floor':>8}"
    )
    print(header)
    print("   " + "-" * (len(header) - 3))
    for name, run in (
        ("full build (fresh DuckDB)", o.full),
        ("one-day update", o.update),
        ("build with nothing new", o.unchanged),
    ):
        if run is None:
            print(f"   {name:34} {'not run':>8}")
            continue
        tests = run.node_s.get("test", 0.0) + run.node_s.get("unit_test", 0.0)
        finished = run.finished
        print(
            f"   {name:34} {run.wall_s:8.1f} {_s(run.overhead_s, 11)} {_s(run.dbt_s, 8)} "
            f"{_s(run.node_s.get('model') if finished else None, 9)} "
            f"{_s(tests if finished else None, 8)} "
            f"{_s(run.node_s.get('seed') if finished else None, 8)} "
            f"{run.peak_rss / 2**30:8.1f} {run.wall_s / o.floor_s:8.1f}"
            + ("" if run.ok else f"  ({run.status()})")
        )
    print(f"   {'floor: COUNT(*) over the raw lake':34} {o.floor_s:8.2f}")
    if o.start_up_s is not None:
        print(
            f"   {'dbt start-up (build of no node)':34} {o.start_up_s:8.1f}"
            f"   = {o.start_up_s / o.full.wall_s:.2f} of the full build: no dbt build costs less"
        )
    if max(len(o.fulls), len(o.updates), len(o.unchanged_runs)) > 1:
        samples = "; ".join(
            f"{name} " + " / ".join(f"{r.wall_s:.1f}" for r in runs)
            for name, runs in (
                ("full", o.fulls),
                ("update", o.updates),
                ("nothing new", o.unchanged_runs),
            )
            if runs
        )
        print(f"   every run, wall s (the table shows each's median): {samples}")
    ratio, met = verdict(o)
    if ratio is None:
        print(f"   update / full: unknown (a build did not finish); goal <= {GOAL:.2f}: unknown")
    else:
        assert o.update is not None and o.update.dbt_s and o.full.dbt_s
        print(
            f"   update / full = {ratio:.3f} (dbt-reported {o.update.dbt_s / o.full.dbt_s:.3f}); "
            f"goal <= {GOAL:.2f}: {met}. full / floor = {o.full.wall_s / o.floor_s:.0f}x"
        )
    print(
        "   (wall: the dbt invocation from start to exit, as the schedule pays it; dbt s: "
        "run_results elapsed_time; start+parse: the difference; models/tests/seeds: node "
        "times summed over dbt's 2 threads; peak: RSS of the dbt process, DuckDB included)"
    )


def print_summary(outcomes: list[Outcome]) -> None:
    header = (
        f"{'size':9} {'lake rows':>12} {'files':>8} {'MB':>8} {'full s':>8} {'update s':>9} "
        f"{'upd/full':>8} {'goal':>7} {'floor s':>8} {'full/floor':>10}"
    )
    print("\n" + header)
    print("-" * len(header))
    for o in outcomes:
        ratio, met = verdict(o)
        print(
            f"{o.size.name:9} {sum(t.rows for t in o.lake.values()):12,} "
            f"{sum(t.files for t in o.lake.values()):8,} "
            f"{sum(t.bytes for t in o.lake.values()) / 1e6:8.1f} {o.full.wall_s:8.1f} "
            f"{_s(o.update.wall_s if o.update else None, 9)} {_s(ratio, 8, 2)} {met:>7} "
            f"{o.floor_s:8.2f} {o.full.wall_s / o.floor_s:10.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="90x50,365x200",
        help=f"comma-separated, of {', '.join(SIZES)} (small: a quick smoke)",
    )
    parser.add_argument(
        "--keep",
        help="directory to keep each size's lakes, DuckDB and dbt copy in; an initial lake "
        "landed there for the same size is reused",
    )
    parser.add_argument(
        "--build-limit",
        type=float,
        default=60.0,
        help="minutes after which a dbt build is stopped (the machine is shared)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="after the timed builds, build the updated lake from scratch and check that the "
        "incrementally updated DuckDB holds exactly the same models",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="time each build this many times and report the median run (every update "
        "starts from a copy of the same full build; the machine is shared and noisy)",
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    names = [n.strip() for n in args.sizes.split(",") if n.strip()]
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {', '.join(SIZES)}")
    started = time.perf_counter()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="facts-bench-") as tmp:
        base = Path(args.keep).resolve() if args.keep else Path(tmp)
        for name in names:
            outcome = run_size(
                SIZES[name], base / name, args.build_limit * 60, args.verify, args.repeat
            )
            print_outcome(outcome)
            outcomes.append(outcome)
    if len(outcomes) > 1:
        print_summary(outcomes)
    print(f"\nbench wall time {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
