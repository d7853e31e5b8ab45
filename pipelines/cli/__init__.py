"""The `fleet` command: demo, simulate, dev, report, sql, facts build, webhook, autopi."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pipelines.cli.commands import (
    cmd_autopi_reexport,
    cmd_dagster_yaml,
    cmd_facts_build,
    cmd_sql,
    cmd_webhook,
)
from pipelines.cli.demo import (
    SEED_VEHICLES,
    SIM_SEED,
    SIM_VEHICLES,
    cmd_demo,
    cmd_dev,
    cmd_simulate,
)
from pipelines.cli.report import add_parser as add_report_parser
from pipelines.runner import failure_lines

__all__ = ["SEED_VEHICLES", "SIM_SEED", "SIM_VEHICLES", "failure_lines", "main"]


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
    dagster_yaml.add_argument(
        "--postgres",
        action="store_true",
        help="print the whole dagster.yaml of an instance whose storage is on Postgres "
        "(deploy/dagster.yaml)",
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
