"""The fleet report on real facts: a simulated fleet landed from the AVL and Metrotec simulators
by the raw assets, built by dbt, then reported by the `fleet_report` asset in a Dagster run.

Every figure the page shows is read back from it (the `data-*` values beside the text) and
compared with SQL of its own on the marts; the page must reference nothing outside itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    evaluate_automation_conditions,
    materialize,
)

from pipelines.cli.report import add_parser, latest_report_path, run_summary
from pipelines.definitions import build_defs
from pipelines.report import build as report_build
from pipelines.report.assets import REPORT_KEY, build_report_defs
from pipelines.report.data import ReportOptions, VehicleFigures, refuel_check
from pipelines.simulator.avl import AvlServer
from pipelines.simulator.metrotec import MetrotecServer
from pipelines.simulator.world import World
from tests.conftest import SIM_NOW, fact_days, facts_connect, facts_env

# Two weeks of 5 vehicles (seed 7: the shipped vehicle_map resolves them, so AVL's and
# Metrotec's copies of a trip meet): the report's week and the week it is compared with.
END = date(2026, 3, 29)
FIRST = END - timedelta(days=13)
DAYS = 7
PERIOD = (END - timedelta(days=DAYS - 1), END)
PREVIOUS = (PERIOD[0] - timedelta(days=DAYS), PERIOD[0] - timedelta(days=1))
PRICE = 1.75
IDLE_L_PER_H = 0.8
RUN_CONFIG = {
    "ops": {
        "fleet_report": {
            "config": {"days": DAYS, "end": END.isoformat(), "fuel_price_per_l": PRICE}
        }
    }
}
RAW = [
    AssetKey(["raw", "avl", "trips"]),
    *(
        AssetKey(["raw", "metrotec", t])
        for t in ("vehicles", "routelog", "stops", "refuels", "fuel_levels")
    ),
]


@dataclass
class Built:
    tmp: Path
    catalog: Path
    result: object
    requested_before_facts: int
    requested_after_facts: int
    requested_after_report: int


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """Land, build the facts, then materialize the report as its automation asks, once."""
    world = World(seed=7, vehicles=5, end_day=END + timedelta(days=1), days=15)
    tmp = tmp_path_factory.mktemp("report")
    with (
        AvlServer(world, rate_limit=(10, 1.0), clock=lambda: SIM_NOW) as avl,
        MetrotecServer(world, clock=lambda: SIM_NOW) as metrotec,
        pytest.MonkeyPatch.context() as mp,
    ):
        from pipelines.simulator.avl import env as avl_env
        from pipelines.simulator.metrotec import env as metrotec_env

        mp.chdir(tmp)
        for key, value in {
            **avl_env(avl),
            **metrotec_env(metrotec),
            "METROTEC_RATE_LIMIT": "1000/1",
            "FLEET_LAKE_DIR": str(tmp / "lake"),
            **facts_env(tmp / "fleet_catalog.sqlite"),
            "FLEET_STATE_URL": f"sqlite:///{tmp / 'state.sqlite3'}",
            "FLEET_START_DATE": FIRST.isoformat(),
            "FLEET_REPORT_DIR": str(tmp / "reports"),
        }.items():
            mp.setenv(key, value)
        instance = DagsterInstance.ephemeral()
        defs = Definitions.merge(build_defs(), build_report_defs())
        assets = list(defs.assets or [])
        report_only = AssetSelection.assets(REPORT_KEY)
        tick = evaluate_automation_conditions(defs, instance, asset_selection=report_only)
        before = tick.total_requested
        tags = {
            "dagster/asset_partition_range_start": FIRST.isoformat(),
            "dagster/asset_partition_range_end": END.isoformat(),
        }
        landing = materialize(
            assets, resources=defs.resources, selection=RAW, tags=tags, instance=instance
        )
        assert landing.success
        facts = materialize(
            assets,
            resources=defs.resources,
            # The models without their data tests: tests/dbt runs those.
            selection=AssetSelection.from_string("kind:dbt").without_checks(),
            tags=fact_days(),
            instance=instance,
        )
        assert facts.success
        tick = evaluate_automation_conditions(
            defs, instance, asset_selection=report_only, cursor=tick.cursor
        )
        after_facts = tick.total_requested
        result = materialize(
            assets,
            resources=defs.resources,
            selection=[REPORT_KEY],
            run_config=RUN_CONFIG,
            instance=instance,
        )
        tick = evaluate_automation_conditions(
            defs, instance, asset_selection=report_only, cursor=tick.cursor
        )
        yield Built(
            tmp,
            tmp / "fleet_catalog.sqlite",
            result,
            before,
            after_facts,
            tick.total_requested,
        )


@pytest.fixture
def marts(built: Built) -> Iterator:
    con = facts_connect(built.catalog)
    yield con
    con.close()


# --- reading the page back --------------------------------------------------------------------

VOID = {"meta", "br", "img", "hr", "input", "link", "source", "wbr", "col", "area", "base"}


class Page(HTMLParser):
    """The page's elements with their attributes, checking every element is closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []
        self.style: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "style":
            self.style.append(data)
        self.text.append(data)

    def find(self, **wanted: str) -> list[dict[str, str]]:
        return [
            attrs
            for _tag, attrs in self.elements
            if all(attrs.get(k.replace("_", "-")) == v for k, v in wanted.items())
        ]

    def rows(self, section: str) -> list[dict[str, str]]:
        """The `<tr data-vehicle>` rows of one section, in page order."""
        out, inside = [], None
        for tag, attrs in self.elements:
            if tag == "section":
                inside = attrs.get("id")
            elif tag == "tr" and inside == section and "data-vehicle" in attrs:
                out.append(attrs)
        return out


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def assert_self_contained(text: str) -> Page:
    """Parses with every element closed in order, and loads nothing from outside the file."""
    page = parse(text)
    assert not page.errors, page.errors[:5]
    assert not page.stack, f"unclosed elements: {page.stack}"
    assert text.lower().startswith("<!doctype html>")
    for tag, attrs in page.elements:
        assert tag not in {"script", "link", "iframe", "object", "embed", "img", "base"}, tag
        for name in ("src", "href", "xlink:href", "srcset", "action", "data", "poster"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("#", "data:")), f"<{tag} {name}={value!r}>"
        assert "url(" not in attrs.get("style", "")
    css = "".join(page.style)
    assert "@import" not in css and "url(" not in css and "@font-face" not in css
    assert "http://" not in text and "https://" not in text
    return page


