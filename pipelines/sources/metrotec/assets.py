"""Metrotec assets: the vehicle list (daily snapshot) and four per-vehicle tables by UTC day.

`raw/metrotec/vehicles` is unpartitioned and lands on the day it was fetched. The four
partitioned tables are one `@multi_asset`: they are answers to the same request series (one
login, one pass over the vehicles of each window), so one run pulls them together; it is
subsettable, and a run that selects only some tables calls only their endpoints.
"""

import warnings
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
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
    BackfillPolicy,
    BetaWarning,
    DailyPartitionsDefinition,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    asset,
    define_asset_job,
    multi_asset,
    schedule,
)

from pipelines.asset_metadata import (
    add_day_figures,
    landed_metadata,
    raw_asset_args,
    raw_key,
)
from pipelines.atomic_files import WriteResult
from pipelines.http import VendorAPIError
from pipelines.lake import QUARANTINE_TABLE, Lake
from pipelines.resources import LakeResource
from pipelines.sources.metrotec.client import (
    MetrotecAuthError,
    plan_windows,
)
from pipelines.sources.metrotec.extract import TableResult, extract_range
from pipelines.sources.metrotec.resources import MetrotecResource
from pipelines.sources.metrotec.rows import quarantine_table, type_vehicles
from pipelines.sources.metrotec.specs import SOURCE, SPECS, TABLES

VEHICLES_KEY = raw_key(SOURCE, "vehicles")
TABLE_KEYS = {table: raw_key(SOURCE, table) for table in TABLES}
POOL = "metrotec_api"
JOB_NAME = "metrotec_refresh"
SCHEDULE_NAME = "metrotec_daily"
VEHICLES_CHECK = "vehicles_listed"
QUARANTINE_CHECK = "no_quarantined_rows"
ROUTELOG_CHECK = "routelog_times_consistent"
REPULL_DAYS = 2  # trips and stops finish after midnight and stopEnd fills in a day later
ASSET_PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
ASSET_PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"

DESCRIPTIONS = {
    "routelog": (
        "Metrotec route log: one row per trip (engine on to off) with driving and pause time, "
        "distance, speeds and addresses; landed per UTC day of startTime."
    ),
    "stops": (
        "Metrotec stops: engine-running (idling) and engine-off stops; runningTime kept as "
        "sent and as running_time_s; fuel codes (-2 = no reading) kept and flagged."
    ),
    "refuels": ("Metrotec refuels with litres before and after; landed per UTC day of startTime."),
    "fuel_levels": (
        "Metrotec fuel level history (litres, position, ignition), paged by start_from; "
        "landed per UTC day of GMTime. Negative fuel values are device codes, flagged."
    ),
}


class NoVehicleSnapshot(RuntimeError):
    """The partitioned tables need the vehicle list from the lake first."""


def _quarantine_spec(key: AssetKey, table: str) -> AssetCheckSpec:
    where = (
        f"<lake>/metrotec/quarantine/day=D/{table}.parquet, D being the row's own UTC day (else "
        "the first day of its request window)"
        if table != "vehicles"
        else "<lake>/metrotec/quarantine/day=D/vehicles.parquet, D being the snapshot day"
    )
    return AssetCheckSpec(
        QUARANTINE_CHECK,
        asset=key,
        description=(
            f"Warns when rows of raw/metrotec/{table} were quarantined instead of landed: no id "
            'or time, or a number that is NaN, Infinity or not a number ("12,5"), or a time '
            f"that is not a time. They are in {where}, with table, reason, field, value, payload "
            "and vehicle_id. Read them with DuckDB (read_parquet('<lake>/metrotec/quarantine/"
            "*/*.parquet')), get the vehicle's device or the account fixed at Metrotec, then "
            "materialize those days again: a landing replaces its days' quarantine."
        ),
    )


