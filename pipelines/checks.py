"""Asset checks on the raw lake for the telematics anomalies fleet users ask about.

Overlapping trips of one vehicle, odometers going backwards, and fuel levels rising without a
refuel are not landing errors (the vendor sent them), so every check only WARNs: it counts the
anomalies in one DuckDB query over the table's Parquet files and shows a few of them.

Each check looks at a bounded window of days so that it stays cheap after every drain: the
partition range of the run that landed the data (daily-partitioned sources), otherwise the
newest `LOOKBACK_DAYS` days in the table. One more day before the window is read as context
(the trip or reading an anomaly is compared with) but not counted.

One more check per raw table, `lake_days_present`, is an ERROR: a day Dagster landed whose
files are gone (a deleted `day=` folder) would otherwise vanish from the facts unnoticed. The
facts build (pipelines/dbt.py) runs the same comparison and warns before it builds.
"""

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetMaterialization,
    AssetRecordsFilter,
    DagsterInstance,
    MetadataValue,
    asset_check,
)

from pipelines.facts import open_object_store
from pipelines.lake import Lake
from pipelines.resources import LakeResource

LOOKBACK_DAYS = 7
"""Days checked after a run with no partition range (drains, snapshots, a check run alone)."""
CONTEXT_DAYS = 1
"""Days read before the window so its first trip or reading has something to be compared with."""
FUEL_RISE_MIN = 5.0
"""Smallest rise between two readings that counts (litres, or percent on percent-reporting
tanks): below it is sensor slosh. Matches dbt's `autopi_refuel_min_rise_pct`."""
REFUEL_SLACK_MINUTES = 30
"""A refuel explains a rise when it overlaps the gap between the two readings, give or take
this much (levels settle after the pump stops). Matches dbt's `fuel_event_match_minutes`."""
KT1_COUNTER_TOLERANCE_M = 100.0
"""kt1 device counters are metres and GPS-derived ones drift back a metre or so; a reset or a
device swap is kilometres."""
METROTEC_ODOMETER_TOLERANCE_KM = 1.0
"""Metrotec odometers are whole kilometres."""
EXAMPLES = 5

PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

OVERLAP_CHECK = "no_overlapping_trips"
ODOMETER_CHECK = "no_odometer_rollback"
FUEL_CHECK = "no_unexplained_fuel_rise"


def _key(source: str, table: str) -> AssetKey:
    return AssetKey(["raw", source, table])


@dataclass(frozen=True)
class Window:
    """Days whose anomalies count; `read_from` adds the context days before them."""

    first: date
    last: date

    @property
    def read_from(self) -> date:
        return self.first - timedelta(days=CONTEXT_DAYS)


@dataclass(frozen=True)
class LakeTable:
    """One raw table and the columns (name → DuckDB type) a check reads from it."""

    source: str
    table: str
    columns: Mapping[str, str]

    def relation(self, lake: Lake, window: Window) -> str:
        """The table's rows in the window, or an empty relation of the same shape before the
        first file landed (read_parquet fails on a glob that matches nothing)."""
        selected = [f'cast("{name}" as {kind}) as "{name}"' for name, kind in self.columns.items()]
        if lake.newest_day(self.source, self.table) is None:
            nulls = [f'cast(null as {kind}) as "{name}"' for name, kind in self.columns.items()]
            return f"select {', '.join(nulls)}, cast(null as date) as day where false"
        glob = _sql_string(lake.glob(self.source, self.table))
        # A constant filter on the hive key prunes whole day folders before any file is opened.
        return (
            f"select {', '.join(selected)}, cast(day as date) as day "
            f"from read_parquet({glob}, hive_partitioning = true, union_by_name = true) "
            f"where day between {_sql_date(window.read_from)} and {_sql_date(window.last)}"
        )


@dataclass(frozen=True)
class RawCheck:
    """One anomaly check: where it reads, what it counts, and the query that counts it.

    `sql(first_day, relations)` returns CTEs (after a leading `with`) that define `checked`
    (rows compared) and `anomalies` (rows flagged, counted only from `first_day` on).
    """

    asset: AssetKey
    name: str
    description: str
    count_key: str
    tables: Sequence[LakeTable]
    sql: Callable[[str, Mapping[str, str]], str]
    order_by: str
    follows_run_partitions: bool