@pytest.fixture(scope="module")
def page(built: Built) -> Page:
    latest = built.tmp / "reports" / "latest.html"
    return assert_self_contained(latest.read_text())


def values(page: Page, kpi: str) -> tuple[float | None, float | None, str]:
    """(this period, previous period, the card's text) of one KPI card."""
    (attrs,) = page.find(data_kpi=kpi)
    as_float = {k: float(attrs[k]) if attrs[k] else None for k in ("data-value", "data-previous")}
    return as_float["data-value"], as_float["data-previous"], attrs["data-kpi"]


def bounds(first: date, last: date) -> list[datetime]:
    start = datetime.combine(first, datetime.min.time(), UTC)
    return [start, start + timedelta(days=(last - first).days + 1)]


# --- the Dagster asset ------------------------------------------------------------------------


def test_the_report_follows_the_facts_build_and_materializes_in_a_dagster_run(
    built: Built,
) -> None:
    assert built.requested_before_facts == 0  # nothing to report on yet
    assert built.requested_after_facts == 1  # the marts were updated and the build is over
    assert built.requested_after_report == 0  # handled: no second report for the same build
    result = built.result
    assert result.success
    (materialization,) = result.asset_materializations_for_node("fleet_report")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    report = Path(meta["report"])
    latest = Path(meta["latest"])
    assert report.parent == latest.parent == built.tmp / "reports"
    assert report.name.startswith("fleet_report_") and latest.name == "latest.html"
    assert report.read_text() == latest.read_text()
    assert not list(latest.parent.glob(".*.tmp"))  # the atomic writes left no temporary file
    assert meta["period"] == f"{PERIOD[0]} to {PERIOD[1]} UTC" and meta["empty"] is False
    summary = meta["summary"]
    assert "| Trips |" in summary and "| Idle cost |" in summary
    assert "](data:image/png;base64,iVBORw0KGgo" in summary  # a PNG, inline
    assert meta["vehicles"] == 5 and meta["trips"] > 0
    line = run_summary(result)  # what `fleet demo` prints for its report step
    assert line.startswith(f"{PERIOD[0]} to {PERIOD[1]} UTC: 5 vehicles") and line.endswith(
        str(latest)
    )


