"""How the fleet report reads the marts: the SQL, and its rows turned into `data`'s values.

Every figure is a ratio of totals over `fleet_daily` (a trip or refuel several sources reported
is counted once there), except the coverage, which reads the per-source rows of `fct_trips`,
`fct_fuel_events` and `fct_idle_periods` on purpose: it is about who reported what. Only this
module talks to DuckDB, so the page's code never depends on the marts' columns.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import duckdb

from pipelines.report.data import (
    SOURCE_LETTERS,
    Day,
    Period,
    Price,
    ReportData,
    ReportOptions,
    SourceCoverage,
    Totals,
    VehicleCoverage,
    VehicleFigures,
)

VEHICLES_SQL = """
with names as (
    select vehicle_id, min(display_name) as name, list_sort(list(distinct source)) as sources
    from dim_vehicles
    group by vehicle_id
),

tanks as (
    select vehicle_id, max(level_after_l) as tank_l
    from fct_fuel_events
    where event_type = 'refuel'
    group by vehicle_id
),

per_vehicle as (
    select
        vehicle_id,
        sum(trips) as trips,
        sum(distance_km) as km,
        sum(driving_s) / 3600 as driving_h,
        sum(idle_s) / 3600 as idle_h,
        sum(fuel_used_l) as fuel_l,
        coalesce(sum(distance_km) filter (where fuel_used_l is not null), 0) as fuel_km,
        count(*) filter (where trips > 0) as trip_days,
        count(*) filter (where trips > 0 and fuel_used_l is null) as days_without_fuel,
        sum(refuels) as refuels,
        sum(refuel_l) as refuel_l,
        sum(fuel_cost) as reported_cost,
        coalesce(sum(distance_km) filter (where fuel_cost is not null), 0) as reported_cost_km
    from fleet_daily
    where day between ? and ?
    group by vehicle_id
)

select
    per_vehicle.vehicle_id,
    coalesce(names.name, per_vehicle.vehicle_id),
    coalesce(names.sources, []),
    per_vehicle.trips,
    per_vehicle.km,
    per_vehicle.driving_h,
    per_vehicle.idle_h,
    per_vehicle.fuel_l,
    per_vehicle.fuel_km,
    per_vehicle.trip_days,
    per_vehicle.days_without_fuel,
    per_vehicle.refuels,
    per_vehicle.refuel_l,
    per_vehicle.reported_cost,
    tanks.tank_l,
    per_vehicle.reported_cost_km
from per_vehicle
left join names using (vehicle_id)
left join tanks using (vehicle_id)
order by per_vehicle.vehicle_id
"""

DAILY_SQL = """
select
    day,
    sum(trips),
    sum(distance_km),
    sum(driving_s) / 3600,
    sum(idle_s) / 3600,
    sum(fuel_used_l),
    sum(refuel_l),
    count(distinct vehicle_id) filter (where trips > 0)
from fleet_daily
where day between ? and ?
group by day
order by day
"""

# The average price per litre the sources put on the period's trips (each copy that carries both
# a cost and litres is one reading of the price; AVL reports them).
PRICE_SQL = """
select sum(fuel_cost) / sum(fuel_used_l)
from fct_trips
where started_at >= ? and started_at < ? and fuel_cost is not null and fuel_used_l > 0
"""

COVERAGE_SQL = """
with reports as (
    select vehicle_id, source, started_at as reported_at, 'trip' as kind, is_duplicate_of
    from fct_trips
    where started_at >= ? and started_at < ?
    union all
    select vehicle_id, source, occurred_at, 'fuel', is_duplicate_of
    from fct_fuel_events
    where occurred_at >= ? and occurred_at < ?
    union all
    select vehicle_id, source, started_at, 'idle', null
    from fct_idle_periods
    where started_at >= ? and started_at < ?
)

select
    vehicle_id,
    cast(reported_at at time zone 'UTC' as date) as day,
    source,
    count(*) filter (where kind = 'trip') as trip_reports,
    count(*) filter (where kind = 'trip' and is_duplicate_of is null) as trips_counted
