"""What the benchmarks share: a throwaway home for a run's lake, facts and state, a quiet run
over a range of days, and the header of a printed table."""

from __future__ import annotations

import os
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""Run config that keeps Dagster's per-event chatter out of the timed run and the output."""


def temp_home(prefix: str, first_day: date, **settings: str) -> Path:
    """A fresh temporary folder holding the lake, the facts and the shared state of the runs
    of this process from now on (set in os.environ), whose history starts at `first_day`."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.update(
        FLEET_LAKE_DIR=str(tmp / "lake"),
        FLEET_FACTS_CATALOG=f"sqlite:{tmp / 'fleet_catalog.sqlite'}",
        FLEET_FACTS_DATA_PATH=str(tmp / "facts"),
        FLEET_STATE_URL=f"sqlite:///{tmp / 'state.sqlite3'}",
        FLEET_START_DATE=first_day.isoformat(),
        **settings,
    )
    return tmp


def run_days(defs: Any, selection: Any, days: list[date], **kwargs: Any) -> Any:
    """One quiet in-process run of `selection` over the partitions of `days` (first to last);
    `defs` built beforehand, as a deployment has them before any run starts."""
    from dagster import materialize

    return materialize(
        list(defs.assets),
        resources=defs.resources,
        selection=selection,
        tags={
            "dagster/asset_partition_range_start": days[0].isoformat(),
            "dagster/asset_partition_range_end": days[-1].isoformat(),
        },
        run_config=QUIET,
        **kwargs,
    )


def print_header(header: str) -> None:
    """A table's column names and a rule as wide."""
    print(header)
    print("-" * len(header))
