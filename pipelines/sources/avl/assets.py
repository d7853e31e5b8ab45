"""`raw/avl/trips`: daily UTC partitions, any range in one run, landed per UTC day."""

import json
import warnings
from datetime import date, datetime, timedelta
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetMaterialization,
    AssetsDefinition,
    BackfillPolicy,
    BetaWarning,
    Config,
    DailyPartitionsDefinition,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    asset,
    schedule,
)
from pydantic import Field

from pipelines.asset_metadata import (
    add_day_figures,
    day_figures,
    landed_metadata,
    raw_asset_args,
    raw_key,
)
from pipelines.resources import LakeResource
from pipelines.sources.avl.extract import AvlExtract, extract_trips
from pipelines.sources.avl.guard import GuardedLanding
from pipelines.sources.avl.resources import AvlResource
from pipelines.sources.avl.rows import SOURCE, TABLE, TRIPS_SCHEMA

ASSET_KEY = raw_key(SOURCE, TABLE)
ASSET_NAME = "raw/avl/trips"
# Dagster's run tags for a single-run partition range (what a backfill of a range sets).
ASSET_PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
ASSET_PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
# The API caches for 5 minutes and late trips arrive: the schedule re-pulls yesterday too.
REPULL_DAYS = 2
IN_PROGRESS_CHECK = "no_trips_in_progress"
QUARANTINE_CHECK = "no_quarantined_rows"
OP_NAME = "raw__avl__trips"
ALLOW_NARROWER_CONFIG = json.dumps({"ops": {OP_NAME: {"config": {"allow_narrower": True}}}})
MAX_RANGES_SHOWN = 5


class AvlTripsConfig(Config):
    """Run config of `raw/avl/trips`."""

    allow_narrower: bool = Field(
        default=False,
        description=(
            "Replace days even when the new answer is narrower than what they hold (a "
            "narrower AVL_DEVICES, no rows, fewer vehicles). Off: such days are kept as landed "
            "and the run fails naming them."
        ),
    )


def partition_days(context: AssetExecutionContext) -> list[date]:
    window = context.partition_time_window
    first = window.start.date()
    n = (window.end.date() - first).days
    return [first + timedelta(days=i) for i in range(n)]


def build_avl_defs(partitions: DailyPartitionsDefinition) -> Definitions:
    with warnings.catch_warnings():
        # `backfill_policy` is marked beta; single-run backfills are the point of this asset.
        warnings.simplefilter("ignore", BetaWarning)
        avl_trips = _build_asset(partitions)
    schedule_ = _build_schedule(avl_trips, partitions)
    return Definitions(
        assets=[avl_trips], schedules=[schedule_], resources={"avl": AvlResource.from_env()}
    )


def _build_asset(partitions: DailyPartitionsDefinition) -> AssetsDefinition:
    @asset(
        key=ASSET_KEY,
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        pool="avl_api",
        check_specs=[
            AssetCheckSpec(
                IN_PROGRESS_CHECK,
                asset=ASSET_KEY,
                description=(
                    "Warns when landed trips had no trip_end yet (still in progress when "
                    "pulled): re-materialize those days later; the daily schedule does."
                ),
            ),
            AssetCheckSpec(
                QUARANTINE_CHECK,
                asset=ASSET_KEY,
                description=(
                    "Warns when rows were quarantined instead of landed (a number that is not "
                    "one such as '12,5' or NaN, an unreadable timestamp, no device_name). "
                    "Read them with their reason in <lake>/avl/quarantine/day=D/data.parquet; "
                    "the day's other rows landed. Once the vendor fixes the values, "
                    "re-materialize those days: a clean pull removes the day's quarantine."
                ),
            ),
        ],
        **raw_asset_args(SOURCE, TABLE, TRIPS_SCHEMA),
        description=(
            "AVL Trips Report rows, one row per trip, landed per UTC day of trip_start. "
            "Rows without trip_start are counted, not loaded; rows with a bad value are "
            "quarantined. A day holding rows is not replaced by a narrower answer (narrower "
            "AVL_DEVICES, no rows, fewer vehicles) unless the run sets allow_narrower."
        ),
    )
    def avl_trips(
        context: AssetExecutionContext,
        config: AvlTripsConfig,
        avl: AvlResource,
        lake: LakeResource,
    ) -> MaterializeResult:
        with avl.open_client(ASSET_NAME) as client:
            zone = avl.zone
            devices = avl.device_ids
            days = partition_days(context)
            context.log.info(
                f"AVL trips for {days[0]}..{days[-1]} ({len(days)} days), tz {avl.timezone}"
            )
            landing = GuardedLanding(lake.lake(), devices, allow_narrower=config.allow_narrower)
            result = extract_trips(
                client,
                days,
                tz=zone,
                land=landing.land,
                quarantine=landing.quarantine,
                devices=devices,
                idle_min=avl.idle_min,
                duration_min=avl.duration_min,
                progress=context.log.info,
            )
        _log_warnings(context, result)
        days_written = MetadataValue.json(sorted(d.isoformat() for d in landing.written))
        # The run's figures; each day's own rows, files and bytes override them on its
        # materialization (asset_metadata.add_day_figures).
        metadata = {
            "rows": landing.rows_written,
            "files": result.files,
            "bytes": result.bytes,
            **landed_metadata(landing.lake, SOURCE, TABLE),
            **client.stats.as_metadata(),
            "rows_received": result.rows_received,
            "null_trip_start_rows": result.null_trip_start,
            "duplicates_dropped": result.duplicates_dropped,
            "rows_outside_range": result.outside_range,
            "quarantined_rows": result.quarantined,
            "meta_total_untrusted": result.untrusted_totals,
            "meta_total_mismatches": MetadataValue.json(result.total_mismatches[:20]),
            "api_windows": result.windows,
            "first_day": days[0].isoformat(),
            "last_day": days[-1].isoformat(),
            "days_written": days_written,
        }
        if landing.refused:
            raise _refusal_failure(context, landing, metadata)
        add_day_figures(context, ASSET_KEY, days, landing.written)
        in_progress = AssetCheckResult(
            check_name=IN_PROGRESS_CHECK,
            passed=result.in_progress == 0,
            severity=AssetCheckSeverity.WARN,
            metadata={"in_progress_trips": result.in_progress},
        )
        quarantined = AssetCheckResult(
            check_name=QUARANTINE_CHECK,
            passed=result.quarantined == 0,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "quarantined_rows": result.quarantined,
                "examples": MetadataValue.json(result.quarantine_examples),
            },
        )
        return MaterializeResult(check_results=[in_progress, quarantined], metadata=metadata)

    return avl_trips


