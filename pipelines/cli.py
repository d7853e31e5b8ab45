"""The `fleet` command: demo, simulate, dev, sql."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
SIM_SEED = 7
SIM_VEHICLES = 12
# The shipped seeds (vehicle_map, autopi_vehicle_tanks) cover this many vehicles of the seed
# SIM_SEED fleet, so simulated demos, tests and benchmarks of up to this size resolve identities.
SEED_VEHICLES = 200


def _world(days: int, vehicles: int = SIM_VEHICLES, seed: int = SIM_SEED):  # noqa: ANN202
    from pipelines.simulator.world import World

    # The world runs up to today so that the last `days` complete UTC days are all there.
    return World(seed=seed, vehicles=vehicles, end_day=datetime.now(UTC).date(), days=days + 1)


def _print_env(env: dict[str, str]) -> None:
    for key, value in env.items():
        console.print(f"export {key}={value}", highlight=False, soft_wrap=True)


def _ensure_dagster_home(home: Path) -> None:
    """A persistent instance so the UI shows the demo's runs, with the settings every instance
    of this project needs (run monitoring, pools). A `dagster.yaml` this command wrote earlier
    is brought up to date; one a user wrote is left alone (loading the code reports what it
    lacks)."""
    from pipelines.runs import instance_yaml

    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    ours = ("# Written by fleet-pipelines", "# Run, event and schedule storage in SQLite")
    if not config.exists() or config.read_text().startswith(ours):
        config.write_text(instance_yaml())


def cmd_dagster_yaml(args: argparse.Namespace) -> int:
    """Print the `dagster.yaml` settings every Dagster instance running this project needs."""
    from pipelines.runs import instance_yaml

    print(instance_yaml(), end="")
    return 0


# --- fleet simulate ---------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    from pipelines.simulator.serve import DEFAULT_PORTS, start_all

    world = _world(args.days, args.vehicles, args.seed)
    rate = tuple(float(x) for x in args.avl_rate.split("/"))
    ports = {
        k: (v + args.port_offset if not args.any_port else 0) for k, v in DEFAULT_PORTS.items()
    }
    with start_all(world, avl_rate=(int(rate[0]), rate[1]), ports=ports) as sims:
        env = sims.env()
        console.print(
            f"[bold]Simulating {len(world.vehicles)} vehicles, "
            f"{world.start_day}..{world.end_day}[/] (seed {args.seed}; AVL limit "
            f"{args.avl_rate} requests/seconds, where the real API allows 10/60)."
        )
        console.print("Point the pipeline at it with:")
        _print_env(env)
        if args.env_file:
            Path(args.env_file).write_text("".join(f"{k}={v}\n" for k, v in env.items()))
            console.print(f"(also written to {args.env_file})")
        console.print("Ctrl-C to stop.")
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on TERM too
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


# --- fleet demo -------------------------------------------------------------------------------


def _materialize(defs, selection, tags: dict[str, str] | None, instance, log: Path):  # noqa: ANN001, ANN202
    """Run quietly: Dagster's console log and dbt's output go to `log`, the screen stays calm.
    The raw assets' anomaly checks run with them, as in a scheduled run."""
    from dagster import materialize

    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh, contextlib.redirect_stdout(fh):
        return materialize(
            [*defs.assets, *(defs.asset_checks or [])],
            resources=defs.resources,
            selection=selection,
            tags=tags,
            instance=instance,
            run_config=quiet,
            raise_on_error=False,
        )


def _run_in_location(
    selection: Any,
    tags: dict[str, str] | None,
    instance: Any,
    log: Path,
    run_config: dict[str, Any] | None = None,
) -> Any:
    """Run like the UI does: the implicit asset job of this code location, recorded with the
    location's origin (`fleet_pipelines` in workspace.yaml), so the UI lists the run under the
    location, on its timeline, and can re-execute it (a `materialize()` run is an ephemeral job
    the UI cannot). In this process, quietly: Dagster's console log and dbt's output go to
    `log`. The selected assets' checks run with them, as in a schedule's run."""
    from dagster import AssetSelection
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.execution.api import execute_run
    from dagster._core.remote_origin import (
        ManagedGrpcPythonEnvCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    repo = ReconstructableRepository.for_module(DEFINITIONS_MODULE, "defs", working_directory=None)
    repo_def = repo.get_definition()
    keys = AssetSelection.from_coercible(selection).resolve(repo_def.asset_graph)
    job_def = repo_def.get_implicit_job_def_for_assets(keys)
    if job_def is None:  # a selection whose partitions cannot share one job: a bug in the demo
        raise RuntimeError(f"no job of {DEFINITIONS_MODULE} holds all of {sorted(keys)}")
    job = repo.get_reconstructable_job(job_def.name)
    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name=DEFINITIONS_MODULE,
            working_directory=str(Path.cwd()),
        ),
        location_name=CODE_LOCATION,
    )
    run_config = {
        **(run_config or {}),
        "execution": {"config": {"in_process": {}}},
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
    }
    run = instance.create_run_for_job(
        job_def=job_def,
        run_config=run_config,
        tags=tags,
        asset_selection=frozenset(keys),
        job_code_origin=job.get_python_origin(),
        remote_job_origin=RemoteJobOrigin(
            RemoteRepositoryOrigin(location, repo_def.name), job_def.name
        ),
    )
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh, contextlib.redirect_stdout(fh):
        return execute_run(job, run, instance, raise_on_error=False)


