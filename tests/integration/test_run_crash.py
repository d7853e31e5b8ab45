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
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pyarrow.compute as pc
import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from pipelines.lake import Lake
from pipelines.runs import HEARTBEAT_TAG, INSTANCE_SETTINGS
from pipelines.simulator.serve import Simulators, start_all
from pipelines.simulator.world import World
from tests.conftest import SIM_NOW, WORLD_END
from tests.integration.test_avl_asset import truth

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FIRST, LAST = date(2026, 2, 1), date(2026, 3, 31)
RANGE_TAGS = {
    "dagster/asset_partition_range_start": FIRST.isoformat(),
    "dagster/asset_partition_range_end": LAST.isoformat(),
}


def wait_for(what: str, predicate: Callable[[], object], timeout_s: float) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


@pytest.fixture
def sims() -> Iterator[Simulators]:
    # AVL at 2 requests per 2 s: a two-month pull takes long enough to be killed mid-way.
    world = World(seed=11, vehicles=8, end_day=WORLD_END, days=120)
    with start_all(world, avl_rate=(2, 2.0), clock=lambda: SIM_NOW) as running:
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
        FLEET_DUCKDB_PATH=str(tmp_path / "fleet.duckdb"),
        FLEET_RATELIMIT_DB=str(tmp_path / "ratelimits.sqlite3"),
        FLEET_START_DATE="2025-12-01",
        AVL_RATE_LIMIT="2/2",
        FLEET_RUN_HEARTBEAT_S="0.5",
        FLEET_RUN_STALE_AFTER_S="4",
    )
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    instance = DagsterInstance.from_config(str(dagster_home))
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


def runs(instance: DagsterInstance, *statuses: DagsterRunStatus) -> list:
    return list(instance.get_runs(RunsFilter(statuses=list(statuses)) if statuses else None))


def test_a_killed_avl_run_frees_its_pool_and_the_next_run_lands_every_trip_once(
    home: tuple[dict[str, str], DagsterInstance], sims: Simulators, tmp_path: Path
) -> None:
    env, instance = home
    # The repro: a CLI backfill in its own session, SIGKILLed mid-way.
    killed = subprocess.Popen(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "pipelines.definitions",
            "--select",
            "raw/avl/trips",
            "--partition-range",
            f"{FIRST}...{LAST}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    dead = wait_for(
        "the CLI run to start and beat",
        lambda: [r for r in runs(instance, DagsterRunStatus.STARTED) if HEARTBEAT_TAG in r.tags],
        120,
    )[0]
    wait_for("AVL requests", lambda: len(sims.servers["avl"].requests()) >= 3, 60)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.STARTED

    # The next run of the source goes through the queue, as a schedule's would.
    launch = subprocess.run(
        [
            str(BIN / "dagster"),
            "job",
            "launch",
            "-w",
            str(REPO / "workspace.yaml"),
            "-j",
            "__anonymous_asset_job_avl_trips_daily",
            "--tags",
            json.dumps(RANGE_TAGS),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert launch.returncode == 0, launch.stdout + launch.stderr
    started = time.monotonic()
    wait_for(
        "the queued run to succeed",
        lambda: runs(instance, DagsterRunStatus.SUCCESS),
        180,
    )
    assert time.monotonic() - started < 180
    failed = instance.get_run_by_id(dead.run_id)
    assert failed.status == DagsterRunStatus.FAILURE

    lake = Lake(Path(env["FLEET_LAKE_DIR"])).read("avl", "trips")
    keys = list(
        zip(
            lake.column("device_name").to_pylist(),
            lake.column("trip_start").to_pylist(),
            strict=True,
        )
    )
    assert len(keys) == len(set(keys)), "a trip landed twice"
    assert set(keys) == truth(sims.servers["avl"], FIRST, LAST)  # type: ignore[arg-type]
    assert pc.min(lake.column("day")).as_py() == FIRST
