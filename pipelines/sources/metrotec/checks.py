"""Metrotec's raw checks: overlapping routes, odometers going back between vehicle snapshots,
fuel rises without a refuel, and its lake days."""

from pipelines.anomalies import (
    LakeTable,
    RawCheck,
    Relations,
    TripShape,
    fuel_rise_check,
    odometer_check,
    overlap_check,
    previous_row_sql,
)
from pipelines.lake_days import RawTable

ODOMETER_TOLERANCE_KM = 1.0
"""Metrotec odometers are whole kilometres."""

ROUTELOG = LakeTable.of(
    "metrotec",
    "routelog",
    "ID bigint, objectID varchar, startTime timestamptz, "
    "stopTime timestamptz, extracted_at timestamptz",
)
VEHICLES = LakeTable.of(
    "metrotec", "vehicles", "id varchar, odometer double, odometer_day timestamptz"
)
FUEL_LEVELS = LakeTable.of(
    "metrotec",
    "fuel_levels",
    "objectID varchar, GMTime timestamptz, fuel double, "
    "fuel_is_code boolean, extracted_at timestamptz",
)
REFUELS = LakeTable.of(
    "metrotec",
    "refuels",
    "objectID varchar, startTime timestamptz, stopTime timestamptz, maxTime timestamptz",
)
_ROUTE_ID = '"objectID" || \'|\' || cast("ID" as varchar)'
"""A route is named by its vehicle and its id."""

_VEHICLES_LOST = (
    "A past vehicle snapshot cannot be fetched again (the API lists today's vehicles): restore "
    "the day folders from a backup of the lake; materializing raw/metrotec/vehicles lands "
    "today's snapshot only."
)

_ORDER = "snapshot_day, odometer_day, odometer"
_LAGS = {"odometer": "previous_odometer", "snapshot_day": "previous_snapshot_day"}


def _odometer_sql(first: str, rel: Relations) -> str:
    vehicles = rel["vehicles"]
    compared = previous_row_sql(
        "snapshots", first, series="vehicle_id", order=_ORDER, lags=_LAGS, day="snapshot_day"
    )
    return f"""
    snapshots as (
        -- 0 is what the API sends when no odometer is configured.
        select distinct id as vehicle_id, day as snapshot_day, odometer, odometer_day
        from ({vehicles})
        where id is not null and odometer > 0
    ),
    {compared},
    anomalies as (
        select
            vehicle_id, previous_snapshot_day, previous_odometer, snapshot_day, odometer,
            odometer_day, previous_odometer - odometer as decrease_km
        from ordered
        where odometer < previous_odometer - {ODOMETER_TOLERANCE_KM}
            and snapshot_day >= {first}
    )"""


def _fuel_levels(rel: Relations) -> str:
    return f"""
        select "objectID" as vehicle_id, "objectID" as series, "GMTime" as recorded_at,
            fuel as level, day
        from ({rel["fuel_levels"]})
        -- Negative values are device codes (-2: no reading), not levels.
        where "objectID" is not null and "GMTime" is not null and fuel >= 0
            and not coalesce(fuel_is_code, false)
        qualify row_number() over (
            partition by "objectID", "GMTime" order by extracted_at desc
        ) = 1"""


def _refuels(rel: Relations) -> str:
    return f"""
        select "objectID" as vehicle_id, "startTime" as started_at,
            coalesce("stopTime", "maxTime", "startTime") as ended_at
        from ({rel["refuels"]})
        where "startTime" is not null"""


CHECKS: tuple[RawCheck, ...] = (
    overlap_check(
        ROUTELOG,
        TripShape('"objectID"', _ROUTE_ID, '"startTime"', '"stopTime"', "extracted_at desc"),
        follows_run_partitions=True,
    ),
    odometer_check(
        VEHICLES,
        _odometer_sql,
        description=(
            "Warns when a vehicle's odometer in a snapshot is more than "
            f"{ODOMETER_TOLERANCE_KM:g} km lower than in its previous snapshot: an "
            "odometer edited or reset in Metrotec."
        ),
        order_by="vehicle_id, snapshot_day",
    ),
    fuel_rise_check(
        [FUEL_LEVELS, REFUELS],
        _fuel_levels,
        _refuels,
        description=(
            "Warns when a vehicle's fuel level rose by ≥ {rise} (litres, or percent "
            "on percent tanks) between two readings with no refuel in raw/metrotec/refuels "
            "within {slack} minutes: a missed refuel or a sensor fault."
        ),
        follows_run_partitions=True,
    ),
)

TABLES: tuple[RawTable, ...] = (
    *(
        RawTable("metrotec", table, partitioned=True)
        for table in ("routelog", "stops", "refuels", "fuel_levels")
    ),
    RawTable("metrotec", "vehicles", partitioned=False, relanding=_VEHICLES_LOST),
)
