"""Shared fixtures: a throwaway lake + DuckDB + rate-limit ledger, and simulated APIs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pytest

from pipelines.simulator.world import World

# Real servers (Postgres, an S3-compatible server, Redis) on 127.0.0.1, started on demand.
pytest_plugins = ["tests.support.servers"]

# A fixed world spanning the EU spring DST change (2026-03-29), seen from a fixed "now".
WORLD_END = date(2026, 3, 31)
SIM_NOW = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)

_SOURCE_VARS = [
    k for k in os.environ if k.startswith(("AVL_", "AUTOPI_", "KT1_", "METROTEC_", "FLEET_"))
]


@dataclass
class FleetEnv:
    lake_dir: Path
    catalog_path: Path  # the facts' SQLite DuckLake catalog
    state_db: Path  # FLEET_STATE_URL's SQLite file: limiter, AutoPi ledger, drain leases

    @property
    def facts_data(self) -> Path:
        return self.catalog_path.parent / "facts"

    def facts(self, latest: bool = False) -> duckdb.DuckDBPyConnection:
        """A read-only connection to the facts, as `fleet sql` opens them."""
        return facts_connect(self.catalog_path, latest=latest)


def facts_env(catalog_path: Path) -> dict[str, str]:
    """The variables that put the facts' catalog and data files beside `catalog_path`."""
    return {
        "FLEET_FACTS_CATALOG": f"sqlite:{catalog_path}",
        "FLEET_FACTS_DATA_PATH": str(catalog_path.parent / "facts"),
    }


def local_settings(tmp: Path) -> dict[str, str]:
    """The variables that keep a run's lake, facts and shared state under `tmp`, with the
    names the `fleet_env` fixture gives them."""
    return {
        "FLEET_LAKE_DIR": str(tmp / "lake"),
        **facts_env(tmp / "fleet_catalog.sqlite"),
        "FLEET_STATE_URL": f"sqlite:///{tmp / 'state.sqlite3'}",
    }


@contextlib.contextmanager
def settings_in(
    tmp: Path, settings: dict[str, str] | None = None, clear: tuple[str, ...] = ()
) -> Iterator[pytest.MonkeyPatch]:
    """`fleet_env` for a module-scoped fixture (which cannot take `monkeypatch`): `tmp` as the
    working directory (so a developer's .env is not read), the variables starting with `clear`
    removed, `local_settings(tmp)` and `settings` set; all undone on exit."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        for key in [k for k in os.environ if clear and k.startswith(clear)]:
            mp.delenv(key)
        for key, value in {**local_settings(tmp), **(settings or {})}.items():
            mp.setenv(key, value)
        yield mp


def fact_days(lake_dir: Path | None = None) -> dict[str, str]:
    """Run tags of the fact partitions of every day the lake (FLEET_LAKE_DIR) holds raw data for:
    the fact assets are partitioned by day, so a run of them takes a partition range."""
    from pipelines.facts_build import FactRange

    lake = lake_dir or Path(os.environ["FLEET_LAKE_DIR"])
    days = [
        date.fromisoformat(folder.name.removeprefix("day="))
        for folder in lake.glob("*/*/day=*")
        if folder.parent.name != "quarantine"
        and any(f.name != "_schema.parquet" for f in folder.glob("*.parquet"))
    ]
    assert days, f"no raw data in {lake}"
    return FactRange(min(days), max(days)).tags()


def facts_connect(catalog_path: Path, latest: bool = False) -> duckdb.DuckDBPyConnection:
    from pipelines.facts import FactsCatalog, connect

    catalog = FactsCatalog.of(
        **{"catalog": f"sqlite:{catalog_path}", "data_path": str(catalog_path.parent / "facts")}
    )
    return connect(read_only=True, catalog=catalog, latest=latest)


@pytest.fixture
def fleet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FleetEnv:
    """Point every path at tmp and clear any real credentials from the environment."""
    for key in _SOURCE_VARS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)  # so a developer's .env is not read
    for key, value in {**local_settings(tmp_path), "FLEET_START_DATE": "2025-12-01"}.items():
        monkeypatch.setenv(key, value)
    return FleetEnv(
        tmp_path / "lake", tmp_path / "fleet_catalog.sqlite", tmp_path / "state.sqlite3"
    )


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
