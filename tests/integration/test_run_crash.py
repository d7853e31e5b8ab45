"""A run SIGKILLed mid-way blocks nothing for long: with the shipped `dagster.yaml`, the real
Dagster daemon notices the dead run by its heartbeat, fails it, and the next run of that source
leaves the queue and completes, landing every row exactly once.

Everything is real: the simulators over HTTP, `dagster asset materialize` and `dagster job
launch` in their own processes, and `dagster-daemon` with the project's run launcher. Only the
intervals are shortened (a heartbeat every 0.5 s, dead after 4 s, monitoring every second).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from pipelines.lake import Lake
from pipelines.runs import HEARTBEAT_TAG, INSTANCE_SETTINGS
from pipelines.simulator.serve import Simulators, start_all
from pipelines.simulator.world import World
from tests.conftest import SIM_NOW, WORLD_END, facts_env
from tests.integration.test_avl_asset import truth
from tests.support.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FIRST, LAST = date(2026, 3, 2), date(2026, 3, 31)
RANGE_TAGS = {
    "dagster/asset_partition_range_start": FIRST.isoformat(),
    "dagster/asset_partition_range_end": LAST.isoformat(),
}
RANGE = ["--tags", json.dumps(RANGE_TAGS)]
MODULE = ["-m", "pipelines.definitions"]


@dataclass(frozen=True)
class Source:
    """How a source's run is started from the CLI (to be killed), and how its next run is
    queued (as its schedule or sensor would)."""

    cli: list[str]
    job: str
    tags: list[str]
    requests_before_kill: int = 3


SOURCES = {
    "avl": Source(
        [
            "asset",
            "materialize",
            *MODULE,
            "--select",
            "raw/avl/trips",
            "--partition-range",
            f"{FIRST}...{LAST}",
        ],
        "__anonymous_asset_job_avl_trips_daily",
        RANGE,
    ),
    "metrotec": Source(
        ["job", "execute", *MODULE, "-j", "metrotec_refresh", *RANGE], "metrotec_refresh", RANGE
    ),
    "kt1": Source(["job", "execute", *MODULE, "-j", "kt1_drain"], "kt1_drain", []),
    "autopi": Source(
        ["asset", "materialize", *MODULE, "--select", "raw/autopi/trips,raw/autopi/datapoints"],
        "__anonymous_asset_job_autopi_exports_sensor",
        [],
        requests_before_kill=6,
    ),
}


def run_states(instance: DagsterInstance) -> str:
    """Every run's job, status and age, for a timeout's message."""
    now = time.time()
    lines = [
        f"{r.dagster_run.job_name} {r.dagster_run.status.value} "
        f"created {now - r.create_timestamp.timestamp():.0f}s ago"
        for r in instance.get_run_records()
    ]
    return "; runs: " + ", ".join(lines)


@pytest.fixture
def sims() -> Iterator[Simulators]:
    # AVL at 2 requests per 2 s: a month's pull takes long enough to be killed mid-way.
    world = World(seed=11, vehicles=6, end_day=WORLD_END, days=31)
    with start_all(world, avl_rate=(2, 2.0), clock=lambda: SIM_NOW, kt1_long_poll_s=1.0) as running:
        yield running


@pytest.fixture
def home(tmp_path: Path, sims: Simulators) -> Iterator[tuple[dict[str, str], DagsterInstance]]:
    """A Dagster home with the shipped settings (intervals shortened), the env every process
    gets, and a running `dagster-daemon`."""
    settings = json.loads(json.dumps(INSTANCE_SETTINGS))
    settings["run_monitoring"].update(poll_interval_seconds=1, free_slots_after_run_end_seconds=1)
    settings["run_queue"] = {"dequeue_interval_seconds": 1}  # not ours to ship; faster here
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(settings))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AVL_", "AUTOPI_", "KT1_", "METROTEC_", "FLEET_"))
    }
    env.update(sims.env())
    env.update(
        DAGSTER_HOME=str(dagster_home),
        FLEET_LAKE_DIR=str(tmp_path / "lake"),
        **facts_env(tmp_path / "fleet_catalog.sqlite"),
        FLEET_STATE_URL=f"sqlite:///{tmp_path / 'state.sqlite3'}",
        FLEET_START_DATE="2025-12-01",
        AVL_RATE_LIMIT="2/2",
        METROTEC_RATE_LIMIT="2/1",  # slow enough to be killed mid-way
        KT1_DRAIN_SECONDS="6",
        FLEET_RUN_HEARTBEAT_S="0.5",
        FLEET_RUN_STALE_AFTER_S="4",
    )
    # The instance's storage is made here, before any other process opens it: the daemon and
    # the CLI would otherwise race to create the same SQLite tables.
    instance = DagsterInstance.from_config(str(dagster_home))
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield env, instance
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        log.close()
        instance.dispose()


def failure_of(instance: DagsterInstance, run: object) -> str:
    """What a failed run said: its error events, so a failure here explains itself."""
    errors = [
        (
            entry.dagster_event.event_specific_data.error.to_string()  # type: ignore[union-attr]
            if getattr(entry.dagster_event.event_specific_data, "error", None)
            else entry.message
        )
        for entry in instance.all_logs(run.run_id)  # type: ignore[attr-defined]
        if entry.dagster_event is not None and entry.dagster_event.is_failure
    ]
    return f"{run.job_name} ended {run.status.value}: " + " | ".join(errors)[-3000:]  # type: ignore[attr-defined]


def runs(instance: DagsterInstance, *statuses: DagsterRunStatus) -> list:
    return list(instance.get_runs(RunsFilter(statuses=list(statuses)) if statuses else None))


@pytest.mark.parametrize("source", list(SOURCES))
def test_a_killed_run_frees_its_source_and_the_next_run_completes(
    source: str, home: tuple[dict[str, str], DagsterInstance], sims: Simulators, tmp_path: Path
) -> None:
    env, instance = home
    spec = SOURCES[source]
    # The repro: a CLI run in its own session, SIGKILLed mid-way.
    said = tmp_path / "killed-cli.log"
    with said.open("w") as out:
        killed = subprocess.Popen(
            [str(BIN / "dagster"), *spec.cli],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    dead = wait_for(
        "the CLI run to start and beat",
        lambda: [r for r in runs(instance, DagsterRunStatus.STARTED) if HEARTBEAT_TAG in r.tags],
        120,
        state=lambda: (
            f"{run_states(instance)}; the CLI exited {killed.poll()} and said:\n"
            + said.read_text()[-4000:]
        ),
    )[0]
    server = sims.servers[source]
    wait_for(f"{source} requests", lambda: len(server.requests()) >= spec.requests_before_kill, 60)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.STARTED

    # The next run of the source goes through the queue, as a schedule's or sensor's would.
    workspace = str(REPO / "workspace.yaml")
    command = [str(BIN / "dagster"), "job", "launch", "-w", workspace, "-j", spec.job, *spec.tags]
    launch = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert launch.returncode == 0, launch.stdout + launch.stderr
    finished = wait_for(
        "the queued run to finish",
        # Of this job: the facts sensor may launch a dbt run after a raw table lands.
        lambda: [
            r
            for r in runs(instance)
            if r.run_id != dead.run_id and r.job_name == spec.job and r.is_finished
        ],
        # The dead run is noticed within seconds; the rest is the run itself, which shares
        # two cores with the facts build its landing starts and, in CI, with other tests.
        600,
        state=lambda: run_states(instance),
    )
    assert finished[0].status == DagsterRunStatus.SUCCESS, failure_of(instance, finished[0])
    failed = instance.get_run_by_id(dead.run_id)
    assert failed.status == DagsterRunStatus.FAILURE
    LANDED_ONCE[source](Lake(Path(env["FLEET_LAKE_DIR"])), sims)


def _avl_exact(lake: Lake, sims: Simulators) -> None:
    table = lake.read("avl", "trips")
    keys = list(
        zip(
            table.column("device_name").to_pylist(),
            table.column("trip_start").to_pylist(),
            strict=True,
        )
    )
    assert len(keys) == len(set(keys)), "a trip landed twice"
    assert set(keys) == truth(sims.servers["avl"], FIRST, LAST)  # type: ignore[arg-type]
    assert pc.min(table.column("day")).as_py() == FIRST


def _metrotec_exact(lake: Lake, sims: Simulators) -> None:
    routelog = lake.read("metrotec", "routelog")
    assert routelog.num_rows > 0
    days = set(routelog.column("day").to_pylist())
    assert days <= {FIRST + timedelta(days=i) for i in range((LAST - FIRST).days + 1)}
    rows = [tuple(sorted(r.items())) for r in routelog.drop_columns(["extracted_at"]).to_pylist()]
    assert len(rows) == len(set(rows)), "a Metrotec row landed twice"


def _kt1_drained(lake: Lake, sims: Simulators) -> None:
    assert lake.files("kt1", "telemetry"), "the next drain landed nothing"


def _autopi_once(lake: Lake, sims: Simulators) -> None:
    trips = lake.read("autopi", "trips")
    ids = trips.column("trip_id").to_pylist()
    assert ids and len(ids) == len(set(ids)), "an AutoPi trip landed twice"


LANDED_ONCE = {
    "avl": _avl_exact,
    "metrotec": _metrotec_exact,
    "kt1": _kt1_drained,
    "autopi": _autopi_once,
}
