"""Worked SQL questions on the facts' marts, rendered with their outputs into docs/analytics.md.

The doc is generated, never edited by hand, so its tables cannot drift from what the SQL returns:
`tests/dbt/test_analytics_doc.py` rebuilds the reference world through the real pipeline and
compares. Regenerate with `python -m pipelines.analytics --reference --write docs/analytics.md`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from pipelines import facts
from pipelines.facts import FactsCatalog, FactsError

# The only tables the questions may read: the marts of docs/facts.md, in the `main` schema.
MART_TABLES = frozenset(
    {"fct_trips", "fct_fuel_events", "fct_idle_periods", "dim_vehicles", "fleet_daily"}
)
# A safety net for the doc's length; the queries carry their own LIMITs where lists run long.
MAX_ROWS = 15

# The reference world: the demo's fleet (seed 7, 12 vehicles, so the shipped seeds map every
# identity) over one fixed week, seen from a fixed "now" after its last trip has ended.
REFERENCE_SEED = 7
REFERENCE_VEHICLES = 12
REFERENCE_END = date(2026, 3, 31)
REFERENCE_DAYS = 7
REFERENCE_NOW = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
REGENERATE = ".venv/bin/python -m pipelines.analytics --reference --write docs/analytics.md"


@dataclass(frozen=True)
class Question:
    """One worked question: what is asked, why a fleet engineer asks it, and the SQL."""

    title: str
    why: str
    sql: str


# One display name per fleet vehicle (dim_vehicles has a row per source identity).
_NAMES = """
names as (
    select vehicle_id, min(display_name) as display_name
    from dim_vehicles
    group by vehicle_id
)"""


def _sql(text: str) -> str:
    """Each query stands alone (copy, paste, run), so shared CTEs are pasted in, not imported."""
    return textwrap.dedent(text).strip().replace("{names}", _NAMES.strip())


QUESTIONS: tuple[Question, ...] = (
    Question(
        title="Fuel efficiency ranking: litres per 100 km per vehicle",
        why=(
            "Which vehicles burn the most per kilometre? Sum litres and kilometres first, then "
            "divide: an average of daily `l_per_100km` would weigh a 2 km day like a 200 km one. "
            "Days whose fuel is unknown (`fuel_used_l` NULL) are left out of the kilometres too, "
            "so they cannot flatter the ratio. Compare like with like: a truck is not a car."
        ),
        sql=_sql(
            """
            with {names},

            per_vehicle as (
                select
                    vehicle_id,
                    sum(distance_km) filter (where fuel_used_l is not null) as km_with_fuel,
                    sum(fuel_used_l) as fuel_used_l
                from fleet_daily
                group by vehicle_id
            )

            select
                rank() over (order by fuel_used_l / km_with_fuel) as rank,
                vehicle_id,
                display_name,
                round(km_with_fuel, 1) as km,
                round(fuel_used_l, 1) as fuel_l,
                round(100 * fuel_used_l / km_with_fuel, 2) as l_per_100km
            from per_vehicle
            join names using (vehicle_id)
            where km_with_fuel > 0
            order by fuel_used_l / km_with_fuel, vehicle_id
            """
        ),
    ),
    Question(
        title="What idling costs: idle hours x idle burn x fuel price",
        why=(
            "Idling is fuel bought to go nowhere. The marts know the idle time; the burn rate of "
            "an idling engine and the price of a litre are assumptions, so they sit in one "
            "`assumptions` row at the top: change them to your fleet's figures. The last row is "
            "the whole fleet."
        ),
        sql=_sql(
            """
            with assumptions as (
                select
                    0.8 as idle_burn_l_per_h,  -- litres an idling engine burns per hour
                    1.70 as fuel_price_per_l   -- price of a litre, in the account's currency
            ),

            {names},

            idle as (
                select vehicle_id, sum(idle_s) / 3600 as idle_h
                from fleet_daily
                group by grouping sets ((vehicle_id), ())
            )

            select
                coalesce(idle.vehicle_id, '(all)') as vehicle_id,
                case when idle.vehicle_id is null then 'whole fleet' else names.display_name end
                    as display_name,
                round(idle.idle_h, 2) as idle_h,
                round(idle.idle_h * assumptions.idle_burn_l_per_h, 1) as idle_fuel_l,
                round(
                    idle.idle_h * assumptions.idle_burn_l_per_h * assumptions.fuel_price_per_l, 2
                ) as idle_cost
            from idle
            cross join assumptions
            left join names using (vehicle_id)
            order by idle.vehicle_id is null, idle_cost desc, vehicle_id
            """
        ),
    ),
    Question(
        title="Refuels against consumption per vehicle",
        why=(
            "Over a long enough window the litres put in the tank match the litres the engine "
            "burned. Burning far more than was refuelled, month after month, points at refuels "
            "no source saw (a card used elsewhere); refuelling far more than was burned points "
            "at fuel leaving the tank another way. Over one week most vehicles simply draw the "
            "tank down. `refuels` is NULL for a vehicle no refuel-reporting source sees: unknown, "
            "not zero."
        ),
        sql=_sql(
            """
            with {names}

            select
                vehicle_id,
                display_name,
                round(sum(fuel_used_l), 1) as fuel_used_l,
                sum(refuels) as refuels,
                round(sum(refuel_l), 1) as refuel_l,
                round(sum(refuel_l) - sum(fuel_used_l), 1) as refuelled_minus_used_l
            from fleet_daily
            join names using (vehicle_id)
            group by vehicle_id, display_name
            order by vehicle_id
            """
        ),
    ),
    Question(
        title="Trips per hour of day",
        why=(
            "When does the fleet move? Shift planning, depot opening hours and the cost of "
            "rush-hour driving all start here. A trip several sources reported is one trip: "
            "count only the copy that counts (`is_duplicate_of is null`). Hours are UTC; use "
            "`started_at at time zone 'Europe/Tallinn'` for the fleet's local clock."
        ),
        sql=_sql(
            """
            with trips as (
                select
                    hour(started_at at time zone 'UTC') as hour_utc,
                    distance_km
                from fct_trips
                where is_duplicate_of is null
            )

            select
                hour_utc,
                count(*) as trips,
                round(avg(distance_km), 1) as avg_km,
                rtrim(bar(count(*), 0, max(count(*)) over (), 20)) as chart
            from trips
            group by hour_utc
            order by hour_utc
            """
        ),
    ),
    Question(
        title="Idle share per vehicle, last month",
        why=(
            "Which vehicles idle most relative to how much they drive? Share of engine time "
            "spent idling, over the latest calendar month in the data (for live data, use "
            "`date_trunc('month', current_date) - interval 1 month`). The share is of the "
            "month's totals, not an average of daily shares."
        ),
        sql=_sql(
            """
            with month as (
                select cast(date_trunc('month', max(day)) as date) as month_start
                from fleet_daily
            ),

            {names}

            select
                vehicle_id,
                display_name,
                strftime(month.month_start, '%Y-%m') as month,
                count(*) as days_driven,
                round(sum(driving_s) / 3600, 1) as driving_h,
                round(sum(idle_s) / 3600, 1) as idle_h,
                round(100 * sum(idle_s) / nullif(sum(driving_s) + sum(idle_s), 0), 1) as idle_pct
            from fleet_daily
            cross join month
            join names using (vehicle_id)
            where fleet_daily.day >= month.month_start
                and fleet_daily.day < month.month_start + interval 1 month
            group by vehicle_id, display_name, month.month_start
            order by idle_pct desc, vehicle_id
            """
        ),
    ),
    Question(
        title="Longest idle periods, and where",
        why=(
            "Long idles at the same address are a habit (a driver warming the cab, a slow "
            "loading dock), not bad luck. Each source reports its own copy of a stop, so keep "
            "the periods of the trip copy that counts; when that source gives no address "
            "(AutoPi does not), take one from another source's overlapping period."
        ),
        sql=_sql(
            """
            with counted as (
                select periods.*
                from fct_idle_periods as periods
                join fct_trips as trips using (trip_id)
                where trips.is_duplicate_of is null
            )

            select
                counted.vehicle_id,
                counted.started_at,
                round(counted.duration_s / 60, 1) as minutes,
                counted.source,
                coalesce(
                    counted.address,
                    (
                        select other.address
                        from fct_idle_periods as other
                        where other.vehicle_id = counted.vehicle_id
                            and other.source <> counted.source
                            and other.address is not null
                            and other.started_at < counted.ended_at
                            and other.ended_at > counted.started_at
                        order by abs(epoch(other.started_at) - epoch(counted.started_at)),
                            other.source
                        limit 1
                    )
                ) as address
            from counted
            order by counted.duration_s desc, counted.started_at, counted.vehicle_id
            limit 10
            """
        ),
    ),
    Question(
        title="Daily distance trend per vehicle",
        why=(
            "Is a vehicle being used more or less? One row per vehicle with its kilometres day "
            "by day (oldest first; a day without trips is 0 km) and the least-squares slope in "
            "km per day. Weekends show as dips: read the slope over weeks, not days."
        ),
        sql=_sql(
            """
            with days as (
                select cast(unnest(generate_series(min(day), max(day), interval 1 day)) as date)
                    as day
                from fleet_daily
            ),

            grid as (
                select vehicles.vehicle_id, days.day, coalesce(daily.distance_km, 0) as km
                from (select distinct vehicle_id from fleet_daily) as vehicles
                cross join days
                left join fleet_daily as daily
                    on daily.vehicle_id = vehicles.vehicle_id and daily.day = days.day
            )

            select
                vehicle_id,
                strftime(min(day), '%m-%d') || '..' || strftime(max(day), '%m-%d') as days,
                string_agg(cast(round(km) as integer), ' ' order by day) as km_per_day,
                round(sum(km), 1) as total_km,
                round(regr_slope(km, epoch(day) / 86400), 1) as trend_km_per_day
            from grid
            group by vehicle_id
            order by vehicle_id
            """
        ),
    ),
    Question(
        title="Which sources report each vehicle",
        why=(
            "Before trusting a number, know who measured it. `dim_vehicles` has one row per "
            "source identity; the vehicle_map seed ties a vehicle's AVL device name, AutoPi "
            "device, kt1 asset and Metrotec object to one `vehicle_id`. NULL: that source does "
            "not see the vehicle."
        ),
        sql=_sql(
            """
            select
                vehicle_id,
                min(display_name) as display_name,
                string_agg(source, ', ' order by source) as sources,
                max(source_vehicle_id) filter (where source = 'avl') as avl_id,
                max(source_vehicle_id) filter (where source = 'autopi') as autopi_id,
                max(source_vehicle_id) filter (where source = 'kt1') as kt1_id,
                max(source_vehicle_id) filter (where source = 'metrotec') as metrotec_id
            from dim_vehicles
            group by vehicle_id
            order by vehicle_id
            """
        ),
    ),
    Question(
        title="Trips several sources reported, and how they were resolved",
        why=(
            "A vehicle with two trackers reports every trip twice. `fct_trips` keeps every "
            "copy; the one that counts has `is_duplicate_of` NULL and the others point at it. "
            "The counted copy comes from the first source in the dbt var "
            "`trip_source_priority` (autopi, kt1, metrotec, avl). The gaps show how far the "
            "copies disagree on start time and distance."
        ),
        sql=_sql(
            """
            with counted as (
                select trip_id, source, started_at, distance_km
                from fct_trips
                where is_duplicate_of is null
            ),

            resolved as (
                select
                    counted.trip_id,
                    counted.source as counted_source,
                    string_agg(copy.source, ', ' order by copy.source) as copy_sources,
                    max(abs(epoch(copy.started_at) - epoch(counted.started_at))) as start_gap_s,
                    max(abs(copy.distance_km - counted.distance_km)) as km_gap
                from counted
                left join fct_trips as copy on copy.is_duplicate_of = counted.trip_id
                group by counted.trip_id, counted.source
            )

            select
                counted_source,
                coalesce(copy_sources, '(none)') as duplicate_sources,
                count(*) as trips,
                round(max(start_gap_s)) as max_start_gap_s,
                round(max(km_gap), 2) as max_km_gap
            from resolved
            group by counted_source, copy_sources
            order by trips desc, counted_source, duplicate_sources
            """
        ),
    ),
    Question(
        title="Top speeds and speeding trips",
        why=(
            "Speeding costs fuel, tyres and insurance. Per vehicle: counted trips whose top "
            "speed exceeded the limit (an explicit constant; set your policy), and when the "
            "fastest trip started. A trip's top speed is its source's own maximum."
        ),
        sql=_sql(
            """
            with policy as (
                select 90 as speed_limit_kmh
            ),

            {names}

            select
                vehicle_id,
                display_name,
                count(max_speed_kmh) as trips,
                count(*) filter (where max_speed_kmh > speed_limit_kmh) as speeding_trips,
                round(
                    100 * count(*) filter (where max_speed_kmh > speed_limit_kmh)
                    / count(max_speed_kmh), 1
                ) as speeding_pct,
                max(max_speed_kmh) as top_speed_kmh,
                first(started_at order by max_speed_kmh desc, started_at) as fastest_trip_at
            from fct_trips
            cross join policy
            join names using (vehicle_id)
            where is_duplicate_of is null
            group by vehicle_id, display_name
            order by speeding_trips desc, vehicle_id
            """
        ),
    ),
)


# --- running and rendering ---------------------------------------------------------------------


def connect(catalog: FactsCatalog) -> duckdb.DuckDBPyConnection:
    """The facts as of their last complete build, as `fleet sql` opens them, in UTC (set by
    `facts.connect`) and on one thread: float sums then add in one order, so every render of
    one build is byte-identical. Raises FactsError (one line) when the catalog cannot open."""
    return facts.connect(read_only=True, catalog=catalog, threads=1)


def run(con: duckdb.DuckDBPyConnection, question: Question) -> tuple[list[str], list[tuple]]:
    """The question's column names and every row it returns."""
    relation = con.sql(question.sql)
    return list(relation.columns), relation.fetchall()


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        stamp = value.astimezone(UTC) if value.tzinfo else value
        return stamp.replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")
    if isinstance(value, float | Decimal):
        # The SQL rounds; this only trims float noise (1.2000000000000002) from what it returns.
        return repr(round(float(value), 4))
    return str(value).replace("|", "\\|").replace("\n", " ")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def markdown_table(columns: Sequence[str], rows: Sequence[tuple]) -> str:
    """A GitHub table; numeric columns right-aligned, at most MAX_ROWS rows (and says so)."""
    shown = rows[:MAX_ROWS]
    numeric = [
        all(_is_number(row[i]) for row in shown if row[i] is not None)
        and any(row[i] is not None for row in shown)
        for i in range(len(columns))
    ]
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
        *("| " + " | ".join(_cell(v) for v in row) + " |" for row in shown),
    ]
    if len(rows) > len(shown):
        lines.append(f"\n_First {len(shown)} of {len(rows)} rows._")
    return "\n".join(lines)


