"""The report as one self-contained HTML page: inline CSS and SVG, system fonts, no script, and
no reference to anything outside the file, so it opens the same from a disk, a mail attachment
or an air-gapped laptop.

Figures a test reads back carry their unrounded value in `data-*` attributes beside the
formatted text people read.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime

from pipelines.report import charts
from pipelines.report.data import (
    SOURCE_LETTERS,
    SOURCE_NAMES,
    RefuelCheck,
    ReportData,
    VehicleCoverage,
)
from pipelines.report.kpis import NO_PREVIOUS, change, kpis, price_note
from pipelines.report.text import money, number, percent, sources_text, utc

DASH = "\u2013"
"""What an empty cell shows: nothing to say there (unknown values say "not known")."""
TOP_ROWS = 20
"""Rows of a vehicle table shown open; the rest fold away under a <details>."""
TOP_IDLE_CHART = 15
GRID_OPEN_MAX_VEHICLES = 40
"""Fleets larger than this get their coverage grid folded away (it is one row per vehicle)."""

CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f5f7fa; --good:#2f7d4f;
        --bad:#c0392b; --accent:#3e7cb1; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
             "DejaVu Sans", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 2px 0; color: var(--muted); }
section { background:#fff; border:1px solid var(--line); border-radius:8px;
          padding: 16px 20px; margin-top: 18px; }
h2 { margin: 0 0 10px; font-size: 18px; }
p.note, .note { color: var(--muted); font-size: 12.5px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: left;
         vertical-align: top; }
th { font-weight: 600; font-size: 12.5px; color: var(--muted); background: #fafbfc; }
td.num, th.num { text-align: right; white-space: nowrap; }
tr.flagged td { background: #fdecea; }
.kpis { display: grid; grid-template-columns: repeat(4, 1fr); gap: 10px; }
.kpi { border:1px solid var(--line); border-radius:6px; padding: 10px 12px; }
.kpi .label { color: var(--muted); font-size: 12.5px; }
.kpi .value { font-size: 22px; font-weight: 600; margin: 2px 0; white-space: nowrap; }
.kpi .prev { color: var(--muted); font-size: 12px; }
.change { font-weight: 600; font-size: 12.5px; }
.neutral { color: var(--muted); }
.better { color: var(--good); } .worse { color: var(--bad); }
svg.chart { width: 100%; height: auto; display: block; }
.narrow { max-width: 640px; }
.src { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
       letter-spacing: 1px; }
.flag { color: var(--bad); font-weight: 600; }
details summary { cursor: pointer; color: var(--accent); margin: 8px 0; }
.grid-wrap { overflow-x: auto; }
table.grid { width: auto; }
table.grid td, table.grid th { padding: 2px 3px; border: 1px solid #fff; text-align: center;
       font-size: 10.5px; min-width: 30px; }
table.grid th.v { text-align: left; white-space: nowrap; }
table.grid td.s0 { background: #f0f2f5; color: #b0b8c1; }
table.grid td.s1 { background: #d6e6f5; } table.grid td.s2 { background: #a9cbe8; }
table.grid td.s3 { background: #76a9d6; color: #fff; }
table.grid td.s4 { background: #3e7cb1; color: #fff; }
.empty { text-align: center; padding: 60px 20px; }
.empty h2 { font-size: 24px; }
footer { color: var(--muted); font-size: 12px; margin-top: 18px; }
@media print { body { background: #fff; } section { break-inside: avoid; } }
"""


# --- escaping ---------------------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _data(value: float | int | None) -> str:
    return "" if value is None else repr(float(value))


# --- page -------------------------------------------------------------------------------------


def page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="fleet-pipelines fleet_report">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"{body}\n</main>\n</body>\n</html>\n"
    )


