"""dbt on DuckDB over the lake: real builds, compared with the simulator's ground truth."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from dagster import AssetKey

from pipelines.definitions import build_defs
from pipelines.simulator.avl import AvlServer
from tests.conftest import fact_days, facts_connect, facts_env, settings_in
from tests.support.runs import range_tags, run_assets

FIRST, LAST = date(2026, 3, 1), date(2026, 3, 14)


@pytest.fixture(scope="module")
def avl_sim(world):
    from tests.conftest import SIM_NOW

    server = AvlServer(world, rate_limit=(10, 1.0), clock=lambda: SIM_NOW).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def built_env(tmp_path_factory, avl_sim: AvlServer):
    """One AVL landing and one dbt build shared by the module's read-only tests."""
    from pipelines.simulator.avl import env

    tmp = tmp_path_factory.mktemp("marts")
    with settings_in(tmp, {**env(avl_sim), "FLEET_START_DATE": "2025-12-01"}):
        assert run_assets([AssetKey(["raw", "avl", "trips"])], tags=range_tags(FIRST, LAST)).success
        facts = run_assets("kind:dbt", tags=fact_days())
        assert facts.success  # includes every dbt data test
        yield tmp


@pytest.fixture
def built(built_env):
    with facts_connect(built_env / "fleet_catalog.sqlite") as con:
        yield con


def test_raw_avl_trips_is_the_upstream_of_its_staging_model(fleet_env) -> None:
    graph = build_defs().resolve_asset_graph()
    parents = graph.get(AssetKey(["stg_avl__trips"])).parent_keys
    assert parents == {AssetKey(["raw", "avl", "trips"])}
    assert AssetKey(["fct_trips"]) in graph.get(AssetKey(["fleet_daily"])).parent_keys


def test_fct_trips_holds_every_avl_trip_with_its_true_figures(built, avl_sim: AvlServer) -> None:
    world = avl_sim.world
    start = datetime.combine(FIRST, datetime.min.time(), UTC)
    end = datetime.combine(LAST + timedelta(days=1), datetime.min.time(), UTC)
    truth = {
        (world.vehicles[t.vehicle_index].display_name, t.started_at): t
        for t in world.trips(start, end)
    }
    rows = built.execute(
        "select source_vehicle_id, started_at, ended_at, distance_km, duration_s, idle_s, driving_s, source "
        "from fct_trips join dim_vehicles using (vehicle_id, source)"
    ).fetchall()
    assert len(rows) == len(truth)
    for name, started, ended, km, duration_s, idle_s, driving_s, source in rows:
        trip = truth[(name, started.astimezone(UTC))]
        assert source == "avl" and ended.astimezone(UTC) == trip.ended_at
        assert km == pytest.approx(trip.distance_km, abs=0.051)
        assert duration_s == pytest.approx(trip.duration_s, abs=30)
        assert idle_s == pytest.approx(trip.idle_s, abs=30)
        assert driving_s == duration_s - idle_s


def test_unknown_fuel_is_null_not_zero(built, avl_sim: AvlServer) -> None:
    unconfigured = {v.display_name for v in avl_sim.world.vehicles if v.index % 5 == 4}
    fuel = dict(
        built.execute(
            "select v.display_name, count(fuel_used_l) from fct_trips t "
            "join dim_vehicles v using (vehicle_id, source) group by 1"
        ).fetchall()
    )
    assert unconfigured and all(fuel[name] == 0 for name in unconfigured)
    assert all(n > 0 for name, n in fuel.items() if name not in unconfigured)


def test_fleet_daily_counts_each_trip_once(built) -> None:
    (trips,) = built.execute("select count(*) from fct_trips").fetchone()
    (daily, days) = built.execute(
        "select sum(trips), count(distinct day) from fleet_daily"
    ).fetchone()
    assert daily == trips and days == (LAST - FIRST).days + 1
    bad = built.execute(
        "select count(*) from fleet_daily where idle_share < 0 or idle_share > 1 or refuels is not null"
    ).fetchone()[0]
    assert bad == 0


def test_trip_ids_are_stable_across_rebuilds(built_env, monkeypatch) -> None:
    def trip_ids() -> set[str]:
        with facts_connect(built_env / "fleet_catalog.sqlite") as con:
            return {r[0] for r in con.execute("select trip_id from fct_trips").fetchall()}

    before = trip_ids()
    for key, value in facts_env(built_env / "fleet_catalog.sqlite").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FLEET_LAKE_DIR", str(built_env / "lake"))
    assert run_assets("kind:dbt", tags=fact_days()).success
    assert trip_ids() == before


def test_every_dbt_unit_test_passes(built_env, monkeypatch) -> None:
    """Scheduled builds leave dbt's unit tests out (FactsBuildConfig.unit_tests); they run here,
    on a built warehouse, as CI runs them."""
    from pipelines.dbt import dbt_resource

    for key, value in facts_env(built_env / "fleet_catalog.sqlite").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FLEET_LAKE_DIR", str(built_env / "lake"))
    invocation = dbt_resource().cli(["test", "--select", "test_type:unit"], raise_on_error=False)
    invocation.wait()
    results = invocation.get_artifact("run_results.json")["results"]
    unit = [r for r in results if r["unique_id"].startswith("unit_test.")]
    assert invocation.is_successful(), [
        r for r in results if r["status"] not in ("pass", "success")
    ]
    assert len(unit) >= 13 and {r["status"] for r in unit} == {"pass"}
