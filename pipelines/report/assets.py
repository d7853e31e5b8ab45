"""The `fleet_report` asset: the HTML fleet report, rebuilt after each facts build.

The marts have no automation condition: the facts sensor (pipelines/facts_build.py) requests
their builds. The report follows them declaratively instead: once any mart was updated and no
facts build is in progress (the build's marker, which readers open the facts at, is committed
when its run ends), one run writes the report. `eager()` would wait forever here: it holds an
unpartitioned asset back while any daily partition of its parents is missing, and the days
before the first raw data always are. Its own sensor is on by default, like the facts sensor:
Dagster's default automation sensor starts stopped.
"""

import warnings

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    BackfillPolicy,
    BetaWarning,
    Config,
    DefaultSensorStatus,
    Definitions,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from pipelines.asset_metadata import OWNERS
from pipelines.report.build import DEFAULT_KEEP, build_report
from pipelines.report.data import ReportOptions
from pipelines.report.markdown import markdown_summary

REPORT_KEY = AssetKey("fleet_report")
MART_KEYS = [
    AssetKey(name)
    for name in ("fleet_daily", "fct_trips", "fct_fuel_events", "fct_idle_periods", "dim_vehicles")
]
"""The dbt marts, keyed by model name (the translator keeps dagster-dbt's default model keys)."""
REPORT_SENSOR = "fleet_report_after_facts"

REPORT_AUTOMATION = (
    AutomationCondition.any_deps_updated().since_last_handled()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
).with_label("after each facts build")


class FleetReportConfig(Config):
    """Run config of a report build; the defaults are those docs/report.md states."""

    days: int = Field(
        default=28, ge=1, description="Days in the period, compared with as many before."
    )
    end: str | None = Field(
        default=None,
        description="Last UTC day YYYY-MM-DD; default: the facts' newest day, yesterday at most.",
    )
    idle_l_per_h: float = Field(
        default=0.8, ge=0, description="Litres an idling engine burns per hour."
    )
    fuel_price_per_l: float | None = Field(
        default=None,
        ge=0,
        description="Price of a litre; default: the average the sources reported, else no cost.",
    )
    currency: str = Field(default="EUR", description="Label of costs (no conversion).")
    gap_slack_pct: float = Field(
        default=10.0, ge=0, description="Refuel check: allowed gap beyond a tankful, % of use."
    )
    keep_reports: int = Field(
        default=DEFAULT_KEEP, ge=0, description="Timestamped reports kept; 0 keeps all."
    )

    def options(self) -> ReportOptions:
        from datetime import date

        return ReportOptions(
            days=self.days,
            end=date.fromisoformat(self.end) if self.end else None,
            idle_l_per_h=self.idle_l_per_h,
            fuel_price_per_l=self.fuel_price_per_l,
            currency=self.currency,
            gap_slack_pct=self.gap_slack_pct,
        )


def _fleet_report(context: AssetExecutionContext, config: FleetReportConfig) -> MaterializeResult:
    built = build_report(config.options(), keep=config.keep_reports)
    data = built.data
    context.log.info(
        f"fleet report for {data.period}: {built.path} ({built.bytes:,} bytes; "
        + ", ".join(f"{k} {v:.2f}s" for k, v in built.seconds.items())
        + ")"
    )
    checks = data.refuel_checks()
    return MaterializeResult(
        metadata={
            "summary": MetadataValue.md(markdown_summary(data)),
            "report": MetadataValue.path(str(built.path)),
            "latest": MetadataValue.path(str(built.latest or built.path)),
            "period": MetadataValue.text(str(data.period)),
            "empty": MetadataValue.bool(data.empty),
            "vehicles": MetadataValue.int(len(data.vehicles)),
            "trips": MetadataValue.int(data.totals.trips),
            "km": MetadataValue.float(round(data.totals.km, 1)),
            "refuel_gaps_flagged": MetadataValue.int(sum(c.flagged for c in checks)),
            "report_bytes": MetadataValue.int(built.bytes),
            "build_s": MetadataValue.float(round(sum(built.seconds.values()), 2)),
        }
    )


with warnings.catch_warnings():
    # `backfill_policy` is marked beta. A single run lets `dagster asset materialize --select
    # "stg_avl__trips+" --partition-range A...B` include the report with the facts it follows.
    warnings.simplefilter("ignore", BetaWarning)
    fleet_report = asset(
        key=REPORT_KEY,
        deps=MART_KEYS,
        group_name="reports",
        kinds={"html"},
        owners=OWNERS,
        tags={"layer": "report"},
        automation_condition=REPORT_AUTOMATION,
        description=(
            "The fleet report: KPIs against the period before, daily trend, fuel and idle "
            "rankings, idle cost, refuels against consumption and data coverage, as one offline "
            "HTML page in FLEET_REPORT_DIR (latest.html). See docs/report.md."
        ),
        backfill_policy=BackfillPolicy.single_run(),
    )(_fleet_report)

report_sensor = AutomationConditionSensorDefinition(
    REPORT_SENSOR,
    target=AssetSelection.assets(REPORT_KEY),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Writes the fleet report once a facts build has updated the marts and ended.",
)


def build_report_defs() -> Definitions:
    """The report asset and its sensor, to merge with the project's definitions."""
    return Definitions(assets=[fleet_report], sensors=[report_sensor])
