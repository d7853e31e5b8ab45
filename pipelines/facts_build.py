"""Building the facts by UTC day: which fact days raw data touched, and the runs that build them.

One mechanism for all four sources: every raw materialization records `days_written` (the UTC
days whose lake folders it wrote; AVL and Metrotec their partitions, a kt1 drain or an AutoPi
landing the days of what it landed, old days included). The facts sensor reads the raw
materializations stored since its cursor and requests the daily dbt assets' partitions of
those days and the day either side (the neighbour days a day's models read: trips over
midnight, fuel events matched across it), plus the models without a day, as one run per
contiguous range. `fleet facts build` runs the same assets for every day with raw data, or a
range.

A run is one build: one step, one `dbt build` over the run's days, whose last commit is the
marker readers open the facts at (dbt_models/macros/facts_build.sql).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    TimeWindowPartitionsDefinition,
    define_asset_job,
    sensor,
)

from pipelines.lake import Lake
from pipelines.lake_days import DAYS_WRITTEN
from pipelines.windows import DayRange

FACTS_SENSOR = "fleet_facts_after_raw"
FACTS_JOB = "fleet_facts_build"
NEIGHBOUR_DAYS = 1
"""A raw day changes the facts of that day and the day either side (macros/fleet_days.sql)."""
PAGE = 1000
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


class FactRange(DayRange):
    """Fact partitions to build in one run, named as Dagster's partition-range tags."""

    def tags(self) -> dict[str, str]:
        return {RANGE_START: self.first.isoformat(), RANGE_END: self.last.isoformat()}

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}..{self.last}"


def written_days(metadata: Any, partition: str | None) -> set[date]:
    """The UTC days a raw materialization wrote: its `days_written`, else its partition."""
    days: set[date] = set()
    entry = metadata.get(DAYS_WRITTEN) if metadata else None
    values = entry.value if entry is not None else None
    for value in values if isinstance(values, list) else []:
        try:
            days.add(date.fromisoformat(str(value)))
        except ValueError:
            continue
    if not days and partition:
        with contextlib.suppress(ValueError):
            days.add(date.fromisoformat(partition))
    return days


def fact_ranges(
    days: Iterable[date], partitions: TimeWindowPartitionsDefinition, margin: int = 0
) -> list[FactRange]:
    """The fact partitions of `days` widened by `margin` days either side, clipped to the
    partitions that exist, as sorted contiguous ranges."""
    keys = partitions.get_partition_keys()
    if not keys:
        return []
    low, high = date.fromisoformat(keys[0]), date.fromisoformat(keys[-1])
    wanted = sorted(
        {
            day + timedelta(days=shift)
            for day in days
            for shift in range(-margin, margin + 1)
            if low <= day + timedelta(days=shift) <= high
        }
    )
    ranges: list[FactRange] = []
    for day in wanted:
        if ranges and day == ranges[-1].last + timedelta(days=1):
            ranges[-1] = FactRange(ranges[-1].first, day)
        else:
            ranges.append(FactRange(day, day))
    return ranges


def lake_days(lake_dir: Path | str, tables: Sequence[str]) -> set[date]:
    """The UTC days any of `tables` (`<source>/<table>`) has a `day=` folder with Parquet in;
    `lake_dir` is a local folder or an object-store URL."""
    lake = Lake(lake_dir)
    days: set[date] = set()
    for table in tables:
        source, name = table.split("/", 1)
        days.update(lake.days(source, name))
    return days


def raw_keys(assets: Sequence[AssetsDefinition]) -> list[AssetKey]:
    """The raw assets the dbt models read (their dbt sources)."""
    return sorted(
        {dep for a in assets for deps in a.asset_deps.values() for dep in deps}
        - {k for a in assets for k in a.keys},
        key=lambda k: k.to_user_string(),
    )


def build_facts_sensor(
    dbt_assets: Sequence[AssetsDefinition], partitions: TimeWindowPartitionsDefinition
) -> SensorDefinition:
    """The sensor that builds the facts of the days raw data was written to (on by default:
    it acts only on new raw data)."""
    raws = raw_keys(dbt_assets)

    # A named job, so the UI shows the sensor's target and the runs as "fleet_facts_build"
    # rather than every fact asset's key joined by "or".
    job = define_asset_job(
        FACTS_JOB,
        selection=AssetSelection.assets(*dbt_assets),
        description="Build the facts (every dbt model and test) for a range of UTC days.",
    )

    @sensor(
        name=FACTS_SENSOR,
        job=job,
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Builds the fact partitions of the UTC days raw data was written to (each raw "
            "materialization's days_written) and the day either side, one run per range."
        ),
    )
    def fleet_facts_after_raw(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        start = int(context.cursor) if context.cursor else None
        days: set[date] = set()
        newest, seen = start, 0
        for key in raws:
            after = start
            while True:
                records = context.instance.fetch_materializations(
                    AssetRecordsFilter(asset_key=key, after_storage_id=after),
                    limit=PAGE,
                    ascending=True,
                ).records
                for record in records:
                    seen += 1
                    m = record.asset_materialization
                    if m is not None:
                        days |= written_days(m.metadata, m.partition)
                    newest = max(newest or 0, record.storage_id)
                if len(records) < PAGE:
                    break
                after = records[-1].storage_id
        cursor = str(newest) if newest is not None else context.cursor
        ranges = fact_ranges(days, partitions, NEIGHBOUR_DAYS)
        if not ranges:
            return SensorResult(
                skip_reason=f"{seen} raw materialization(s), no day written", cursor=cursor
            )
        return SensorResult(
            run_requests=[
                RunRequest(run_key=f"facts-{cursor}-{r.first}", tags=r.tags()) for r in ranges
            ],
            cursor=cursor,
        )

    return fleet_facts_after_raw
