"""The `lake_days_present` check of every raw table: days Dagster landed whose files are gone.

It is an ERROR, unlike the anomaly checks: a day Dagster landed whose files are gone (a deleted
`day=` folder) would otherwise vanish from the facts unnoticed. The facts build
(pipelines/dbt.py) runs the same comparison and warns before it builds. Each source declares
its tables (and how their lost days come back) in its checks.py.
"""

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetMaterialization,
    AssetRecordsFilter,
    DagsterInstance,
    MetadataValue,
    asset_check,
)

from pipelines.asset_metadata import raw_key
from pipelines.lake import Lake
from pipelines.resources import LakeResource
from pipelines.windows import DayRange, day_runs

LAKE_DAYS_CHECK = "lake_days_present"
DAYS_WRITTEN = "days_written"
"""Metadata entry of a raw materialization: the UTC days (ISO dates, JSON list) it wrote files
to. The drains' only record of their days: they have no partitions."""
SHOWN_DAY_RUNS = 20
"""Runs of consecutive missing days named in metadata, descriptions and log lines."""
MATERIALIZATION_PAGE = 1000
HISTORY_LOOKBACK = 10
"""Check executions looked through for the newest finished one (runs in progress or killed
leave planned executions in front of it)."""
MATERIALIZE_COMMAND = "dagster asset materialize -m pipelines.definitions"
MAX_COMMANDS = 3
"""Missing runs of days given one command each; beyond this one command spans them all."""

_EXPECTED_RANGES = "expected_day_ranges"
_THROUGH = "through_storage_id"


@dataclass(frozen=True)
class RawTable:
    """One raw lake table: its asset, whether its days are Dagster partitions, and (drains and
    snapshots) how lost days come back."""

    source: str
    table: str
    partitioned: bool
    relanding: str = ""

    @property
    def key(self) -> AssetKey:
        return raw_key(self.source, self.table)

    @property
    def name(self) -> str:
        return self.key.to_user_string()


@dataclass(frozen=True)
class LakeDays:
    """Days of one table Dagster recorded as landed, and those of them without a Parquet file.

    `through_storage_id`: the newest materialization read (drains), where the next evaluation
    of the check resumes.
    """

    table: RawTable
    expected: frozenset[date]
    missing: tuple[date, ...]
    through_storage_id: int | None = None

    def fix(self) -> str:
        """What brings the missing days back, for the check's description and the build log."""
        if not self.table.partitioned:
            return self.table.relanding
        runs = consecutive_runs(self.missing)
        if len(runs) > MAX_COMMANDS:
            # One single-run backfill over the span: present days in it are replaced, not doubled.
            runs = [(runs[0][0], runs[-1][1])]
        commands = " ; ".join(
            f"`{MATERIALIZE_COMMAND} --select {self.table.name} --partition-range {first}...{last}`"
            for first, last in runs
        )
        return f"Re-materialize those partitions: {commands}."


def lake_days(instance: DagsterInstance, lake: Lake, table: RawTable) -> LakeDays:
    """Compare the days Dagster recorded for `table` with the day folders in the lake.

    Partitioned tables expect every materialized partition; drains and snapshots every day a
    materialization listed in `days_written`. A day never landed is not expected, so a lake
    that starts late or skips days is fine; only a landed day without files is missing.
    """
    if table.partitioned:
        expected = _iso_days(instance.get_materialized_partitions(table.key))
        through = None
    else:
        expected, through = _written_days(instance, table)
    missing = tuple(sorted(d for d in expected if not _has_files(lake, table, d)))
    return LakeDays(table, frozenset(expected), missing, through)


def consecutive_runs(days: Collection[date]) -> list[tuple[date, date]]:
    """Sorted days as runs of consecutive days, (first, last) each, however long: no run is
    longer than the days given."""
    return day_runs(sorted(days), max_days=len(days))


def describe_days(days: Sequence[date]) -> str:
    """Days for people: runs of consecutive days as `first..last`, at most SHOWN_DAY_RUNS of
    them, then how many days are left unnamed."""
    runs = consecutive_runs(days)
    shown = [f"{a}" if a == b else f"{a}..{b}" for a, b in runs[:SHOWN_DAY_RUNS]]
    rest = sum(DayRange(a, b).count for a, b in runs[SHOWN_DAY_RUNS:])
    return ", ".join(shown) + (f" (+{rest} more days)" if rest else "")