from reports
where vehicle_id is not null
group by all
"""

# Counted trips another source reported too: the targets of some copy's is_duplicate_of.
SEEN_TWICE_SQL = """
select counted.vehicle_id, count(distinct counted.trip_id)
from fct_trips as counted
inner join fct_trips as copy on copy.is_duplicate_of = counted.trip_id
where counted.started_at >= ? and counted.started_at < ? and counted.is_duplicate_of is null
group by counted.vehicle_id
"""


def vehicle_figures(
    con: duckdb.DuckDBPyConnection, period: Period
) -> tuple[list[VehicleFigures], float]:
    """Every vehicle with a `fleet_daily` row in the period, and the km that carry a cost."""
    rows = con.execute(VEHICLES_SQL, [period.first, period.last]).fetchall()
    vehicles = [
        VehicleFigures(
            vehicle_id=r[0],
            name=r[1],
            sources=tuple(r[2]),
            trips=int(r[3]),
            km=float(r[4] or 0),
            driving_h=float(r[5] or 0),
            idle_h=float(r[6] or 0),
            fuel_l=_float(r[7]),
            fuel_km=float(r[8]),
            trip_days=int(r[9]),
            days_without_fuel=int(r[10]),
            refuels=None if r[11] is None else int(r[11]),
            refuel_l=_float(r[12]),
            reported_cost=_float(r[13]),
            tank_l=_float(r[14]),
        )
        for r in rows
    ]
    return vehicles, float(sum(r[15] for r in rows))


def daily_figures(con: duckdb.DuckDBPyConnection, period: Period) -> list[Day]:
    """One row per day of the period, days without a row as zero trips."""
    found = {
        r[0]: Day(
            r[0], int(r[1]), float(r[2]), float(r[3]), float(r[4]), _float(r[5]), _float(r[6]), r[7]
        )
        for r in con.execute(DAILY_SQL, [period.first, period.last]).fetchall()
    }
    return [found.get(d) or Day(d, 0, 0.0, 0.0, 0.0, None, None, 0) for d in period.dates()]


def coverage(
    con: duckdb.DuckDBPyConnection, period: Period, names: dict[str, str]
) -> tuple[list[VehicleCoverage], list[str]]:
    """Who reported each vehicle on each day of the period, and the sources seen at all."""
    start, end = period.bounds()
    rows = con.execute(COVERAGE_SQL, [start, end] * 3).fetchall()
    twice = dict(con.execute(SEEN_TWICE_SQL, [start, end]).fetchall())
    cells: dict[str, dict[date, set[str]]] = {}
    days: dict[tuple[str, str], int] = {}
    reports: dict[tuple[str, str], int] = {}
    counted: dict[str, int] = {}
    for vehicle_id, day, source, trip_reports, trips_counted in rows:
        cells.setdefault(vehicle_id, {}).setdefault(day, set()).add(source)
        days[vehicle_id, source] = days.get((vehicle_id, source), 0) + 1
        reports[vehicle_id, source] = reports.get((vehicle_id, source), 0) + trip_reports
        counted[vehicle_id] = counted.get(vehicle_id, 0) + trips_counted
    sources = sorted({source for _, source in days}, key=_source_order)
    out = []
    for vehicle_id in sorted(cells):
        mine = [s for s in sources if (vehicle_id, s) in days]
        out.append(
            VehicleCoverage(
                vehicle_id=vehicle_id,
                name=names.get(vehicle_id, vehicle_id),
                by_source={
                    s: SourceCoverage(days[vehicle_id, s], reports[vehicle_id, s]) for s in mine
                },
                cells={
                    d: tuple(sorted(found, key=_source_order))
                    for d, found in cells[vehicle_id].items()
                },
                trip_reports=sum(reports[vehicle_id, s] for s in mine),
                trips_counted=counted.get(vehicle_id, 0),
                trips_seen_twice=int(twice.get(vehicle_id, 0)),
            )
        )
    return out, sources


def facts_as_of(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """When the build the connection reads was committed (its marker snapshot)."""
    from pipelines.facts import ALIAS, BUILD_MESSAGE

    row = con.execute(
        f"select max(snapshot_time) from {ALIAS}.snapshots() where commit_message = ?",
        [BUILD_MESSAGE],
    ).fetchone()
    return None if row is None or row[0] is None else row[0].astimezone(UTC)


def resolve_period(
    con: duckdb.DuckDBPyConnection, options: ReportOptions, today: date
) -> tuple[Period, date | None]:
    """The period to report on, and the newest day the facts hold."""
    (newest,) = con.execute("select max(day) from fleet_daily").fetchone() or (None,)
    end = options.end
    if end is None:
        yesterday = today - timedelta(days=1)
        end = min(newest, yesterday) if newest is not None else yesterday
    return Period(end - timedelta(days=options.days - 1), end), newest


def collect(
    con: duckdb.DuckDBPyConnection, options: ReportOptions, today: date | None = None
) -> ReportData:
    """Everything the report shows, from a connection whose default schema holds the marts."""
    today = today or datetime.now(UTC).date()
    period, newest = resolve_period(con, options, today)
    previous = period.previous()
    vehicles, cost_km = vehicle_figures(con, period)
    previous_vehicles, previous_cost_km = vehicle_figures(con, previous)
    if options.fuel_price_per_l is not None:
        price = Price(options.fuel_price_per_l, "configured")
    else:
        start, end = period.bounds()
        row = con.execute(PRICE_SQL, [start, end]).fetchone()
        reported = _float(row[0]) if row else None
        price = Price(reported, "reported" if reported is not None else "none")
    data = ReportData(
        period=period,
        previous=previous,
        options=options,
        facts_as_of=facts_as_of(con),
        newest_day=newest,
        vehicles=vehicles,
        previous_vehicles=previous_vehicles,
        totals=Totals.of(vehicles, cost_km),
        previous_totals=Totals.of(previous_vehicles, previous_cost_km),
        daily=daily_figures(con, period),
        price=price,
    )
    if vehicles:
        data.coverage, data.sources = coverage(
            con, period, {v.vehicle_id: v.name for v in vehicles}
        )
    return data


def _source_order(source: str) -> tuple[int, str]:
    order = list(SOURCE_LETTERS)
    return (order.index(source) if source in order else len(order), source)


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