# ---- the queries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TripShape:
    """How one source's raw trip rows name the vehicle, the trip and its times."""

    vehicle: str
    trip_id: str
    started_at: str
    ended_at: str
    latest_first: str
    """ORDER BY that puts a trip's newest landing first (redeliveries, re-pulls, versions)."""


def _overlap_sql(shape: TripShape) -> Callable[[str, Mapping[str, str]], str]:
    def sql(first: str, rel: Mapping[str, str]) -> str:
        (trips,) = rel.values()
        return f"""
        trips as materialized (
            select
                {shape.vehicle} as vehicle_id,
                {shape.trip_id} as trip_id,
                {shape.started_at} as started_at,
                {shape.ended_at} as ended_at,
                day
            from ({trips})
            where {shape.started_at} is not null and {shape.vehicle} is not null
            qualify row_number() over (
                partition by {shape.trip_id} order by {shape.latest_first}
            ) = 1
        ),
        checked as (select * from trips where day >= {first}),
        ordered as (
            -- Against every earlier trip of the vehicle, not just the previous one: a long
            -- trip can swallow several later ones.
            select
                *,
                max(ended_at) over earlier as earlier_ended_at,
                arg_max(trip_id, ended_at) over earlier as earlier_trip_id
            from trips
            window earlier as (
                partition by vehicle_id order by started_at, ended_at, trip_id
                rows between unbounded preceding and 1 preceding
            )
        ),
        anomalies as (
            select
                vehicle_id, trip_id, started_at, ended_at, earlier_trip_id, earlier_ended_at,
                epoch(earlier_ended_at) - epoch(started_at) as overlap_s
            from ordered
            where started_at < earlier_ended_at and day >= {first}
        )"""

    return sql


