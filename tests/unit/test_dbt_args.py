"""A facts build's run config becomes dbt arguments: a day window as dbt vars, a full refresh."""

from __future__ import annotations

import json

import pytest

from pipelines.dbt import FactsBuildConfig, dbt_build_args

PLAIN = ["build", "--exclude-resource-type", "unit_test"]


def test_a_plain_build_rebuilds_only_what_new_data_touched_without_unit_tests() -> None:
    assert dbt_build_args(FactsBuildConfig()) == PLAIN
    assert dbt_build_args(FactsBuildConfig(unit_tests=True)) == ["build"]


def test_a_day_window_is_passed_as_dbt_vars() -> None:
    args = dbt_build_args(FactsBuildConfig(from_day="2026-03-01", to_day="2026-03-31"))
    assert args[:4] == [*PLAIN, "--vars"]
    assert json.loads(args[4]) == {"fleet_from_day": "2026-03-01", "fleet_to_day": "2026-03-31"}
    one_day = dbt_build_args(FactsBuildConfig(from_day="2026-03-05"))
    assert json.loads(one_day[4]) == {"fleet_from_day": "2026-03-05", "fleet_to_day": "2026-03-05"}


def test_full_refresh_and_bad_windows() -> None:
    assert dbt_build_args(FactsBuildConfig(full_refresh=True)) == [*PLAIN, "--full-refresh"]
    with pytest.raises(ValueError):
        dbt_build_args(FactsBuildConfig(from_day="2026-03-31", to_day="2026-03-01"))
    with pytest.raises(ValueError):
        dbt_build_args(FactsBuildConfig(from_day="31.03.2026"))
