"""`raw/kt1/*`: one drain of the export stream lands all four tables; a schedule runs it every
5 minutes; the facts sensor (pipelines/facts_build.py) builds the days a drain wrote.
"""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    AssetSpec,
    DagsterRunStatus,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    multi_asset,
    schedule,
)

from pipelines.asset_metadata import (
    landed_metadata,
    raw_asset_args,
    raw_key,
)
from pipelines.http import VendorAPIError
from pipelines.lake import Lake
from pipelines.resources import LakeResource
from pipelines.sources.kt1.drain import DrainBusy, DrainResult, drain_stream
from pipelines.sources.kt1.resources import Kt1Resource
from pipelines.sources.kt1.schemas import QUARANTINE, SCHEMAS, SOURCE, TABLES

ASSET_KEYS = {table: raw_key(SOURCE, table) for table in TABLES}
ASSET_NAME = "raw/kt1/*"
POOL = "kt1_stream"
QUEUE_TAG = "fleet/queue"
"""Run tag of every scheduled drain; a run-queue limit of 1 on it keeps drains one at a time."""
JOB_NAME = "kt1_drain"
QUARANTINE_CHECK = "no_quarantined_rows"
IN_PROGRESS = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]
_DESCRIPTIONS = {
    "telemetry": "Position, speed, raw device counters (odometer, odo_counter) per report.",
    "trips": "Trips as KT1 closes them: start/end, stats.driveTime/idleTime/distance.",
    "events": "Ignition, idling, behaviour and fuel events.",
    "changes": "Change notifications of back-office documents (assets and others).",
}


def build_kt1_defs() -> Definitions:
    drain = _build_asset()
    job = define_asset_job(
        JOB_NAME,
        selection=AssetSelection.assets(*ASSET_KEYS.values()),
        description="Drain the kt1 export stream into raw/kt1/* (one drain at a time).",
        run_tags={QUEUE_TAG: SOURCE},
    )
    return Definitions(
        assets=[drain],
        jobs=[job],
        schedules=[_build_schedule(job)],
        resources={"kt1": Kt1Resource.from_env()},
    )


def _build_asset() -> AssetsDefinition:
    specs = [
        AssetSpec(
            key=key,
            **raw_asset_args(SOURCE, table, SCHEMAS[table]),
            description=(
                f"kt1 export stream, {table}: {_DESCRIPTIONS[table]} Landed per UTC day of the "
                "item's own timestamp; redeliveries land again and are removed by item identity "
                "in staging."
            ),
        )
        for table, key in ASSET_KEYS.items()
    ]

    checks = [
        AssetCheckSpec(
            QUARANTINE_CHECK,
            asset=key,
            description=(
                f"Warns when a drain quarantined items meant for raw/kt1/{table}, or items of no "
                "known type (counted on every kt1 table): a missing id or date, a number that "
                'is NaN, Infinity or not a number ("12,5"), a timestamp that is not ISO-8601. '
                "They were acknowledged but not landed; each is kept whole (`payload`) with "
                "`table`, `reason`, `field` and `value` in <lake>/kt1/quarantine/day=D/"
                "<group>.parquet, on the item's own UTC day (else the landing day). The stream "
                "will not send them again, so the payload is the only copy: read it with "
                "DuckDB (read_parquet('<lake>/kt1/quarantine/*/*.parquet')) and get the sender "
                "fixed; the next drain's result clears the warning."
            ),
        )
        for table, key in ASSET_KEYS.items()
    ]

    @multi_asset(
        specs=specs, check_specs=checks, name="kt1_stream_drain", pool=POOL, can_subset=False
    )
    def kt1_stream_drain(
        context: AssetExecutionContext, kt1: Kt1Resource, lake: LakeResource
    ) -> Iterator[MaterializeResult]:
        """Get → land → acknowledge until the queue is empty or KT1_DRAIN_SECONDS is spent."""
        lake_ = lake.lake()
        with kt1.open_client(ASSET_NAME) as client:
            context.log.info(
                f"kt1 drain: budget {kt1.drain_seconds:g}s, groups of ≤{kt1.group_max_batches} "
                f"batches or ≤{kt1.group_max_age_s:g}s, acknowledged only after a durable write"
            )
            try:
                result = drain_stream(
                    client,
                    lake_,
                    budget_s=kt1.drain_seconds,
                    group_max_batches=kt1.group_max_batches,
                    group_max_age_s=kt1.group_max_age_s,
                    progress=context.log.info,
                )
            except DrainBusy as exc:
                raise Failure(description=str(exc), allow_retries=False) from None
            except VendorAPIError as exc:
                # Every batch already in hand was landed and acknowledged before this surfaced.
                raise Failure(description=str(exc)) from None
        if result.quarantined:
            context.log.warning(
                f"{result.quarantined} kt1 items were quarantined instead of landed, in "
                f"{lake_.table_location(SOURCE, QUARANTINE)}: {dict(result.quarantine_reasons)}"
            )
        if result.acks_expired or result.acks_failed:
            context.log.warning(
                f"{result.acks_expired + result.acks_failed} landed kt1 batches could not be "
                "acknowledged (expired id); they will be redelivered and de-duplicated in staging"
            )
        context.log.info(
            f"kt1 drain done ({result.stop_reason}): {result.items} items in {result.batches} "
            f"batches, {result.seconds:.1f}s"
        )
        shared = _drain_metadata(result, client.stats.as_metadata(), kt1.drain_seconds)
        unplaced = result.quarantined - sum(result.quarantined_by_table[t] for t in TABLES)
        for table, key in ASSET_KEYS.items():
            landing = result.tables[table]
            quarantined = result.quarantined_by_table[table]
            checks = []
            if AssetCheckKey(key, QUARANTINE_CHECK) in context.selected_asset_check_keys:
                checks.append(_quarantine_check(key, quarantined, unplaced, lake_))
            yield MaterializeResult(
                asset_key=key,
                metadata={
                    "rows": landing.rows,
                    "files": landing.files,
                    "bytes": landing.bytes,
                    "days_written": MetadataValue.json(sorted(d.isoformat() for d in landing.days)),
                    "quarantined_rows": quarantined,
                    **landed_metadata(lake_, SOURCE, table),
                    **shared,
                },
                check_results=checks,
            )

    return kt1_stream_drain


