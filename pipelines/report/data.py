"""What the fleet report shows, as plain values, and the rules that derive figures from them.

`queries` fills these from the marts; `render`, `markdown` and `charts` only read them. Keeping
the values apart from the SQL lets the ratios and the refuel check be pinned without a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TypeVar

from pipelines.windows import DayRange

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


class Period(DayRange):
    """The report's UTC days; the period it is compared with is as many days just before."""

    def previous(self) -> Period:
        return Period(self.first - timedelta(days=self.count), self.first - timedelta(days=1))

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


@dataclass(frozen=True)
class Sums:
    """What a vehicle and the fleet both sum, and their ratios, worked out the same way for both."""

    trips: int
    km: float
    driving_h: float
    idle_h: float
    fuel_l: float | None
    fuel_km: float
    """Km on the days whose fuel is known: the denominator of litres per 100 km."""
    refuels: int | None
    refuel_l: float | None
    reported_cost: float | None

    @property
    def idle_share(self) -> float | None:
        return idle_share(self.driving_h, self.idle_h)

    @property
    def l_per_100km(self) -> float | None:
        if self.fuel_l is None or self.fuel_km <= 0:
            return None
        return self.fuel_l / self.fuel_km * 100


@dataclass(frozen=True)
class VehicleFigures(Sums):
    """One vehicle over one period: sums of its `fleet_daily` rows."""

    vehicle_id: str
    name: str
    sources: tuple[str, ...]
    trip_days: int
    days_without_fuel: int
    tank_l: float | None
    """Largest tank level after a refuel any source reported, ever: the tank's size, near enough."""


@dataclass(frozen=True)
class Totals(Sums):
    """The fleet over one period."""

    vehicles: int
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