def _quarantine_check(
    key: AssetKey, quarantined: int, lake: Lake, days: list[date]
) -> AssetCheckResult:
    """WARN when this materialization quarantined rows of this table."""
    shown = f"{days[0]}..{days[-1]}" if len(days) > 1 else str(days[0])
    return AssetCheckResult(
        asset_key=key,
        check_name=QUARANTINE_CHECK,
        passed=quarantined == 0,
        severity=AssetCheckSeverity.WARN,
        description=f"{quarantined} row(s) quarantined in {shown}",
        metadata={
            "quarantined_rows": quarantined,
            "quarantine_dir": MetadataValue.path(lake.table_location(SOURCE, QUARANTINE_TABLE)),
        },
    )


def _days_written(days: Iterable[date]) -> MetadataValue:
    return MetadataValue.json(sorted(d.isoformat() for d in days))


def _asset_name(key: AssetKey) -> str:
    return "/".join(key.path)


def _failure(exc: VendorAPIError) -> Failure:
    """One line: which request, what the API said; an auth refusal is not worth a retry."""
    return Failure(description=str(exc), allow_retries=not isinstance(exc, MetrotecAuthError))


def latest_vehicle_snapshot(lake: Lake) -> tuple[date, list[str]]:
    """Vehicle ids of the newest `raw/metrotec/vehicles` day in the lake."""
    latest = lake.newest_day(SOURCE, "vehicles")
    if latest is None:
        raise NoVehicleSnapshot(
            "no raw/metrotec/vehicles snapshot in the lake: materialize raw/metrotec/vehicles "
            "first (the metrotec_refresh job does both)"
        )
    ids: set[str] = set()
    for file in lake.files(SOURCE, "vehicles", latest):
        ids.update(v for v in lake.read_file(file, columns=["id"])["id"].to_pylist() if v)
    return latest, sorted(ids)


def partition_days(context: AssetExecutionContext) -> list[date]:
    window = context.partition_time_window
    first = window.start.date()
    return [first + timedelta(days=i) for i in range((window.end.date() - first).days)]


def build_metrotec_defs(partitions: DailyPartitionsDefinition) -> Definitions:
    vehicles = _build_vehicles_asset()
    with warnings.catch_warnings():
        # `backfill_policy` is marked beta; single-run backfills are the point of these assets.
        warnings.simplefilter("ignore", BetaWarning)
        activity = _build_activity_assets(partitions)
    job = define_asset_job(
        JOB_NAME,
        selection=AssetSelection.assets(VEHICLES_KEY, *TABLE_KEYS.values()),
        description=(
            "Refresh the Metrotec vehicle list, then pull the partition range for every "
            "vehicle in it (one run: the vehicles step finishes first)."
        ),
    )
    return Definitions(
        assets=[vehicles, activity],
        jobs=[job],
        schedules=[_build_schedule(partitions)],
        resources={"metrotec": MetrotecResource.from_env()},
    )


def _build_vehicles_asset() -> AssetsDefinition:
    @asset(
        key=VEHICLES_KEY,
        pool=POOL,
        **raw_asset_args(SOURCE, "vehicles", SPECS["vehicles"].schema),
        check_specs=[
            AssetCheckSpec(
                VEHICLES_CHECK,
                asset=VEHICLES_KEY,
                description=(
                    "Fails when the API listed no vehicle: the partitioned tables then refuse "
                    "to run rather than overwrite days with nothing."
                ),
            ),
            _quarantine_spec(VEHICLES_KEY, "vehicles"),
        ],
        description=(
            "The Metrotec vehicle list, one snapshot per fetch day (UTC); the partitioned "
            "Metrotec tables pull every vehicle of the newest snapshot."
        ),
    )
    def metrotec_vehicles(
        context: AssetExecutionContext, metrotec: MetrotecResource, lake: LakeResource
    ) -> MaterializeResult:
        with metrotec.open_client(_asset_name(VEHICLES_KEY)) as client:
            try:
                rows = client.vehicles()
            except VendorAPIError as exc:
                raise _failure(exc) from None
        extracted_at = datetime.now(UTC)
        snapshot_day = extracted_at.date()
        typed = type_vehicles(rows, extracted_at)
        lake_ = lake.lake()
        # Written, or removed when empty, on every snapshot: the day's quarantine is this one's.
        lake_.write_quarantine(
            SOURCE, snapshot_day, "vehicles", quarantine_table(typed.quarantined, extracted_at)
        )
        if typed.quarantined:
            context.log.warning(
                f"{len(typed.quarantined)} vehicle rows quarantined (no id) in "
                f"{lake_.partition_location(SOURCE, QUARANTINE_TABLE, snapshot_day)}"
            )
        written = lake_.replace_partition(SOURCE, "vehicles", snapshot_day, typed.table)
        context.log.info(f"{written.rows} Metrotec vehicles, snapshot day {snapshot_day}")
        quarantine_checks = []
        if AssetCheckKey(VEHICLES_KEY, QUARANTINE_CHECK) in context.selected_asset_check_keys:
            quarantined = len(typed.quarantined)
            quarantine_checks.append(
                _quarantine_check(VEHICLES_KEY, quarantined, lake_, [snapshot_day])
            )
        return MaterializeResult(
            metadata={
                "rows": written.rows,
                "files": 1,
                "bytes": written.bytes,
                **landed_metadata(lake_, SOURCE, "vehicles"),
                **client.stats.as_metadata(),
                "quarantined_rows": len(typed.quarantined),
                "unparsed_values": typed.unparsed_values,
                "duplicates_dropped": typed.duplicates_dropped,
                "snapshot_day": snapshot_day.isoformat(),
                "days_written": _days_written([snapshot_day]),
            },
            check_results=[
                AssetCheckResult(
                    check_name=VEHICLES_CHECK,
                    passed=written.rows > 0,
                    severity=AssetCheckSeverity.ERROR,
                    metadata={"vehicles": written.rows},
                ),
                *quarantine_checks,
            ],
        )

    return metrotec_vehicles


