"""`fleet report`: write the fleet report from the facts now, without Dagster.

Wired into the `fleet` command by `pipelines/cli.py` (`add_parser(sub)`); dispatched there like
every subcommand, through the parser's `func`.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any

from pipelines.report.build import DEFAULT_KEEP, BuiltReport, latest_report_path

__all__ = ["add_parser", "cmd_report", "latest_report_path", "run_summary", "summary_line"]


def _days(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a number of days >= 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number >= 0")
    return value


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not a date YYYY-MM-DD") from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add `fleet report` to the `fleet` command's subcommands."""
    report = sub.add_parser(
        "report",
        help="write the fleet report (one offline HTML page) from the facts",
        description=(
            "Write the fleet report from the newest complete build of the facts: to "
            "FLEET_REPORT_DIR (a timestamped file and latest.html), or to --out."
        ),
    )
    report.add_argument("--days", type=_days, default=28, help="days in the period (28)")
    report.add_argument(
        "--end", type=_day, metavar="YYYY-MM-DD", help="last UTC day (the facts' newest day)"
    )
    report.add_argument("--out", metavar="PATH", help="write this file instead")
    report.add_argument(
        "--fuel-price",
        type=_non_negative,
        metavar="PER_LITRE",
        help="fuel price per litre (the average the sources reported)",
    )
    report.add_argument(
        "--idle-l-per-h",
        type=_non_negative,
        default=0.8,
        help="litres an idling engine burns per hour (0.8)",
    )
    report.add_argument("--currency", default="EUR", help="label of costs (EUR)")
    report.add_argument(
        "--keep",
        type=int,
        default=DEFAULT_KEEP,
        help=f"timestamped reports kept in FLEET_REPORT_DIR, 0 = all ({DEFAULT_KEEP})",
    )
    report.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    """Build the report; one line: where it is, or why it could not be built."""
    from pipelines.facts import FactsError
    from pipelines.report.build import build_report
    from pipelines.report.data import ReportOptions
    from pipelines.settings import load_env_file

    load_env_file()
    options = ReportOptions(
        days=args.days,
        end=args.end,
        idle_l_per_h=args.idle_l_per_h,
        fuel_price_per_l=args.fuel_price,
        currency=args.currency,
    )
    try:
        built = build_report(
            options, out=Path(args.out) if args.out else None, keep=max(args.keep, 0)
        )
    except FactsError as exc:
        print(f"fleet report: {exc}", file=sys.stderr)
        return 1
    print(summary_line(built))
    return 0


def summary_line(built: BuiltReport) -> str:
    """`fleet report`'s line: the period, its main figures and where the page is."""
    data = built.data
    if data.empty:
        what = f"no data for {data.period}"
    else:
        flagged = sum(c.flagged for c in data.refuel_checks())
        what = (
            f"{data.period}: {len(data.vehicles)} vehicles, {data.totals.trips:,} trips, "
            f"{data.totals.km:,.0f} km, {flagged} refuel gap(s) worth a look"
        )
    return f"Fleet report ({what}): {built.path}"


def run_summary(result: Any) -> str:
    """The status line of a Dagster run that materialized `fleet_report` (a `fleet demo` step):
    the period, its main figures and the file, from the materialization's metadata."""
    for event in result.get_asset_materialization_events():
        if event.asset_key.to_user_string() != "fleet_report":
            continue
        meta = {k: v.value for k, v in event.materialization.metadata.items()}
        if meta.get("empty"):
            return f"no data for {meta['period']}: {meta['latest']}"
        return (
            f"{meta['period']}: {meta['vehicles']} vehicles, {meta['trips']:,} trips, "
            f"{meta['km']:,.0f} km -> {meta['latest']}"
        )
    return ""