def test_the_asset_depends_on_the_marts_by_their_dbt_keys(built: Built) -> None:
    defs = Definitions.merge(build_defs(), build_report_defs())
    graph = defs.resolve_asset_graph()
    parents = graph.get(REPORT_KEY).parent_keys
    marts = {"fleet_daily", "fct_trips", "fct_fuel_events", "fct_idle_periods", "dim_vehicles"}
    assert parents == {AssetKey(name) for name in marts}
    assert all(graph.has(key) for key in parents)  # real dbt assets, not loose keys


# --- the figures, against SQL of their own ----------------------------------------------------


def test_kpis_match_sql_on_the_marts(page: Page, marts) -> None:
    def in_days(query: str, at: str, first: date, last: date) -> tuple:
        """The one row of `query` (its `where` ends open) over the instants `at` of first..last."""
        return marts.execute(f"{query} and {at} >= ? and {at} < ?", bounds(first, last)).fetchone()

    counted = (
        "select count(*), sum(distance_km), sum(driving_s) / 3600, sum(idle_s) / 3600 "
        "from fct_trips where is_duplicate_of is null"
    )
    trips, km, driving_h, idle_h = in_days(counted, "started_at", *PERIOD)
    prev_trips, prev_km, _, prev_idle_h = in_days(counted, "started_at", *PREVIOUS)
    assert trips > 50 and prev_trips > 50
    assert values(page, "trips")[:2] == (trips, prev_trips)
    assert values(page, "km")[0] == pytest.approx(km, abs=0.01)
    assert values(page, "km")[1] == pytest.approx(prev_km, abs=0.01)
    assert values(page, "driving_h")[0] == pytest.approx(driving_h, abs=0.01)
    assert values(page, "idle_h")[0] == pytest.approx(idle_h, abs=0.01)
    assert values(page, "idle_h")[1] == pytest.approx(prev_idle_h, abs=0.01)
    assert values(page, "idle_share")[0] == pytest.approx(idle_h / (idle_h + driving_h), abs=1e-6)
    n, litres = in_days(
        "select count(*), sum(volume_l) from fct_fuel_events "
        "where event_type = 'refuel' and is_duplicate_of is null",
        "occurred_at",
        *PERIOD,
    )
    assert n > 0 and values(page, "refuels")[0] == n
    assert values(page, "refuel_l")[0] == pytest.approx(litres, abs=0.01)
    # Litres per 100 km over the km whose fuel is known, per vehicle-day.
    fuel, fuel_km = marts.execute(
        "select sum(fuel_used_l), sum(distance_km) from fleet_daily "
        "where fuel_used_l is not null and day between ? and ?",
        list(PERIOD),
    ).fetchone()
    assert values(page, "l_per_100km")[0] == pytest.approx(fuel / fuel_km * 100, abs=1e-6)
    assert values(page, "idle_cost")[0] == pytest.approx(idle_h * IDLE_L_PER_H * PRICE, abs=0.01)
    # A counted trip's cost is whichever copy carries one (only AVL reports costs here).
    (cost,) = marts.execute(
        "with costs as (select coalesce(is_duplicate_of, trip_id) as trip_id, "
        "max(fuel_cost) as cost from fct_trips group by 1) "
        "select sum(cost) from costs join fct_trips using (trip_id) "
        "where started_at >= ? and started_at < ?",
        bounds(*PERIOD),
    ).fetchone()
    assert cost > 0
    assert values(page, "fuel_cost")[0] == pytest.approx(cost, abs=0.01)
    # What people read: the same figures, formatted.
    body = "".join(page.text)
    assert f"{trips:,}" in body and f"{km:,.0f}\u202fkm" in body
    assert f"{idle_h * IDLE_L_PER_H * PRICE:,.2f}\u202fEUR" in body