def render(data: ReportData, written_at: datetime) -> str:
    """The whole page: the report, or the "No data for ..." page for an empty period."""
    title = f"Fleet report, {data.period}"
    header = (
        "<header>\n<h1>Fleet report</h1>\n"
        f"<p>{data.period.count} days, <strong>{_e(data.period)}</strong>, compared with the "
        f"{data.previous.count} days before ({_e(data.previous)})"
        f"{'' if data.previous_vehicles or data.empty else ', which hold no data'}.</p>\n"
        f"<p>From the facts as of the build committed {_e(utc(data.facts_as_of))}; "
        f"written {_e(utc(written_at))}. All days and times are UTC.</p>\n</header>"
    )
    if data.empty:
        return page(f"No data for {data.period}", header + "\n" + empty_section(data))
    parts = [
        header,
        kpi_section(data),
        trend_section(data),
        fuel_section(data),
        idle_section(data),
        refuel_section(data),
        coverage_section(data),
        footer(data),
    ]
    return page(title, "\n".join(parts))


def empty_section(data: ReportData) -> str:
    if data.newest_day is None:
        why = "The facts hold no trips or refuels yet: build them first (`fleet facts build`)."
    elif data.newest_day < data.period.first:
        why = (
            f"The newest day in the facts is {data.newest_day.isoformat()} UTC, before this "
            "period: build the facts of newer days, or choose an earlier end day."
        )
    else:
        why = "No vehicle has a trip or a refuel in this period."
    return (
        '<section class="empty" id="empty">\n'
        f"<h2>No data for {_e(data.period)}</h2>\n<p>{_e(why)}</p>\n</section>"
    )


def kpi_section(data: ReportData) -> str:
    cards = []
    for kpi in kpis(data):
        text, css = change(kpi)
        before = (
            f'<span class="change {css}">{_e(text)}</span> vs {_e(kpi.format(kpi.previous))}'
            if data.previous_vehicles
            else NO_PREVIOUS
        )
        note = f'<div class="note">{_e(kpi.note)}</div>' if kpi.note else ""
        cards.append(
            f'<div class="kpi" data-kpi="{kpi.key}" data-value="{_data(kpi.current)}" '
            f'data-previous="{_data(kpi.previous)}">'
            f'<div class="label">{_e(kpi.label)}</div>'
            f'<div class="value">{_e(kpi.format(kpi.current))}</div>'
            f'<div class="prev">{before}</div>{note}</div>'
        )
    return (
        '<section id="kpis">\n<h2>Fleet at a glance</h2>\n'
        f'<div class="kpis">\n{"".join(cards)}\n</div>\n'
        '<p class="note">A trip or refuel several sources reported is counted once. Ratios are '
        "ratios of the period's totals. Green and red mark a change for the better or the "
        "worse where there is one (less idling, less fuel per km). Fuel cost is what the sources "
        "reported; the idle cost is worked out below.</p>\n</section>"
    )


def trend_section(data: ReportData) -> str:
    figure = charts.trend(data.daily)
    busiest = max(data.daily, key=lambda d: d.km)
    return (
        '<section id="trend">\n<h2>Day by day</h2>\n'
        f"{charts.svg(figure)}\n"
        f'<p class="note">Busiest day: {busiest.day.isoformat()} UTC, '
        f"{number(busiest.km, 0, 'km')} over {number(busiest.trips)} trips by "
        f"{number(busiest.vehicles)} vehicles. Days are UTC days of each trip's start; "
        "litres used count the trips whose fuel a source knows.</p>\n</section>"
    )


def _rows(rows: Sequence[str], header: str, what: str) -> str:
    """A table of the first TOP_ROWS rows, the rest folded under a <details>."""
    table = (
        f"<table>\n<thead>{header}</thead>\n<tbody>\n{''.join(rows[:TOP_ROWS])}</tbody>\n</table>"
    )
    if len(rows) > TOP_ROWS:
        table += (
            f"\n<details><summary>The other {len(rows) - TOP_ROWS} {what}</summary>\n"
            f"<table>\n<thead>{header}</thead>\n<tbody>\n{''.join(rows[TOP_ROWS:])}"
            "</tbody>\n</table>\n</details>"
        )
    return table