def _anchor(number: int, question: Question) -> str:
    """The id GitHub gives the question's heading, so the contents list links to it."""
    heading = f"{number}. {question.title}".lower()
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def render(con: duckdb.DuckDBPyConnection, data_note: str) -> str:
    """The whole doc: an introduction, then each question with its why, SQL and output."""
    first, last, vehicles = con.execute(
        "select min(day), max(day), count(distinct vehicle_id) from fleet_daily"
    ).fetchone() or (None, None, 0)
    parts = [
        "# Analytics: ten questions for the fleet marts",
        "",
        "<!-- Generated by pipelines/analytics.py; do not edit by hand. "
        "tests/dbt/test_analytics_doc.py fails when this file and the SQL disagree. "
        f"Regenerate: {REGENERATE} -->",
        "",
        "Worked SQL a fleet data engineer runs on the marts (docs/facts.md), each with why it is "
        "asked and what it returned. Every query reads only the mart tables in `main` "
        "(`fct_trips`, `fct_fuel_events`, `fct_idle_periods`, `dim_vehicles`, `fleet_daily`); "
        'run one with `fleet sql "..."`, or in any DuckDB client after `ATTACH '
        "'ducklake:$FLEET_FACTS_CATALOG' AS facts (DATA_PATH '$FLEET_FACTS_DATA_PATH', "
        "READ_ONLY); USE facts;`.",
        "",
        f"{data_note} They cover {first}..{last} and {vehicles} vehicles. Timestamps are "
        "UTC, distances km, fuel litres.",
        "",
        "Two habits run through them. `fct_trips` holds one row per trip *per source*: a trip "
        "several sources reported is counted once, through the copy whose `is_duplicate_of` "
        "is NULL (`fleet_daily` already counts that way). And ratios are ratios of totals "
        "(sum, then divide), never averages of per-day ratios.",
        "",
    ]
    parts += [f"{i}. [{q.title}](#{_anchor(i, q)})" for i, q in enumerate(QUESTIONS, 1)]
    for i, question in enumerate(QUESTIONS, 1):
        columns, rows = run(con, question)
        parts += [
            "",
            f"## {i}. {question.title}",
            "",
            question.why,
            "",
            "```sql",
            question.sql,
            "```",
            "",
            markdown_table(columns, rows),
        ]
    return "\n".join(parts) + "\n"