def _kt1_odometer_sql(first: str, rel: Mapping[str, str]) -> str:
    telemetry = rel["telemetry"]
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
    checked as (select * from readings where day >= {first}),
    ordered as (
        select
            *,
            lag(value) over previous as previous_value,
            lag(recorded_at) over previous as previous_at
        from readings
        window previous as (partition by origin_id, counter order by recorded_at, value)
    ),
    anomalies as (
        select
            origin_id as device_id, asset_id as vehicle_id, counter, previous_at,
            previous_value, recorded_at, value, previous_value - value as decrease
        from ordered
        where value < previous_value - {KT1_COUNTER_TOLERANCE_M} and day >= {first}
    )"""


def _metrotec_odometer_sql(first: str, rel: Mapping[str, str]) -> str:
    vehicles = rel["vehicles"]
    return f"""
    snapshots as (
        -- 0 is what the API sends when no odometer is configured.
        select distinct id as vehicle_id, day as snapshot_day, odometer, odometer_day
        from ({vehicles})
        where id is not null and odometer > 0
    ),
    checked as (select * from snapshots where snapshot_day >= {first}),
    ordered as (
        select
            *,
            lag(odometer) over previous as previous_odometer,
            lag(snapshot_day) over previous as previous_snapshot_day
        from snapshots
        window previous as (partition by vehicle_id order by snapshot_day, odometer_day, odometer)
    ),
    anomalies as (
        select
            vehicle_id, previous_snapshot_day, previous_odometer, snapshot_day, odometer,
            odometer_day, previous_odometer - odometer as decrease_km
        from ordered
        where odometer < previous_odometer - {METROTEC_ODOMETER_TOLERANCE_KM}
            and snapshot_day >= {first}
    )"""


def _rises_sql(first: str, levels: str, explained_by: str | None) -> str:
    """Rises of at least FUEL_RISE_MIN between consecutive readings of `levels` (columns
    vehicle_id, series, recorded_at, level, day) that no row of `explained_by` (vehicle_id,
    started_at, ended_at) overlaps; None: no source of refuels, every rise counts."""
    unexplained = (
        f"""
            and not exists (
                select 1 from refuels
                where refuels.vehicle_id = ordered.vehicle_id
                    and refuels.started_at
                        <= ordered.recorded_at + interval {REFUEL_SLACK_MINUTES} minute
                    and refuels.ended_at
                        >= ordered.previous_at - interval {REFUEL_SLACK_MINUTES} minute
            )"""
        if explained_by
        else ""
    )
    refuels = f"refuels as ({explained_by})," if explained_by else ""
    return f"""
    levels as materialized ({levels}),
    {refuels}
    checked as (select * from levels where day >= {first}),
    ordered as (
        select
            *,
            lag(level) over previous as previous_level,
            lag(recorded_at) over previous as previous_at
        from levels
        window previous as (partition by series order by recorded_at, level)
    ),
    anomalies as (
        select
            vehicle_id, series, previous_at, previous_level, recorded_at, level,
            level - previous_level as rise
        from ordered
        where level - previous_level >= {FUEL_RISE_MIN} and day >= {first}{unexplained}
    )"""


def _metrotec_fuel_sql(first: str, rel: Mapping[str, str]) -> str:
    levels = f"""
        select "objectID" as vehicle_id, "objectID" as series, "GMTime" as recorded_at,
            fuel as level, day
        from ({rel["fuel_levels"]})
        -- Negative values are device codes (-2: no reading), not levels.
        where "objectID" is not null and "GMTime" is not null and fuel >= 0
            and not coalesce(fuel_is_code, false)
        qualify row_number() over (
            partition by "objectID", "GMTime" order by extracted_at desc
        ) = 1"""
    refuels = f"""
        select "objectID" as vehicle_id, "startTime" as started_at,
            coalesce("stopTime", "maxTime", "startTime") as ended_at
        from ({rel["refuels"]})
        where "startTime" is not null"""
    return _rises_sql(first, levels, refuels)


def _kt1_fuel_sql(first: str, rel: Mapping[str, str]) -> str:
    # The export's `telemetry{fuel_level}` has no typed column: it is read from item_json.
    levels = f"""
        select distinct asset_id as vehicle_id, asset_id as series, "date" as recorded_at,
            try_cast(json_extract_string(item_json, '$.telemetry.fuel_level') as double)
                as level,
            day
        from ({rel["telemetry"]})
        where asset_id is not null and level is not null"""
    refuels = f"""
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
    return _rises_sql(first, levels, refuels)


def _autopi_fuel_sql(first: str, rel: Mapping[str, str]) -> str:
    # AutoPi sends no refuel events (dbt infers refuels from rises *between* trips); a tank
    # is not filled while the engine runs, so a rise within one trip is the sensor's doing.
    # Series per trip and day: a trip's file left in an old day folder is not interleaved.
    levels = f"""
        select cast("@vid" as varchar) as vehicle_id, trip_id || '|' || day as series,
            "@ts" as recorded_at, "obd.fuel_level.value" as level, day
        from ({rel["datapoints"]})
        where trip_id is not null and "@ts" is not null and "obd.fuel_level.value" is not null"""
    return _rises_sql(first, levels, None)


# ---- the checks -----------------------------------------------------------------------------

_KT1_LANDING_ORDER = "landed_at desc, fetched_at desc, item_index desc"


def _overlap_check(table: LakeTable, shape: TripShape, *, follows_run_partitions: bool) -> RawCheck:
    return RawCheck(
        asset=_key(table.source, table.table),
        name=OVERLAP_CHECK,
        description=(
            "Warns when a trip of a vehicle starts before an earlier trip of the same vehicle "
            "ended (newest landing of each trip): driving counted twice in fct_trips and "
            "fleet_daily, or a vendor splitting and re-sending trips."
        ),
        count_key="overlapping_trips",
        tables=[table],
        sql=_overlap_sql(shape),
        order_by="vehicle_id, started_at",
        follows_run_partitions=follows_run_partitions,
    )