DEFINITIONS_MODULE = "pipelines.definitions"
CODE_LOCATION = "fleet_pipelines"  # workspace.yaml and pyproject name it so


def failure_lines(result: Any) -> list[str]:
    """One line per failed step of an in-process run: the user-facing reason, not a trace."""
    lines = []
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if data.user_failure_data and data.user_failure_data.description:
            lines.append(data.user_failure_data.description)
        elif data.error:
            lines.append(data.error.message.strip().splitlines()[0])
    return lines or ["run failed (see the Dagster UI for its logs)"]


def cmd_demo(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from pipelines.simulator.serve import start_all

    data_dir = Path(args.data_dir).resolve()
    os.environ["FLEET_LAKE_DIR"] = str(data_dir / "lake")
    os.environ["FLEET_FACTS_CATALOG"] = f"sqlite:{data_dir / 'fleet_catalog.sqlite'}"
    os.environ["FLEET_FACTS_DATA_PATH"] = str(data_dir / "facts")
    os.environ["DAGSTER_HOME"] = str(data_dir / "dagster")
    os.environ["FLEET_REPORT_DIR"] = str(data_dir / "reports")
    _ensure_dagster_home(Path(os.environ["DAGSTER_HOME"]))
    last = datetime.now(UTC).date() - timedelta(days=1)
    first = last - timedelta(days=args.days - 1)
    world = _world(args.days, args.vehicles)
    console.rule("[bold]fleet-pipelines demo")
    console.print(
        f"Simulated fleet: {len(world.vehicles)} vehicles; "
        f"pulling {first}..{last} ({args.days} days).\n"
        "The AVL API allows 10 requests per 60 s; the simulator scales that to "
        "[bold]10 per 3 s[/] so the demo is quick, and the pipeline is told the same limit.\n"
        "Metrotec states no limit; the pipeline paces itself at 5 requests/s, the demo at 20/s.\n"
        "AutoPi exports a trip 10 minutes after it ends, so the latest trips show as pending."
    )
    started = time.monotonic()
    # A short long-poll so the kt1 drain ends promptly once the queue is empty.
    with start_all(world, kt1_long_poll_s=1.0) as sims:
        os.environ.update(sims.env())
        # The demo's partitions start where its data does, not a thousand empty days earlier.
        os.environ["FLEET_START_DATE"] = first.isoformat()
        # Metrotec states no rate limit and the pipeline paces itself at 5/s; the demo at 20/s.
        os.environ["METROTEC_RATE_LIMIT"] = "20/1"
        os.environ["KT1_DRAIN_SECONDS"] = "60"  # the drain stops as soon as the queue is empty
        instance = DagsterInstance.get()
        steps = demo_steps(first, last)
        for step in steps:
            name, label, summarize = step.name, step.label, step.summarize
            t0 = time.monotonic()
            log = data_dir / "logs" / f"demo-{name}.log"
            run_tags = {
                **(step.tags or {}),
                "fleet/demo_step": name,
                "fleet/started_by": "fleet demo",
            }
            with console.status(f"{label} ..."):
                result = _run_in_location(step.selection, run_tags, instance, log, step.run_config)
            if not result.success:
                console.print(f"[red]✗ {label} failed[/] (full log: {log}):")
                for line in failure_lines(result):
                    console.print(f"  {line}", highlight=False)
                return 1
            console.print(
                f"[green]✓[/] {label} in {time.monotonic() - t0:.1f}s  {summarize(result)}"
            )
    _print_fleet_summary(first, last)
    console.print(f"\nDone in {time.monotonic() - started:.0f}s. Lake: {data_dir / 'lake'}")
    from pipelines.report.cli import latest_report_path

    console.print(f"Fleet report (open in a browser): {latest_report_path()}", soft_wrap=True)
    console.print(
        "Query the facts:   "
        '.venv/bin/fleet sql "select * from fleet_daily order by day desc limit 10"\n'
        "Open the Dagster UI on the same data and a live simulator:   make dev-sim   "
        "(then http://127.0.0.1:3000)"
    )
    return 0


class DemoStep(NamedTuple):
    """One run of `fleet demo`: what it materializes, with which tags, and its status line."""

    name: str
    label: str
    selection: Any
    tags: dict[str, str] | None
    summarize: Callable[[Any], str]
    run_config: dict[str, Any] | None = None


def demo_steps(first: date, last: date, dbt_selection: Any = "kind:dbt") -> list[DemoStep]:
    """Every source for the days first..last, then dbt: the demo's order (shared with the
    analytics doc's reference build, which selects the dbt models without their tests)."""
    from dagster import AssetKey

    from pipelines.report.cli import run_summary as report_run_summary
    from pipelines.sources.autopi import assets as autopi_assets
    from pipelines.sources.kt1 import assets as kt1_assets
    from pipelines.sources.metrotec import assets as metrotec_assets

    day_range = {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
    return [
        DemoStep(
            "avl-trips", "AVL trips", [AssetKey(["raw", "avl", "trips"])], day_range, _summary_of
        ),
        DemoStep(
            "metrotec",
            "Metrotec vehicles, route log, stops, refuels, fuel levels",
            [metrotec_assets.VEHICLES_KEY, *metrotec_assets.TABLE_KEYS.values()],
            day_range,
            metrotec_assets.run_summary,
        ),
        DemoStep(
            "kt1-stream",
            "kt1 export stream (drain until empty)",
            list(kt1_assets.ASSET_KEYS.values()),
            None,
            kt1_assets.summarize_drain,
        ),
        DemoStep(
            "autopi-exports",
            "AutoPi trip exports (land, then clear upstream)",
            [AssetKey(["raw", "autopi", "trips"]), AssetKey(["raw", "autopi", "datapoints"])],
            None,
            autopi_assets.summary_line,
        ),
        # What `fleet facts build --from first --to last` runs: the fact assets, these days.
        DemoStep(
            "dbt-build",
            "facts build (staging, facts, marts by day)",
            dbt_selection,
            day_range,
            lambda r: "",
        ),
        DemoStep(
            "report",
            "fleet report (one offline HTML page)",
            [AssetKey("fleet_report")],
            None,
            report_run_summary,
            # The period is the demo's days, not the default 28 (half of which would be empty).
            {"ops": {"fleet_report": {"config": {"days": (last - first).days + 1}}}},
        ),
    ]


def _summary_of(result) -> str:  # noqa: ANN001
    """AVL's line: rows summed over the run's days; the API figures are the run's (on each)."""
    events = [e.materialization.metadata for e in result.get_asset_materialization_events()]
    metas = [{k: v.value for k, v in m.items()} for m in events]
    metas = [m for m in metas if "api_requests" in m]
    if not metas:
        return ""
    meta = metas[0]
    line = (
        f"rows={sum(m['rows'] for m in metas)} requests={meta['api_requests']} "
        f"429s={meta['http_429s']} limit-wait={meta['rate_limit_wait_s']:.1f}s"
    )
    if meta.get("null_trip_start_rows"):
        line += f"  ({meta['null_trip_start_rows']} rows without trip_start not loaded)"
    return line


def _print_fleet_summary(first: date, last: date) -> None:
    from pipelines.facts import connect

    con = connect(read_only=True)
    try:
        rows = con.execute(
            """
            select f.vehicle_id, coalesce(any_value(v.display_name), f.vehicle_id),
                   sum(trips), sum(distance_km), sum(driving_s) / 3600, sum(idle_s) / 3600,
                   sum(idle_s) / nullif(sum(driving_s) + sum(idle_s), 0), sum(fuel_used_l),
                   sum(refuels), sum(refuel_l), any_value(v.sources)
            from fleet_daily f
            left join (
                select vehicle_id, min(display_name) as display_name,
                       string_agg(distinct case source
                           when 'autopi' then 'P' when 'avl' then 'V' when 'kt1' then 'K'
                           when 'metrotec' then 'M' else source end, '') as sources
                from dim_vehicles group by vehicle_id
            ) v using (vehicle_id)
            where day between ? and ?
            group by f.vehicle_id order by f.vehicle_id
            """,
            [first, last],
        ).fetchall()
    finally:
        con.close()
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title=f"Fleet summary {first}..{last}",
        caption="from fleet_daily; a trip or refuel several sources report is counted once; "
        "src: P AutoPi, V AVL, K kt1, M Metrotec; refs, ref l = refuels and litres",
    )
    table.add_column("vehicle", min_width=17)
    table.add_column("src")
    for col in ("trips", "km", "idle h", "idle%", "fuel l", "refs", "ref l"):
        table.add_column(col, justify="right", min_width=len(col))
    for vid, name, trips, km, _driving_h, idle_h, share, fuel, refuels, refuel_l, sources in rows:
        table.add_row(
            f"{vid} {name}",
            sources or "-",
            f"{trips}",
            f"{km:,.0f}",
            f"{idle_h:.1f}",
            f"{share * 100:.1f}" if share is not None else "-",
            f"{fuel:,.1f}" if fuel is not None else "-",
            f"{refuels}" if refuels is not None else "-",
            f"{refuel_l:,.1f}" if refuel_l is not None else "-",
        )
    console.print(table)


# --- fleet dev --------------------------------------------------------------------------------


def cmd_dev(args: argparse.Namespace) -> int:
    """`dagster dev` on the configured sources, or on a live simulator with --simulate."""
    from pipelines.simulator.serve import DEFAULT_PORTS, start_all

    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(Path("data/dagster").resolve()))
    _ensure_dagster_home(Path(env["DAGSTER_HOME"]))
    dagster = Path(sys.executable).parent / "dagster"
    command = [str(dagster), "dev", "-w", "workspace.yaml"]
    if not args.simulate:
        return subprocess.call(command, env=env)
    world = _world(args.days)
    with start_all(world, ports=DEFAULT_PORTS) as sims:
        env.update(sims.env())
        env.setdefault("FLEET_LAKE_DIR", str(Path("data/lake").resolve()))
        env.setdefault(
            "FLEET_FACTS_CATALOG", f"sqlite:{Path('data/fleet_catalog.sqlite').resolve()}"
        )
        env.setdefault("FLEET_FACTS_DATA_PATH", str(Path("data/facts").resolve()))
        # The simulated world's partitions start where its data does (as `fleet demo`'s).
        env.setdefault("FLEET_START_DATE", world.start_day.isoformat())
        console.print("Simulator running; Dagster UI on http://127.0.0.1:3000 (Ctrl-C stops both).")
        try:
            return subprocess.call(command, env=env)
        except KeyboardInterrupt:
            return 0


