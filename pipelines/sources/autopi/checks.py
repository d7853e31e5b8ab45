"""AutoPi's raw checks: overlapping trips, fuel rises within a trip, and its lake days."""

from pipelines.anomalies import (
    LakeTable,
    RawCheck,
    Relations,
    TripShape,
    fuel_rise_check,
    overlap_check,
)
from pipelines.lake_days import RawTable

TRIPS = LakeTable.of(
    "autopi",
    "trips",
    "trip_id varchar, device_id varchar, started_at timestamptz, "
    "ended_at timestamptz, landed_at timestamptz",
)
DATAPOINTS = LakeTable.of(
    "autopi",
    "datapoints",
    "trip_id varchar, @vid bigint, @ts timestamptz, obd.fuel_level.value double",
)

_RELAND = (
    "Re-land the trips that started on those days: `fleet autopi reexport TRIP_ID ...` with "
    "their trip ids (AutoPi's logbook/trips for those days)."
)


def _fuel_levels(rel: Relations) -> str:
    # AutoPi sends no refuel events (dbt infers refuels from rises *between* trips); a tank
    # is not filled while the engine runs, so a rise within one trip is the sensor's doing.
    # Series per trip and day: a trip's file left in an old day folder is not interleaved.
    return f"""
        select cast("@vid" as varchar) as vehicle_id, trip_id || '|' || day as series,
            "@ts" as recorded_at, "obd.fuel_level.value" as level, day
        from ({rel["datapoints"]})
        where trip_id is not null and "@ts" is not null and "obd.fuel_level.value" is not null"""


CHECKS: tuple[RawCheck, ...] = (
    overlap_check(
        TRIPS,
        TripShape("device_id", "trip_id", "started_at", "ended_at", "landed_at desc"),
        follows_run_partitions=False,
    ),
    fuel_rise_check(
        [DATAPOINTS],
        _fuel_levels,
        None,
        description=(
            "Warns when obd.fuel_level rose by ≥ {rise} percentage points within "
            "one trip: AutoPi sends no refuel events and nobody refuels while driving, so "
            "this is the sensor (and dbt would not take it for a refuel)."
        ),
        follows_run_partitions=False,
    ),
)

TABLES: tuple[RawTable, ...] = (
    RawTable("autopi", "trips", partitioned=False, relanding=_RELAND),
    RawTable("autopi", "datapoints", partitioned=False, relanding=_RELAND),
)