RAW_CHECKS: tuple[RawCheck, ...] = (
    _overlap_check(
        LakeTable(
            "avl",
            "trips",
            {
                "device_name": "varchar",
                "trip_start": "timestamptz",
                "trip_end": "timestamptz",
                "extracted_at": "timestamptz",
            },
        ),
        TripShape(
            vehicle="device_name",
            trip_id="device_name || '|' || strftime(trip_start, '%Y-%m-%dT%H:%M:%S')",
            started_at="trip_start",
            ended_at="trip_end",
            latest_first="extracted_at desc",
        ),
        follows_run_partitions=True,
    ),
    _overlap_check(
        LakeTable(
            "autopi",
            "trips",
            {
                "trip_id": "varchar",
                "device_id": "varchar",
                "started_at": "timestamptz",
                "ended_at": "timestamptz",
                "landed_at": "timestamptz",
            },
        ),
        TripShape(
            vehicle="device_id",
            trip_id="trip_id",
            started_at="started_at",
            ended_at="ended_at",
            latest_first="landed_at desc",
        ),
        follows_run_partitions=False,
    ),
    _overlap_check(
        LakeTable(
            "kt1",
            "trips",
            {
                "id": "varchar",
                "asset_id": "varchar",
                "date_start": "timestamptz",
                "date_end": "timestamptz",
                "landed_at": "timestamptz",
                "fetched_at": "timestamptz",
                "item_index": "integer",
            },
        ),
        TripShape(
            vehicle="asset_id",
            trip_id="id",
            started_at="date_start",
            ended_at="date_end",
            latest_first=_KT1_LANDING_ORDER,
        ),
        follows_run_partitions=False,
    ),
    _overlap_check(
        LakeTable(
            "metrotec",
            "routelog",
            {
                "ID": "bigint",
                "objectID": "varchar",
                "startTime": "timestamptz",
                "stopTime": "timestamptz",
                "extracted_at": "timestamptz",
            },
        ),
        TripShape(
            vehicle='"objectID"',
            trip_id='"objectID" || \'|\' || cast("ID" as varchar)',
            started_at='"startTime"',
            ended_at='"stopTime"',
            latest_first="extracted_at desc",
        ),
        follows_run_partitions=True,
    ),
    RawCheck(
        asset=_key("kt1", "telemetry"),
        name=ODOMETER_CHECK,
        description=(
            "Warns when a device's counters.odometer or counters.odo_counter is more than "
            f"{KT1_COUNTER_TOLERANCE_M:g} m lower than in its previous report: a device swap, "
            "reset or glitch that breaks distances taken from counter differences."
        ),
        count_key="backward_readings",
        tables=[
            LakeTable(
                "kt1",
                "telemetry",
                {
                    "origin_id": "varchar",
                    "asset_id": "varchar",
                    "date": "timestamptz",
                    "counters_odometer": "double",
                    "counters_odo_counter": "double",
                },
            )
        ],
        sql=_kt1_odometer_sql,
        order_by="device_id, counter, recorded_at",
        follows_run_partitions=False,
    ),
    RawCheck(
        asset=_key("metrotec", "vehicles"),
        name=ODOMETER_CHECK,
        description=(
            "Warns when a vehicle's odometer in a snapshot is more than "
            f"{METROTEC_ODOMETER_TOLERANCE_KM:g} km lower than in its previous snapshot: an "
            "odometer edited or reset in Metrotec."
        ),
        count_key="backward_readings",
        tables=[
            LakeTable(
                "metrotec",
                "vehicles",
                {
                    "id": "varchar",
                    "odometer": "double",
                    "odometer_day": "timestamptz",
                },
            )
        ],
        sql=_metrotec_odometer_sql,
        order_by="vehicle_id, snapshot_day",
        follows_run_partitions=False,
    ),
    RawCheck(
        asset=_key("metrotec", "fuel_levels"),
        name=FUEL_CHECK,
        description=(
            f"Warns when a vehicle's fuel level rose by ≥ {FUEL_RISE_MIN:g} (litres, or percent "
            "on percent tanks) between two readings with no refuel in raw/metrotec/refuels "
            f"within {REFUEL_SLACK_MINUTES} minutes: a missed refuel or a sensor fault."
        ),
        count_key="unexplained_rises",
        tables=[
            LakeTable(
                "metrotec",
                "fuel_levels",
                {
                    "objectID": "varchar",
                    "GMTime": "timestamptz",
                    "fuel": "double",
                    "fuel_is_code": "boolean",
                    "extracted_at": "timestamptz",
                },
            ),
            LakeTable(
                "metrotec",
                "refuels",
                {
                    "objectID": "varchar",
                    "startTime": "timestamptz",
                    "stopTime": "timestamptz",
                    "maxTime": "timestamptz",
                },
            ),
        ],
        sql=_metrotec_fuel_sql,
        order_by="vehicle_id, recorded_at",
        follows_run_partitions=True,
    ),
    RawCheck(
        asset=_key("kt1", "telemetry"),
        name=FUEL_CHECK,
        description=(
            f"Warns when an asset's telemetry.fuel_level rose by ≥ {FUEL_RISE_MIN:g} between "
            "two reports with no refuel event in raw/kt1/events within "
            f"{REFUEL_SLACK_MINUTES} minutes: a missed refuel or a sensor fault."
        ),
        count_key="unexplained_rises",
        tables=[
            LakeTable(
                "kt1",
                "telemetry",
                {
                    "asset_id": "varchar",
                    "date": "timestamptz",
                    "item_json": "varchar",
                },
            ),
            LakeTable(
                "kt1",
                "events",
                {
                    "asset_id": "varchar",
                    "event_date": "timestamptz",
                    "event_type": "varchar",
                    "item_json": "varchar",
                },
            ),
        ],
        sql=_kt1_fuel_sql,
        order_by="vehicle_id, recorded_at",
        follows_run_partitions=False,
    ),
    RawCheck(
        asset=_key("autopi", "datapoints"),
        name=FUEL_CHECK,
        description=(
            f"Warns when obd.fuel_level rose by ≥ {FUEL_RISE_MIN:g} percentage points within "
            "one trip: AutoPi sends no refuel events and nobody refuels while driving, so "
            "this is the sensor (and dbt would not take it for a refuel)."
        ),
        count_key="unexplained_rises",
        tables=[
            LakeTable(
                "autopi",
                "datapoints",
                {
                    "trip_id": "varchar",
                    "@vid": "bigint",
                    "@ts": "timestamptz",
                    "obd.fuel_level.value": "double",
                },
            )
        ],
        sql=_autopi_fuel_sql,
        order_by="vehicle_id, recorded_at",
        follows_run_partitions=False,
    ),
)