def _quarantine_check(
    key: AssetKey, quarantined: int, unplaced: int, lake: Lake
) -> AssetCheckResult:
    """WARN when this drain quarantined items of this table, or items of no known table."""
    return AssetCheckResult(
        asset_key=key,
        check_name=QUARANTINE_CHECK,
        passed=quarantined == 0 and unplaced == 0,
        severity=AssetCheckSeverity.WARN,
        description=(
            f"{quarantined} item(s) of this table and {unplaced} of no known table quarantined "
            "by this drain"
        ),
        metadata={
            "quarantined_rows": quarantined,
            "quarantined_unplaced": unplaced,
            "quarantine_dir": MetadataValue.path(lake.table_location(SOURCE, QUARANTINE)),
        },
    )


def _drain_metadata(
    result: DrainResult, http: dict[str, float | int], budget_s: float
) -> dict[str, Any]:
    """Figures of the whole drain, the same on each of its four assets."""
    quarantine = result.tables[QUARANTINE]
    return {
        **http,
        "batches": result.batches,
        "items_received": result.items,
        "items_landed": result.items_landed,
        "rows_by_table": MetadataValue.json(
            {t: result.tables[t].rows for t in (*TABLES, QUARANTINE)}
        ),
        "quarantined_items": result.quarantined,
        "quarantine_files": quarantine.files,
        "quarantine_reasons": MetadataValue.json(dict(result.quarantine_reasons.most_common())),
        "duplicate_items_in_run": result.duplicate_items_in_run,
        "groups": result.groups,
        "acks": result.acks,
        "acks_expired": result.acks_expired,
        "acks_failed": result.acks_failed,
        "stop_reason": result.stop_reason,
        "drain_s": round(result.seconds, 3),
        "budget_s": budget_s,
        "lock_wait_s": round(result.lock_wait_s, 3),
    }


def _build_schedule(job: Any) -> Any:
    @schedule(
        name="kt1_drain_every_5_minutes",
        cron_schedule="*/5 * * * *",
        job=job,
        execution_timezone="UTC",
        description=(
            "Every 5 minutes: drain the kt1 stream; skipped while a drain is queued or running "
            "(two drains would fight over the same queue)."
        ),
    )
    def kt1_drain_every_5_minutes(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        running = context.instance.get_run_ids(
            RunsFilter(tags={QUEUE_TAG: SOURCE}, statuses=IN_PROGRESS), limit=1
        )
        if running:
            return SkipReason(f"kt1 drain {running[0]} is still queued or running")
        return RunRequest(tags={QUEUE_TAG: SOURCE})

    return kt1_drain_every_5_minutes
