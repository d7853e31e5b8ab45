"""Which fact partitions a raw materialization asks for: its written days, the day either side,
within the partitions that exist, as contiguous ranges."""

from __future__ import annotations

from datetime import date

from dagster import DailyPartitionsDefinition, MetadataValue

from pipelines.facts_build import FactRange, fact_ranges, written_days

PARTITIONS = DailyPartitionsDefinition(start_date="2026-03-01", end_date="2026-04-01")


def test_written_days_come_from_days_written_else_the_partition() -> None:
    listed = {"days_written": MetadataValue.json(["2026-03-05", "2026-03-20", "junk"])}
    assert written_days(listed, "2026-03-07") == {date(2026, 3, 5), date(2026, 3, 20)}
    assert written_days({}, "2026-03-07") == {date(2026, 3, 7)}
    assert written_days({"days_written": MetadataValue.json([])}, None) == set()


def test_days_become_ranges_with_their_neighbours_clipped_to_the_partitions() -> None:
    days = [date(2026, 3, 1), date(2026, 3, 10), date(2026, 3, 12), date(2026, 3, 31)]
    assert fact_ranges(days, PARTITIONS, margin=1) == [
        FactRange(date(2026, 3, 1), date(2026, 3, 2)),
        FactRange(date(2026, 3, 9), date(2026, 3, 13)),
        FactRange(date(2026, 3, 30), date(2026, 3, 31)),
    ]
    assert fact_ranges([date(2026, 5, 1)], PARTITIONS, margin=1) == []
