"""Late kt1 data rebuilds exactly the fact days it touched: a landing of a day ten days back
makes the facts sensor request that day's partitions and the day either side, no others, and
after that run every model holds what a full build of the same lake holds."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetRecordsFilter,
    DagsterInstance,
    MetadataValue,
    build_sensor_context,
)

from pipelines.definitions import build_defs
from pipelines.facts_build import FACTS_SENSOR, RANGE_END, RANGE_START
from tests.conftest import FleetEnv, facts_env
from tests.support.facts_compare import differences
from tests.support.kt1_support import TABLES, run_drain, small_world, start_server
from tests.support.runs import fact_keys, run_assets

FIRST, LAST = date(2024, 5, 4), date(2024, 5, 15)
LATE = date(2024, 5, 5)  # ten days before the last


def _build(tags: dict[str, str], instance: DagsterInstance) -> None:
    assert run_assets(fact_keys(), tags=tags, instance=instance, raise_on_error=False).success


def _tick(instance: DagsterInstance, cursor: str | None) -> Any:
    defs = build_defs()
    sensor = defs.resolve_sensor_def(FACTS_SENSOR)
    return sensor.evaluate_tick(
        build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    )


def test_a_late_kt1_day_rebuilds_its_fact_days_only_and_ends_as_a_full_build(
    fleet_env: FleetEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_START_DATE", FIRST.isoformat())
    every_day = {RANGE_START: FIRST.isoformat(), RANGE_END: LAST.isoformat()}
    held = tmp_path / "held"
    server = start_server(small_world(seed=5, days=12), batch_size=200)
    with DagsterInstance.ephemeral() as instance:
        try:
            assert run_drain(server, instance=instance).success
        finally:
            server.stop()
        # The late day's items had not arrived when the facts were first built.
        for table in TABLES:
            folder = fleet_env.lake_dir / "kt1" / table / f"day={LATE.isoformat()}"
            if folder.exists():
                shutil.move(folder, held / table)
        first = _tick(instance, None)
        assert len(first.run_requests) == 1  # what the drain wrote, in one range
        _build(every_day, instance)
        before = (
            instance.fetch_materializations(AssetKey(["fct_trips"]), limit=1, ascending=False)
            .records[0]
            .storage_id
        )

        # A drain lands them: its files, and its materializations' days_written.
        for table in TABLES:
            if (held / table).exists():
                target = fleet_env.lake_dir / "kt1" / table / f"day={LATE.isoformat()}"
                shutil.move(held / table, target)
            instance.report_runless_asset_event(
                AssetMaterialization(
                    AssetKey(["raw", "kt1", table]),
                    metadata={"days_written": MetadataValue.json([LATE.isoformat()])},
                )
            )
        late = _tick(instance, first.cursor)
        (request,) = late.run_requests
        assert (request.tags[RANGE_START], request.tags[RANGE_END]) == ("2024-05-04", "2024-05-06")
        assert _tick(instance, late.cursor).run_requests == []  # asked once
        _build(dict(request.tags), instance)
        rebuilt = {
            r.asset_materialization.partition
            for r in instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey(["fct_trips"]), after_storage_id=before),
                limit=100,
            ).records
            if r.asset_materialization is not None
        }
        assert rebuilt == {"2024-05-04", "2024-05-05", "2024-05-06"}

    with fleet_env.facts(latest=True) as con:
        late_rows = con.execute(
            "select count(*) from stg_kt1__telemetry where day = ?", [LATE]
        ).fetchone()[0]
    assert late_rows > 0

    fresh = tmp_path / "full" / "fleet_catalog.sqlite"
    for key, value in facts_env(fresh).items():
        monkeypatch.setenv(key, value)
    with DagsterInstance.ephemeral() as instance:
        _build(every_day, instance)
    assert differences(fleet_env.catalog_path, fresh) == {}