# ---- running them ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one check found."""

    anomalies: int
    checked: int
    examples: list[dict[str, object]]


def run_check(check: RawCheck, lake: Lake, window: Window) -> Outcome:
    """Evaluate one check over `window` of the lake in a single query."""
    relations = {t.table: t.relation(lake, window) for t in check.tables}
    query = f"""
    with {check.sql(_sql_date(window.first), relations)}
    select
        (select count(*) from anomalies) as anomalies,
        (select count(*) from checked) as checked,
        (
            select coalesce(to_json(list(example)), '[]')
            from (select * from anomalies order by {check.order_by} limit {EXAMPLES}) example
        ) as examples
    """
    # UTC so the example timestamps read as the lake stores them.
    with duckdb.connect() as con:
        con.execute("set TimeZone = 'UTC'")
        open_object_store(con, lake.location)  # an s3:// lake: httpfs and its secret
        row = con.execute(query).fetchone()
    assert row is not None  # an aggregate-only select always returns one row
    anomalies, checked, examples = row
    return Outcome(int(anomalies), int(checked), json.loads(examples))


def check_window(
    context: AssetCheckExecutionContext | None, lake: Lake, check: RawCheck
) -> Window | None:
    """The run's partition days when the check follows them, else the newest LOOKBACK_DAYS
    days of the check's first table; None when that table has no file yet."""
    if check.follows_run_partitions and context is not None:
        days = run_partition_days(context.run.tags)
        if days is not None:
            return Window(*days)
    primary = check.tables[0]
    newest = lake.newest_day(primary.source, primary.table)
    if newest is None:
        return None
    return Window(newest - timedelta(days=LOOKBACK_DAYS - 1), newest)


