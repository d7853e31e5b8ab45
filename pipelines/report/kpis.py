"""The fleet's KPIs against the period before: which figures, how each reads, and whether its
change is for the better. The HTML cards and the Markdown table show the same list."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from pipelines.report.data import ReportData
from pipelines.report.text import money, number, percent

NO_PREVIOUS = "no data in the period before"


@dataclass(frozen=True)
class Kpi:
    key: str
    label: str
    current: float | None
    previous: float | None
    format: Callable[[float | None], str]
    better: int
    """+1: up is good, -1: down is good, 0: neither."""
    share: bool = False
    """A share: its change is in percentage points."""
    note: str = ""


def kpis(data: ReportData) -> list[Kpi]:
    cur, prev, price = data.totals, data.previous_totals, data.price
    cur_idle_cost = data.idle_cost(cur.idle_h)
    prev_idle_cost = data.idle_cost(prev.idle_h)
    currency = data.options.currency
    cost_note = (
        f"reported by the sources on {number(cur.reported_cost_km)} of {number(cur.km)} km"
        if cur.reported_cost is not None
        else "no source reported a cost"
    )
    out = [
        Kpi("trips", "Trips", cur.trips, prev.trips, lambda v: number(v), 0),
        Kpi("km", "Distance", cur.km, prev.km, lambda v: number(v, 0, "km"), 0),
        Kpi("driving_h", "Driving time", cur.driving_h, prev.driving_h, _hours, 0),
        Kpi("idle_h", "Idle time", cur.idle_h, prev.idle_h, _hours, -1),
        Kpi(
            "idle_share",
            "Idle share of engine time",
            cur.idle_share,
            prev.idle_share,
            percent,
            -1,
            share=True,
        ),
        Kpi(
            "l_per_100km",
            "Litres per 100 km",
            cur.l_per_100km,
            prev.l_per_100km,
            lambda v: number(v, 1, "l/100\u202fkm"),
            -1,
            note=f"on the {number(cur.fuel_km)} km whose fuel is known",
        ),
        Kpi("fuel_l", "Fuel used", cur.fuel_l, prev.fuel_l, lambda v: number(v, 0, "l"), -1),
        Kpi("refuels", "Refuels", cur.refuels, prev.refuels, lambda v: number(v), 0),
        Kpi("refuel_l", "Litres refuelled", cur.refuel_l, prev.refuel_l, _litres, 0),
        Kpi(
            "fuel_cost",
            "Fuel cost",
            cur.reported_cost,
            prev.reported_cost,
            lambda v: money(v, currency),
            -1,
            note=cost_note,
        ),
        Kpi(
            "idle_cost",
            "Idle cost",
            cur_idle_cost,
            prev_idle_cost,
            lambda v: money(v, currency),
            -1,
            note=price_note(data) if price.per_l is not None else "no fuel price known",
        ),
        Kpi("vehicles", "Vehicles driving", cur.vehicles, prev.vehicles, lambda v: number(v), 0),
    ]
    if not data.previous_vehicles:  # nothing to compare with: not a fall to zero
        return [replace(kpi, previous=None) for kpi in out]
    return out


def _hours(value: float | None) -> str:
    return number(value, 0, "h")


def _litres(value: float | None) -> str:
    return number(value, 0, "l")


def change(kpi: Kpi) -> tuple[str, str]:
    """(text, css class) of the change from the previous period."""
    if kpi.current is None or kpi.previous is None:
        return "no comparison", "neutral"
    if kpi.share:
        delta = (kpi.current - kpi.previous) * 100
        text = f"{delta:+.1f} pts"
    elif kpi.previous == 0:
        return ("new" if kpi.current else "no change"), "neutral"
    else:
        delta = (kpi.current - kpi.previous) / abs(kpi.previous) * 100
        text = f"{delta:+.1f}\u202f%"
    if abs(delta) < 0.05:
        return "no change", "neutral"
    arrow = "▲" if delta > 0 else "▼"
    if kpi.better == 0:
        return f"{arrow} {text}", "neutral"
    good = (delta > 0) == (kpi.better > 0)
    return f"{arrow} {text}", "better" if good else "worse"


def price_note(data: ReportData) -> str:
    price = data.price
    currency = data.options.currency
    if price.origin == "configured":
        return f"at the configured {number(price.per_l, 3, currency)} per litre"
    return (
        f"at {number(price.per_l, 3, currency)} per litre, the average price the sources put on "
        "this period's trips (fuel cost over litres)"
    )
