"""`fleet demo`, `fleet simulate`, `fleet dev`: the simulated fleet, landed and shown."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from rich import box
from rich.table import Table

from pipelines.cli.console import console
from pipelines.runner import failure_lines, run_in_location

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
                result = run_in_location(step.selection, run_tags, instance, log, step.run_config)
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
    from pipelines.cli.report import latest_report_path

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
    from pipelines.asset_metadata import raw_key
    from pipelines.cli import summaries
    from pipelines.cli.report import run_summary as report_run_summary
    from pipelines.report.assets import REPORT_KEY
    from pipelines.sources.kt1 import assets as kt1_assets
    from pipelines.sources.metrotec import assets as metrotec_assets

    day_range = {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
    return [
        DemoStep(
            "avl-trips",
            "AVL trips",
            [raw_key("avl", "trips")],
            day_range,
            summaries.avl_line,
        ),
        DemoStep(
            "metrotec",
            "Metrotec vehicles, route log, stops, refuels, fuel levels",
            [metrotec_assets.VEHICLES_KEY, *metrotec_assets.TABLE_KEYS.values()],
            day_range,
            summaries.metrotec_line,
        ),
        DemoStep(
            "kt1-stream",
            "kt1 export stream (drain until empty)",
            list(kt1_assets.ASSET_KEYS.values()),
            None,
            summaries.kt1_line,
        ),
        DemoStep(
            "autopi-exports",
            "AutoPi trip exports (land, then clear upstream)",
            [raw_key("autopi", "trips"), raw_key("autopi", "datapoints")],
            None,
            summaries.autopi_line,
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
            [REPORT_KEY],
            None,
            report_run_summary,
            # The period is the demo's days, not the default 28 (half of which would be empty).
            {"ops": {"fleet_report": {"config": {"days": (last - first).days + 1}}}},
        ),
    ]


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