def test_vehicle_rankings_and_idle_cost_match_sql(page: Page, marts) -> None:
    by_fuel = marts.execute(
        "select vehicle_id from fleet_daily where day between ? and ? "
        "group by vehicle_id having sum(distance_km) filter (where fuel_used_l is not null) > 0 "
        "order by sum(fuel_used_l) / sum(distance_km) filter (where fuel_used_l is not null) "
        "desc, vehicle_id",
        list(PERIOD),
    ).fetchall()
    fuel_rows = page.rows("fuel")
    assert [r["data-vehicle"] for r in fuel_rows] == [v for (v,) in by_fuel]
    assert [r["data-rank"] for r in fuel_rows] == [str(n) for n in range(1, len(by_fuel) + 1)]
    idle = marts.execute(
        "select vehicle_id, sum(idle_s) / 3600 from fct_trips "
        "where is_duplicate_of is null and started_at >= ? and started_at < ? "
        "group by vehicle_id order by 2 desc, vehicle_id",
        bounds(*PERIOD),
    ).fetchall()
    idle_rows = page.rows("idle")
    assert [r["data-vehicle"] for r in idle_rows] == [v for v, _ in idle]
    for row, (_vehicle, hours) in zip(idle_rows, idle, strict=True):
        assert float(row["data-idle-h"]) == pytest.approx(hours, abs=1e-6)
        assert float(row["data-idle-cost"]) == pytest.approx(hours * IDLE_L_PER_H * PRICE, 1e-9)


def test_refuel_rows_compare_what_fleet_daily_says_was_used_and_refuelled(
    page: Page, marts
) -> None:
    expected = dict(
        marts.execute(
            "select vehicle_id, sum(refuel_l) - sum(fuel_used_l) from fleet_daily "
            "where day between ? and ? group by vehicle_id",
            list(PERIOD),
        ).fetchall()
    )
    # A vehicle no source ever saw refuel has no known tank size: it cannot be judged.
    refuelled = {
        v
        for (v,) in marts.execute(
            "select distinct vehicle_id from fct_fuel_events where event_type = 'refuel'"
        ).fetchall()
    }
    rows = page.rows("refuels")
    assert {r["data-vehicle"] for r in rows} == set(expected)
    judged = [r for r in rows if r["data-vehicle"] in refuelled]
    assert judged and {r["data-vehicle"] for r in rows if r["data-gap-l"]} == refuelled
    for row in judged:
        assert float(row["data-gap-l"]) == pytest.approx(expected[row["data-vehicle"]], abs=0.01)
        # The simulated fleet loses no fuel: every gap is within a tankful.
        assert row["data-flagged"] == "false"


def test_coverage_counts_each_trip_once_and_the_days_each_source_reported(
    page: Page, marts
) -> None:
    start, end = bounds(*PERIOD)
    counted = dict(
        marts.execute(
            "select vehicle_id, count(*) from fct_trips where is_duplicate_of is null "
            "and started_at >= ? and started_at < ? group by 1",
            [start, end],
        ).fetchall()
    )
    rows = page.rows("coverage")
    assert {r["data-vehicle"]: int(r["data-trips-counted"]) for r in rows} == counted
    # A source reported a vehicle on a day when it has a trip, fuel event or idle period there.
    reported = marts.execute(
        """
        select vehicle_id, source, count(distinct cast(t at time zone 'UTC' as date))
        from (
            select vehicle_id, source, started_at as t from fct_trips
            union all select vehicle_id, source, occurred_at from fct_fuel_events
            union all select vehicle_id, source, started_at from fct_idle_periods
        ) as reports
        where t >= ? and t < ?
        group by all
        """,
        [start, end],
    ).fetchall()
    assert {source for _, source, _ in reported} == {"avl", "metrotec"}
    shown, vehicle = {}, None
    for tag, attrs in page.elements:
        if tag == "tr" and "data-trips-counted" in attrs:
            vehicle = attrs["data-vehicle"]
        elif tag == "td" and "data-source" in attrs:
            shown[vehicle, attrs["data-source"]] = int(attrs["data-days"])
    assert shown == {(v, source): n for v, source, n in reported}
    assert all(n > 0 for n in shown.values())


