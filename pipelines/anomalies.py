"""The engine of the raw-lake anomaly checks; each source declares its own in its checks.py.

Overlapping trips of one vehicle, odometers going backwards, and fuel levels rising without a
refuel are not landing errors (the vendor sent them), so every check only WARNs: it counts the
anomalies in one DuckDB query over the table's Parquet files and shows a few of them.

Each check looks at a bounded window of days so that it stays cheap after every drain: the
partition range of the run that landed the data (daily-partitioned sources), otherwise the
newest `LOOKBACK_DAYS` days in the table. One more day before the window is read as context
(the trip or reading an anomaly is compared with) but not counted.
"""

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    MetadataValue,
    asset_check,
)

from pipelines.asset_metadata import raw_key
from pipelines.dbt_vars import dbt_var
from pipelines.facts import open_object_store
from pipelines.lake import Lake
from pipelines.resources import LakeResource
from pipelines.windows import DayRange

LOOKBACK_DAYS = 7
"""Days checked after a run with no partition range (drains, snapshots, a check run alone)."""
CONTEXT_DAYS = 1
"""Days read before the window so its first trip or reading has something to be compared with."""
FUEL_RISE_MIN = float(dbt_var("autopi_refuel_min_rise_pct"))
"""Smallest rise between two readings that counts (litres, or percent on percent-reporting
tanks): below it is sensor slosh, for dbt's refuel inference as for these checks."""
REFUEL_SLACK_MINUTES = int(dbt_var("fuel_event_match_minutes"))
"""A refuel explains a rise when it overlaps the gap between the two readings, give or take
this much (levels settle after the pump stops): dbt matches fuel events with the same slack."""
EXAMPLES = 5

PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

OVERLAP_CHECK = "no_overlapping_trips"
ODOMETER_CHECK = "no_odometer_rollback"
FUEL_CHECK = "no_unexplained_fuel_rise"

Relations = Mapping[str, str]
"""Each table a check reads (by table name) → the SQL of its rows in the window."""
CheckSql = Callable[[str, Relations], str]
"""`sql(first_day, relations)`: CTEs (after a leading `with`) that define `checked` (rows
compared) and `anomalies` (rows flagged, counted only from `first_day` on)."""


class Window(DayRange):
    """Days whose anomalies count; `read_from` adds the context days before them."""

    @property
    def read_from(self) -> date:
        return self.first - timedelta(days=CONTEXT_DAYS)


@dataclass(frozen=True)
class LakeTable:
    """One raw table and the columns (name → DuckDB type) a check reads from it."""

    source: str
    table: str
    columns: Mapping[str, str]

    @classmethod
    def of(cls, source: str, table: str, columns: str) -> "LakeTable":
        """`columns` as in a DDL column list: `name type` pairs separated by commas."""
        pairs = (column.strip().rsplit(" ", 1) for column in columns.split(","))
        return cls(source, table, {name: kind for name, kind in pairs})

    @property
    def key(self) -> AssetKey:
        return raw_key(self.source, self.table)

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

    The check belongs to its first table's asset; the others are read alongside (refuels that
    explain a fuel rise). `follows_run_partitions`: the window is the landing run's partition
    range (daily-partitioned tables) rather than the table's newest days.
    """

    name: str
    count_key: str
    description: str
    tables: Sequence[LakeTable]
    sql: CheckSql
    order_by: str
    follows_run_partitions: bool

    @property
    def asset(self) -> AssetKey:
        return self.tables[0].key


# ---- the kinds of check: the query shared by every source, its parts per source -------------


@dataclass(frozen=True)
class TripShape:
    """How one source's raw trip rows name the vehicle, the trip and its times."""

    vehicle: str
    trip_id: str
    started_at: str
    ended_at: str
    latest_first: str
    """ORDER BY that puts a trip's newest landing first (redeliveries, re-pulls, versions)."""


def overlap_check(table: LakeTable, shape: TripShape, *, follows_run_partitions: bool) -> RawCheck:
    """Trips of a vehicle that start before an earlier trip of the same vehicle ended."""
    description = (
        "Warns when a trip of a vehicle starts before an earlier trip of the same vehicle "
        "ended (newest landing of each trip): driving counted twice in fct_trips and "
        "fleet_daily, or a vendor splitting and re-sending trips."
    )
    order_by = "vehicle_id, started_at"
    sql = _overlap_sql(shape)
    return RawCheck(
        OVERLAP_CHECK,
        "overlapping_trips",
        description,
        [table],
        sql,
        order_by,
        follows_run_partitions,
    )


def odometer_check(table: LakeTable, sql: CheckSql, *, description: str, order_by: str) -> RawCheck:
    """Odometer readings lower than the one before them; `sql` knows the source's counters.
    Odometers come from drains and snapshots: the window is the table's newest days."""
    return RawCheck(ODOMETER_CHECK, "backward_readings", description, [table], sql, order_by, False)


def fuel_rise_check(
    tables: Sequence[LakeTable],
    levels: Callable[[Relations], str],
    refuels: Callable[[Relations], str] | None,
    *,
    description: str,
    follows_run_partitions: bool,
) -> RawCheck:
    """Fuel level rises that no refuel explains; `description` names the thresholds (dbt's vars)
    as `{rise}` and `{slack}` (minutes).

    `levels(relations)` selects the readings (vehicle_id, series, recorded_at, level, day);
    `refuels(relations)` the refuels (vehicle_id, started_at, ended_at) that explain a rise
    they overlap, or None for a source that sends none (every rise counts).
    """

    def sql(first: str, rel: Relations) -> str:
        return _rises_sql(first, levels(rel), refuels(rel) if refuels else None)

    order_by = "vehicle_id, recorded_at"
    described = description.format(rise=f"{FUEL_RISE_MIN:g}", slack=REFUEL_SLACK_MINUTES)
    return RawCheck(
        FUEL_CHECK, "unexplained_rises", described, tables, sql, order_by, follows_run_partitions
    )


def _overlap_sql(shape: TripShape) -> CheckSql:
    def sql(first: str, rel: Relations) -> str:
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


def previous_row_sql(
    rows: str, first: str, *, series: str, order: str, lags: Mapping[str, str], day: str = "day"
) -> str:
    """CTEs `checked` (the rows of CTE `rows` whose `day` is `first` or later) and `ordered`
    (every row of `rows` with columns of the row before it in its series: `lags` maps each
    column to its alias), for checks that compare a reading with the one before it."""
    lagged = ", ".join(f"lag({column}) over previous as {alias}" for column, alias in lags.items())
    return f"""
    checked as (select * from {rows} where {day} >= {first}),
    ordered as (
        select *, {lagged}
        from {rows}
        window previous as (partition by {series} order by {order})
    )"""


_LEVEL_LAGS = {"level": "previous_level", "recorded_at": "previous_at"}


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
    compared = previous_row_sql(
        "levels", first, series="series", order="recorded_at, level", lags=_LEVEL_LAGS
    )
    return f"""
    levels as materialized ({levels}),
    {refuels}
    {compared},
    anomalies as (
        select
            vehicle_id, series, previous_at, previous_level, recorded_at, level,
            level - previous_level as rise
        from ordered
        where level - previous_level >= {FUEL_RISE_MIN} and day >= {first}{unexplained}
    )"""


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


def build_check(check: RawCheck) -> AssetChecksDefinition:
    """The Dagster asset check that evaluates `check` on its asset."""
    others = [t.key for t in check.tables if t.key != check.asset]

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


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_date(day: date) -> str:
    return f"date '{day.isoformat()}'"
