"""`raw/autopi/trips` + `raw/autopi/datapoints`: one drain of every finished AutoPi export, the
sensor that asks for it, and the re-export job."""

import hashlib
import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    AssetSpec,
    Config,
    DefaultSensorStatus,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    RunConfig,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    multi_asset,
    sensor,
)
from pydantic import Field

from pipelines.asset_metadata import (
    landed_metadata,
    raw_asset_args,
    raw_key,
)
from pipelines.http import VendorAPIError
from pipelines.lake import QUARANTINE_TABLE, Lake
from pipelines.resources import LakeResource
from pipelines.sources.autopi.drain import (
    DrainReport,
    drain_exports,
    request_reexports,
    waiting_exports,
)
from pipelines.sources.autopi.landing import DATAPOINTS, EMPTY_DAY, SOURCE, TRIPS
from pipelines.sources.autopi.resources import AutoPiResource
from pipelines.sources.autopi.schemas import DATAPOINTS_SCHEMA, TRIPS_SCHEMA
from pipelines.sources.autopi.state import ExportLedger
from pipelines.state import lake_key

TRIPS_KEY = raw_key(SOURCE, TRIPS)
DATAPOINTS_KEY = raw_key(SOURCE, DATAPOINTS)
ASSET_NAME = "raw/autopi/trips"
OP_NAME = "autopi_exports"
DESCRIPTIONS = {
    TRIPS: (
        "One row per AutoPi trip export (the export's first line, typed, plus the task, result "
        "hash and counts), in day=<UTC day of the trip start>, one file per trip so a "
        "re-export replaces it. A trip object with a value that does not parse is quarantined "
        "in autopi/quarantine/ instead."
    ),
    DATAPOINTS: (
        "Every datapoint of every landed export, one file per trip: declared keys typed, every "
        "other key kept in the `extra` JSON column. Malformed lines and lines with an "
        "unparseable or non-finite value are quarantined in autopi/quarantine/day=<trip day>/"
        "<trip_id>.parquet, never landed here."
    ),
}
SENSOR_INTERVAL_S = 30  # AutoPi waits at least 10 minutes after a trip before exporting
REREQUEST_AFTER_S = 600.0  # ask again for exports still waiting after this long
LISTED = 20  # ids shown in metadata before "..."
REASONS_SHOWN = 10  # quarantine reasons shown in a check's metadata
QUARANTINE_CHECK = "no_quarantined_rows"
QUARANTINE_HELP = (
    "Rows that could not land (a line that is not a JSON object; a value that does not parse "
    'as its type or is not a finite number, such as NaN, Infinity or "12,5") are kept in '
    "<lake>/autopi/quarantine/day=<trip day>/<trip_id>.parquet with their reason, field, "
    "value and raw line (payload, line_number); the trip's other rows landed. To act: read "
    "the reasons; if the device or AutoPi sends them, fix it there (or, if the value is "
    "valid, teach pipelines/sources/autopi/columns.py to read it), then re-land the trip with "
    "`fleet autopi reexport TRIP_ID`: a clean re-landing removes its quarantine file."
)


class AutoPiDrainConfig(Config):
    """Run config of the drain; all optional. The sensor fills `task_ids`."""

    task_ids: list[int] = Field(
        default_factory=list, description="Tasks to fetch even if the ledger says they are done."
    )
    reexport_trip_ids: list[str] = Field(
        default_factory=list,
        description="Trips whose export is gone: re-run their export, wait, and land it.",
    )
    reexport_wait_s: float = Field(default=900.0, description="How long to wait for re-runs.")


def _listed(values: Sequence[str]) -> list[str]:
    """The first LISTED values, and how many more, as a list the UI shows one per line."""
    more = [f"... and {len(values) - LISTED} more"] if len(values) > LISTED else []
    return [*values[:LISTED], *more]


def _ids(values: Sequence[int]) -> str:
    shown = ", ".join(str(v) for v in values[:LISTED])
    return shown + (f", ... ({len(values)} in all)" if len(values) > LISTED else "")


def _ledger(lake: LakeResource) -> ExportLedger:
    return ExportLedger.of(lake.lake())


def scratch_dir(lake: Lake) -> Path:
    """Where a lake's exports download before they are landed: a local folder whatever the lake
    is (an object-store lake has none), one per lake so two lakes' task ids never collide."""
    digest = hashlib.blake2b(lake_key(lake).encode(), digest_size=6).hexdigest()
    return Path(tempfile.gettempdir()) / "fleet-pipelines" / f"autopi-downloads-{digest}"


