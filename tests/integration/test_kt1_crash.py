"""A kt1 drain SIGKILLed at any stage loses no item, and staging shows no copy, after the next run.

Each stage gets its own simulated stream (its own world, so identities never collide) and all
land in one lake: a child process drains until it kills itself at the stage, the un-acknowledged
batches come back after the (shortened) redelivery window, a real Dagster run drains again, and
one dbt build of the kt1 staging models is compared with everything each stream served.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from dagster import AssetKey

from pipelines.simulator.kt1 import Kt1Server
from pipelines.simulator.world import World
from tests.conftest import fact_days, facts_connect, settings_in
from tests.support.kt1_support import (
    TOKEN,
    identities,
    lake_rows,
    run_drain,
    small_world,
    start_server,
)
from tests.support.polling import wait_for
from tests.support.runs import run_assets

REPO = Path(__file__).resolve().parents[2]
STAGES = ["after_get", "mid_write", "inside_write", "after_write", "after_delete"]
GROUP_MAX_BATCHES = 3
STAGING = ["stg_kt1__telemetry", "stg_kt1__trips", "stg_kt1__events", "stg_kt1__changes"]


@dataclass
class Scenario:
    world: World
    server: Kt1Server
    queued: int
    exit_code: int | None = None


def kill_drain_at(server: Kt1Server, lake_dir: Path, stage: str) -> int:
    """Run a drain in a child process that SIGKILLs itself the 2nd time it reaches `stage`."""
    command = [
        sys.executable,
        "-m",
        "tests.support.kt1_crash_child",
        server.url,
        str(lake_dir),
        stage,
        "2",
        str(server.long_poll_s),
        str(GROUP_MAX_BATCHES),
    ]
    child = subprocess.run(
        command, cwd=REPO, env={**os.environ, "KT1_TOKEN": TOKEN}, timeout=60, check=False
    )
    return child.returncode


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """Every stage crashed and recovered into one lake, then staging built once."""
    tmp = tmp_path_factory.mktemp("kt1-crash")
    scenarios: dict[str, Scenario] = {}
    with settings_in(tmp, clear=("KT1_", "FLEET_")):
        try:
            for n, stage in enumerate(STAGES):
                world = small_world(seed=40 + n)
                server = start_server(world, batch_size=20)
                scenarios[stage] = Scenario(world, server, server.pending())
                scenarios[stage].exit_code = kill_drain_at(server, tmp / "lake", stage)
            for scenario in scenarios.values():
                wait_for(  # every batch the kill cut off is redelivered
                    "no batch in flight",
                    lambda s=scenario: s.server.in_flight() == 0,
                    10,
                    poll_s=0.05,
                )
                assert run_drain(scenario.server).success
            built = run_assets([AssetKey(name) for name in STAGING], tags=fact_days())
            assert built.success  # includes the unique/not_null tests of every staging key
        finally:
            for scenario in scenarios.values():
                scenario.server.stop()
        yield tmp, scenarios


def staged(con: duckdb.DuckDBPyConnection, world: World) -> dict[str, list[tuple]]:
    """This world's rows of each staging model, as comparable keys."""
    origins = [v.kt1_origin_id for v in world.vehicles_of("kt1")]
    assets = [v.kt1_asset_id for v in world.vehicles_of("kt1")]
    queries = {
        "telemetry": (
            "select origin_id, epoch_ms(recorded_at) from stg_kt1__telemetry "
            "where origin_id in (select unnest(?))",
            origins,
        ),
        "trip": (
            "select source_trip_id from stg_kt1__trips where source_vehicle_id in "
            "(select unnest(?))",
            assets,
        ),
        "event": (
            "select source_event_id from stg_kt1__events where origin_id in (select unnest(?))",
            origins,
        ),
        "changenotification": (
            "select doc_id, operation, epoch_ms(changed_at) from stg_kt1__changes "
            "where doc_id in (select unnest(?))",
            assets,
        ),
    }
    return {kind: con.execute(sql, [ids]).fetchall() for kind, (sql, ids) in queries.items()}


def served(items: list[dict]) -> dict[str, list[tuple]]:
    """What the stream served, keyed as `staged` keys it."""
    out: dict[str, list[tuple]] = {
        "telemetry": [],
        "trip": [],
        "event": [],
        "changenotification": [],
    }

    def ms(value: str) -> int:
        return round(datetime.fromisoformat(value).timestamp() * 1000)

    for item in items:
        kind = item["type"]
        if kind == "telemetry":
            out[kind].append((item["origin"]["id"], ms(item["date"])))
        elif kind == "changenotification":
            out[kind].append((item["doc"]["id"], item["operation"], ms(item["date"])))
        else:
            out[kind].append((item["id"],))
    return out


def owner(item: dict) -> str:
    """The tracker or asset an item belongs to, whatever its type."""
    if item["type"] == "telemetry":
        return item["origin"]["id"]
    if item["type"] == "event":
        return item["origin"]
    if item["type"] == "trip":
        return item["asset"]["id"]
    return item["doc"]["id"]


@pytest.mark.parametrize("stage", STAGES)
def test_a_drain_killed_at_a_stage_loses_nothing_and_staging_shows_no_copy(crashed, stage) -> None:
    tmp, scenarios = crashed
    scenario = scenarios[stage]
    assert scenario.exit_code == -signal.SIGKILL, "the child never reached the stage"
    stats = scenario.server.stats()
    assert stats["redeliveries"] >= 1  # the crash left batches un-acknowledged
    assert stats["pending"] == stats["in_flight"] == 0
    everything = scenario.server.acknowledged_items()
    assert len(set(identities(everything))) == scenario.queued  # all of it was acknowledged
    with facts_connect(tmp / "fleet_catalog.sqlite") as con:
        rows = staged(con, scenario.world)
    truth = served(everything)
    for kind, keys in rows.items():
        assert len(keys) == len(set(keys)), f"{kind}: a copy reached staging"
        assert set(keys) == set(truth[kind]), f"{kind}: staging differs from what was served"
    assert sum(len(keys) for keys in rows.values()) == scenario.queued


def test_crashes_after_landing_left_copies_in_the_lake_that_staging_removed(crashed) -> None:
    tmp, scenarios = crashed
    landed = lake_rows(tmp / "lake", ["telemetry", "trips", "events", "changes"])
    items = [json.loads(r["item_json"]) for rows in landed.values() for r in rows]
    for stage in ("mid_write", "after_write", "after_delete"):
        world = scenarios[stage].world
        mine = {v.kt1_origin_id for v in world.vehicles_of("kt1")}
        mine |= {v.kt1_asset_id for v in world.vehicles_of("kt1")}
        keys = [
            key for key, item in zip(identities(items), items, strict=True) if owner(item) in mine
        ]
        assert len(keys) > len(set(keys)), f"{stage}: the crash should have landed copies"
    # A write killed before its rename leaves only a hidden temp file, never a partial parquet.
    temps = list((tmp / "lake" / "kt1").rglob(".*.tmp"))
    assert temps and all(not t.name.endswith(".parquet") for t in temps)
