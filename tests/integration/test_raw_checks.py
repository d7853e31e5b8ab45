"""The raw-lake anomaly checks, the dbt automation and the marts' freshness: real Dagster runs on
small lakes written with `Lake` (clean, then with the anomaly), plus a kt1 drain from the
simulator whose checks must stay quiet."""

import json
import warnings
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetSelection,
    BetaWarning,
    DefaultSensorStatus,
    Definitions,
    ExecuteInProcessResult,
    PreviewWarning,
    SupersessionWarning,
    materialize,
)

from pipelines.anomalies import FUEL_CHECK, ODOMETER_CHECK, OVERLAP_CHECK
from pipelines.checks import RAW_CHECKS, RAW_TABLES, build_raw_checks
from pipelines.dbt import FACTS_FRESHNESS
from pipelines.facts_build import FACTS_SENSOR
from pipelines.lake import Lake
from pipelines.lake_days import LAKE_DAYS_CHECK
from pipelines.resources import LakeResource

D = date(2026, 3, 10)
RANGE = {
    "dagster/asset_partition_range_start": D.isoformat(),
    "dagster/asset_partition_range_end": D.isoformat(),
}
LANDED = datetime(2026, 3, 11, 3, 0, tzinfo=UTC)
RELANDED = LANDED + timedelta(hours=1)


def at(hhmm: str, day: date = D) -> datetime:
    hour, minute = (int(p) for p in hhmm.split(":"))
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