# --- fleet webhook / fleet autopi reexport ------------------------------------------------


def cmd_webhook(args: argparse.Namespace) -> int:
    """The AutoPi `trip_export_finished` receiver; the sensor picks signals up at its next tick."""
    from pipelines.settings import load_env_file
    from pipelines.sources.autopi.webhook import serve_webhook

    load_env_file()
    return int(serve_webhook(args.host, args.port, None, Path(args.state) if args.state else None))


def cmd_autopi_reexport(args: argparse.Namespace) -> int:
    """Re-run AutoPi exports of trips whose export is gone, and land them when done."""
    from pipelines.settings import load_env_file
    from pipelines.sources.autopi.assets import reexport_trips, summary_line

    load_env_file()
    result = reexport_trips(args.trip_ids, wait_s=args.wait)
    console.print(summary_line(result), highlight=False)
    if not result.success:
        for line in failure_lines(result):
            console.print(f"[red]{line}[/]", highlight=False)
        return 1
    return 0


# --- fleet sql --------------------------------------------------------------------------------


def cmd_sql(args: argparse.Namespace) -> int:
    import duckdb

    from pipelines.facts import FactsError, connect
    from pipelines.settings import get_settings, load_env_file

    load_env_file()
    for warning in get_settings().retired_warnings():
        console.print(f"[yellow]{warning}[/]", highlight=False)
    try:
        con = connect(read_only=True, latest=args.latest)
    except FactsError as exc:
        # One line, however narrow the terminal or pipe; brackets in paths are not markup.
        console.print(f"[red]{escape(str(exc))}[/]", highlight=False, soft_wrap=True)
        return 1
    try:
        relation = con.sql(args.query)
        if relation is None:
            return 0
        columns = relation.columns
        rows = relation.fetchmany(args.limit)
    except duckdb.Error as exc:
        console.print(f"[red]{type(exc).__name__}: {str(exc).splitlines()[0]}[/]", highlight=False)
        return 1
    finally:
        con.close()
    table = Table(*columns)
    for row in rows:
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    console.print(table)
    return 0


