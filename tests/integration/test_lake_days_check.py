"""`lake_days_present`: a day Dagster landed whose `day=` folder is gone fails the check, and
the facts build warns about it. Real Dagster runs on a persistent instance (the check reads
what earlier runs recorded), against the simulators and a real lake."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    DagsterInstance,
    ExecuteInProcessResult,
    MetadataValue,
    materialize,
)

from pipelines.checks import RAW_TABLES, build_raw_checks
from pipelines.lake import Lake
from pipelines.lake_days import (
    DAYS_WRITTEN,
    LAKE_DAYS_CHECK,
    LakeDays,
    describe_days,
    lake_days_result,
)
from pipelines.resources import LakeResource
from tests.conftest import fact_days

AVL_KEY = AssetKey(["raw", "avl", "trips"])
D1, D2, D3, D4 = (date(2026, 3, d) for d in (2, 3, 4, 5))


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    """A SQLite-backed instance like a deployment's, shared by the runs of one test."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(str(home)) as instance:
        yield instance


def run_check(instance: DagsterInstance, lake_dir: Path, key: AssetKey) -> Any:
    """The check alone, as from the asset's Checks tab; its evaluation."""
    result = materialize(
        build_raw_checks(),
        resources={"lake": LakeResource(lake_dir=str(lake_dir))},
        selection=AssetSelection.checks(AssetCheckKey(key, LAKE_DAYS_CHECK)),
        instance=instance,
    )
    assert result.success  # a failed check fails no run
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.severity == AssetCheckSeverity.ERROR
    return evaluation


def values(evaluation: Any) -> dict[str, Any]:
    return {k: v.value for k, v in evaluation.metadata.items()}


def land_avl(instance: DagsterInstance, first: date, last: date) -> ExecuteInProcessResult:
    """A real AVL range run, with every check of the asset (as its schedule runs it)."""
    from pipelines.definitions import build_defs

    defs = build_defs()
    result = materialize(
        [*defs.assets, *defs.asset_checks],
        resources=defs.resources,
        selection=AssetSelection.assets(AVL_KEY),
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
    )
    assert result.success
    return result


def lake_days_evaluation(result: ExecuteInProcessResult, key: AssetKey) -> Any:
    (evaluation,) = (
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == key and e.check_name == LAKE_DAYS_CHECK
    )
    return evaluation


# ---- partitioned: AVL -------------------------------------------------------------------------


def test_a_deleted_avl_day_fails_the_check_until_it_is_materialized_again(
    avl_env, instance: DagsterInstance
) -> None:
    landed = land_avl(instance, D1, D3)
    evaluation = lake_days_evaluation(landed, AVL_KEY)  # it runs after each materialization
    assert evaluation.passed and values(evaluation)["expected_days"] == 3

    shutil.rmtree(Lake(avl_env.lake_dir).partition_dir("avl", "trips", D2))
    assert not Lake(avl_env.lake_dir).partition_dir("avl", "trips", D4).exists()  # never run

    evaluation = run_check(instance, avl_env.lake_dir, AVL_KEY)
    meta = values(evaluation)
    assert not evaluation.passed
    assert meta["missing_days"] == 1 and meta["missing"] == D2.isoformat()
    assert meta["expected_days"] == 3  # D1 and D3 are there; D4 was never landed
    command = (
        "dagster asset materialize -m pipelines.definitions --select raw/avl/trips "
        f"--partition-range {D2}...{D2}"
    )
    assert command in evaluation.description

    land_avl(instance, D2, D2)  # what the description says to do
    evaluation = run_check(instance, avl_env.lake_dir, AVL_KEY)
    assert evaluation.passed and values(evaluation)["missing_days"] == 0


def test_the_facts_build_warns_of_a_missing_lake_day_and_still_builds(
    avl_env, instance: DagsterInstance
) -> None:
    from pipelines.definitions import build_defs

    land_avl(instance, D1, D3)
    shutil.rmtree(Lake(avl_env.lake_dir).partition_dir("avl", "trips", D2))

    defs = build_defs()
    staging = AssetKey(["stg_avl__trips"])
    result = materialize(
        list(defs.assets),
        resources=defs.resources,
        selection=[staging],
        instance=instance,
        tags=fact_days(),
    )
    assert result.success  # the data may have been deleted on purpose: warn, don't fail
    warnings = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.level == logging.WARNING and "raw/avl/trips" in entry.user_message
    ]
    assert len(warnings) == 1 and D2.isoformat() in warnings[0], warnings
    assert D1.isoformat() not in warnings[0] and D3.isoformat() not in warnings[0]
    # One materialization per fact day of the run, each flagged.
    built = [e for e in result.get_asset_materialization_events() if e.asset_key == staging]
    assert built
    for event in built:
        flagged = event.materialization.metadata["missing_lake_days"].value
        assert flagged == {"raw/avl/trips": D2.isoformat()}


# ---- drains: days_written ---------------------------------------------------------------------


def report(instance: DagsterInstance, key: AssetKey, days: list[date] | None) -> None:
    """A materialization as a drain records it (None: one from before `days_written` existed)."""
    metadata = (
        {} if days is None else {DAYS_WRITTEN: MetadataValue.json([d.isoformat() for d in days])}
    )
    instance.report_runless_asset_event(AssetMaterialization(key, metadata=metadata))


