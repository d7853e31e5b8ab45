"""The `fleet` commands around the pipelines: dagster-yaml, webhook, autopi reexport, sql,
facts build."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from pipelines.cli.console import console

if TYPE_CHECKING:
    from dagster import AssetsDefinition, DagsterInstance

# The Dagster definitions load (and parse the dbt project) only in the commands that run them:
# `fleet sql` and `fleet webhook` start in a fraction of that.


def cmd_dagster_yaml(args: argparse.Namespace) -> int:
    """Print the `dagster.yaml` settings every Dagster instance running this project needs;
    with `--postgres`, the whole file of an instance whose storage is on Postgres (what
    deploy/dagster.yaml holds), built from the same settings so that the two never drift."""
    from pipelines.runs import instance_yaml

    print(postgres_instance_yaml() if getattr(args, "postgres", False) else instance_yaml(), end="")
    return 0


POSTGRES_STORAGE: dict[str, Any] = {
    "postgres": {
        "postgres_db": {
            "hostname": {"env": "DAGSTER_PG_HOST"},
            "port": {"env": "DAGSTER_PG_PORT"},
            "username": {"env": "DAGSTER_PG_USER"},
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "db_name": {"env": "DAGSTER_PG_DB"},
            # SQLAlchemy 2.1 no longer picks psycopg2 for a bare `postgresql` URL.
            "scheme": "postgresql+psycopg2",
        }
    }
}
"""Runs, event logs and schedule/sensor state in one Postgres database, read from the
environment so that no password is written in the file."""


def postgres_instance_yaml() -> str:
    """The `dagster.yaml` of an instance shared by several machines: `POSTGRES_STORAGE` plus
    the settings `fleet dagster-yaml` prints."""
    import yaml

    from pipelines.runs import INSTANCE_SETTINGS

    return (
        "# Written by `fleet dagster-yaml --postgres` (fleet-pipelines): a Dagster instance whose\n"
        "# runs, event logs and schedule/sensor state are in Postgres, so that the webserver, the\n"
        "# daemon, every run and every Celery worker, on any machine, share them. The server is\n"
        "# named by DAGSTER_PG_HOST, DAGSTER_PG_PORT, DAGSTER_PG_USER, DAGSTER_PG_PASSWORD (may\n"
        "# be empty where the server trusts the client) and DAGSTER_PG_DB. Run monitoring notices\n"
        "# runs that die (their heartbeat stops) and frees their pools; runs wait for a pool in\n"
        "# the queue, not in a process.\n"
        + yaml.safe_dump({"storage": POSTGRES_STORAGE, **INSTANCE_SETTINGS}, sort_keys=False)
    )


# --- fleet simulate ---------------------------------------------------------------------------


# --- fleet webhook / fleet autopi reexport ------------------------------------------------


def cmd_webhook(args: argparse.Namespace) -> int:
    """The AutoPi `trip_export_finished` receiver; the sensor picks signals up at its next tick."""
    from pipelines.settings import load_env_file
    from pipelines.sources.autopi.webhook import serve_webhook

    load_env_file()
    return int(serve_webhook(args.host, args.port, None, Path(args.state) if args.state else None))


def cmd_autopi_reexport(args: argparse.Namespace) -> int:
    """Re-run AutoPi exports of trips whose export is gone, and land them when done."""
    from pipelines.cli.summaries import autopi_line
    from pipelines.runner import failure_lines
    from pipelines.settings import load_env_file

    load_env_file()
    result = reexport_trips(args.trip_ids, wait_s=args.wait)
    console.print(autopi_line(result), highlight=False)
    if not result.success:
        for line in failure_lines(result):
            console.print(f"[red]{line}[/]", highlight=False)
        return 1
    return 0


def reexport_trips(trip_ids: Sequence[str], *, wait_s: float = 900.0, instance: Any = None) -> Any:
    """What `fleet autopi reexport TRIP_ID...` runs: the drain with re-exports, in process."""
    from dagster import AssetSelection, RunConfig, materialize

    from pipelines.definitions import build_defs
    from pipelines.sources.autopi.assets import (
        DATAPOINTS_KEY,
        OP_NAME,
        TRIPS_KEY,
        AutoPiDrainConfig,
    )

    defs = build_defs()
    return materialize(
        list(defs.assets or []),
        resources=defs.resources,
        selection=AssetSelection.assets(TRIPS_KEY, DATAPOINTS_KEY),
        run_config=RunConfig(
            ops={
                OP_NAME: AutoPiDrainConfig(reexport_trip_ids=list(trip_ids), reexport_wait_s=wait_s)
            }
        ),
        instance=instance,
        raise_on_error=False,
    )


# --- fleet sql / fleet facts build -------------------------------------------------------


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


def build_facts(
    instance: DagsterInstance, first: date | None = None, last: date | None = None
) -> tuple[bool, str]:
    """Materialize every dbt asset for first..last (default: every day with raw data), in
    DAGSTER_HOME's instance like any run; (success, one line)."""
    from dagster import materialize

    from pipelines.definitions import build_defs, daily_partitions
    from pipelines.facts_build import FactRange, fact_ranges, lake_days, raw_keys
    from pipelines.settings import get_settings

    settings = get_settings()
    partitions = daily_partitions(settings)
    defs = build_defs(settings)
    dbt = [a for a in defs.assets if isinstance(a, AssetsDefinition) and _is_dbt(a)]
    if first is None or last is None:
        tables = [k.to_user_string().removeprefix("raw/") for k in raw_keys(dbt)]
        days = lake_days(settings.lake_dir, tables)
        if not days:
            return False, f"no raw data in {settings.lake_dir}: land some first"
        first, last = first or min(days), last or max(days)
    ranges = fact_ranges(
        [first + timedelta(days=i) for i in range((last - first).days + 1)], partitions
    )
    if not ranges:
        return False, f"{first}..{last} has no daily partition (FLEET_START_DATE..today)"
    span = FactRange(ranges[0].first, ranges[-1].last)
    result = materialize(
        list(defs.assets),
        resources=defs.resources,
        selection=[k for a in dbt for k in a.keys],
        tags=span.tags(),
        instance=instance,
        raise_on_error=False,
    )
    if result.success:
        return True, f"facts built for {span} (run {result.run_id})"
    failed = [e.step_key for e in result.get_step_failure_events()]
    return False, f"facts build of {span} failed (run {result.run_id}): {', '.join(failed)}"


def _is_dbt(assets: AssetsDefinition) -> bool:
    from pipelines.dbt import FACTS_ASSETS

    return assets.op.name == FACTS_ASSETS
