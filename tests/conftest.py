"""Shared fixtures: a throwaway lake + DuckDB + rate-limit ledger, and simulated APIs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from pipelines.simulator.world import World

# A fixed world spanning the EU spring DST change (2026-03-29), seen from a fixed "now".
WORLD_END = date(2026, 3, 31)
SIM_NOW = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)

_SOURCE_VARS = [
    k for k in os.environ if k.startswith(("AVL_", "AUTOPI_", "KT1_", "METROTEC_", "FLEET_"))
]


@dataclass
class FleetEnv:
    lake_dir: Path
    duckdb_path: Path
    ratelimit_db: Path


@pytest.fixture
def fleet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FleetEnv:
    """Point every path at tmp and clear any real credentials from the environment."""
    for key in _SOURCE_VARS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)  # so a developer's .env is not read
    env = FleetEnv(tmp_path / "lake", tmp_path / "fleet.duckdb", tmp_path / "ratelimits.sqlite3")
    monkeypatch.setenv("FLEET_LAKE_DIR", str(env.lake_dir))
    monkeypatch.setenv("FLEET_DUCKDB_PATH", str(env.duckdb_path))
    monkeypatch.setenv("FLEET_RATELIMIT_DB", str(env.ratelimit_db))
    monkeypatch.setenv("FLEET_START_DATE", "2025-12-01")
    return env


@pytest.fixture(scope="session")
def world() -> World:
    return World(seed=11, vehicles=8, end_day=WORLD_END, days=120)


@pytest.fixture
def avl_sim(world: World) -> Iterator:
    from pipelines.simulator.avl import AvlServer

    server = AvlServer(world, rate_limit=(10, 3.0), clock=lambda: SIM_NOW).start()
    yield server
    server.stop()


@pytest.fixture
def avl_env(fleet_env: FleetEnv, avl_sim, monkeypatch: pytest.MonkeyPatch) -> FleetEnv:
    from pipelines.simulator.avl import env

    for key, value in env(avl_sim).items():
        monkeypatch.setenv(key, value)
    return fleet_env