def _build_activity_assets(partitions: DailyPartitionsDefinition) -> AssetsDefinition:
    routelog_key = TABLE_KEYS["routelog"]

    @multi_asset(
        name="metrotec_activity",
        specs=[
            AssetSpec(
                key,
                deps=[VEHICLES_KEY],
                description=DESCRIPTIONS[table],
                **raw_asset_args(SOURCE, table, SPECS[table].schema),
            )
            for table, key in TABLE_KEYS.items()
        ],
        check_specs=[
            AssetCheckSpec(
                ROUTELOG_CHECK,
                asset=routelog_key,
                description=(
                    "Warns when landed trips have no stopTime, stop before they start, or drive "
                    "longer than they last: their idle time is then unknown (NULL in fct_trips)."
                ),
            ),
            *(_quarantine_spec(key, table) for table, key in TABLE_KEYS.items()),
        ],
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        can_subset=True,
        pool=POOL,
    )
    def metrotec_activity(
        context: AssetExecutionContext, metrotec: MetrotecResource, lake: LakeResource
    ) -> Iterator[MaterializeResult]:
        tables = [t for t in TABLES if TABLE_KEYS[t] in context.selected_asset_keys]
        first_key = TABLE_KEYS[tables[0]]
        lake_ = lake.lake()
        try:
            snapshot_day, vehicle_ids = latest_vehicle_snapshot(lake_)
        except NoVehicleSnapshot as exc:
            raise Failure(description=str(exc), allow_retries=False) from None
        if not vehicle_ids:
            raise Failure(
                description=(
                    f"the raw/metrotec/vehicles snapshot of {snapshot_day} lists no vehicles: "
                    "nothing pulled, partitions left as they were"
                ),
                allow_retries=False,
            )

        landed: dict[str, dict[date, WriteResult]] = {table: {} for table in tables}

        def land(table: str, window_days_: list[date], data: pa.Table) -> tuple[int, int]:
            written: dict[date, WriteResult] = lake_.replace_partitions(
                SOURCE, table, window_days_, data
            )
            landed[table].update(written)
            return len(written), sum(w.bytes for w in written.values())

        def quarantine(table: str, by_day: dict[date, pa.Table]) -> None:
            """Each day's quarantine of `table` is this landing's (none: an older one goes)."""
            for day, rows in by_day.items():
                lake_.write_quarantine(SOURCE, day, table, rows)
            bad = {day: rows.num_rows for day, rows in by_day.items() if rows.num_rows}
            if bad:
                context.log.warning(
                    f"{sum(bad.values())} {table} rows quarantined instead of landed, in "
                    f"{lake_.table_location(SOURCE, QUARANTINE_TABLE)}/day=D/{table}.parquet for "
                    f"D in {', '.join(str(d) for d in sorted(bad))}"
                )

        with metrotec.open_client(_asset_name(first_key)) as client:
            window_days = metrotec.checked_window_days()
            days = partition_days(context)
            context.log.info(
                f"Metrotec {', '.join(tables)} for {days[0]}..{days[-1]} ({len(days)} days), "
                f"{len(vehicle_ids)} vehicles of the {snapshot_day} snapshot"
            )
            try:
                results = extract_range(
                    client,
                    vehicle_ids,
                    days,
                    tables=tables,
                    land=land,
                    quarantine=quarantine,
                    window_days=window_days,
                    progress=context.log.info,
                )
            except VendorAPIError as exc:
                raise _failure(exc) from None
        windows = len(plan_windows(days, window_days))
        common = {
            "vehicles": len(vehicle_ids),
            "vehicles_snapshot_day": snapshot_day.isoformat(),
            "api_windows": windows,
            "first_day": days[0].isoformat(),
            "last_day": days[-1].isoformat(),
            "run_api_requests": client.stats.requests,
            "logins": client.logins,
            "reauthentications": client.reauthentications,
        }
        for table in tables:
            result = results[table]
            if result.not_found:
                context.log.warning(
                    f"{table}: the API answered 404 for {result.not_found} vehicle window(s); "
                    "landed as no data"
                )
            check_results = []
            key = TABLE_KEYS[table]
            if AssetCheckKey(key, QUARANTINE_CHECK) in context.selected_asset_check_keys:
                check_results.append(_quarantine_check(key, result.quarantined, lake_, days))
            if (
                table == "routelog"
                and AssetCheckKey(routelog_key, ROUTELOG_CHECK) in context.selected_asset_check_keys
            ):
                check_results.append(
                    AssetCheckResult(
                        check_name=ROUTELOG_CHECK,
                        asset_key=routelog_key,
                        passed=result.inconsistent_trips == 0,
                        severity=AssetCheckSeverity.WARN,
                        metadata={"inconsistent_trips": result.inconsistent_trips},
                    )
                )
            add_day_figures(context, key, days, landed[table])
            yield MaterializeResult(
                asset_key=key,
                metadata=_table_metadata(table, result)
                | landed_metadata(lake_, SOURCE, table)
                | common,
                check_results=check_results,
            )

    return metrotec_activity