def run_partition_days(tags: Mapping[str, str]) -> tuple[date, date] | None:
    """First and last day of a daily-partitioned run, from the tags Dagster sets on it."""
    start = tags.get(RANGE_START_TAG) or tags.get(PARTITION_TAG)
    end = tags.get(RANGE_END_TAG) or tags.get(PARTITION_TAG)
    try:
        return (date.fromisoformat(start), date.fromisoformat(end)) if start and end else None
    except ValueError:
        return None


def evaluate(check: RawCheck, lake: Lake, window: Window | None) -> AssetCheckResult:
    """The check's result: WARN with the count and a few examples, or a pass."""
    if window is None:
        return AssetCheckResult(
            passed=True,
            severity=AssetCheckSeverity.WARN,
            description="nothing landed yet",
            metadata={check.count_key: 0, "checked": 0},
        )
    outcome = run_check(check, lake, window)
    return AssetCheckResult(
        passed=outcome.anomalies == 0,
        severity=AssetCheckSeverity.WARN,
        description=(
            f"{outcome.anomalies} {check.count_key.replace('_', ' ')} in "
            f"{window.first}..{window.last}"
        ),
        metadata={
            check.count_key: outcome.anomalies,
            "checked": outcome.checked,
            "first_day": window.first.isoformat(),
            "last_day": window.last.isoformat(),
            "examples": MetadataValue.json(outcome.examples),
        },
    )