def fuel_section(data: ReportData) -> str:
    header = (
        '<tr><th class="num">#</th><th>vehicle</th><th>sources</th>'
        '<th class="num">l/100 km</th><th class="num">fuel used</th>'
        '<th class="num">km with fuel known</th><th class="num">km</th>'
        '<th class="num">trips</th></tr>'
    )
    rows = []
    rank = 0
    for v in data.by_fuel():
        known = v.l_per_100km is not None
        rank += known
        rows.append(
            f'<tr data-vehicle="{_e(v.vehicle_id)}" data-rank="{rank if known else ""}" '
            f'data-l-per-100km="{_data(v.l_per_100km)}">'
            f'<td class="num">{rank if known else DASH}</td>'
            f"<td>{_e(v.vehicle_id)} {_e(v.name)}</td>"
            f"<td>{_e(sources_text(v.sources))}</td>"
            f'<td class="num"><strong>{_e(number(v.l_per_100km, 1))}</strong></td>'
            f'<td class="num">{_e(number(v.fuel_l, 0, "l"))}</td>'
            f'<td class="num">{_e(number(v.fuel_km, 0, "km"))}</td>'
            f'<td class="num">{_e(number(v.km, 0, "km"))}</td>'
            f'<td class="num">{_e(number(v.trips))}</td></tr>\n'
        )
    return (
        '<section id="fuel">\n<h2>Fuel efficiency: litres per 100 km, highest first</h2>\n'
        + _rows(rows, header, "vehicles")
        + '\n<p class="note">Litres used over the km of the days whose fuel a source knows '
        "(a day without fuel leaves out its km too, so it cannot flatter the ratio). Vehicles "
        "whose fuel no source knows come last. Compare like with like: a truck is not a car. "
        "Sources are the vehicle's identities in <code>dim_vehicles</code>.</p>\n</section>"
    )


def idle_section(data: ReportData) -> str:
    options = data.options
    currency = options.currency
    if data.price.per_l is None:
        assumption = (
            f"Idle cost: idle hours \u00d7 {number(options.idle_l_per_h, 2)} l an idling "
            "engine burns per hour \u00d7 the fuel price. <strong>No fuel price is configured "
            "and no source reported one</strong>, so costs are not shown: set it (asset config "
            "<code>fuel_price_per_l</code>, or <code>fleet report --fuel-price</code>)."
        )
    else:
        assumption = (
            f"Idle cost: idle hours \u00d7 {number(options.idle_l_per_h, 2)} l an idling engine "
            f"burns per hour \u00d7 {_e(price_note(data))}. Both are assumptions; change them "
            "in the asset's config (<code>idle_l_per_h</code>, <code>fuel_price_per_l</code>) "
            "or with <code>fleet report --idle-l-per-h --fuel-price</code>."
        )
    ranked = data.by_idle()
    costs = [data.idle_cost(v.idle_h) for v in ranked]
    figure = charts.idle_ranking(ranked[:TOP_IDLE_CHART], costs[:TOP_IDLE_CHART], currency)
    header = (
        '<tr><th class="num">#</th><th>vehicle</th><th>sources</th>'
        '<th class="num">idle time</th><th class="num">idle share</th>'
        '<th class="num">idle litres</th><th class="num">idle cost</th></tr>'
    )
    rows = [
        f'<tr data-vehicle="{_e(v.vehicle_id)}" data-rank="{n}" data-idle-h="{_data(v.idle_h)}" '
        f'data-idle-cost="{_data(cost)}">'
        f'<td class="num">{n}</td><td>{_e(v.vehicle_id)} {_e(v.name)}</td>'
        f"<td>{_e(sources_text(v.sources))}</td>"
        f'<td class="num"><strong>{_e(number(v.idle_h, 1, "h"))}</strong></td>'
        f'<td class="num">{_e(percent(v.idle_share))}</td>'
        f'<td class="num">{_e(number(data.idle_l(v.idle_h), 0, "l"))}</td>'
        f'<td class="num">{_e(money(cost, currency) if cost is not None else DASH)}</td></tr>\n'
        for n, (v, cost) in enumerate(zip(ranked, costs, strict=True), start=1)
    ]
    total = data.idle_cost(data.totals.idle_h)
    total_text = (
        f"The fleet idled {number(data.totals.idle_h, 1, 'h')}: about "
        f"{number(data.idle_l(data.totals.idle_h), 0, 'litres')}"
        + (f", {money(total, currency)}." if total is not None else ".")
    )
    return (
        '<section id="idle">\n<h2>Idling, most first, and what it costs</h2>\n'
        f'<p>{total_text}</p>\n<p class="note">{assumption}</p>\n'
        f"{charts.svg(figure)}\n"
        + _rows(rows, header, "vehicles")
        + '\n<p class="note">Idle time is time stopped with the engine on during trips '
        "(<code>fleet_daily.idle_s</code>); idle share is of engine time (driving + idle).</p>"
        "\n</section>"
    )


