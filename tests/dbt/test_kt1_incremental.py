"""kt1 idle periods are incremental by day: after a drain lands the rest of a day and a new one,
a build redoes only the days around them and ends where a full build of the same lake does."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, AssetSelection, materialize

from pipelines.definitions import build_defs
from pipelines.simulator.kt1 import Kt1Server
from tests.conftest import FleetEnv, facts_connect, facts_env
from tests.kt1_support import LONG_POLL_S, REDELIVERY_S, TOKEN, run_drain, small_world

PERIODS = "select * from int_kt1__idle_periods order by idle_period_id"
# The model and every dbt model it reads (not the raw assets: they would drain again).
KT1_FACTS = AssetSelection.assets(AssetKey(["int_kt1__idle_periods"])).upstream() - (
    AssetSelection.key_prefixes("raw")
)


class _OneAssetWithoutIdlingEvents(Kt1Server):
    """The first kt1 asset's tracker sends no idling events, so its periods are derived from
    telemetry runs; the other's are its events."""

    def _in_trip_events(self, device: Any, trip: Any) -> Iterator[tuple[datetime, dict]]:
        first = min(v.kt1_asset_id for v in self.world.vehicles_of("kt1"))
        for at, event in super()._in_trip_events(device, trip):
            if device.vehicle.kt1_asset_id == first and event["eventType"] == "idling":
                continue
            yield at, event


def _build(catalog_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in facts_env(catalog_path).items():
        monkeypatch.setenv(key, value)
    defs = build_defs()
    result = materialize(
        list(defs.assets), resources=defs.resources, selection=KT1_FACTS, raise_on_error=False
    )
    assert result.success


def _rows(catalog_path: Path, query: str) -> list[tuple]:
    with facts_connect(catalog_path) as con:
        return con.execute(query).fetchall()


def test_kt1_idle_periods_update_by_day_and_end_as_a_full_build(
    fleet_env: FleetEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = small_world(seed=5, days=4)  # 2024-05-12 .. 2024-05-15, two kt1 assets
    clock = {"now": datetime(2024, 5, 14, 12, 0, tzinfo=UTC)}
    server = _OneAssetWithoutIdlingEvents(
        world,
        token=TOKEN,
        clock=lambda: clock["now"],
        long_poll_s=LONG_POLL_S,
        redelivery_s=REDELIVERY_S,
        batch_size=200,
    ).start()
    try:
        assert run_drain(server, group_max_batches=50).success  # up to 05-14 noon
        _build(fleet_env.catalog_path, monkeypatch)
        first = _rows(fleet_env.catalog_path, PERIODS)
        clock["now"] = datetime(2024, 5, 16, 12, 0, tzinfo=UTC)
        assert run_drain(server, group_max_batches=50).success  # the rest of 05-14, and 05-15
    finally:
        server.stop()
    _build(fleet_env.catalog_path, monkeypatch)
    updated = _rows(fleet_env.catalog_path, PERIODS)

    full = tmp_path / "full" / "fleet_catalog.sqlite"
    _build(full, monkeypatch)
    assert updated == _rows(full, PERIODS)

    days = {row[-1].isoformat() for row in updated}
    assert {"2024-05-12", "2024-05-15"} <= days and len(updated) > len(first)
    # Both kinds of evidence are exercised: an asset with idling events, one without.
    kinds = _rows(
        full,
        "select count(distinct source_vehicle_id) filter (where source_vehicle_id in ("
        " select source_vehicle_id from stg_kt1__events where event_type = 'idling')),"
        " count(distinct source_vehicle_id) filter (where source_vehicle_id not in ("
        " select source_vehicle_id from stg_kt1__events where event_type = 'idling'))"
        " from int_kt1__idle_periods",
    )[0]
    assert kinds[0] >= 1 and kinds[1] >= 1