def _build(check: RawCheck) -> AssetChecksDefinition:
    others = [
        _key(t.source, t.table) for t in check.tables if _key(t.source, t.table) != check.asset
    ]

    @asset_check(
        asset=check.asset,
        name=check.name,
        description=check.description,
        additional_deps=others,
        compute_kind="duckdb",
    )
    def _raw_check(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
        lake_ = lake.lake()
        return evaluate(check, lake_, check_window(context, lake_, check))

    return _raw_check


def build_raw_checks() -> list[AssetChecksDefinition]:
    """Every anomaly check and every table's lake-days check, for Definitions(asset_checks=...)."""
    return [
        *(_build(check) for check in RAW_CHECKS),
        *(_build_lake_days(table) for table in RAW_TABLES),
    ]


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_date(day: date) -> str:
    return f"date '{day.isoformat()}'"


# ---- lake days: days Dagster landed whose files are gone ---------------------------------------

LAKE_DAYS_CHECK = "lake_days_present"
DAYS_WRITTEN = "days_written"
"""Metadata entry of a raw materialization: the UTC days (ISO dates, JSON list) it wrote files
to. The drains' only record of their days: they have no partitions."""
SHOWN_DAY_RUNS = 20
"""Runs of consecutive missing days named in metadata, descriptions and log lines."""
MATERIALIZATION_PAGE = 1000
HISTORY_LOOKBACK = 10
"""Check executions looked through for the newest finished one (runs in progress or killed
leave planned executions in front of it)."""
MATERIALIZE_COMMAND = "dagster asset materialize -m pipelines.definitions"
MAX_COMMANDS = 3
"""Missing runs of days given one command each; beyond this one command spans them all."""

_EXPECTED_RANGES = "expected_day_ranges"
_THROUGH = "through_storage_id"


@dataclass(frozen=True)
class RawTable:
    """One raw lake table: its asset, whether its days are Dagster partitions, and (drains and
    snapshots) how lost days come back."""

    source: str
    table: str
    partitioned: bool
    relanding: str = ""

    @property
    def key(self) -> AssetKey:
        return _key(self.source, self.table)

    @property
    def name(self) -> str:
        return self.key.to_user_string()


_KT1_LOST = (
    "kt1 sends an item until it is acknowledged and never again, and this drain acknowledges "
    "only what it landed: unless the day folders are restored from a backup of the lake, the "
    "data is lost upstream."
)
_AUTOPI_RELAND = (
    "Re-land the trips that started on those days: `fleet autopi reexport TRIP_ID ...` with "
    "their trip ids (AutoPi's logbook/trips for those days)."
)
_VEHICLES_LOST = (
    "A past vehicle snapshot cannot be fetched again (the API lists today's vehicles): restore "
    "the day folders from a backup of the lake; materializing raw/metrotec/vehicles lands "
    "today's snapshot only."
)

RAW_TABLES: tuple[RawTable, ...] = (
    RawTable("avl", "trips", partitioned=True),
    RawTable("metrotec", "routelog", partitioned=True),
    RawTable("metrotec", "stops", partitioned=True),
    RawTable("metrotec", "refuels", partitioned=True),
    RawTable("metrotec", "fuel_levels", partitioned=True),
    RawTable("metrotec", "vehicles", partitioned=False, relanding=_VEHICLES_LOST),
    RawTable("kt1", "telemetry", partitioned=False, relanding=_KT1_LOST),
    RawTable("kt1", "trips", partitioned=False, relanding=_KT1_LOST),
    RawTable("kt1", "events", partitioned=False, relanding=_KT1_LOST),
    RawTable("kt1", "changes", partitioned=False, relanding=_KT1_LOST),
    RawTable("autopi", "trips", partitioned=False, relanding=_AUTOPI_RELAND),
    RawTable("autopi", "datapoints", partitioned=False, relanding=_AUTOPI_RELAND),
)


@dataclass(frozen=True)
class LakeDays:
    """Days of one table Dagster recorded as landed, and those of them without a Parquet file.

    `through_storage_id`: the newest materialization read (drains), where the next evaluation
    of the check resumes.
    """

    table: RawTable
    expected: frozenset[date]
    missing: tuple[date, ...]
    through_storage_id: int | None = None

    def fix(self) -> str:
        """What brings the missing days back, for the check's description and the build log."""
        if not self.table.partitioned:
            return self.table.relanding
        runs = day_runs(self.missing)
        if len(runs) > MAX_COMMANDS:
            # One single-run backfill over the span: present days in it are replaced, not doubled.
            runs = [(runs[0][0], runs[-1][1])]
        commands = " ; ".join(
            f"`{MATERIALIZE_COMMAND} --select {self.table.name} --partition-range {first}...{last}`"
            for first, last in runs
        )
        return f"Re-materialize those partitions: {commands}."


def lake_days(instance: DagsterInstance, lake: Lake, table: RawTable) -> LakeDays:
    """Compare the days Dagster recorded for `table` with the day folders in the lake.

    Partitioned tables expect every materialized partition; drains and snapshots every day a
    materialization listed in `days_written`. A day never landed is not expected, so a lake
    that starts late or skips days is fine; only a landed day without files is missing.
    """
    if table.partitioned:
        expected = _iso_days(instance.get_materialized_partitions(table.key))
        through = None
    else:
        expected, through = _written_days(instance, table)
    missing = tuple(sorted(d for d in expected if not _has_files(lake, table, d)))
    return LakeDays(table, frozenset(expected), missing, through)


def missing_lake_days(instance: DagsterInstance, lake: Lake) -> list[LakeDays]:
    """`lake_days` of every raw table that misses a day (what the facts build warns about)."""
    found = (lake_days(instance, lake, table) for table in RAW_TABLES)
    return [days for days in found if days.missing]


def day_runs(days: Iterable[date]) -> list[tuple[date, date]]:
    """Sorted days as runs of consecutive days, (first, last) each."""
    runs: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if runs and day == runs[-1][1] + timedelta(days=1):
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def describe_days(days: Sequence[date]) -> str:
    """Days for people: runs of consecutive days as `first..last`, at most SHOWN_DAY_RUNS of
    them, then how many days are left unnamed."""
    runs = day_runs(days)
    shown = [f"{a}" if a == b else f"{a}..{b}" for a, b in runs[:SHOWN_DAY_RUNS]]
    rest = sum((b - a).days + 1 for a, b in runs[SHOWN_DAY_RUNS:])
    return ", ".join(shown) + (f" (+{rest} more days)" if rest else "")


def lake_days_result(found: LakeDays) -> AssetCheckResult:
    """ERROR when a landed day has no files: its rows are gone from every fact built after."""
    missing = found.missing
    metadata: dict[str, object] = {
        "missing_days": len(missing),
        "missing": describe_days(missing),
        "expected_days": len(found.expected),
        # Read back by the next evaluation (drains): the days so far, in a compact form.
        _EXPECTED_RANGES: MetadataValue.json(
            [[a.isoformat(), b.isoformat()] for a, b in day_runs(found.expected)]
        ),
    }
    if found.through_storage_id is not None:
        metadata[_THROUGH] = found.through_storage_id
    if missing:
        description = (
            f"{len(missing)} landed day(s) of {found.table.name} have no Parquet files, so "
            f"their rows are missing from the facts: {describe_days(missing)}. {found.fix()}"
        )
    elif found.expected:
        description = f"all {len(found.expected)} landed days have files"
    else:
        description = "nothing materialized yet"
    return AssetCheckResult(
        passed=not missing,
        severity=AssetCheckSeverity.ERROR,
        description=description,
        metadata=metadata,
    )


def _build_lake_days(table: RawTable) -> AssetChecksDefinition:
    how = (
        "every materialized partition"
        if table.partitioned
        else f"every day a materialization listed in `{DAYS_WRITTEN}`"
    )
    relanding = f" {table.relanding}" if table.relanding else ""

    @asset_check(
        asset=table.key,
        name=LAKE_DAYS_CHECK,
        description=(
            f"Fails when a landed day has no Parquet file ({how} must have a `day=` folder "
            "with one): a deleted or lost folder would silently drop that day from the facts."
            + relanding
        ),
    )
    def _lake_days(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
        return lake_days_result(lake_days(context.instance, lake.lake(), table))

    return _lake_days


def _written_days(instance: DagsterInstance, table: RawTable) -> tuple[set[date], int | None]:
    """Union of `days_written` over the table's materializations, and the newest one read.

    A drain materializes every 5 minutes, so reading its whole history on each evaluation
    would grow without bound: an evaluation starts from what the previous one recorded and
    reads only the materializations stored since.
    """
    days, after = _previous_state(instance, table)
    while True:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=table.key, after_storage_id=after),
            limit=MATERIALIZATION_PAGE,
            ascending=True,
        ).records
        for record in records:
            days |= _days_written(record.asset_materialization)
            after = record.storage_id
        if len(records) < MATERIALIZATION_PAGE:
            return days, after