def refuel_section(data: ReportData) -> str:
    checks = data.refuel_checks()
    slack = data.options.gap_slack_pct
    judged = [c for c in checks if c.gap_l is not None]
    flagged = [c for c in judged if c.flagged]
    order = sorted(
        checks,
        key=lambda c: (
            not c.flagged,
            c.gap_l is None,
            -(abs(c.gap_l) - (c.allowed_l or 0)) if c.gap_l is not None else 0,
            c.vehicle.vehicle_id,
        ),
    )
    header = (
        '<tr><th>vehicle</th><th class="num">fuel used</th><th class="num">refuels</th>'
        '<th class="num">refuelled</th><th class="num">refuelled \u2212 used</th>'
        '<th class="num">allowed gap</th><th>verdict</th></tr>'
    )
    rows = [_refuel_row(c) for c in order]
    rule = (
        "Over any period, litres refuelled \u2212 litres used = the tank's level at the end "
        "\u2212 its level at the start, and a tank's size bounds that. So a vehicle is flagged "
        f"when the gap is larger than a tankful plus {number(slack, 0)}\u202f% of the litres "
        "used (the sources' measuring error). The tankful is the highest level after a refuel "
        "any source ever reported for the vehicle. Vehicles whose sources report no refuels, "
        "or whose fuel use is not known on every driving day, are not judged."
    )
    summary = (
        f'<p><strong class="flag">{len(flagged)} of {len(judged)} vehicles</strong> have a '
        "gap worth a look.</p>"
        if flagged
        else f"<p>No gap worth a look among the {len(judged)} vehicles that can be judged.</p>"
    )
    scatter = charts.svg(charts.refuel_scatter(checks)) if judged else ""
    return (
        '<section id="refuels">\n<h2>Refuels against consumption</h2>\n'
        f'{summary}\n<div class="narrow">{scatter}</div>\n{_rows(rows, header, "vehicles")}\n'
        f'<p class="note">The rule: {rule}</p>\n</section>'
    )


def _refuel_row(c: RefuelCheck) -> str:
    v = c.vehicle
    css = ' class="flagged"' if c.flagged else ""
    verdict = f'<span class="flag">{_e(c.verdict)}</span>' if c.flagged else _e(c.verdict)
    return (
        f'<tr data-vehicle="{_e(v.vehicle_id)}" data-flagged="{str(c.flagged).lower()}"'
        f' data-gap-l="{_data(c.gap_l)}"{css}>'
        f"<td>{_e(v.vehicle_id)} {_e(v.name)}</td>"
        f'<td class="num">{_e(number(v.fuel_l, 0, "l"))}</td>'
        f'<td class="num">{_e(number(v.refuels))}</td>'
        f'<td class="num">{_e(number(v.refuel_l, 0, "l"))}</td>'
        f'<td class="num">{_e(number(c.gap_l, 0, "l") if c.gap_l is not None else DASH)}</td>'
        f'<td class="num">{_e(("±" + number(c.allowed_l, 0, "l")) if c.allowed_l else DASH)}</td>'
        f"<td>{verdict}</td></tr>\n"
    )


