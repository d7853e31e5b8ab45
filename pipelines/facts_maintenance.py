"""Keep the facts' DuckLake catalog small: merge small files, expire old snapshots, delete files
no snapshot needs. Every build commits one snapshot per model (or per day of a microbatch
model) and rewrites files; without this the data path and the catalog only grow.

Snapshots younger than the retention stay readable (time travel: `AT (VERSION => n)`), and the
newest complete build is never expired, whatever its age: it is what readers see.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
from dagster import (
    DefaultScheduleStatus,
    Failure,
    MetadataValue,
    OpExecutionContext,
    ScheduleDefinition,
    job,
    op,
)

from pipelines.facts import ALIAS, FactsCatalog, FactsError, attach, last_build, mark_build
from pipelines.locks import Busy
from pipelines.settings import get_settings

ORPHAN_MIN_AGE = timedelta(days=1)
"""Files the catalog does not know are deleted only when older than this: a build on another
machine (Postgres catalog) may be writing files it has not committed yet."""

LOCK_WAIT_S = 3600.0


@dataclass(frozen=True)
class MaintenanceReport:
    merged_files: int
    rewritten_files: int
    expired_snapshots: int
    deleted_files: int
    orphaned_files: int
    kept_since: datetime
    snapshots_left: int


def maintain(
    catalog: FactsCatalog, retention: timedelta, now: datetime | None = None
) -> MaintenanceReport:
    """Merge, expire, clean up, under the catalog's build lock (no build runs meanwhile)."""
    now = now or datetime.now(UTC)
    with catalog.build_lock(LOCK_WAIT_S):
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            attach(con, catalog, read_only=False)
            clean = _at_complete_build(con)
            merged = len(con.execute(f"CALL ducklake_merge_adjacent_files('{ALIAS}')").fetchall())
            rewritten = len(con.execute(f"CALL ducklake_rewrite_data_files('{ALIAS}')").fetchall())
            if clean and (merged or rewritten):
                # Same rows, fewer files: readers may move to the compacted snapshot.
                mark_build(con, "maintenance")
            kept_since = now - retention
            expired = _expire(con, kept_since)
            deleted = con.execute(
                f"CALL ducklake_cleanup_old_files('{ALIAS}', cleanup_all => true)"
            ).fetchall()
            orphaned = con.execute(
                f"CALL ducklake_delete_orphaned_files('{ALIAS}', older_than => ?)",
                [now - ORPHAN_MIN_AGE],
            ).fetchall()
            left = con.execute(f"SELECT count(*) FROM {ALIAS}.snapshots()").fetchone()
        finally:
            con.close()
    return MaintenanceReport(
        merged_files=merged,
        rewritten_files=rewritten,
        expired_snapshots=expired,
        deleted_files=len(deleted),
        orphaned_files=len(orphaned),
        kept_since=kept_since,
        snapshots_left=int(left[0]) if left else 0,
    )


def _at_complete_build(con: duckdb.DuckDBPyConnection) -> bool:
    build = last_build(con)
    current = con.execute(f"FROM {ALIAS}.current_snapshot()").fetchone()
    return build is not None and current is not None and build == current[0]


def _expire(con: duckdb.DuckDBPyConnection, kept_since: datetime) -> int:
    """Expire the snapshots older than `kept_since` and older than the newest complete build.

    By id, not with `older_than`: on a SQLite catalog that comparison expired snapshots newer
    than the cut-off too (measured: every snapshot of the day, the newest build included).
    """
    build = last_build(con)
    if build is None:
        return 0
    ids = [
        int(row[0])
        for row in con.execute(
            f"SELECT snapshot_id FROM {ALIAS}.snapshots() "
            "WHERE snapshot_id < ? AND snapshot_time < ? ORDER BY snapshot_id",
            [build, kept_since],
        ).fetchall()
    ]
    if ids:
        con.execute(f"CALL ducklake_expire_snapshots('{ALIAS}', versions => ?)", [ids])
    return len(ids)


@op(pool="fleet_facts")
def maintain_facts(context: OpExecutionContext) -> None:
    """Merge small files, expire snapshots older than FLEET_FACTS_RETENTION_DAYS, delete files
    no snapshot needs."""
    settings = get_settings()
    retention = settings.facts_retention.value
    if settings.facts_retention.error:
        raise Failure(
            description=f"{settings.facts_retention.error} (needed by facts maintenance)",
            allow_retries=False,
        )
    catalog = FactsCatalog.from_settings(settings)
    try:
        report = maintain(catalog, timedelta(days=retention))
    except (FactsError, Busy) as exc:
        raise Failure(description=str(exc), allow_retries=False) from None
    context.log.info(
        f"facts {catalog.describe()}: merged {report.merged_files} and rewrote "
        f"{report.rewritten_files} file(s), expired {report.expired_snapshots} snapshot(s) older "
        f"than {report.kept_since:%Y-%m-%d %H:%M} UTC, deleted {report.deleted_files} file(s) "
        f"and {report.orphaned_files} orphaned file(s); {report.snapshots_left} snapshot(s) left"
    )
    context.add_output_metadata(
        {
            "merged_files": report.merged_files,
            "rewritten_files": report.rewritten_files,
            "expired_snapshots": report.expired_snapshots,
            "deleted_files": report.deleted_files,
            "orphaned_files": report.orphaned_files,
            "snapshots_left": report.snapshots_left,
            "kept_since": MetadataValue.text(report.kept_since.isoformat()),
        }
    )


@job(description="Compact the facts' files and expire old DuckLake snapshots.")
def facts_maintenance() -> None:
    maintain_facts()


facts_maintenance_schedule = ScheduleDefinition(
    name="facts_maintenance_daily",
    job=facts_maintenance,
    cron_schedule="30 4 * * *",  # after the nightly AVL (03:15) and Metrotec (03:45) loads
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
)
