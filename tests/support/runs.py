"""Runs of this project's own definitions, in process, as the tests start them."""

from __future__ import annotations

from datetime import date
from typing import Any

from dagster import AssetKey, ExecuteInProcessResult, materialize


def run_assets(selection: Any, **kwargs: Any) -> ExecuteInProcessResult:
    """One run of `selection` among the definitions `build_defs()` makes now (so of the
    current environment), with their resources; `kwargs` go to `materialize` (tags,
    instance, run_config, raise_on_error)."""
    from pipelines.definitions import build_defs

    defs = build_defs()
    return materialize(list(defs.assets), resources=defs.resources, selection=selection, **kwargs)


def fact_keys() -> list[AssetKey]:
    """Every asset dbt builds: all but the raw tables and the report."""
    from pipelines.definitions import build_defs

    graph = build_defs().resolve_asset_graph()
    return [k for k in graph.get_all_asset_keys() if k.path[0] not in {"raw", "fleet_report"}]


def range_tags(first: date, last: date) -> dict[str, str]:
    """The tags of one run over the daily partitions `first` to `last`."""
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
