"""A facts build's partition window becomes dbt's own --event-time-start/--event-time-end."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from dagster import TimeWindow

from pipelines.dbt import FactsBuildConfig, dbt_build_args

PLAIN = ["build", "--exclude-resource-type", "unit_test"]


def test_a_build_of_every_day_passes_no_window_and_leaves_unit_tests_out() -> None:
    assert dbt_build_args(FactsBuildConfig()) == PLAIN
    assert dbt_build_args(FactsBuildConfig(unit_tests=True)) == ["build"]


def test_a_partition_range_is_passed_as_its_utc_time_window() -> None:
    window = TimeWindow(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    assert dbt_build_args(FactsBuildConfig(), window) == [
        *PLAIN,
        "--event-time-start",
        "2026-03-01T00:00:00",
        "--event-time-end",
        "2026-04-01T00:00:00",
    ]


def test_a_window_not_on_utc_midnights_is_refused() -> None:
    window = TimeWindow(datetime(2026, 3, 1, 6, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC))
    with pytest.raises(ValueError, match="not a UTC midnight"):
        dbt_build_args(FactsBuildConfig(), window)