def test_a_kt1_day_lost_after_a_real_drain_fails_the_check_and_says_it_is_lost(
    fleet_env, instance: DagsterInstance
) -> None:
    from tests.support.kt1_support import run_drain, small_world, start_server

    key = AssetKey(["raw", "kt1", "telemetry"])
    server = start_server(small_world(days=2))
    try:
        drained = run_drain(server, instance=instance)
    finally:
        server.stop()
    assert drained.success
    lake = Lake(fleet_env.lake_dir)
    days = sorted({date.fromisoformat(p.parent.name[4:]) for p in lake.files("kt1", "telemetry")})
    assert len(days) >= 2
    (materialized,) = (e for e in drained.get_asset_materialization_events() if e.asset_key == key)
    if DAYS_WRITTEN not in materialized.materialization.metadata:
        report(instance, key, days)  # the drain records its days itself once it lists them

    assert run_check(instance, fleet_env.lake_dir, key).passed
    shutil.rmtree(lake.partition_dir("kt1", "telemetry", days[0]))
    evaluation = run_check(instance, fleet_env.lake_dir, key)
    assert not evaluation.passed and values(evaluation)["missing"] == days[0].isoformat()
    assert "lost upstream" in evaluation.description and "backup" in evaluation.description


def test_drain_days_come_from_days_written_and_each_evaluation_reads_only_new_materializations(
    tmp_path: Path, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = AssetKey(["raw", "autopi", "trips"])
    lake = Lake(tmp_path / "lake")
    for day in (D1, D2, D3):
        lake.write_file("autopi", "trips", day, f"trip-{day}", pa.table({"trip_id": [str(day)]}))
    assert run_check(instance, lake.root, key).description == "nothing materialized yet"

    report(instance, key, [D1, D2])
    report(instance, key, [])  # a drain that found nothing ready
    report(instance, key, None)  # from before the drains listed their days
    report(instance, key, [D3])
    evaluation = run_check(instance, lake.root, key)
    assert evaluation.passed and values(evaluation)["expected_days"] == 3

    shutil.rmtree(lake.partition_dir("autopi", "trips", D2))
    read: list[int] = []
    fetch = instance.fetch_materializations

    def counting(*args: Any, **kwargs: Any) -> Any:
        page = fetch(*args, **kwargs)
        read.append(len(page.records))
        return page

    monkeypatch.setattr(instance, "fetch_materializations", counting)
    report(instance, key, [D4])  # landed, then its folder was lost too
    lake.write_file("autopi", "trips", date(2026, 3, 9), "x", pa.table({"trip_id": ["x"]}))
    evaluation = run_check(instance, lake.root, key)
    meta = values(evaluation)
    assert not evaluation.passed
    assert meta["missing_days"] == 2 and meta["missing"] == f"{D2}, {D4}"  # 03-09: not landed
    assert sum(read) == 2  # the previous evaluation's last record (still there?) and the new one
    assert "fleet autopi reexport TRIP_ID" in evaluation.description

    instance.wipe_assets([key])  # forgetting the asset's history forgets its days
    evaluation = run_check(instance, lake.root, key)
    assert evaluation.passed and evaluation.description == "nothing materialized yet"


# ---- what the check says ----------------------------------------------------------------------


def missing(source: str, name: str, days: tuple[date, ...]) -> LakeDays:
    """What `lake_days` finds when these landed days of the table have no files."""
    (table,) = (t for t in RAW_TABLES if (t.source, t.table) == (source, name))
    return LakeDays(table, frozenset(days), days)


def test_every_raw_table_has_the_check() -> None:
    checked = {
        key.asset_key.to_user_string()
        for checks in build_raw_checks()
        for key in checks.check_keys
        if key.name == LAKE_DAYS_CHECK
    }
    assert checked == {
        "raw/avl/trips",
        *(f"raw/metrotec/{t}" for t in ("routelog", "stops", "refuels", "fuel_levels", "vehicles")),
        *(f"raw/kt1/{t}" for t in ("telemetry", "trips", "events", "changes")),
        "raw/autopi/trips",
        "raw/autopi/datapoints",
    }


def test_missing_days_are_shown_as_runs_at_most_twenty_and_counted() -> None:
    days = [date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3), date(2026, 1, 5)]
    assert describe_days(days) == "2026-01-01..2026-01-03, 2026-01-05"
    every_other = [date(2025, 1, 1) + timedelta(days=2 * i) for i in range(25)]
    shown = describe_days(every_other)
    assert shown.count(",") == 19 and shown.endswith("(+5 more days)")


def test_partitioned_tables_get_one_command_per_run_of_missing_days_or_one_over_them_all() -> None:
    result = lake_days_result(missing("metrotec", "routelog", (D1, D3, D4)))
    assert not result.passed
    description = result.description or ""
    assert "--select raw/metrotec/routelog --partition-range 2026-03-02...2026-03-02" in description
    assert "--partition-range 2026-03-04...2026-03-05" in description
    many = missing("metrotec", "routelog", tuple(date(2026, 1, 1 + 2 * i) for i in range(5)))
    description = lake_days_result(many).description or ""
    assert description.count("--partition-range") == 1
    assert "--partition-range 2026-01-01...2026-01-09`." in description


def test_days_a_drain_or_snapshot_lost_say_how_or_whether_they_come_back() -> None:
    autopi = lake_days_result(missing("autopi", "datapoints", (D1,))).description or ""
    assert "fleet autopi reexport TRIP_ID" in autopi
    kt1 = lake_days_result(missing("kt1", "events", (D1,))).description or ""
    assert "lost upstream" in kt1 and "backup" in kt1
    vehicles = lake_days_result(missing("metrotec", "vehicles", (D1,))).description or ""
    assert "cannot be fetched again" in vehicles and "backup" in vehicles