def lake_days_result(found: LakeDays) -> AssetCheckResult:
    """ERROR when a landed day has no files: its rows are gone from every fact built after."""
    missing = found.missing
    metadata: dict[str, object] = {
        "missing_days": len(missing),
        "missing": describe_days(missing),
        "expected_days": len(found.expected),
        # Read back by the next evaluation (drains): the days so far, in a compact form.
        _EXPECTED_RANGES: MetadataValue.json(
            [[a.isoformat(), b.isoformat()] for a, b in consecutive_runs(found.expected)]
        ),
    }
    if found.through_storage_id is not None:
        metadata[_THROUGH] = found.through_storage_id
    if missing:
        description = (
            f"{len(missing)} landed day(s) of {found.table.name} have no Parquet files, so "
            f"their rows are missing from the facts: {describe_days(missing)}. {found.fix()}"
        )
    elif found.expected:
        description = f"all {len(found.expected)} landed days have files"
    else:
        description = "nothing materialized yet"
    return AssetCheckResult(
        passed=not missing,
        severity=AssetCheckSeverity.ERROR,
        description=description,
        metadata=metadata,
    )


def build_lake_days_check(table: RawTable) -> AssetChecksDefinition:
    """The table's `lake_days_present` check, its description saying what it expects."""
    how = (
        "every materialized partition"
        if table.partitioned
        else f"every day a materialization listed in `{DAYS_WRITTEN}`"
    )
    relanding = f" {table.relanding}" if table.relanding else ""

    @asset_check(
        asset=table.key,
        name=LAKE_DAYS_CHECK,
        description=(
            f"Fails when a landed day has no Parquet file ({how} must have a `day=` folder "
            "with one): a deleted or lost folder would silently drop that day from the facts."
            + relanding
        ),
    )
    def _lake_days(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
        return lake_days_result(lake_days(context.instance, lake.lake(), table))

    return _lake_days


def _written_days(instance: DagsterInstance, table: RawTable) -> tuple[set[date], int | None]:
    """Union of `days_written` over the table's materializations, and the newest one read.

    A drain materializes every 5 minutes, so reading its whole history on each evaluation
    would grow without bound: an evaluation starts from what the previous one recorded and
    reads only the materializations stored since.
    """
    days, after = _previous_state(instance, table)
    while True:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=table.key, after_storage_id=after),
            limit=MATERIALIZATION_PAGE,
            ascending=True,
        ).records
        for record in records:
            days |= _days_written(record.asset_materialization)
            after = record.storage_id
        if len(records) < MATERIALIZATION_PAGE:
            return days, after


def _previous_state(instance: DagsterInstance, table: RawTable) -> tuple[set[date], int | None]:
    """The expected days and the last materialization read by the newest finished evaluation
    of the table's check; nothing when there is none, or when the materialization it read
    through is gone (the asset was wiped: its days are no longer expected)."""
    history = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(table.key, LAKE_DAYS_CHECK), limit=HISTORY_LOOKBACK
    )
    for record in history:
        evaluation = record.evaluation
        if not isinstance(evaluation, AssetCheckEvaluation):
            continue  # planned: this evaluation itself, or a run still going or killed
        ranges = evaluation.metadata.get(_EXPECTED_RANGES)
        through = evaluation.metadata.get(_THROUGH)
        if ranges is None or through is None or not isinstance(through.value, int):
            return set(), None
        still_there = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=table.key, storage_ids=[through.value]), limit=1
        ).records
        if not still_there:
            return set(), None
        days: set[date] = set()
        for first, last in ranges.value:
            days.update(DayRange(date.fromisoformat(first), date.fromisoformat(last)).dates())
        return days, through.value
    return set(), None


def _days_written(materialization: AssetMaterialization | None) -> set[date]:
    entry = materialization.metadata.get(DAYS_WRITTEN) if materialization else None
    value = entry.value if entry is not None else None
    if isinstance(value, str):  # written as text rather than JSON
        try:
            value = json.loads(value)
        except ValueError:
            return set()
    return _iso_days(value) if isinstance(value, list) else set()


def _iso_days(values: Iterable[object]) -> set[date]:
    """The ISO dates among `values` (partition keys, `days_written`); anything else is not a
    lake day and is skipped."""
    days = set()
    for value in values:
        try:
            days.add(date.fromisoformat(str(value)))
        except ValueError:
            continue
    return days


def _has_files(lake: Lake, table: RawTable, day: date) -> bool:
    """Whether the day's folder holds a Parquet file (temp files don't count: they never end in
    `.parquet`)."""
    return lake.has_files(table.source, table.table, day)