# --- an empty period, the CLI, the refuel rule ------------------------------------------------


def test_an_empty_period_gives_a_no_data_page_not_an_error(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "old.html"
    report = report_build.build_report(ReportOptions(days=7, end=date(2020, 1, 7)), out=out)
    assert report.data.empty and report.path == out and report.latest is None
    text = out.read_text()
    page = assert_self_contained(text)
    assert "No data for 2020-01-01 to 2020-01-07 UTC" in "".join(page.text)
    assert "<svg" not in text  # no empty charts


def test_fleet_report_command_writes_the_report_folder_and_latest(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="fleet")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", "--days", "7", "--end", END.isoformat(), "--keep", "2"])
    assert args.func(args) == 0
    line = capsys.readouterr().out
    assert latest_report_path() == built.tmp / "reports" / "latest.html"
    assert latest_report_path().exists() and f"{PERIOD[0]} to {PERIOD[1]} UTC" in line
    path = Path(line.rsplit(": ", 1)[1].strip())
    assert path.read_text() == latest_report_path().read_text()
    # The sources' own price (fuel cost over litres), since none was given.
    assert "the average price the sources put on" in path.read_text()
    assert len(list(path.parent.glob("fleet_report_*.html"))) <= 2  # --keep 2 pruned the rest
    with pytest.raises(SystemExit):
        parser.parse_args(["report", "--days", "0"])


def test_refuel_rule_flags_a_gap_beyond_a_tankful_and_judges_only_what_it_can() -> None:
    def vehicle(**changes: object) -> VehicleFigures:
        base: dict = dict(
            vehicle_id="V1",
            name="Van",
            sources=("metrotec",),
            trips=10,
            km=500.0,
            driving_h=10.0,
            idle_h=2.0,
            fuel_l=200.0,
            fuel_km=500.0,
            trip_days=5,
            days_without_fuel=0,
            refuels=2,
            refuel_l=200.0,
            reported_cost=None,
            tank_l=80.0,
        )
        return VehicleFigures(**{**base, **changes})

    # 80 l tank + 10 % of 200 l used = 100 l allowed either way.
    assert not refuel_check(vehicle(refuel_l=300.0), 10).flagged
    over = refuel_check(vehicle(refuel_l=300.5), 10)
    assert over.flagged and over.gap_l == pytest.approx(100.5) and "refuelled more" in over.verdict
    under = refuel_check(vehicle(refuel_l=99.0), 10)
    assert under.flagged and "refuels no source saw" in under.verdict
    assert not refuel_check(vehicle(refuel_l=99.0), 20).flagged  # 80 + 40 allowed
    for unjudged in (
        vehicle(refuels=None, refuel_l=None),
        vehicle(days_without_fuel=1),
        vehicle(tank_l=None),
    ):
        check = refuel_check(unjudged, 10)
        assert check.gap_l is None and not check.flagged


def test_prune_keeps_the_newest_reports_only(tmp_path: Path) -> None:
    for stamp in ("20260101T000000Z", "20260102T000000Z", "20260103T000000Z"):
        report_build.write_atomically(tmp_path / f"fleet_report_{stamp}.html", stamp)
    (tmp_path / "latest.html").write_text("x")
    gone = report_build.prune(tmp_path, keep=2)
    assert [p.name for p in gone] == ["fleet_report_20260101T000000Z.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "fleet_report_20260102T000000Z.html",
        "fleet_report_20260103T000000Z.html",
        "latest.html",
    ]
