"""What the UI shows of each asset: Dagster's standard metadata on the raw and the dbt assets,
and each day's own rows on each day's materialization of a single-run backfill."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

import pyarrow.parquet as pq
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, materialize

from pipelines.definitions import build_defs
from pipelines.lake import Lake
from tests.conftest import WORLD_END, FleetEnv

AVL = AssetKey(["raw", "avl", "trips"])
FIRST, LAST = WORLD_END - timedelta(days=2), WORLD_END + timedelta(days=1)  # the last: no data
DAYS = [(FIRST + timedelta(days=i)).isoformat() for i in range((LAST - FIRST).days + 1)]


def _run(selection: list[AssetKey], instance: DagsterInstance) -> None:
    defs = build_defs()
    result = materialize(
        [*defs.assets, *(defs.asset_checks or [])],
        resources=defs.resources,
        selection=selection,
        tags={
            "dagster/asset_partition_range_start": FIRST.isoformat(),
            "dagster/asset_partition_range_end": LAST.isoformat(),
        },
        instance=instance,
        raise_on_error=False,
    )
    assert result.success


def _by_day(instance: DagsterInstance, key: AssetKey) -> dict[str, dict]:
    """The latest materialization's metadata of each partition of `key`."""
    out = {}
    for day in DAYS:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1
        ).records
        assert records, (key, day)
        materialization = records[0].asset_materialization
        out[day] = {k: v.value for k, v in materialization.metadata.items()}
    return out


def test_raw_and_dbt_assets_carry_standard_metadata_and_each_day_its_own_rows(
    avl_env: FleetEnv,
) -> None:
    defs = build_defs()
    graph = defs.resolve_asset_graph()
    dbt_keys = [k for k in graph.get_all_asset_keys() if k.path[0] not in {"raw", "fleet_report"}]
    with DagsterInstance.ephemeral() as instance:
        _run([AVL], instance)
        _run(dbt_keys, instance)

        # Raw: the Columns tab lists the files' columns, the table has a name, owners, tags.
        node = graph.get(AVL)
        schema = node.metadata["dagster/column_schema"].schema
        (path, *_) = Lake(avl_env.lake_dir).files("avl", "trips")
        assert [c.name for c in schema.columns] == pq.read_schema(path).names
        assert all(c.type and c.type != "?" for c in schema.columns)
        assert node.metadata["dagster/table_name"].value == "lake.avl.trips"
        assert node.owners and node.tags["source"] == "avl"
        raw = _by_day(instance, AVL)
        held = Counter(
            d.isoformat() for d in Lake(avl_env.lake_dir).read("avl", "trips")["day"].to_pylist()
        )
        assert {d: m["dagster/partition_row_count"] for d, m in raw.items()} == {
            d: held.get(d, 0) for d in DAYS
        }
        assert raw[LAST.isoformat()]["rows"] == 0 and raw[WORLD_END.isoformat()]["rows"] > 0
        assert {m["dagster/row_count"] for m in raw.values()} == {sum(held.values())}
        assert str(avl_env.lake_dir) in raw[DAYS[0]]["dagster/uri"]

        # dbt: each day of a daily table its own rows; columns typed; the table's row count.
        stg = _by_day(instance, AssetKey(["stg_avl__trips"]))
        with avl_env.facts(latest=True) as con:
            per_day = dict(
                con.execute("select day, count(*) from stg_avl__trips group by 1").fetchall()
            )
            trips = con.execute("select count(*) from fct_trips").fetchone()[0]
            types = dict(
                con.execute(
                    "select column_name, data_type from information_schema.columns "
                    "where table_name = 'fct_trips'"
                ).fetchall()
            )
        assert {d: m["rows"] for d, m in stg.items()} == {
            d: per_day.get(date.fromisoformat(d), 0) for d in DAYS
        }
        assert stg[LAST.isoformat()]["dagster/partition_row_count"] == 0
        fct = _by_day(instance, AssetKey(["fct_trips"]))[DAYS[0]]
        assert fct["dagster/row_count"] == trips > 0
        assert {c.name: c.type for c in fct["dagster/column_schema"].columns} == types
        assert fct["dagster/table_name"] == "facts.main.fct_trips"
        fct_node = graph.get(AssetKey(["fct_trips"]))
        assert fct_node.owners and fct_node.tags["layer"] == "marts"
        assert "dagster_dbt/project" not in fct_node.metadata  # shown as "(unserializable)"

    # Every dbt test says in words what it holds.
    checks = [graph.get_check_spec(k) for k in graph.asset_check_keys]
    assert checks and all(c.description for c in checks)
    unique = graph.get_check_spec(
        next(k for k in graph.asset_check_keys if k.name == "unique_fct_trips_trip_id")
    )
    assert unique.description == "trip_id is unique in fct_trips"