def _log_warnings(context: AssetExecutionContext, result: AvlExtract) -> None:
    if result.null_trip_start:
        context.log.warning(
            f"{result.null_trip_start} AVL rows had no trip_start and were not loaded"
        )
    if result.quarantined:
        context.log.warning(
            f"{result.quarantined} AVL rows quarantined in avl/quarantine/day=*/data.parquet "
            f"(e.g. {result.quarantine_examples[0]}); the other rows landed"
        )
    if result.untrusted_totals:
        context.log.warning(
            f"{result.untrusted_totals} AVL pages sent a meta.total that is not an integer; "
            f"paging read to the last page regardless"
        )
    if result.total_mismatches:
        first = result.total_mismatches[0]
        context.log.warning(
            f"AVL meta.total disagreed with the rows paged in {len(result.total_mismatches)} "
            f"request series (e.g. {first['window']}: claimed {first['claimed']}, read "
            f"{first['read']}); paging read to the last page regardless"
        )


def _refusal_failure(
    context: AssetExecutionContext, landing: GuardedLanding, metadata: dict[str, Any]
) -> Failure:
    """Kept days are named with why and how to override; the days that did land are recorded
    as materialized, since the lake changed for them even though the run fails."""
    ranges = landing.refused_ranges()
    for r in ranges:
        context.log.warning(
            f"AVL kept {r.days} as landed ({r.held_rows} rows), not replaced by a narrower "
            f"answer ({r.new_rows} rows): {r.reason}"
        )
    for day, written in sorted(landing.written.items()):
        context.log_event(
            AssetMaterialization(
                asset_key=ASSET_KEY, partition=day.isoformat(), metadata=day_figures(written)
            )
        )
    shown = "; ".join(
        f"{r.days} ({r.held_rows} rows kept, {r.new_rows} answered): {r.reason}"
        for r in ranges[:MAX_RANGES_SHOWN]
    )
    if len(ranges) > MAX_RANGES_SHOWN:
        shown += f"; (+{len(ranges) - MAX_RANGES_SHOWN} more ranges)"
    kept = sorted(d.isoformat() for d in landing.refused)
    return Failure(
        description=(
            f"{ASSET_NAME} kept {len(kept)} day(s) as landed because the new answer is "
            f"narrower ({shown}); {len(landing.written)} other day(s) landed. If AVL_DEVICES "
            f"or the API account's vehicle access is wrong, fix it and re-run; if the narrower "
            f"answer is right, re-run those days with run config {ALLOW_NARROWER_CONFIG}"
        ),
        metadata={**metadata, "days_kept": MetadataValue.json(kept)},
        allow_retries=False,
    )


def _build_schedule(
    avl_trips: AssetsDefinition, partitions: DailyPartitionsDefinition
) -> ScheduleDefinition:
    @schedule(
        name="avl_trips_daily",
        cron_schedule="15 3 * * *",
        target=avl_trips,
        execution_timezone="UTC",
        description="Daily at 03:15 UTC: re-pull the last 2 complete days of AVL trips in one run.",
    )
    def avl_trips_daily(context: ScheduleEvaluationContext) -> RunRequest:
        tick = context.scheduled_execution_time or datetime.now()
        last = tick.date() - timedelta(days=1)
        first = last - timedelta(days=REPULL_DAYS - 1)
        first = max(first, partitions.start.date())
        return RunRequest(
            run_key=f"avl-{first}-{last}",
            tags={
                ASSET_PARTITION_RANGE_START_TAG: first.isoformat(),
                ASSET_PARTITION_RANGE_END_TAG: last.isoformat(),
            },
        )

    return avl_trips_daily