def coverage_section(data: ReportData) -> str:
    sources = data.sources
    header = (
        "<tr><th>vehicle</th>"
        + "".join(
            f'<th class="num">{_e(SOURCE_NAMES.get(s, s))} ({SOURCE_LETTERS.get(s, "?")})</th>'
            for s in sources
        )
        + '<th class="num">trip reports</th><th class="num">trips, counted once</th>'
        '<th class="num">seen by 2+ sources</th></tr>'
    )
    rows = [_coverage_row(c, sources, data.period.count) for c in data.coverage]
    reports = sum(c.trip_reports for c in data.coverage)
    counted = sum(c.trips_counted for c in data.coverage)
    grid = coverage_grid(data)
    many = len(data.coverage) > GRID_OPEN_MAX_VEHICLES
    legend = ", ".join(f"{SOURCE_LETTERS.get(s, '?')} {SOURCE_NAMES.get(s, s)}" for s in sources)
    grid_html = (
        f"<details{'' if many else ' open'}><summary>Which source reported which vehicle on "
        f"which UTC day</summary>\n"
        f'<p class="note">Letters: {_e(legend)}; darker cells: more sources that day; grey: '
        "no source reported the vehicle (it may simply not have moved).</p>\n"
        f'<div class="grid-wrap">{grid}</div></details>'
    )
    return (
        '<section id="coverage">\n<h2>Data coverage</h2>\n'
        f"<p>{number(reports)} trip reports from {len(sources)} sources are "
        f"{number(counted)} trips: a trip several sources reported is counted once "
        "(the copy of the first source in the project's priority; the others point at it in "
        "<code>fct_trips.is_duplicate_of</code>).</p>\n"
        + _rows(rows, header, "vehicles")
        + '\n<p class="note">Per source: UTC days it reported the vehicle (a trip, a fuel '
        f"event or an idle period) of the period's {data.period.count}, and its trip reports."
        "</p>\n"
        f"{grid_html}\n</section>"
    )


def _coverage_row(c: VehicleCoverage, sources: Sequence[str], days: int) -> str:
    cells = []
    for s in sources:
        found = c.by_source.get(s)
        cells.append(
            f'<td class="num" data-source="{_e(s)}" data-days="{found.days if found else 0}">'
            + (f"{found.days}/{days} d · {number(found.trip_reports)}" if found else DASH)
            + "</td>"
        )
    return (
        f'<tr data-vehicle="{_e(c.vehicle_id)}" data-trips-counted="{c.trips_counted}">'
        f"<td>{_e(c.vehicle_id)} {_e(c.name)}</td>{''.join(cells)}"
        f'<td class="num">{number(c.trip_reports)}</td>'
        f'<td class="num"><strong>{number(c.trips_counted)}</strong></td>'
        f'<td class="num">{number(c.trips_seen_twice)}</td></tr>\n'
    )


def coverage_grid(data: ReportData) -> str:
    dates = list(data.period.dates())
    head = "<tr><th class=v>vehicle</th>" + "".join(
        f'<th title="{d.isoformat()} UTC">{d.strftime("%d")}<br>{d.strftime("%b")}</th>'
        for d in dates
    )
    rows = []
    for c in data.coverage:
        cells = []
        for d in dates:
            found = c.cells.get(d, ())
            letters = "".join(SOURCE_LETTERS.get(s, "?") for s in found)
            cells.append(
                f'<td class="s{min(len(found), 4)}" title="{d.isoformat()}: '
                f'{_e(sources_text(found))}">{letters or "·"}</td>'
            )
        rows.append(f'<tr><th class="v">{_e(c.vehicle_id)}</th>{"".join(cells)}</tr>')
    return f'<table class="grid"><thead>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def footer(data: ReportData) -> str:
    return (
        "<footer>Built from the marts <code>fleet_daily</code>, <code>fct_trips</code>, "
        "<code>fct_fuel_events</code>, <code>fct_idle_periods</code> and "
        "<code>dim_vehicles</code> (docs/facts.md). Distances km, fuel litres, times hours, "
        f"costs {_e(data.options.currency)}; days and times UTC. What is in this report and how "
        "to change its period and assumptions: docs/report.md.</footer>"
    )
