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


def test_demo_lands_the_fleet_builds_facts_and_prints_a_summary(tmp_path: Path, fleet_env) -> None:
    done = _run(
        ["demo", "--days", "3", "--vehicles", "4", "--data-dir", str(tmp_path / "data")], tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Fleet summary" in done.stdout and "V004" in done.stdout
    assert "10 per 3 s" in done.stdout  # the scaled rate limit is said on screen
    assert "make dev-sim" in done.stdout
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
