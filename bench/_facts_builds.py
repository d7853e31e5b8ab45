"""The two builds the facts bench compares: the DuckLake build as a Dagster run invokes dbt,
and commit 5f7aa80's single-file build, with the projects, seeds and lake links they use."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from _dbt_calls import Build, Invocation, environ, run_dbt

from pipelines.dbt import (
    DBT_PROJECT_DIR,
    FactsBuildConfig,
    dbt_build_args,
    dbt_executable,
    default_memory_limit,
    ensure_manifest,
)
from pipelines.facts import FactsCatalog
from pipelines.simulator.world import World

OLD_COMMIT = "5f7aa80"
OLD_BUILD_ARGS = ["build", "--exclude-resource-type", "unit_test"]  # its dbt_build_args()
PROJECT_COPY_IGNORE = shutil.ignore_patterns("target", "logs", "dbt_packages", ".user.yml")


def dagster_steps() -> list[tuple[str, list[str]]]:
    """(step key, dbt selection) of each step of a Dagster run of every fact asset, in order:
    the execution plan of `build_dbt_assets`' two definitions, each step's assets as the
    fully-qualified names dagster-dbt passes to `--select`."""
    from dagster import DailyPartitionsDefinition, Definitions
    from dagster._core.execution.api import create_execution_plan

    from pipelines.dbt import build_dbt_assets, dbt_resource

    manifest = json.loads(ensure_manifest().read_text())
    fqn = {
        node["name"]: ".".join(node["fqn"])
        for node in manifest["nodes"].values()
        if node["resource_type"] in ("model", "seed", "snapshot")
    }
    with tempfile.TemporaryDirectory() as scratch:
        catalog = FactsCatalog.of(f"sqlite:{scratch}/plan.sqlite", f"{scratch}/plan")
        assets = build_dbt_assets(
            Path(scratch), catalog, DailyPartitionsDefinition(start_date="2026-01-01")
        )
    job = Definitions(assets=assets, resources={"dbt": dbt_resource()})
    plan = create_execution_plan(job.resolve_implicit_global_asset_job_def())
    steps = []
    for step in plan.get_steps_to_execute_in_topo_order():
        names = sorted(
            fqn[o.properties.asset_key.path[-1]]
            for o in step.step_outputs
            if o.properties is not None and o.properties.asset_key is not None
        )
        if names:
            steps.append((step.key, names))
    return steps


def window_args(first: date, last: date) -> list[str]:
    """`dbt_build_args` of a run of the partitions first..last (the run's time window)."""
    from dagster import TimeWindow

    def midnight(day: date) -> datetime:
        return datetime(day.year, day.month, day.day, tzinfo=UTC)

    return dbt_build_args(
        FactsBuildConfig(), TimeWindow(midnight(first), midnight(last + timedelta(days=1)))
    )


@dataclass
class NewBuild:
    """The DuckLake build as a Dagster run of every fact asset invokes dbt."""

    cli: Any
    env: dict[str, str]
    steps: list[tuple[str, list[str]]]
    logs: Path
    limit_s: float

    def build(self, name: str, first: date, last: date) -> Build:
        runs: list[Invocation] = []
        with environ(self.env, drop=("PYTHONPATH",)):
            for key, selection in self.steps:
                args = [*window_args(first, last), "--select", " ".join(selection)]
                log = self.logs / f"{name}-{key}.log"
                runs.append(run_dbt(self.cli, key, args, log, self.limit_s))
                if not runs[-1].ok:
                    break
        return Build(name, runs)


@dataclass
class OldBuild:
    """Commit 5f7aa80's single-file build: one `dbt build`, its ledgers finding what changed."""

    cli: Any
    env: dict[str, str]
    logs: Path
    limit_s: float

    def build(self, name: str) -> Build:
        drop = ("FLEET_FACTS_CATALOG", "FLEET_FACTS_DATA_PATH", "FLEET_FACTS_DBT_THREADS")
        with environ(self.env, drop=drop):
            log = self.logs / f"{name}.log"
            return Build(name, [run_dbt(self.cli, "build", OLD_BUILD_ARGS, log, self.limit_s)])


def write_seeds(world: World, seeds: Path) -> None:
    """Seeds that map this world's vehicles (the shipped ones cover the simulator's 200)."""
    with (seeds / "vehicle_map.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["source", "source_vehicle_id", "vehicle_id", "display_name"])
        writer.writeheader()
        writer.writerows(world.identity_rows())
    with (seeds / "autopi_vehicle_tanks.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source_vehicle_id", "tank_l"])
        writer.writerows((v.autopi_device_id, f"{v.tank_l:g}") for v in world.vehicles_of("autopi"))


def new_project(world: World, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(DBT_PROJECT_DIR, target, ignore=PROJECT_COPY_IGNORE)
    write_seeds(world, target / "seeds")
    return target


def old_project(world: World, target: Path) -> Path:
    """5f7aa80's dbt_models/ and pipelines/lake_listing.py in `target`; its project dir."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", OLD_COMMIT, "dbt_models", "pipelines/lake_listing.py"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    write_seeds(world, target / "dbt_models" / "seeds")
    return target / "dbt_models"


def old_env(lake: Path, duckdb_path: Path, pythonpath: Path) -> dict[str, str]:
    """5f7aa80's `dbt_env`, with its lake_listing plugin found first on PYTHONPATH."""
    return {
        "FLEET_LAKE_DIR": str(lake),
        "FLEET_DUCKDB_PATH": str(duckdb_path),
        "FLEET_DUCKDB_MEMORY_LIMIT": os.environ.get("FLEET_DUCKDB_MEMORY_LIMIT")
        or default_memory_limit(),
        "DBT_LOG_LEVEL_FILE": os.environ.get("DBT_LOG_LEVEL_FILE") or "warn",
        "PYTHONPATH": os.pathsep.join(
            [str(pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }


def start_parse(project: Path, env: dict[str, str], drop: tuple[str, ...], log: Path) -> Any:
    """`dbt parse` into the project's target (the partial parse every build copies), not timed."""
    full = {k: v for k, v in os.environ.items() if k not in drop} | env
    full["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    with log.open("w") as sink:
        return subprocess.Popen(
            [dbt_executable(), "parse", "--project-dir", project, "--profiles-dir", project],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=full,
        )


def point(link: Path, target: Path) -> None:
    """Make `link` a symlink to `target`, replacing it atomically."""
    staged = link.with_name(link.name + ".new")
    staged.unlink(missing_ok=True)
    staged.symlink_to(target.resolve(), target_is_directory=True)
    staged.replace(link)


def fresh(*paths: Path) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