def build_autopi_exports() -> AssetsDefinition:
    @multi_asset(
        name=OP_NAME,
        specs=[
            AssetSpec(
                raw_key(SOURCE, table),
                **raw_asset_args(SOURCE, table, schema),
                description=DESCRIPTIONS[table],
            )
            for table, schema in ((TRIPS, TRIPS_SCHEMA), (DATAPOINTS, DATAPOINTS_SCHEMA))
        ],
        check_specs=[
            AssetCheckSpec(
                "datapoint_keys_declared",
                asset=DATAPOINTS_KEY,
                description="Warns when exports carry keys with no typed column (kept in `extra`).",
            ),
            AssetCheckSpec(
                QUARANTINE_CHECK,
                asset=DATAPOINTS_KEY,
                description="Warns when datapoint lines were quarantined. " + QUARANTINE_HELP,
            ),
            AssetCheckSpec(
                QUARANTINE_CHECK,
                asset=TRIPS_KEY,
                description="Warns when trip objects were quarantined. " + QUARANTINE_HELP,
            ),
            AssetCheckSpec(
                "finished_exports_landed",
                asset=TRIPS_KEY,
                description="Warns when a finished export could not be landed or cleared.",
            ),
        ],
        pool="autopi_api",
    )
    def autopi_exports(
        context: AssetExecutionContext,
        config: AutoPiDrainConfig,
        autopi: AutoPiResource,
        lake: LakeResource,
    ) -> Iterator[Any]:
        lake_ = lake.lake()
        started = time.monotonic()
        with autopi.open_client(ASSET_NAME) as client, _ledger(lake) as ledger:
            try:
                tasks = None
                refused: dict[str, str] = {}
                if config.reexport_trip_ids:
                    tasks, refused = request_reexports(
                        client,
                        config.reexport_trip_ids,
                        wait_s=config.reexport_wait_s,
                        log=context.log.info,
                    )
                report = drain_exports(
                    client,
                    lake_,
                    ledger,
                    scratch_dir=scratch_dir(lake_),
                    reprobe_window_s=autopi.reprobe_hours * 3600,
                    extra_task_ids=config.task_ids,
                    tasks=tasks,
                    log=context.log.warning,
                )
            except VendorAPIError as exc:
                raise Failure(description=str(exc), allow_retries=True) from None
        context.log.info(
            f"AutoPi: {len(report.landed)} export(s) landed, {len(report.pending)} pending, "
            f"{len(report.gone)} gone, {len(report.failed)} failed "
            f"in {time.monotonic() - started:.1f}s"
        )
        quarantine_dir = lake_.table_location(SOURCE, QUARANTINE_TABLE)
        yield from _results(report, client.stats.as_metadata(), refused, lake_, quarantine_dir)

    return autopi_exports


def _days(days: set[Any]) -> MetadataValue:
    """`days_written`: the UTC days a table's files were written to, as sorted ISO dates (the
    placeholder day of the schema-only files is no data day)."""
    return MetadataValue.json(sorted(d.isoformat() for d in days if d != EMPTY_DAY))


def _quarantine_check(
    asset_key: AssetKey, reasons: dict[str, int], trips: list[str], quarantine_dir: str
) -> AssetCheckResult:
    """WARN when rows meant for the asset's table were quarantined: how many, where, why."""
    rows = sum(reasons.values())
    if rows:
        description = (
            f"{rows} row(s) of {len(trips)} trip(s) quarantined in {quarantine_dir}/ "
            "(one file per trip, under the trip's day); see the check's description for what "
            "to do. Most frequent: " + "; ".join(list(reasons)[:3])
        )
    else:
        description = "no row of the landed exports was quarantined"
    return AssetCheckResult(
        check_name=QUARANTINE_CHECK,
        asset_key=asset_key,
        passed=rows == 0,
        severity=AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "quarantined_rows": rows,
            "quarantine_dir": str(quarantine_dir),
            "trip_ids": ", ".join(trips[:LISTED]),
            "reasons": MetadataValue.json(dict(list(reasons.items())[:REASONS_SHOWN])),
        },
    )


