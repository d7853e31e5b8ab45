"""kt1's raw checks: overlapping trips, counters going back, fuel rises without a refuel
event, and its lake days."""

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
from pipelines.dbt_vars import dbt_var
from pipelines.lake_days import RawTable

COUNTER_TOLERANCE_M = 100.0
"""kt1 device counters are metres and GPS-derived ones drift back a metre or so; a reset or a
device swap is kilometres."""
LANDING_ORDER: str = dbt_var("latest_landing_order")
"""ORDER BY that puts an item's newest landing first: the row staging keeps, too."""

TRIPS = LakeTable.of(
    "kt1",
    "trips",
    "id varchar, asset_id varchar, date_start timestamptz, "
    "date_end timestamptz, landed_at timestamptz, fetched_at timestamptz, item_index integer",
)
ODOMETERS = LakeTable.of(
    "kt1",
    "telemetry",
    "origin_id varchar, asset_id varchar, date timestamptz, "
    "counters_odometer double, counters_odo_counter double",
)
FUEL_LEVELS = LakeTable.of(
    "kt1", "telemetry", "asset_id varchar, date timestamptz, item_json varchar"
)
EVENTS = LakeTable.of(
    "kt1",
    "events",
    "asset_id varchar, event_date timestamptz, event_type varchar, item_json varchar",
)

_LOST = (
    "kt1 sends an item until it is acknowledged and never again, and this drain acknowledges "
    "only what it landed: unless the day folders are restored from a backup of the lake, the "
    "data is lost upstream."
)

_LAGS = {"value": "previous_value", "recorded_at": "previous_at"}


def _odometer_sql(first: str, rel: Relations) -> str:
    telemetry = rel["telemetry"]
    compared = previous_row_sql(
        "readings", first, series="origin_id, counter", order="recorded_at, value", lags=_LAGS
    )
    return f"""
    telemetry as materialized (select * from ({telemetry})),
    readings as (
        -- distinct: a redelivered batch lands the same report again.
        select distinct origin_id, asset_id, "date" as recorded_at, day,
            'counters.odometer' as counter, counters_odometer as value
        from telemetry where counters_odometer is not null
        union all
        select distinct origin_id, asset_id, "date", day,
            'counters.odo_counter', counters_odo_counter
        from telemetry where counters_odo_counter is not null
    ),
    {compared},
    anomalies as (
        select
            origin_id as device_id, asset_id as vehicle_id, counter, previous_at,
            previous_value, recorded_at, value, previous_value - value as decrease
        from ordered
        where value < previous_value - {COUNTER_TOLERANCE_M} and day >= {first}
    )"""


def _fuel_levels(rel: Relations) -> str:
    # The export's `telemetry{fuel_level}` has no typed column: it is read from item_json.
    return f"""
        select distinct asset_id as vehicle_id, asset_id as series, "date" as recorded_at,
            try_cast(json_extract_string(item_json, '$.telemetry.fuel_level') as double)
                as level,
            day
        from ({rel["telemetry"]})
        where asset_id is not null and level is not null"""


def _refuels(rel: Relations) -> str:
    return f"""
        select
            asset_id as vehicle_id,
            coalesce(
                try_cast(json_extract_string(item_json, '$.details.dateStart') as timestamptz),
                event_date
            ) as started_at,
            coalesce(
                try_cast(json_extract_string(item_json, '$.details.dateEnd') as timestamptz),
                event_date
            ) as ended_at
        from ({rel["events"]})
        where asset_id is not null and lower(event_type) like '%refuel%'"""


CHECKS: tuple[RawCheck, ...] = (
    overlap_check(
        TRIPS,
        TripShape("asset_id", "id", "date_start", "date_end", LANDING_ORDER),
        follows_run_partitions=False,
    ),
    odometer_check(
        ODOMETERS,
        _odometer_sql,
        description=(
            "Warns when a device's counters.odometer or counters.odo_counter is more than "
            f"{COUNTER_TOLERANCE_M:g} m lower than in its previous report: a device swap, "
            "reset or glitch that breaks distances taken from counter differences."
        ),
        order_by="device_id, counter, recorded_at",
    ),
    fuel_rise_check(
        [FUEL_LEVELS, EVENTS],
        _fuel_levels,
        _refuels,
        description=(
            "Warns when an asset's telemetry.fuel_level rose by ≥ {rise} between "
            "two reports with no refuel event in raw/kt1/events within "
            "{slack} minutes: a missed refuel or a sensor fault."
        ),
        follows_run_partitions=False,
    ),
)

TABLES: tuple[RawTable, ...] = tuple(
    RawTable("kt1", table, partitioned=False, relanding=_LOST)
    for table in ("telemetry", "trips", "events", "changes")
)