def land(
    lake: Lake, source: str, table: str, rows: list[dict[str, Any]], by: str, name: str = "data"
) -> None:
    """Write rows into the day folders of their `by` timestamp, one file `name` per day."""
    days: dict[date, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        days[row[by].date()].append(row)
    for day, day_rows in days.items():
        lake.write_file(source, table, day, name, pa.Table.from_pylist(day_rows))


def run_check(
    lake: Lake, asset: AssetKey, name: str, tags: dict[str, str] | None = None
) -> tuple[bool, dict[str, Any], str]:
    """One real Dagster run of one check; its passed flag, metadata values and description."""
    result: ExecuteInProcessResult = materialize(
        build_raw_checks(),
        resources={"lake": LakeResource(lake_dir=str(lake.root))},
        selection=AssetSelection.checks(AssetCheckKey(asset, name)),
        tags=tags,
    )
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.severity.value == "WARN"
    metadata = {k: v.value for k, v in evaluation.metadata.items()}
    return evaluation.passed, metadata, evaluation.description or ""


# ---- overlapping trips ------------------------------------------------------------------------

# (vehicle, trip id, start, end) in neutral terms; each source maps them to its own columns.
CLEAN_TRIPS = [
    ("V1", "T1", at("08:00"), at("09:00")),
    ("V1", "T2", at("09:00"), at("10:00")),  # starts as T1 ends: back to back, not overlapping
    ("V1", "T3", at("12:00"), at("18:00")),
    ("V1", "T8", at("20:00"), None),  # still driving when pulled: end unknown, not judged
    ("V1", "T9", at("20:30"), at("21:00")),
    ("V2", "T4", at("08:30"), at("09:30")),  # another vehicle at the same time
    ("V1", "T0", at("23:30", D - timedelta(days=1)), at("00:20")),  # previous day's file
]
OVERLAPS = [
    ("V1", "T5", at("08:30"), at("08:45")),  # inside T1
    ("V1", "T6", at("13:00"), at("14:00")),  # inside the long T3 ...
    ("V1", "T7", at("15:00"), at("16:00")),  # ... and so is this one, after T6 ended
    ("V1", "T10", at("00:10"), at("00:40")),  # overlaps T0, landed in the day before
]
LATER_OVERLAP = [
    ("V1", "T11", at("08:10", D + timedelta(days=3)), at("08:20", D + timedelta(days=3))),
    ("V1", "T12", at("08:15", D + timedelta(days=3)), at("08:25", D + timedelta(days=3))),
]


def _avl(v: str, trip: str, start: datetime, end: datetime | None, landed: datetime) -> dict:
    return {
        "device_name": v,
        "trip_start": start,
        "trip_end": end,
        "kms": 12.5,
        "extracted_at": landed,
    }


def _autopi(v: str, trip: str, start: datetime, end: datetime | None, landed: datetime) -> dict:
    return {
        "trip_id": trip,
        "device_id": v,
        "started_at": start,
        "ended_at": end,
        "landed_at": landed,
    }


def _kt1(v: str, trip: str, start: datetime, end: datetime | None, landed: datetime) -> dict:
    return {
        "batch_id": f"b-{landed:%H%M}",
        "item_index": 0,
        "fetched_at": landed,
        "landed_at": landed,
        "id": trip,
        "asset_id": v,
        "date_start": start,
        "date_end": end,
        "item_json": "{}",
    }


def _metrotec(v: str, trip: str, start: datetime, end: datetime | None, landed: datetime) -> dict:
    return {
        "ID": int(trip[1:]),
        "objectID": v,
        "startTime": start,
        "stopTime": end,
        "extracted_at": landed,
    }


TRIP_TABLES = {
    "avl": ("trips", _avl, "trip_start", RANGE),
    "autopi": ("trips", _autopi, "started_at", None),
    "kt1": ("trips", _kt1, "date_start", None),
    "metrotec": ("routelog", _metrotec, "startTime", RANGE),
}


def land_trips(
    lake: Lake, source: str, trips: list[tuple], name: str, landed: datetime = LANDED
) -> None:
    table, row, by, _ = TRIP_TABLES[source]
    land(lake, source, table, [row(*t, landed) for t in trips], by, name)


@pytest.mark.parametrize("source", list(TRIP_TABLES), ids=list(TRIP_TABLES))
def test_overlapping_trips_of_one_vehicle_are_counted_and_shown(lake: Lake, source: str) -> None:
    table, _, _, tags = TRIP_TABLES[source]
    asset = AssetKey(["raw", source, table])
    land_trips(lake, source, CLEAN_TRIPS, "data")
    # The same trip landed again (a redelivery, a re-pull) is one trip, not an overlap.
    land_trips(lake, source, CLEAN_TRIPS[:1], "again", landed=RELANDED)

    passed, metadata, _ = run_check(lake, asset, OVERLAP_CHECK, tags)
    assert passed and metadata["overlapping_trips"] == 0
    # One row per trip; a partitioned run reads T0's day as context only.
    assert metadata["checked"] == (6 if tags else 7)

    land_trips(lake, source, OVERLAPS, "overlaps")
    passed, metadata, description = run_check(lake, asset, OVERLAP_CHECK, tags)
    assert not passed and metadata["overlapping_trips"] == 4
    assert description.startswith("4 overlapping trips in ")
    first = metadata["examples"][0]
    assert first["vehicle_id"] == "V1" and first["earlier_ended_at"].startswith("2026-03-10 00:20")
    swallowed = [e for e in metadata["examples"] if e["started_at"].startswith("2026-03-10 15:00")]
    assert swallowed[0]["overlap_s"] == 3 * 3600  # against T3, which ends at 18:00


def test_a_partitioned_run_counts_only_its_own_days(lake: Lake) -> None:
    land_trips(lake, "avl", CLEAN_TRIPS + OVERLAPS + LATER_OVERLAP, "data")
    asset = AssetKey(["raw", "avl", "trips"])
    _, in_range, _ = run_check(lake, asset, OVERLAP_CHECK, RANGE)
    _, alone, _ = run_check(lake, asset, OVERLAP_CHECK)  # run by hand: the newest 7 days
    assert in_range["overlapping_trips"] == 4 and in_range["last_day"] == "2026-03-10"
    assert alone["overlapping_trips"] == 5 and alone["last_day"] == "2026-03-13"


# ---- odometers --------------------------------------------------------------------------------


def _telemetry(
    origin: str,
    asset: str,
    when: datetime,
    odometer: float | None,
    counter: float | None,
    fuel: float | None = None,
    landed: datetime = LANDED,
) -> dict:
    return {
        "batch_id": f"b-{landed:%H%M}",
        "item_index": 0,
        "fetched_at": landed,
        "landed_at": landed,
        "origin_id": origin,
        "asset_id": asset,
        "date": when,
        "counters_odometer": odometer,
        "counters_odo_counter": counter,
        "item_json": json.dumps({"type": "telemetry", "telemetry": {"fuel_level": fuel}}),
    }


def test_a_kt1_device_counter_going_backwards_is_counted(lake: Lake) -> None:
    asset = AssetKey(["raw", "kt1", "telemetry"])
    clean = [
        _telemetry("O1", "A1", at("08:00"), 1_000_000, 200_000),
        _telemetry("O1", "A1", at("08:10"), 1_005_000, 205_000),
        _telemetry("O1", "A1", at("08:20"), 1_010_000, 204_999),  # a GPS counter's metre of drift
        _telemetry("O1", "A1", at("08:30"), 1_010_000, 210_000),
        _telemetry("O1", "A1", at("08:35"), None, None),  # a report without counters
        _telemetry("O2", "A2", at("08:15"), 3_000, 1_000),  # another device: never compared
    ]
    land(lake, "kt1", "telemetry", clean, "date")
    land(lake, "kt1", "telemetry", clean[1:2], "date", "redelivered")
    passed, metadata, _ = run_check(lake, asset, ODOMETER_CHECK)
    assert passed and metadata["backward_readings"] == 0

    reset = [
        _telemetry("O1", "A1", at("09:00"), 1_000, 150_000),  # both counters went back
        _telemetry("O1", "A1", at("09:10"), 6_000, 155_000),  # and count on from there
    ]
    land(lake, "kt1", "telemetry", reset, "date", "reset")
    passed, metadata, _ = run_check(lake, asset, ODOMETER_CHECK)
    assert not passed and metadata["backward_readings"] == 2
    by_counter = {e["counter"]: e for e in metadata["examples"]}
    assert by_counter["counters.odometer"]["decrease"] == 1_009_000
    assert by_counter["counters.odo_counter"]["previous_value"] == 210_000


def _vehicle(vehicle_id: str, day: date, odometer: float) -> dict:
    fetched = datetime(day.year, day.month, day.day, 3, 45, tzinfo=UTC)
    return {
        "id": vehicle_id,
        "alias": vehicle_id,
        "odometer": odometer,
        "odometer_day": fetched,
        "extracted_at": fetched,
    }


def test_a_metrotec_odometer_lower_than_in_the_previous_snapshot_is_counted(lake: Lake) -> None:
    asset = AssetKey(["raw", "metrotec", "vehicles"])
    days = [D - timedelta(days=2), D - timedelta(days=1), D]
    for day, odometer in zip(days, [15_000, 15_100, 15_099.5], strict=True):
        rows = [_vehicle("V1", day, odometer), _vehicle("V2", day, 0)]  # V2: none configured
        lake.replace_partition("metrotec", "vehicles", day, pa.Table.from_pylist(rows))
    # The snapshot job runs inside a Metrotec range run: its window is still the newest days.
    january = {
        "dagster/asset_partition_range_start": "2026-01-01",
        "dagster/asset_partition_range_end": "2026-01-02",
    }
    passed, metadata, _ = run_check(lake, asset, ODOMETER_CHECK, january)
    assert passed and metadata["checked"] == 3

    lake.replace_partition(
        "metrotec", "vehicles", D, pa.Table.from_pylist([_vehicle("V1", D, 14_000)])
    )
    passed, metadata, _ = run_check(lake, asset, ODOMETER_CHECK)
    assert not passed and metadata["backward_readings"] == 1
    (example,) = metadata["examples"]
    assert example["decrease_km"] == 1_100 and example["snapshot_day"] == D.isoformat()


# ---- fuel -------------------------------------------------------------------------------------


def _level(vehicle: str, when: datetime, fuel: float, code: bool = False) -> dict:
    return {
        "objectID": vehicle,
        "GMTime": when,
        "fuel": fuel,
        "fuel_is_code": code,
        "extracted_at": LANDED,
    }


def _refuel(vehicle: str, start: datetime, stop: datetime) -> dict:
    return {
        "ID": 1,
        "objectID": vehicle,
        "startTime": start,
        "stopTime": stop,
        "maxTime": stop,
        "fuelBeforeL": 40.0,
        "fuelAfterL": 90.0,
        "extracted_at": LANDED,
    }


METROTEC_LEVELS = [
    _level("V1", at("06:00"), 60),
    _level("V1", at("07:00"), 58),
    _level("V1", at("08:00"), -2, code=True),  # "no reading": not a level to rise from
    _level("V1", at("08:30"), 57),
    _level("V1", at("09:00"), 59),  # +2: slosh, below the threshold
    _level("V1", at("10:00"), 40),
    _level("V1", at("10:10"), 90),  # the refuel below
    _level("V1", at("12:00"), 88),
]


def test_a_metrotec_fuel_rise_without_a_refuel_is_counted(lake: Lake) -> None:
    asset = AssetKey(["raw", "metrotec", "fuel_levels"])
    land(lake, "metrotec", "fuel_levels", METROTEC_LEVELS, "GMTime")
    land(lake, "metrotec", "refuels", [_refuel("V1", at("10:00"), at("10:10"))], "startTime")
    passed, metadata, _ = run_check(lake, asset, FUEL_CHECK, RANGE)
    assert passed and metadata["unexplained_rises"] == 0 and metadata["checked"] == 7

    jump = [_level("V1", at("14:00"), 70), _level("V1", at("15:00"), 95)]
    land(lake, "metrotec", "fuel_levels", jump, "GMTime", "jump")
    passed, metadata, _ = run_check(lake, asset, FUEL_CHECK, RANGE)
    assert not passed and metadata["unexplained_rises"] == 1
    (example,) = metadata["examples"]
    assert example["rise"] == 25 and example["recorded_at"].startswith("2026-03-10 15:00")


def test_fuel_rises_count_while_no_refuel_has_landed_yet(lake: Lake) -> None:
    land(lake, "metrotec", "fuel_levels", METROTEC_LEVELS, "GMTime")  # no refuels table at all
    passed, metadata, _ = run_check(
        lake, AssetKey(["raw", "metrotec", "fuel_levels"]), FUEL_CHECK, RANGE
    )
    assert not passed and metadata["unexplained_rises"] == 1


def _event(asset: str, event_type: str, when: datetime, details: dict | None = None) -> dict:
    return {
        "batch_id": "b-1",
        "item_index": 0,
        "fetched_at": LANDED,
        "landed_at": LANDED,
        "id": f"{asset}-{event_type}-{when:%H%M}",
        "asset_id": asset,
        "event_date": when,
        "event_class": "fuel" if event_type == "refuel" else "io",
        "event_type": event_type,
        "item_json": json.dumps({"type": "event", "details": details or {}}),
    }


def test_a_kt1_fuel_rise_without_a_refuel_event_is_counted(lake: Lake) -> None:
    asset = AssetKey(["raw", "kt1", "telemetry"])
    reports = [
        _telemetry("O1", "A1", at(hhmm), 1_000_000, 200_000, fuel)
        for hhmm, fuel in [
            ("08:00", 60),
            ("09:00", 55),
            ("10:00", 40),
            ("10:20", 90),
            ("11:00", 88),
        ]
    ]
    land(lake, "kt1", "telemetry", reports, "date")
    refuel = _event(
        "A1",
        "refuel",
        at("10:15"),
        {"dateStart": "2026-03-10T10:05:00Z", "dateEnd": "2026-03-10T10:15:00Z"},
    )
    land(lake, "kt1", "events", [refuel, _event("A1", "ignition_on", at("12:30"))], "event_date")
    passed, metadata, _ = run_check(lake, asset, FUEL_CHECK)
    assert passed and metadata["unexplained_rises"] == 0

    jump = [
        _telemetry("O1", "A1", at(h), 1_000_000, 200_000, fuel)
        for h, fuel in [("12:00", 70), ("13:00", 100)]
    ]
    land(lake, "kt1", "telemetry", jump, "date", "jump")
    passed, metadata, _ = run_check(lake, asset, FUEL_CHECK)
    assert not passed and metadata["unexplained_rises"] == 1  # ignition_on explains nothing
    assert metadata["examples"][0]["rise"] == 30


def _datapoint(trip: str, line: int, when: datetime, fuel: float | None) -> dict:
    return {
        "trip_id": trip,
        "line_no": line,
        "@vid": 7,
        "@ts": when,
        "@t": "obd.fuel_level",
        "obd.fuel_level.value": fuel,
    }


def test_an_autopi_fuel_rise_within_one_trip_is_counted(lake: Lake) -> None:
    asset = AssetKey(["raw", "autopi", "datapoints"])
    trips = [
        _datapoint("X", 2, at("08:00"), 50),
        _datapoint("X", 3, at("08:05"), None),  # a datapoint of another type
        _datapoint("X", 4, at("08:10"), 49.5),
        _datapoint("Z", 2, at("12:00"), 80),  # refuelled between trips X and Z: dbt's refuel
        _datapoint("Z", 3, at("12:10"), 79.5),
    ]
    land(lake, "autopi", "datapoints", trips, "@ts")
    passed, metadata, _ = run_check(lake, asset, FUEL_CHECK)
    assert passed and metadata["checked"] == 4

    noisy = [
        _datapoint("Y", 2, at("15:00"), 40),
        _datapoint("Y", 3, at("15:05"), 41),
        _datapoint("Y", 4, at("15:10"), 60),
    ]
    land(lake, "autopi", "datapoints", noisy, "@ts", "noisy")
    passed, metadata, _ = run_check(lake, asset, FUEL_CHECK)
    assert not passed and metadata["unexplained_rises"] == 1
    assert metadata["examples"][0]["series"] == "Y|2026-03-10"


def test_every_check_passes_on_a_lake_with_nothing_landed_yet(lake: Lake) -> None:
    result = materialize(
        build_raw_checks(),
        resources={"lake": LakeResource(lake_dir=str(lake.root))},
        selection=AssetSelection.all_asset_checks(),
    )
    evaluations = result.get_asset_check_evaluations()
    assert result.success and len(evaluations) == len(RAW_CHECKS) + len(RAW_TABLES)
    for e in evaluations:
        landed = (
            "nothing materialized yet" if e.check_name == LAKE_DAYS_CHECK else "nothing landed yet"
        )
        assert e.passed and e.description == landed


def test_the_checks_of_a_real_kt1_drain_stay_quiet_on_clean_simulated_data(fleet_env) -> None:
    from pipelines.definitions import build_defs
    from tests.support.kt1_support import KT1_KEYS, kt1_resource, small_world, start_server

    server = start_server(small_world(days=2))
    try:
        defs = build_defs()
        result = materialize(
            [*defs.assets, *defs.asset_checks],
            resources={**defs.resources, "kt1": kt1_resource(server)},
            selection=AssetSelection.assets(*KT1_KEYS),  # what the drain job selects
        )
    finally:
        server.stop()
    assert result.success
    evaluations = {
        (e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()
    }
    tables = ("telemetry", "trips", "events", "changes")
    lake_days = {(table, LAKE_DAYS_CHECK) for table in tables}
    quarantine = {(table, "no_quarantined_rows") for table in tables}
    assert set(evaluations) == {
        ("trips", OVERLAP_CHECK),
        ("telemetry", ODOMETER_CHECK),
        ("telemetry", FUEL_CHECK),
        *lake_days,
        *quarantine,
    }
    for key, evaluation in evaluations.items():
        assert evaluation.passed, evaluation.metadata
        if key not in lake_days | quarantine:
            assert evaluation.metadata["checked"].value > 0


# ---- Definitions, automation, freshness -------------------------------------------------------


@pytest.fixture
def defs(fleet_env) -> Definitions:
    from pipelines.definitions import build_defs

    return build_defs()


def test_definitions_load_with_every_check_and_without_beta_or_deprecated_apis(fleet_env) -> None:
    from pipelines.definitions import build_defs

    with warnings.catch_warnings():
        for category in (BetaWarning, PreviewWarning, SupersessionWarning, DeprecationWarning):
            warnings.simplefilter("error", category)
        defs = build_defs()
        Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    registered = {
        k for k in graph.asset_check_keys if k.name in (OVERLAP_CHECK, ODOMETER_CHECK, FUEL_CHECK)
    }
    assert registered == {AssetCheckKey(c.asset, c.name) for c in RAW_CHECKS}
    lake_days = {k for k in graph.asset_check_keys if k.name == LAKE_DAYS_CHECK}
    assert lake_days == {AssetCheckKey(t.key, LAKE_DAYS_CHECK) for t in RAW_TABLES}
    raw = {k for k in graph.get_all_asset_keys() if k.path[0] == "raw"}
    assert {k.asset_key for k in lake_days} == raw  # every raw table, none forgotten


def test_dbt_models_are_built_by_the_facts_sensor_and_the_marts_carry_a_freshness_policy(
    defs: Definitions,
) -> None:
    graph = defs.resolve_asset_graph()
    dbt_keys = [k for k in graph.get_all_asset_keys() if k.path[0] not in {"raw", "fleet_report"}]
    assert dbt_keys
    for key in dbt_keys:
        assert graph.get(key).automation_condition is None, key  # the facts sensor's business
    marts = {"fct_trips", "fct_fuel_events", "fct_idle_periods", "dim_vehicles", "fleet_daily"}
    for key in dbt_keys:
        policy = graph.get(key).freshness_policy
        if key.path[-1] in marts:
            assert policy == FACTS_FRESHNESS, key
        else:
            assert policy is None, key
    for raw in (k for k in graph.get_all_asset_keys() if k.path[0] == "raw"):
        assert graph.get(raw).automation_condition is None  # schedules and sensors land them
    sensor = defs.resolve_sensor_def(FACTS_SENSOR)
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    job = defs.resolve_job_def(sensor.job_name)  # a named job: the UI shows its name
    assert sensor.job_name == "fleet_facts_build"
    assert set(job.asset_layer.selected_asset_keys) == set(dbt_keys)