REFERENCE_NOTE = (
    "The outputs come from the reference world: the demo's simulated fleet (seed "
    f"{REFERENCE_SEED}, {REFERENCE_VEHICLES} vehicles) landed from the four simulated vendor APIs "
    "by the real Dagster assets and built by dbt, as `fleet demo` does but on fixed dates."
)


# --- the reference world -----------------------------------------------------------------------

_PIPELINE_PREFIXES = ("AVL_", "AUTOPI_", "KT1_", "METROTEC_", "FLEET_")


@contextlib.contextmanager
def _hermetic(data_dir: Path, values: dict[str, str]) -> Iterator[None]:
    """Only `values` configure the pipeline: no shell variable or `.env` may change the world."""
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith(_PIPELINE_PREFIXES)]:
        del os.environ[key]
    os.environ.update(values)
    try:
        with contextlib.chdir(data_dir):  # a developer's .env lives in the working directory
            yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def build_reference_facts(data_dir: Path) -> FactsCatalog:
    """Land the reference world from the four simulated APIs, build the marts into a catalog
    under `data_dir`; return that catalog.

    The steps of `fleet demo` (its selections, quiet runs and scaled limits) on fixed dates, a
    fixed simulated clock and an ephemeral Dagster instance, so every build gives the same marts.
    """
    from dagster import AssetSelection

    from pipelines.cli.demo import demo_steps
    from pipelines.runner import failure_lines, run_quietly
    from pipelines.simulator.serve import start_all
    from pipelines.simulator.world import World

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    world = World(
        seed=REFERENCE_SEED, vehicles=REFERENCE_VEHICLES, end_day=REFERENCE_END, days=REFERENCE_DAYS
    )
    # The models only: their data tests are the dbt test suite's job, and skipping them halves
    # the build (the Dagster asset checks stay unselected, so dbt runs no tests).
    steps = demo_steps(
        world.start_day,
        world.end_day,
        dbt_selection=AssetSelection.from_string("kind:dbt").without_checks(),
    )
    steps = [step for step in steps if step.name != "report"]  # the facts are what it needs
    catalog = FactsCatalog.of(
        f"sqlite:{data_dir / 'fleet_catalog.sqlite'}", str(data_dir / "facts")
    )
    # A short long-poll so the kt1 drain ends promptly once the queue is empty, as in the demo.
    with start_all(world, clock=lambda: REFERENCE_NOW, kt1_long_poll_s=1.0) as sims:
        env = {
            **sims.env(),
            "FLEET_LAKE_DIR": str(data_dir / "lake"),
            "FLEET_FACTS_CATALOG": catalog.catalog,
            "FLEET_FACTS_DATA_PATH": catalog.data_path,
            "FLEET_STATE_URL": f"sqlite:///{data_dir / 'state.sqlite3'}",
            "FLEET_START_DATE": world.start_day.isoformat(),
            "METROTEC_RATE_LIMIT": "20/1",
            "KT1_DRAIN_SECONDS": "60",
        }
        with _hermetic(data_dir, env):
            from pipelines.definitions import build_defs

            defs = build_defs()
            for step in steps:
                log = data_dir / "logs" / f"{step.name}.log"
                result = run_quietly(defs, step.selection, step.tags, None, log)
                if not result.success:
                    raise RuntimeError(
                        f"reference world: step {step.name} failed (log: {log}): "
                        + "; ".join(failure_lines(result))
                    )
    return catalog


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.analytics",
        description="Render docs/analytics.md: the worked questions with their outputs.",
    )
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument(
        "--facts",
        action="store_true",
        help="render from the facts of FLEET_FACTS_CATALOG (data in FLEET_FACTS_DATA_PATH), as "
        "of their last complete build",
    )
    data.add_argument(
        "--reference",
        action="store_true",
        help="build the reference world first (about a minute); what the committed doc uses",
    )
    parser.add_argument("--write", type=Path, metavar="FILE", help="write here, not to stdout")
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="with --reference: build (and keep) the world here, logs included; default: a "
        "temporary directory",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fleet-analytics-") as tmp:
        if args.reference:
            catalog = build_reference_facts(args.data_dir or Path(tmp))
            note = REFERENCE_NOTE
        else:
            from pipelines.settings import get_settings, load_env_file

            load_env_file()
            settings = get_settings()
            for warning in settings.retired_warnings():
                print(warning, file=sys.stderr)
            catalog = FactsCatalog.from_settings(settings)
            note = f"The outputs come from the facts catalog `{catalog.describe()}`."
        try:
            con = connect(catalog)
        except FactsError as exc:
            print(exc, file=sys.stderr)
            return 1
        try:
            doc = render(con, note)
        finally:
            con.close()
    if args.write:
        args.write.write_text(doc)
        print(f"wrote {args.write}", file=sys.stderr)
    else:
        sys.stdout.write(doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
