"""Runs beyond one machine: Dagster's storage on a real Postgres, steps on two real Celery
workers fed through a real Redis, a real run of this project's definitions.

The run is `raw/avl/trips` for three days against the AVL simulator, launched as an operator
would (`dagster asset materialize -m pipelines.definitions`) with FLEET_EXECUTOR=celery. It has
three steps: the asset, then its two raw checks side by side, so that both workers get work.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg2
import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

from pipelines.lake import Lake
from tests.conftest import FleetEnv
from tests.support.servers import (
    PostgresServer,
    Process,
    RedisServer,
    start_celery_workers,
    stop_workers,
)

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
WORKERS = ("w1", "w2")
READY_TIMEOUT_S = 90.0
RUN_TIMEOUT_S = 180.0


def test_deploy_dagster_yaml_is_what_fleet_dagster_yaml_prints(capsys) -> None:
    from pipelines.cli.commands import cmd_dagster_yaml

    assert cmd_dagster_yaml(argparse.Namespace(postgres=True)) == 0
    assert (DEPLOY / "dagster.yaml").read_text() == capsys.readouterr().out


@dataclass
class Cluster:
    """A DAGSTER_HOME on Postgres, two running Celery workers, and the environment they share."""

    env: dict[str, str]
    dagster_home: Path
    database: str
    workers: dict[str, Process]

    def celery_pids(self) -> dict[str, set[int]]:
        """Each worker's processes (`dagster-celery worker start` runs `celery worker`)."""
        return {
            name: {w.pid} | {c.pid for c in psutil.Process(w.pid).children(recursive=True)}
            for name, w in self.workers.items()
        }


@pytest.fixture
def cluster(
    avl_env: FleetEnv,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Cluster]:
    database = postgres_server.create_database(f"dagster_{tmp_path.name.lower()}"[:60])
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())
    settings = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": postgres_server.host,
        "DAGSTER_PG_PORT": str(postgres_server.port),
        "DAGSTER_PG_USER": postgres_server.user,
        "DAGSTER_PG_PASSWORD": "",  # the test server trusts 127.0.0.1
        "DAGSTER_PG_DB": database,
        "FLEET_EXECUTOR": "celery",
        "FLEET_CELERY_BROKER": redis_server.url,
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    workers = start_celery_workers(WORKERS, DEPLOY / "celery.yaml", tmp_path, READY_TIMEOUT_S)
    try:
        yield Cluster(env, home, database, workers)
    finally:
        stop_workers(workers.values())


