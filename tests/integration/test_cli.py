"""The `fleet` command as a user runs it: demo, sql, simulate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from pipelines.facts import FactsError
from pipelines.settings import FleetSettings
from tests.conftest import facts_connect, facts_env

FLEET = [sys.executable, "-m", "pipelines.cli"]


def _words(text: str) -> str:
    """`text` with its line breaks and runs of spaces made single spaces."""
    return " ".join(text.split())


def _squashed(text: str) -> str:
    """`text` without any whitespace: rich folds a word longer than the terminal (a path)."""
    return "".join(text.split())


def _run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        FLEET + args,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,  # a few minutes alone; more beside other tests on two cores
    )


def test_demo_lands_the_fleet_builds_facts_and_prints_a_summary(
    tmp_path: Path, fleet_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = _run(
        ["demo", "--days", "3", "--vehicles", "4", "--data-dir", str(tmp_path / "data")], tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Fleet summary" in done.stdout and "V004" in done.stdout
    assert "10 per 3 s" in done.stdout  # the scaled rate limit is said on screen
    assert "make dev-sim" in done.stdout
    report = tmp_path / "data" / "reports" / "latest.html"
    assert report.is_file() and str(report) in _squashed(done.stdout)
    catalog = tmp_path / "data" / "fleet_catalog.sqlite"
    assert catalog.is_file() and any((tmp_path / "data" / "facts").rglob("*.parquet"))
    with facts_connect(catalog) as con:
        trips, vehicles = con.execute(
            "select count(*), count(distinct vehicle_id) from fct_trips"
        ).fetchone()
    assert trips > 0 and vehicles == 4

    daily = ["sql", "select vehicle_id, sum(trips) as trips from fleet_daily group by 1 order by 1"]
    answer = _run(daily, tmp_path, facts_env(catalog))
    assert answer.returncode == 0 and "V001" in answer.stdout and "trips" in answer.stdout
    assert "FLEET_DUCKDB_PATH" not in answer.stdout

    # The retired variable is ignored with one warning; the query still reads the catalog.
    retired = _run(daily, tmp_path, {**facts_env(catalog), "FLEET_DUCKDB_PATH": "fleet.duckdb"})
    assert retired.returncode == 0, retired.stdout + retired.stderr
    assert retired.stdout.count("FLEET_DUCKDB_PATH") == 1
    (warning,) = FleetSettings(fleet_duckdb_path="fleet.duckdb").retired_warnings()
    shown = _words(retired.stdout)
    assert shown.startswith(_words(warning))  # first, before the answer
    assert shown.removeprefix(_words(warning)).strip() == _words(answer.stdout)
    assert not (tmp_path / "fleet.duckdb").exists()

    wrong = _run(["sql", "select nope from fct_trips"], tmp_path, facts_env(catalog))
    assert (
        wrong.returncode == 1
        and len(wrong.stdout.strip().splitlines()) <= 2
        and "nope" in wrong.stdout
    )

    _the_demo_runs_belong_to_the_code_location(tmp_path / "data", monkeypatch)


REEXECUTE = """
mutation ($parent: String!) {
  launchPipelineReexecution(reexecutionParams: {parentRunId: $parent, strategy: ALL_STEPS}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}
"""


def _the_demo_runs_belong_to_the_code_location(data: Path, monkeypatch) -> None:
    """Each demo run is the code location's asset job, tagged with its step, so the UI lists
    it under `fleet_pipelines` and re-executes it: here through the UI's own GraphQL mutation,
    on the location workspace.yaml defines, and the re-executed facts build succeeds."""
    from dagster import DagsterInstance, DagsterRunStatus
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    root = Path(__file__).resolve().parents[2]
    for key, value in facts_env(data / "fleet_catalog.sqlite").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FLEET_LAKE_DIR", str(data / "lake"))
    monkeypatch.setenv("DAGSTER_HOME", str(data / "dagster"))
    monkeypatch.chdir(root)
    with DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert {r.tags.get("fleet/demo_step") for r in runs} == {
            "avl-trips",
            "metrotec",
            "kt1-stream",
            "autopi-exports",
            "dbt-build",
            "report",
        }
        assert {r.job_name for r in runs} == {"__ASSET_JOB"}
        assert {r.remote_job_origin.location_name for r in runs} == {"fleet_pipelines"}
        (build,) = [r for r in runs if r.tags["fleet/demo_step"] == "dbt-build"]
        target = WorkspaceFileTarget(paths=[str(root / "workspace.yaml")])
        with WorkspaceProcessContext(instance, target) as workspace:
            answer = execute_dagster_graphql(
                workspace.create_request_context(), REEXECUTE, {"parent": build.run_id}
            )
        launched = answer.data["launchPipelineReexecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        # The run is queued, as from the UI of `fleet dev`: its daemon launches it.
        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 600
            while not (run := instance.get_run_by_id(run_id)).is_finished:
                assert time.monotonic() < deadline, f"re-executed run still {run.status}"
                time.sleep(2)
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=60)
        assert run.status == DagsterRunStatus.SUCCESS and run.parent_run_id == build.run_id
        assert run.tags["fleet/demo_step"] == "dbt-build"


def test_sql_without_a_database_says_how_to_make_one(tmp_path: Path, fleet_env) -> None:
    assert not fleet_env.catalog_path.exists()
    with pytest.raises(FactsError) as missing:
        fleet_env.facts()
    assert "make demo" in str(missing.value)
    answer = _run(["sql", "select 1"], tmp_path)
    assert answer.returncode == 1, answer.stdout + answer.stderr
    # The one line FactsError says (rich may wrap it at the terminal's width), and nothing else.
    assert _squashed(answer.stdout) == _squashed(str(missing.value))
    assert not fleet_env.catalog_path.exists()  # a reader never creates the catalog


def test_simulate_serves_the_four_apis_and_prints_their_variables(
    tmp_path: Path, fleet_env
) -> None:
    env_file = tmp_path / "sim.env"
    proc = subprocess.Popen(
        [
            *FLEET,
            "simulate",
            "--any-port",
            "--days",
            "2",
            "--vehicles",
            "3",
            "--env-file",
            str(env_file),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not env_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        for key in (
            "AVL_BASE_URL",
            "AUTOPI_BASE_URL",
            "KT1_BASE_URL",
            "METROTEC_BASE_URL",
            "AVL_TOKEN",
        ):
            assert key in env
        resp = requests.get(
            env["AVL_BASE_URL"] + "/apidev/v1/reports/avl/trips",
            params={"startdate": "2026-01-01T00:00:00", "enddate": "2026-01-02T00:00:00"},
            headers={
                "Authorization": f"Bearer {env['AVL_TOKEN']}",
                "X-API-Key": env["AVL_API_KEY"],
                "tenant": env["AVL_TENANT"],
            },
            timeout=10,
        )
        assert resp.status_code == 200 and resp.json()["success"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "export AVL_BASE_URL=" in out