def _previous_state(instance: DagsterInstance, table: RawTable) -> tuple[set[date], int | None]:
    """The expected days and the last materialization read by the newest finished evaluation
    of the table's check; nothing when there is none, or when the materialization it read
    through is gone (the asset was wiped: its days are no longer expected)."""
    history = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(table.key, LAKE_DAYS_CHECK), limit=HISTORY_LOOKBACK
    )
    for record in history:
        evaluation = record.evaluation
        if not isinstance(evaluation, AssetCheckEvaluation):
            continue  # planned: this evaluation itself, or a run still going or killed
        ranges = evaluation.metadata.get(_EXPECTED_RANGES)
        through = evaluation.metadata.get(_THROUGH)
        if ranges is None or through is None or not isinstance(through.value, int):
            return set(), None
        still_there = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=table.key, storage_ids=[through.value]), limit=1
        ).records
        if not still_there:
            return set(), None
        days: set[date] = set()
        for first, last in ranges.value:
            start, end = date.fromisoformat(first), date.fromisoformat(last)
            days.update(start + timedelta(days=i) for i in range((end - start).days + 1))
        return days, through.value
    return set(), None


def _days_written(materialization: AssetMaterialization | None) -> set[date]:
    entry = materialization.metadata.get(DAYS_WRITTEN) if materialization else None
    value = entry.value if entry is not None else None
    if isinstance(value, str):  # written as text rather than JSON
        try:
            value = json.loads(value)
        except ValueError:
            return set()
    return _iso_days(value) if isinstance(value, list) else set()


def _iso_days(values: Iterable[object]) -> set[date]:
    """The ISO dates among `values` (partition keys, `days_written`); anything else is not a
    lake day and is skipped."""
    days = set()
    for value in values:
        try:
            days.add(date.fromisoformat(str(value)))
        except ValueError:
            continue
    return days


def _has_files(lake: Lake, table: RawTable, day: date) -> bool:
    """Whether the day's folder holds a Parquet file (temp files don't count: they never end in
    `.parquet`)."""
    return lake.has_files(table.source, table.table, day)