def cmd_facts_build(args: argparse.Namespace) -> int:
    """Build the fact partitions of a day range (default: every day with raw data) in one
    Dagster run recorded in DAGSTER_HOME; one line, non-zero on failure."""
    from dagster import DagsterInstance

    from pipelines.facts_build import build_facts

    try:
        first = date.fromisoformat(args.from_day) if args.from_day else None
        last = date.fromisoformat(args.to_day) if args.to_day else None
    except ValueError as exc:
        print(f"fleet facts build: {exc} (want YYYY-MM-DD)", file=sys.stderr)
        return 2
    if first and last and last < first:
        print(f"fleet facts build: --to {last} is before --from {first}", file=sys.stderr)
        return 2
    log = Path(os.environ.get("FLEET_LOG_DIR", "data/logs")) / "facts-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        ok, line = build_facts(DagsterInstance.get(), first, last)
    print(line if ok else f"{line} (log: {log})", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="simulate a fleet, land it, build the facts, print a summary"
    )
    demo.add_argument("--days", type=int, default=14)
    demo.add_argument("--vehicles", type=int, default=SIM_VEHICLES)
    demo.add_argument("--data-dir", default="data")
    demo.set_defaults(func=cmd_demo)

    sim = sub.add_parser("simulate", help="serve the four simulated APIs and print their env vars")
    sim.add_argument("--days", type=int, default=14)
    sim.add_argument("--vehicles", type=int, default=SIM_VEHICLES)
    sim.add_argument("--seed", type=int, default=SIM_SEED)
    sim.add_argument(
        "--avl-rate", default="10/3", help="AVL sliding window N/SECONDS (real: 10/60)"
    )
    sim.add_argument("--port-offset", type=int, default=0, help="shift the default ports 8701-8704")
    sim.add_argument("--any-port", action="store_true", help="use free ports instead of 8701-8704")
    sim.add_argument("--env-file", help="also write the variables to this file")
    sim.set_defaults(func=cmd_simulate)

    dev = sub.add_parser("dev", help="dagster dev on this project")
    dev.add_argument("--simulate", action="store_true", help="against a live simulator")
    dev.add_argument("--days", type=int, default=14)
    dev.set_defaults(func=cmd_dev)

    dagster_yaml = sub.add_parser(
        "dagster-yaml", help="print the dagster.yaml settings this project needs"
    )
    dagster_yaml.set_defaults(func=cmd_dagster_yaml)

    hook = sub.add_parser("webhook", help="receive AutoPi trip_export_finished signals")
    hook.add_argument("--host", default="127.0.0.1")
    hook.add_argument("--port", type=int, default=8765)
    hook.add_argument("--state", help="signal ledger (default: the AutoPi state in the lake)")
    hook.set_defaults(func=cmd_webhook)

    autopi = sub.add_parser("autopi", help="AutoPi maintenance")
    autopi_sub = autopi.add_subparsers(dest="autopi_command", required=True)
    reexport = autopi_sub.add_parser("reexport", help="re-run exports of trips and land them")
    reexport.add_argument("trip_ids", nargs="+", metavar="TRIP_ID")
    reexport.add_argument("--wait", type=float, default=900.0, help="seconds to wait for exports")
    reexport.set_defaults(func=cmd_autopi_reexport)

    facts = sub.add_parser("facts", help="the facts (dbt models) by UTC day")
    facts_sub = facts.add_subparsers(dest="facts_command", required=True)
    build = facts_sub.add_parser(
        "build", help="build the facts of every day with raw data, or of --from..--to"
    )
    build.add_argument("--from", dest="from_day", metavar="YYYY-MM-DD")
    build.add_argument("--to", dest="to_day", metavar="YYYY-MM-DD")
    build.set_defaults(func=cmd_facts_build)

    from pipelines.report.cli import add_parser as add_report_parser

    add_report_parser(sub)
    sql = sub.add_parser("sql", help="query the facts (as of the last complete build)")
    sql.add_argument("query")
    sql.add_argument("--limit", type=int, default=200)
    sql.add_argument(
        "--latest", action="store_true", help="the newest commit, even of a build in progress"
    )
    sql.set_defaults(func=cmd_sql)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
