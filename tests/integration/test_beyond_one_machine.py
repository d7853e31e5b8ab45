"""The whole pipeline beyond one machine, end to end, against real servers on 127.0.0.1: the lake
on an S3-compatible server (moto), the shared state, Dagster's storage and the facts' DuckLake
catalog on Postgres (the facts' data files on the object store too), every step on two Celery
workers fed through Redis. Its facts equal those of the same world built on the local defaults
(EXCEPT ALL both ways), and no secret reaches a log, run metadata, the lake or the facts.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from dagster import DagsterInstance, DagsterRunStatus

from pipelines.facts import FactsCatalog
from tests.support.facts_compare import differences, row_counts
from tests.support.reconciliation_support import build_everything, reconciliation_world
from tests.support.servers import (
    PostgresServer,
    Process,
    RedisServer,
    S3Server,
    start_celery_workers,
    stop_workers,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
BUCKET = "fleet-e2e"
S3_SECRET = "e2e-S3-secret-0f7c2a9d"
PG_PASSWORD = "e2e-PG-password-5b81e3"
RUN_TIMEOUT_S = 900.0
LANDING_COLUMNS = frozenset(
    {"extracted_at", "landed_at", "trip_landed_at", "fetched_at", "batch_id"}
)
"""When and in which delivery a row was landed: two landings of one world differ there only."""


class CeleryRuns:
    """Runs each step as an operator would on a deployment: `dagster asset materialize` of the
    code location, its steps on two Celery workers (started with the environment of the first
    run, as a deployment's workers share its configuration)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.workers: list[Process] = []
        self.outputs: list[str] = []

    def _start_workers(self) -> None:
        workers = start_celery_workers(("w1", "w2"), DEPLOY / "celery.yaml", self.tmp, 120)
        self.workers.extend(workers.values())

    def __call__(
        self, assets: Any, *, selection: Any, tags: dict[str, str] | None, **_: Any
    ) -> Any:
        if not self.workers:
            self._start_workers()
        ranged = bool(tags and "dagster/asset_partition_range_start" in tags)
        if ranged and not isinstance(selection, str):
            # The CLI runs a partition range only of partitioned assets: Metrotec's vehicles
            # snapshot (unpartitioned) goes first in a run of its own, as in the UI.
            partitioned = {k for a in assets if a.partitions_def for k in a.keys}
            alone = [k for k in selection if k not in partitioned]
            if alone:
                self(assets, selection=alone, tags=None)
            selection = [k for k in selection if k in partitioned]
        select = (
            selection
            if isinstance(selection, str)
            else ",".join("/".join(key.path) for key in selection)
        )
        command = [str(BIN / "dagster"), "asset", "materialize", "-m", "pipelines.definitions"]
        command += ["--select", select]
        if ranged and tags:
            first = tags["dagster/asset_partition_range_start"]
            last = tags["dagster/asset_partition_range_end"]
            command += ["--partition-range", f"{first}...{last}"]
        done = subprocess.run(
            command,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        self.outputs.append(done.stdout + done.stderr)
        if done.returncode != 0:
            tails = "\n".join(w.log_tail(40) for w in self.workers)
            raise AssertionError(
                f"{select} failed:\n{(done.stdout + done.stderr)[-4000:]}\nworkers:\n{tails}"
            )
        return type("Done", (), {"success": True})()

    def stop(self) -> None:
        stop_workers(self.workers)


@pytest.fixture(scope="module")
def world():
    return reconciliation_world()


@pytest.fixture(scope="module")
def local_build(world, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("local")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        return build_everything(world, tmp, mp).catalog_path


@pytest.fixture(scope="module")
def distributed(
    world,
    tmp_path_factory,
    postgres_server: PostgresServer,
    s3_server: S3Server,
    redis_server: RedisServer,
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("distributed")
    s3_server.create_bucket(BUCKET)
    role = postgres_server.create_role("fleet_e2e", PG_PASSWORD)
    state_db = postgres_server.create_database("e2e_state")
    dagster_db = postgres_server.create_database("e2e_dagster")
    facts_db = postgres_server.create_database("e2e_facts")
    for db in (state_db, dagster_db, facts_db):
        postgres_server.execute(f'alter database "{db}" owner to "{role}"')
    home = tmp / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())
    env = {
        **s3_server.env,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,  # moto takes any: a value to look for in the logs
        "FLEET_LAKE_DIR": f"s3://{BUCKET}/lake",
        "FLEET_STATE_URL": postgres_server.url_with_password(role, PG_PASSWORD, state_db),
        "FLEET_FACTS_CATALOG": (
            f"postgres:dbname={facts_db} host={postgres_server.host} "
            f"port={postgres_server.port} user={role} password={PG_PASSWORD}"
        ),
        "FLEET_FACTS_DATA_PATH": f"s3://{BUCKET}/facts/",
        "FLEET_DBT_TARGET_DIR": str(tmp / "dbt_target"),
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": postgres_server.host,
        "DAGSTER_PG_PORT": str(postgres_server.port),
        "DAGSTER_PG_USER": role,
        "DAGSTER_PG_PASSWORD": PG_PASSWORD,
        "DAGSTER_PG_DB": dagster_db,
        "FLEET_EXECUTOR": "celery",
        "FLEET_CELERY_BROKER": redis_server.url,
    }
    runs = CeleryRuns(tmp)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(tmp)
            build_everything(world, tmp, mp, env=env, run=runs)
            secrets = {
                "S3 secret key": S3_SECRET,
                "Postgres password": PG_PASSWORD,
                **{
                    k: v
                    for k, v in os.environ.items()
                    if k in {"AVL_TOKEN", "AVL_API_KEY", "AUTOPI_TOKEN", "KT1_TOKEN"}
                    or k == "METROTEC_PASSWORD"
                },
            }
        yield {"tmp": tmp, "env": env, "runs": runs, "home": home, "secrets": secrets}
    finally:
        runs.stop()


def test_the_facts_built_beyond_one_machine_equal_the_local_build(
    local_build: Path, distributed: dict[str, Any]
) -> None:
    env = distributed["env"]
    remote = FactsCatalog.of(
        catalog=env["FLEET_FACTS_CATALOG"], data_path=env["FLEET_FACTS_DATA_PATH"]
    )
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        found = differences(local_build, remote, ignore=LANDING_COLUMNS)
        assert found == {}, found
        # The comparison saw rows: the marts of both builds are not empty.
        counts = row_counts(remote, ["fct_trips", "fct_fuel_events", "fct_idle_periods"])
    assert all(n > 0 for n in counts.values()), counts


def test_every_step_ran_on_a_worker_and_every_run_is_in_postgres(
    distributed: dict[str, Any],
) -> None:
    env = distributed["env"]
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        with DagsterInstance.from_config(str(distributed["home"])) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            runs = instance.get_runs()
            # avl, metrotec's snapshot and days, kt1, autopi, the facts
            assert len(runs) == len(distributed["runs"].outputs) == 6
            assert all(r.status == DagsterRunStatus.SUCCESS for r in runs)
            worker_pids = set()
            for worker in distributed["runs"].workers:
                proc = psutil.Process(worker.pid)
                worker_pids |= {proc.pid} | {c.pid for c in proc.children(recursive=True)}
            for run in runs:
                steps = [
                    r.dagster_event
                    for r in instance.all_logs(run.run_id)
                    if r.dagster_event and r.dagster_event.event_type_value == "STEP_SUCCESS"
                ]
                assert steps and {s.pid for s in steps} <= worker_pids, run.run_id


def test_no_secret_reaches_a_log_run_metadata_the_lake_or_the_facts(
    distributed: dict[str, Any], s3_server: S3Server
) -> None:
    secrets = distributed["secrets"]
    assert len(secrets) >= 5
    haystacks: dict[str, str] = {}
    haystacks["run output"] = "\n".join(distributed["runs"].outputs)
    for worker in distributed["runs"].workers:
        haystacks[f"worker {worker.name} log"] = worker.log_path.read_text(errors="replace")
    env = distributed["env"]
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        with DagsterInstance.from_config(str(distributed["home"])) as instance:
            logs = io.StringIO()
            for run in instance.get_runs():
                logs.write(repr(run.tags))
                for record in instance.all_logs(run.run_id):
                    logs.write(record.message or "")
                    logs.write(repr(record.dagster_event))
            haystacks["Dagster event logs and metadata"] = logs.getvalue()
    client = s3_server.client()
    lake = io.BytesIO()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            lake.write(client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())
    haystacks["lake and facts objects"] = lake.getvalue().decode("latin-1")
    leaks = [
        f"{what} in {where}"
        for where, text in haystacks.items()
        for what, value in secrets.items()
        if value and value in text
    ]
    assert leaks == []
