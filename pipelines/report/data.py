"""What the fleet report shows, read from the marts only, as plain values.

Every figure is a ratio of totals over `fleet_daily` (a trip or refuel several sources reported
is counted once there), except the coverage, which reads the per-source rows of `fct_trips`,
`fct_fuel_events` and `fct_idle_periods` on purpose: it is about who reported what.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TypeVar

import duckdb

SOURCE_LETTERS = {"avl": "V", "autopi": "P", "kt1": "K", "metrotec": "M"}
"""One letter per source, as `fleet demo`'s summary prints them."""
SOURCE_NAMES = {"avl": "AVL", "autopi": "AutoPi", "kt1": "kt1", "metrotec": "Metrotec"}
N = TypeVar("N", int, float)


@dataclass(frozen=True)
class ReportOptions:
    """What a reader may change; the defaults are the ones docs/report.md states."""

    days: int = 28
    end: date | None = None
    """Last UTC day of the period; None: the newest day of the facts, yesterday at the latest
    (today is not over, so it would look like a bad day)."""
    idle_l_per_h: float = 0.8
    """Litres an idling engine burns per hour: a small engine's, and the simulator's figure."""
    fuel_price_per_l: float | None = None
    """None: the average price the sources reported over the period, else no cost at all."""
    currency: str = "EUR"
    gap_slack_pct: float = 10.0
    """Refuelled vs used litres may differ by a tankful plus this share of the litres used."""

    def __post_init__(self) -> None:
        if self.days < 1:
            raise ValueError(f"days must be >= 1, not {self.days}")
        if self.idle_l_per_h < 0 or self.gap_slack_pct < 0:
            raise ValueError("idle_l_per_h and gap_slack_pct must be >= 0")
        if self.fuel_price_per_l is not None and self.fuel_price_per_l < 0:
            raise ValueError(f"fuel_price_per_l must be >= 0, not {self.fuel_price_per_l}")


@dataclass(frozen=True)
class Period:
    first: date
    last: date

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def previous(self) -> Period:
        return Period(self.first - timedelta(days=self.days), self.first - timedelta(days=1))

    def dates(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range(self.days)]

    def bounds(self) -> tuple[datetime, datetime]:
        """[first 00:00 UTC, day after last 00:00 UTC): the instants of the period."""
        start = datetime.combine(self.first, time(0), UTC)
        return start, datetime.combine(self.last + timedelta(days=1), time(0), UTC)

    def __str__(self) -> str:
        return f"{self.first.isoformat()} to {self.last.isoformat()} UTC"


def idle_share(driving_h: float, idle_h: float) -> float | None:
    """Idle hours over engine hours (driving plus idling); None without engine time."""
    engine_h = driving_h + idle_h
    return idle_h / engine_h if engine_h > 0 else None


class Ratios:
    """The ratios of a vehicle's or the fleet's sums, the same way for both."""

    driving_h: float
    idle_h: float
    fuel_l: float | None
    fuel_km: float

    @property
    def idle_share(self) -> float | None:
        return idle_share(self.driving_h, self.idle_h)

    @property
    def l_per_100km(self) -> float | None:
        if self.fuel_l is None or self.fuel_km <= 0:
            return None
        return self.fuel_l / self.fuel_km * 100


@dataclass(frozen=True)
class VehicleFigures(Ratios):
    """One vehicle over one period: sums of its `fleet_daily` rows."""

    vehicle_id: str
    name: str
    sources: tuple[str, ...]
    trips: int
    km: float
    driving_h: float
    idle_h: float
    fuel_l: float | None
    fuel_km: float
    """Km on the days whose fuel is known: the denominator of litres per 100 km."""
    trip_days: int
    days_without_fuel: int
    refuels: int | None
    refuel_l: float | None
    reported_cost: float | None
    tank_l: float | None
    """Largest tank level after a refuel any source reported, ever: the tank's size, near enough."""


@dataclass(frozen=True)
class Totals(Ratios):
    """The fleet over one period."""

    vehicles: int
    trips: int
    km: float
    driving_h: float
    idle_h: float
    fuel_l: float | None
    fuel_km: float
    refuels: int | None
    refuel_l: float | None
    reported_cost: float | None
    reported_cost_km: float

    @classmethod
    def of(cls, vehicles: Sequence[VehicleFigures], reported_cost_km: float) -> Totals:
        return cls(
            vehicles=sum(1 for v in vehicles if v.trips > 0),
            trips=sum(v.trips for v in vehicles),
            km=sum(v.km for v in vehicles),
            driving_h=sum(v.driving_h for v in vehicles),
            idle_h=sum(v.idle_h for v in vehicles),
            fuel_l=_sum_known(v.fuel_l for v in vehicles),
            fuel_km=sum(v.fuel_km for v in vehicles),
            refuels=_sum_known(v.refuels for v in vehicles),
            refuel_l=_sum_known(v.refuel_l for v in vehicles),
            reported_cost=_sum_known(v.reported_cost for v in vehicles),
            reported_cost_km=reported_cost_km,
        )