def test_a_run_executes_its_steps_on_two_celery_workers_with_storage_on_postgres(
    cluster: Cluster, avl_env: FleetEnv, tmp_path: Path
) -> None:
    launcher = subprocess.Popen(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "pipelines.definitions",
            "--select",
            "raw/avl/trips",
            "--partition-range",
            "2026-03-01...2026-03-03",
        ],
        env=cluster.env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = launcher.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        launcher.kill()
    worker_pids = cluster.celery_pids()
    assert launcher.returncode == 0, output[-3000:]

    # The run and its events are in Postgres: read them back through the same dagster.yaml.
    with DagsterInstance.from_config(str(cluster.dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        (run,) = instance.get_runs()
        assert run.status == DagsterRunStatus.SUCCESS
        events = [r.dagster_event for r in instance.all_logs(run.run_id) if r.dagster_event]
    step_pids = {e.step_key: e.pid for e in events if e.event_type == DagsterEventType.STEP_SUCCESS}
    assert len(step_pids) >= 3, step_pids  # the asset and its two raw checks
    run_pids = {e.pid for e in events if e.event_type == DagsterEventType.RUN_START}
    assert run_pids == {launcher.pid}
    # Every step ran in a worker, none in the launching process, and both workers got work.
    assert launcher.pid not in step_pids.values()
    by_worker = {
        name: {step for step, pid in step_pids.items() if pid in pids}
        for name, pids in worker_pids.items()
    }
    assert set().union(*by_worker.values()) == set(step_pids), (step_pids, worker_pids)
    assert all(by_worker.values()), by_worker
    with closing(psycopg2.connect(_pg_url(cluster))) as conn, conn.cursor() as cur:
        cur.execute("select status from runs where run_id = %s", (run.run_id,))
        assert cur.fetchall() == [("SUCCESS",)]

    # The workers wrote the lake the run asked for.
    days = {str(d) for d in Lake(avl_env.lake_dir).read("avl", "trips").column("day").to_pylist()}
    assert days == {"2026-03-01", "2026-03-02", "2026-03-03"}


def _pg_url(cluster: Cluster) -> str:
    env = cluster.env
    return (
        f"host={env['DAGSTER_PG_HOST']} port={env['DAGSTER_PG_PORT']} "
        f"user={env['DAGSTER_PG_USER']} dbname={env['DAGSTER_PG_DB']}"
    )


def test_fleet_executor_picks_celery_only_when_asked(caplog) -> None:
    from pipelines.executors import fleet_celery_executor, run_executor
    from pipelines.runs import fleet_executor

    assert run_executor("celery") is fleet_celery_executor
    assert run_executor("") is fleet_executor
    assert run_executor("multiprocess") is fleet_executor
    assert not caplog.records
    assert run_executor("kubernetes") is fleet_executor
    assert "FLEET_EXECUTOR='kubernetes' is not one of multiprocess, celery" in caplog.text


def test_the_kubernetes_config_names_one_image_and_no_secret() -> None:
    """The code location and the workers must run one image, and secrets come only from
    Kubernetes Secrets (a token written in a ConfigMap or the values would be readable by all)."""
    import yaml

    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    (location,) = values["dagster-user-deployments"]["deployments"]
    workers = yaml.safe_load((DEPLOY / "k8s" / "celery-workers.yaml").read_text())
    (worker,) = workers["spec"]["template"]["spec"]["containers"]
    image = location["image"]
    assert worker["image"] == f"{image['repository']}:{image['tag']}"
    assert location["codeServerArgs"] == ["-m", "pipelines.definitions"]
    assert location["port"] == 3030
    assert worker["command"][:7] == [
        "dagster-celery",
        "worker",
        "start",
        "-A",
        "dagster_celery.app",
        "-y",
        "/opt/fleet/deploy/celery.yaml",
    ]
    assert (
        "COPY deploy/dagster.yaml deploy/celery.yaml ./deploy/" in (REPO / "Dockerfile").read_text()
    )

    shared = yaml.safe_load((DEPLOY / "k8s" / "fleet-env.yaml").read_text())["data"]
    secret_like = re.compile(r"(TOKEN|API_KEY|PASSWORD|SECRET|ACCESS_KEY)")
    assert not [k for k in shared if secret_like.search(k)]
    assert not [v for v in shared.values() if re.search(r"://[^/@]*:[^/@]*@", str(v))]
    assert shared["FLEET_EXECUTOR"] == "celery"
    assert values["postgresql"]["postgresqlPassword"] == ""
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert {"name": "fleet-secrets"} in location["envSecrets"]
    assert {"name": "fleet-env"} in location["envConfigMaps"]
    refs = [next(iter(ref.values()))["name"] for ref in worker["envFrom"]]
    assert refs == ["fleet-env", "fleet-secrets"]
    # The chart's settings are those `fleet dagster-yaml` asks of every instance.
    from pipelines.runs import INSTANCE_SETTINGS

    monitoring = values["dagsterDaemon"]["runMonitoring"]
    assert (
        monitoring["enabled"]
        and monitoring["freeSlotsAfterRunEndSeconds"]
        == (INSTANCE_SETTINGS["run_monitoring"]["free_slots_after_run_end_seconds"])
    )
    pools = INSTANCE_SETTINGS["concurrency"]["pools"]
    assert values["concurrency"]["pools"] == {
        "defaultLimit": pools["default_limit"],
        "granularity": pools["granularity"],
    }
    assert (
        values["concurrency"]["runs"]["tagConcurrencyLimits"]
        == (INSTANCE_SETTINGS["concurrency"]["runs"]["tag_concurrency_limits"])
    )