def _results(
    report: DrainReport,
    api: dict[str, float | int],
    refused: dict[str, str],
    lake: Lake,
    quarantine_dir: str,
) -> Iterator[Any]:
    landed = report.landed
    trip_rows = [t for t in landed if t.trips_file is not None]
    trips_bytes = sum(t.trips_file.bytes for t in trip_rows if t.trips_file is not None)
    points_bytes = sum(t.datapoints_file.bytes for t in landed)
    undeclared = report.undeclared
    yield MaterializeResult(
        asset_key=TRIPS_KEY,
        metadata={
            "rows": len(trip_rows),
            "files": len(trip_rows),
            "bytes": trips_bytes,
            "days_written": _days({t.day for t in trip_rows}),
            "quarantined_rows": report.quarantined_trips,
            **api,
            "exports_listed": report.listed,
            "exports_pending": len(report.pending),
            "pending_task_ids": _ids([t.task_id for t in report.pending]),
            "exports_checked": report.probed,
            "exports_landed": len(landed),
            "exports_already_landed": len(report.already_landed),
            "exports_cleared": len(report.cleared),
            "exports_gone": len(report.gone),
            "exports_failed": len(report.failed),
            "redownloads": report.redownloads,
            "reexports_refused": len(refused),
            "landed_trip_ids": MetadataValue.json(_listed([t.trip_id for t in landed])),
            **landed_metadata(lake, SOURCE, TRIPS),
        },
    )
    yield MaterializeResult(
        asset_key=DATAPOINTS_KEY,
        metadata={
            "rows": report.datapoints,
            "files": len(landed),
            "bytes": points_bytes,
            "days_written": _days({t.day for t in landed}),
            **api,
            "quarantined_rows": report.quarantined_datapoints,
            "malformed_lines": report.malformed,
            "undeclared_keys": json.dumps(undeclared),
            "new_keys": ", ".join(report.new_keys),
            "slow_path_lines": sum(t.stats.slow_lines for t in landed),
            "decompressed_bytes": sum(t.stats.decompressed_bytes for t in landed),
            **landed_metadata(lake, SOURCE, DATAPOINTS),
        },
    )
    yield AssetCheckResult(
        check_name="datapoint_keys_declared",
        asset_key=DATAPOINTS_KEY,
        passed=not undeclared,
        severity=AssetCheckSeverity.WARN,
        description=(
            "every datapoint key has a typed column"
            if not undeclared
            else f"{len(undeclared)} undeclared key(s) kept in `extra`; declare them in "
            "pipelines/sources/autopi/schemas.py (DECLARED) to type them"
        ),
        metadata={
            "undeclared_keys": json.dumps(undeclared),
            "new_keys": ", ".join(report.new_keys),
        },
    )
    yield _quarantine_check(
        DATAPOINTS_KEY,
        report.quarantine_reasons(DATAPOINTS),
        [t.trip_id for t in landed if t.quarantined_datapoints],
        quarantine_dir,
    )
    yield _quarantine_check(
        TRIPS_KEY,
        report.quarantine_reasons(TRIPS),
        [t.trip_id for t in landed if t.trip_quarantined],
        quarantine_dir,
    )
    problems = {**report.failed, **{k: f"not cleared: {v}" for k, v in report.not_cleared.items()}}
    yield AssetCheckResult(
        check_name="finished_exports_landed",
        asset_key=TRIPS_KEY,
        passed=not problems and not refused,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "failed": json.dumps({str(k): v for k, v in sorted(problems.items())[:LISTED]}),
            "reexports_refused": json.dumps(refused),
        },
    )


def build_autopi_sensor(exports: AssetsDefinition) -> Any:
    @sensor(
        name="autopi_exports_sensor",
        target=AssetSelection.assets(exports),
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=DefaultSensorStatus.STOPPED,
        description=(
            "Polls AutoPi's tasks/ and reads the webhook's signals; asks for a drain when a "
            "finished export is waiting. Cursor: when each waiting task was last asked for."
        ),
    )
    def autopi_exports_sensor(
        context: SensorEvaluationContext, autopi: AutoPiResource, lake: LakeResource
    ) -> SensorResult | SkipReason:
        try:
            with autopi.open_client("autopi_exports_sensor") as client:
                tasks = client.export_tasks()
        except Failure as exc:  # a setting it lacks, in one line
            return SkipReason(exc.description)
        except VendorAPIError as exc:
            return SkipReason(f"could not list AutoPi tasks: {exc}")
        with _ledger(lake) as ledger:
            waiting = waiting_exports(tasks, ledger)
        cursor = _load_cursor(context.cursor)
        now = time.time()
        due = sorted(t for t in waiting if now - cursor.get(str(t), 0.0) >= REREQUEST_AFTER_S)
        asked = {k: v for k, v in cursor.items() if int(k) in waiting}  # forget landed ones
        pending = sum(1 for t in tasks if not t.finished)
        if not due:
            return SensorResult(
                skip_reason=SkipReason(
                    f"{len(waiting)} export(s) waiting, already asked for; {pending} pending"
                    if waiting
                    else f"no finished export waiting; {pending} pending"
                ),
                cursor=json.dumps(asked),
            )
        asked.update({str(t): now for t in due})
        reasons = sorted({waiting[t] for t in due})
        return SensorResult(
            run_requests=[
                RunRequest(
                    run_config=RunConfig(ops={OP_NAME: AutoPiDrainConfig(task_ids=due)}),
                    tags={"autopi/waiting": str(len(due)), "autopi/why": ",".join(reasons)},
                )
            ],
            cursor=json.dumps(asked),
        )

    return autopi_exports_sensor


def _load_cursor(cursor: str | None) -> dict[str, float]:
    try:
        value = json.loads(cursor or "{}")
    except ValueError:
        return {}
    return {str(k): float(v) for k, v in value.items()} if isinstance(value, dict) else {}


def build_autopi_defs() -> Definitions:
    exports = build_autopi_exports()
    reexport = define_asset_job(
        "autopi_reexport",
        selection=AssetSelection.assets(exports),
        description=(
            "Re-run AutoPi's export of the trips in run config "
            f"(ops.{OP_NAME}.config.reexport_trip_ids), wait for them and land them."
        ),
    )
    return Definitions(
        assets=[exports],
        sensors=[build_autopi_sensor(exports)],
        jobs=[reexport],
        resources={"autopi": AutoPiResource.from_env()},
    )