@dataclass(frozen=True)
class Day:
    day: date
    trips: int
    km: float
    driving_h: float
    idle_h: float
    fuel_l: float | None
    refuel_l: float | None
    vehicles: int

    @property
    def idle_share(self) -> float | None:
        return idle_share(self.driving_h, self.idle_h)


@dataclass(frozen=True)
class Price:
    """The fuel price costs are computed with, and where it came from."""

    per_l: float | None
    origin: str  # "configured", "reported" or "none"


@dataclass(frozen=True)
class RefuelCheck:
    """Refuelled against used litres of one vehicle, and whether the gap is worth a look."""

    vehicle: VehicleFigures
    gap_l: float | None
    allowed_l: float | None
    flagged: bool
    verdict: str


@dataclass(frozen=True)
class SourceCoverage:
    days: int
    trip_reports: int


@dataclass(frozen=True)
class VehicleCoverage:
    vehicle_id: str
    name: str
    by_source: dict[str, SourceCoverage]
    cells: dict[date, tuple[str, ...]]
    """UTC day -> the sources that reported the vehicle that day (any trip, fuel event or idle)."""
    trip_reports: int
    trips_counted: int
    trips_seen_twice: int
    """Counted trips at least one other source reported too."""


@dataclass
class ReportData:
    period: Period
    previous: Period
    options: ReportOptions
    facts_as_of: datetime | None
    newest_day: date | None
    vehicles: list[VehicleFigures]
    previous_vehicles: list[VehicleFigures]
    totals: Totals
    previous_totals: Totals
    daily: list[Day]
    price: Price
    coverage: list[VehicleCoverage] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.vehicles

    def by_fuel(self) -> list[VehicleFigures]:
        """Highest litres per 100 km first; vehicles whose fuel is unknown last, by id."""
        known = [v for v in self.vehicles if v.l_per_100km is not None]
        unknown = [v for v in self.vehicles if v.l_per_100km is None]
        known.sort(key=lambda v: (-(v.l_per_100km or 0.0), v.vehicle_id))
        return known + sorted(unknown, key=lambda v: v.vehicle_id)

    def by_idle(self) -> list[VehicleFigures]:
        return sorted(self.vehicles, key=lambda v: (-v.idle_h, v.vehicle_id))

    def idle_l(self, idle_h: float) -> float:
        return idle_h * self.options.idle_l_per_h

    def idle_cost(self, idle_h: float) -> float | None:
        if self.price.per_l is None:
            return None
        return self.idle_l(idle_h) * self.price.per_l

    def refuel_checks(self) -> list[RefuelCheck]:
        return [refuel_check(v, self.options.gap_slack_pct) for v in self.vehicles]


def refuel_check(v: VehicleFigures, slack_pct: float) -> RefuelCheck:
    """Over any period, refuelled - used = tank level at the end - level at the start, which a
    tank's size bounds. A gap beyond a tankful (plus `slack_pct` of the litres used, for the
    sources' measuring error) means litres went somewhere the sources did not see."""
    if v.refuels is None:
        return RefuelCheck(v, None, None, False, "its sources do not report refuels")
    if v.fuel_l is None or v.days_without_fuel:
        known = v.trip_days - v.days_without_fuel
        return RefuelCheck(
            v, None, None, False, f"fuel used known on {known} of {v.trip_days} driving days"
        )
    if v.tank_l is None:
        return RefuelCheck(v, None, None, False, "no tank level reported: size unknown")
    refuel_l = v.refuel_l or 0.0
    gap = refuel_l - v.fuel_l
    allowed = v.tank_l + slack_pct / 100 * v.fuel_l
    if abs(gap) <= allowed:
        return RefuelCheck(v, gap, allowed, False, "within a tankful")
    verdict = (
        "refuelled more than it used: fuel left the tank unseen?"
        if gap > 0
        else "used more than was refuelled: refuels no source saw?"
    )
    return RefuelCheck(v, gap, allowed, True, verdict)


def _sum_known(values: Iterable[N | None]) -> N | None:
    """The sum of the known values; None when none is known (unknown is not zero)."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None  # type: ignore[return-value]


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
