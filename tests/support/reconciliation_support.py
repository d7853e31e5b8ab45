"""The ground-truth reconciliation's build and readers: one world, four simulated APIs, the real
Dagster path into the facts catalog, and the built facts mapped back onto the World's vehicles.

Settings keep one build of 20 vehicles x 30 days near a minute and a half on two idle cores:
AutoPi (one export, two lake files and a ledger entry per trip) is fitted to one vehicle, the
other sources keep the World's default fleet, and the rate limits are the demo's time-scaled
ones.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dagster import AssetKey, materialize

from pipelines.cli import failure_lines
from pipelines.dbt_vars import DBT_PROJECT_DIR
from pipelines.simulator import autopi, avl, kt1, metrotec
from pipelines.simulator.serve import DEMO_AVL_RATE, Simulators
from pipelines.simulator.truth import identities
from pipelines.simulator.world import Vehicle, World
from tests.conftest import facts_env

SEED = 7  # the demo's fleet: the shipped vehicle_map and autopi_vehicle_tanks seeds know it
VEHICLES = 20
DAYS = 30
WORLD_END = date(2026, 3, 31)  # spans the EU DST change of 2026-03-29 (AVL answers local time)
NOW = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)  # every trip ended and every export is ready
AUTOPI_VEHICLES = {3}  # landing one export per trip is the slow step: one dongle, 97 trips
AUTOPI_SAMPLE_S = 5.0  # the simulator's default: idle periods are exact to this interval
KT1_REPORT_S = 30.0  # the simulator's (and demo's) telemetry interval
IDLE_PERIOD_MIN_S = 60.0  # every source's idle period threshold (kt1, AutoPi, Metrotec)
SOURCES = ("avl", "autopi", "kt1", "metrotec")
_METROTEC_TABLES = ("vehicles", "routelog", "stops", "refuels", "fuel_levels")
_KT1_TABLES = ("telemetry", "trips", "events", "changes")
# (step, raw assets, daily-partitioned): the order `fleet demo` lands them in.
RAW_STEPS: tuple[tuple[str, list[AssetKey], bool], ...] = (
    ("avl", [AssetKey(["raw", "avl", "trips"])], True),
    ("metrotec", [AssetKey(["raw", "metrotec", t]) for t in _METROTEC_TABLES], True),
    ("kt1", [AssetKey(["raw", "kt1", t]) for t in _KT1_TABLES], False),
    ("autopi", [AssetKey(["raw", "autopi", t]) for t in ("trips", "datapoints")], False),
)


def reconciliation_world() -> World:
    """The demo's seed with 20 vehicles: AVL and Metrotec on all, kt1 on every third (the
    World's default), AutoPi on one of the demo's AutoPi vehicles; a trip is seen by up to
    three sources."""
    return World(
        seed=SEED,
        vehicles=VEHICLES,
        end_day=WORLD_END,
        days=DAYS,
        source_vehicles={
            "avl": set(range(VEHICLES)),
            "metrotec": set(range(VEHICLES)),
            "kt1": {i for i in range(VEHICLES) if i % 3 == 1},
            "autopi": AUTOPI_VEHICLES,
        },
    )


@contextlib.contextmanager
def simulators(world: World) -> Iterator[Simulators]:
    """The four APIs on 127.0.0.1 at a fixed "now", with the demo's time-scaled AVL limit and
    short kt1 long poll (so the drain ends as soon as the queue is empty)."""

    def clock() -> datetime:
        return NOW

    sims = Simulators(world)
    try:
        sims.servers["avl"] = avl.AvlServer(world, rate_limit=DEMO_AVL_RATE, clock=clock).start()
        sims.servers["autopi"] = autopi.AutoPiServer(
            world, clock=clock, sample_interval_s=AUTOPI_SAMPLE_S
        ).start()
        sims.servers["kt1"] = kt1.Kt1Server(
            world, clock=clock, long_poll_s=1.0, telemetry_interval_s=KT1_REPORT_S
        ).start()
        sims.servers["metrotec"] = metrotec.MetrotecServer(world, clock=clock).start()
        yield sims
    finally:
        sims.stop()


@dataclass
class Build:
    catalog_path: Path  # the facts' SQLite DuckLake catalog, its data files beside it
    seconds: dict[str, float] = field(default_factory=dict)


Runner = Callable[..., Any]
"""How a step runs: `dagster.materialize`'s signature and result (the default runs in process;
a test of workers passes one that launches the run on its instance)."""


def build_everything(
    world: World,
    tmp: Path,
    mp: pytest.MonkeyPatch,
    env: dict[str, str] | None = None,
    run: Runner = materialize,
) -> Build:
    """Land all four sources through real Dagster runs, then `dbt build` the facts. `env`
    overrides the local defaults (e.g. an object-store lake, Postgres state and catalog)."""
    build = Build(tmp / "fleet_catalog.sqlite")
    first = world.start_day.isoformat()
    with simulators(world) as sims:
        for key in [
            k for k in os.environ if k.startswith(("AVL_", "AUTOPI_", "KT1_", "METROTEC_"))
        ]:
            mp.delenv(key)
        for key, value in {
            **sims.env(),
            "FLEET_LAKE_DIR": str(tmp / "lake"),
            **facts_env(build.catalog_path),
            "FLEET_STATE_URL": f"sqlite:///{tmp / 'state.sqlite3'}",
            "FLEET_START_DATE": first,
            "METROTEC_RATE_LIMIT": "20/1",  # the demo's pace
            "KT1_DRAIN_SECONDS": "60",
            **(env or {}),
        }.items():
            mp.setenv(key, value)
        from pipelines.definitions import build_defs

        defs = build_defs()
        day_range = {
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": world.end_day.isoformat(),
        }
        quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        steps: list[tuple[str, Any, dict[str, str] | None]] = [
            (name, keys, day_range if partitioned else None)
            for name, keys, partitioned in RAW_STEPS
        ]
        steps.append(("dbt", "kind:dbt", day_range))  # the fact partitions of these days
        for name, selection, tags in steps:
            started = time.monotonic()
            log = io.StringIO()  # dbt's and Dagster's chatter; shown only when a step fails
            with contextlib.redirect_stdout(log):
                result = run(
                    list(defs.assets),
                    resources=defs.resources,
                    selection=selection,
                    tags=tags,
                    run_config=quiet,
                    raise_on_error=False,
                )
            build.seconds[name] = time.monotonic() - started
            if not result.success:
                failed = [
                    line
                    for line in log.getvalue().splitlines()
                    if any(word in line for word in ("FAIL", "ERROR", "Error", "Failure"))
                ]
                detail = "\n".join(failed[-30:])
                reasons = "\n".join(failure_lines(result))
                raise AssertionError(f"{name} run failed:\n{reasons}\n{detail}")
    return build


# --- reading the facts back onto the World's vehicles -------------------------------------------


@dataclass(frozen=True)
class FactTrip:
    source: str
    vehicle: Vehicle
    vehicle_id: str
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    driving_s: float | None
    idle_s: float | None
    distance_km: float | None
    trip_id: str
    is_duplicate_of: str | None  # another source's copy of this trip, the one that counts


@dataclass(frozen=True)
class FactIdle:
    source: str
    vehicle: Vehicle
    started_at: datetime
    duration_s: float


@dataclass(frozen=True)
class FactFuel:
    source: str
    vehicle: Vehicle
    occurred_at: datetime
    event_type: str
    volume_l: float | None


@dataclass
class Facts:
    """The marts, each row tied to the World's vehicle through dim_vehicles' source identity."""

    dim_rows: list[tuple[str, str, str]]  # (vehicle_id, source, source_vehicle_id)
    trips: list[FactTrip]
    idle_periods: list[FactIdle]
    fuel_events: list[FactFuel]
    daily: list[dict[str, Any]]
    # Rows that name no known (vehicle_id, source) identity or have no timestamp.
    unplaced: list[tuple[str, str, str | None]]

    def trips_of(self, source: str) -> list[FactTrip]:
        return [t for t in self.trips if t.source == source]


def read_facts(con: duckdb.DuckDBPyConnection, world: World) -> Facts:
    """Timestamps come back in UTC and days are taken in Python, independently of the SQL."""
    con.execute("set TimeZone = 'UTC'")
    by_identity = identities(world)
    dim_rows: list[tuple[str, str, str]] = [
        (vid, src, svid)
        for vid, src, svid in con.execute(
            "select vehicle_id, source, source_vehicle_id from dim_vehicles"
        ).fetchall()
    ]
    vehicle_of = {(vid, src): by_identity.get((src, svid)) for vid, src, svid in dim_rows}
    facts = Facts(dim_rows, [], [], [], [], [])

    def placed(table: str, sql: str) -> Iterator[tuple[Vehicle, str, str, datetime, list[Any]]]:
        """(vehicle, source, vehicle_id, timestamp, other columns) of each placeable row."""
        for source, vehicle_id, at, *rest in con.execute(sql).fetchall():
            vehicle = vehicle_of.get((vehicle_id, source))
            if vehicle is None or at is None:
                facts.unplaced.append((table, source, vehicle_id))
            else:
                yield vehicle, source, vehicle_id, at.astimezone(UTC), rest

    for vehicle, source, vehicle_id, started, rest in placed(
        "fct_trips",
        "select source, vehicle_id, started_at, ended_at, duration_s, driving_s, idle_s, "
        "distance_km, trip_id, is_duplicate_of from fct_trips",
    ):
        ended, *figures = rest
        ended = ended.astimezone(UTC) if ended is not None else None
        facts.trips.append(FactTrip(source, vehicle, vehicle_id, started, ended, *figures))
    for vehicle, source, _, started, (duration,) in placed(
        "fct_idle_periods",
        "select source, vehicle_id, started_at, duration_s from fct_idle_periods",
    ):
        facts.idle_periods.append(FactIdle(source, vehicle, started, duration))
    for vehicle, source, _, occurred, (kind, volume) in placed(
        "fct_fuel_events",
        "select source, vehicle_id, occurred_at, event_type, volume_l from fct_fuel_events",
    ):
        facts.fuel_events.append(FactFuel(source, vehicle, occurred, kind, volume))
    cursor = con.execute(
        "select day, vehicle_id, trips, distance_km, driving_s, idle_s, refuels, refuel_l "
        "from fleet_daily"
    )
    columns = [d[0] for d in cursor.description]
    facts.daily = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    return facts


def seeded_identities() -> dict[tuple[str, str], str]:
    """The shipped vehicle_map seed: (source, source_vehicle_id) -> vehicle_id."""
    with (DBT_PROJECT_DIR / "seeds" / "vehicle_map.csv").open(newline="") as fh:
        return {(r["source"], r["source_vehicle_id"]): r["vehicle_id"] for r in csv.DictReader(fh)}


def by_vehicle_day(
    rows: Iterable[Any], when: Callable[[Any], datetime], value: Callable[[Any], float | None]
) -> dict[tuple[str, date], list[float | None]]:
    """Values grouped by (World vehicle_id, UTC day of `when`), the day taken here, not in SQL."""
    out: dict[tuple[str, date], list[float | None]] = defaultdict(list)
    for row in rows:
        out[(row.vehicle.vehicle_id, when(row).date())].append(value(row))
    return out
