"""`raw/avl/trips`: daily UTC partitions, any range in one run, landed per UTC day."""

import warnings
from datetime import date, datetime, timedelta

import pyarrow as pa
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    BetaWarning,
    DailyPartitionsDefinition,
    Definitions,
    MaterializeResult,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    asset,
    schedule,
)

from pipelines.resources import LakeResource, credential_failure
from pipelines.settings import MissingCredentialError
from pipelines.sources.avl.extract import extract_trips
from pipelines.sources.avl.resources import AvlResource

ASSET_KEY = AssetKey(["raw", "avl", "trips"])
ASSET_NAME = "raw/avl/trips"
# Dagster's run tags for a single-run partition range (what a backfill of a range sets).
ASSET_PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
ASSET_PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
# The API caches for 5 minutes and late trips arrive: the schedule re-pulls yesterday too.
REPULL_DAYS = 2
IN_PROGRESS_CHECK = "no_trips_in_progress"


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
    return Definitions(assets=[avl_trips], schedules=[schedule_])


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
            )
        ],
        group_name="avl",
        kinds={"python", "parquet"},
        description=(
            "AVL Trips Report rows, one row per trip, landed per UTC day of trip_start. "
            "Rows without trip_start are counted, not loaded."
        ),
    )
    def avl_trips(
        context: AssetExecutionContext, avl: AvlResource, lake: LakeResource
    ) -> MaterializeResult:
        try:
            client = avl.client(ASSET_NAME)
        except MissingCredentialError as exc:
            raise credential_failure(exc) from None
        days = partition_days(context)
        context.log.info(
            f"AVL trips for {days[0]}..{days[-1]} ({len(days)} days), tz {avl.timezone}"
        )
        lake_ = lake.lake()

        def land(window_days: list[date], table: pa.Table) -> tuple[int, int]:
            written = lake_.replace_partitions("avl", "trips", window_days, table)
            return len(written), sum(w.bytes for w in written.values())

        try:
            result = extract_trips(
                client,
                days,
                tz=avl.zone,
                land=land,
                devices=avl.device_ids,
                idle_min=avl.idle_min,
                duration_min=avl.duration_min,
                progress=context.log.info,
            )
        finally:
            client.close()
        if result.null_trip_start:
            context.log.warning(
                f"{result.null_trip_start} AVL rows had no trip_start and were not loaded"
            )
        stats = client.stats
        in_progress = AssetCheckResult(
            check_name=IN_PROGRESS_CHECK,
            passed=result.in_progress == 0,
            severity=AssetCheckSeverity.WARN,
            metadata={"in_progress_trips": result.in_progress},
        )
        return MaterializeResult(
            check_results=[in_progress],
            metadata={
                "rows": result.rows_loaded,
                "files": result.files,
                "bytes": result.bytes,
                **stats.as_metadata(),
                "rows_received": result.rows_received,
                "null_trip_start_rows": result.null_trip_start,
                "duplicates_dropped": result.duplicates_dropped,
                "rows_outside_range": result.outside_range,
                "api_windows": result.windows,
                "first_day": days[0].isoformat(),
                "last_day": days[-1].isoformat(),
            },
        )

    return avl_trips


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