def _table_metadata(table: str, result: TableResult) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "rows": result.rows,
        "files": result.files,
        "bytes": result.bytes,
        **result.stats.as_metadata(),
        "rows_received": result.rows_received,
        "quarantined_rows": result.quarantined,
        "unparsed_values": result.unparsed_values,
        "duplicates_dropped": result.duplicates_dropped,
        "rows_outside_range": result.outside_range,
        "vehicles_not_found": result.not_found,
        "days_written": _days_written(result.days),
    }
    if table in ("stops", "refuels", "fuel_levels"):
        metadata["fuel_code_rows"] = result.fuel_code_rows
    return metadata


def _build_schedule(partitions: DailyPartitionsDefinition) -> ScheduleDefinition:
    @schedule(
        name=SCHEDULE_NAME,
        cron_schedule="45 3 * * *",
        job_name=JOB_NAME,
        execution_timezone="UTC",
        description=(
            "Daily at 03:45 UTC: refresh the vehicle list, then re-pull the last 2 complete "
            "UTC days of Metrotec route log, stops, refuels and fuel levels (one run)."
        ),
    )
    def metrotec_daily(context: ScheduleEvaluationContext) -> RunRequest:
        tick = context.scheduled_execution_time or datetime.now(UTC)
        last = tick.date() - timedelta(days=1)
        first = max(last - timedelta(days=REPULL_DAYS - 1), partitions.start.date())
        return RunRequest(
            run_key=f"metrotec-{first}-{last}",
            tags={
                ASSET_PARTITION_RANGE_START_TAG: first.isoformat(),
                ASSET_PARTITION_RANGE_END_TAG: last.isoformat(),
            },
        )

    return metrotec_daily
