"""Lands a simulated fleet into a raw lake through each source's own client, extract and writer.

The bench of the dbt build needs a year of raw data in minutes, with every Parquet file exactly
what the raw assets write. So the real clients talk to the simulators through an in-process
transport (the request goes to the server's `dispatch`, as its HTTP handler would send it:
no socket, no gzip, no rate-limit waits), and the real extract and landing functions write
the lake: AVL `extract_trips`, Metrotec `extract_range`, kt1 `drain_stream`, AutoPi
`land_export` (the backfill types AutoPi exports in one pass, checked file for file against
`land_export` first). Left out: Dagster, and fsync, since durability is the landing's cost
and the figures here are the build's.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
from _in_process import close_unserved, connected, skip_fsync

from pipelines.lake import Lake
from pipelines.simulator.autopi import AutoPiServer
from pipelines.simulator.avl import AvlServer
from pipelines.simulator.clock import ManualClock
from pipelines.simulator.httpd import SimServer
from pipelines.simulator.kt1 import Kt1Server
from pipelines.simulator.metrotec import BASE_PATH, MetrotecServer
from pipelines.simulator.world import World
from pipelines.sources.autopi.landing import ensure_schema_files, land_export
from pipelines.sources.autopi.schemas import DATAPOINTS_SCHEMA, DECLARED, F64, LOC, TS
from pipelines.sources.autopi.schemas import TRIPS_SCHEMA as AUTOPI_TRIPS_SCHEMA
from pipelines.sources.autopi.trip import parse_trip
from pipelines.sources.avl.client import AvlClient
from pipelines.sources.avl.extract import extract_trips
from pipelines.sources.kt1.client import Kt1Client
from pipelines.sources.kt1.drain import drain_stream
from pipelines.sources.metrotec.client import MAX_WINDOW_DAYS, MetrotecClient
from pipelines.sources.metrotec.extract import extract_range
from pipelines.sources.metrotec.rows import quarantine_table, type_vehicles
from pipelines.sources.metrotec.specs import SOURCE as METROTEC
from pipelines.sources.metrotec.specs import TABLES as METROTEC_TABLES

RUN_AT = dtime(4, 0)
"""When the daily landings run (UTC): after AVL's 03:15 and Metrotec's 03:45 schedules."""
KT1_EMPTY_POLL_S = 0.2
"""Server long poll and client expectation when the stream is empty (the real API: 45 s)."""
AUTOPI_VERIFY_TRIPS = 12
"""Exports landed both ways before a backfill, to prove the one-pass writer equals land_export."""


@dataclass(frozen=True)
class Sampling:
    """How densely the two high-volume feeds sample a trip (the simulators' knobs)."""

    autopi_s: float  # AutoPi datapoint interval (the simulator's default is 5 s)
    kt1_s: float  # kt1 telemetry interval while driving (the simulator's default is 30 s)


@dataclass(frozen=True)
class FleetSpec:
    """One bench size: the lake holds `days` days; the world runs one day further (the day the
    landing runs on), as the daily schedules see it."""

    seed: int
    vehicles: int
    days: int
    update_day: date
    sampling: Sampling

    def world(self) -> World:
        return World(self.seed, self.vehicles, end_day=self.update_day, days=self.days + 1)

    def as_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), default=str, sort_keys=True)


@dataclass
class Fleet:
    """The world of one bench size: the `days` it lands, then `update_day`, not landed."""

    world: World
    sampling: Sampling
    days: list[date] = field(init=False)
    update_day: date = field(init=False)

    def __post_init__(self) -> None:
        *self.days, self.update_day = self.world.day_range()

    def run_at(self, day: date) -> datetime:
        """The simulated time of the daily landing that follows `day`."""
        return datetime.combine(day + timedelta(days=1), RUN_AT, UTC)


class Simulators:
    """The four simulated APIs over one fleet, on one clock the bench moves from run to run.

    Created before the landing workers fork, so they share the generated world, the AutoPi
    export catalogue and Metrotec's per-vehicle timelines instead of each rebuilding them.
    """

    def __init__(self, fleet: Fleet) -> None:
        world = fleet.world
        self.fleet = fleet
        self.clock = ManualClock(fleet.run_at(fleet.days[-1]))
        self.avl = AvlServer(world, rate_limit=(1 << 30, 1.0), clock=self.clock)
        self.metrotec = MetrotecServer(world, clock=self.clock)
        self.autopi = AutoPiServer(
            world, clock=self.clock, sample_interval_s=fleet.sampling.autopi_s, webhook_poll_s=0
        )
        self._kt1: Kt1Server | None = None

    def kt1(self) -> Kt1Server:
        """The kt1 stream, built on first use (it queues every item of the world)."""
        if self._kt1 is None:
            self._kt1 = Kt1Server(
                self.fleet.world,
                clock=self.clock,
                long_poll_s=KT1_EMPTY_POLL_S,
                telemetry_interval_s=self.fleet.sampling.kt1_s,
            )
        return self._kt1

    def warm_metrotec(self) -> None:
        """Have Metrotec build every vehicle's timeline and fuel log now (one tiny request each)."""
        client = self.metrotec_client()
        at = self.clock.now - timedelta(days=1)
        with connected(client, self.metrotec):
            for vehicle_id in [row["id"] for row in client.vehicles()]:
                client.fuel_levels(vehicle_id, at, at + timedelta(seconds=1))

    def metrotec_client(self) -> MetrotecClient:
        return MetrotecClient(
            f"http://metrotec.sim{BASE_PATH}",
            username=self.metrotec.username,
            password=self.metrotec.password,
            api_version=self.metrotec.api_version,
            user_agent="fleet-pipelines-bench",
        )

    def close(self) -> None:
        servers: list[SimServer] = [self.avl, self.metrotec, self.autopi]
        for server in [*servers, *([self._kt1] if self._kt1 else [])]:
            close_unserved(server)


# --- one source each ----------------------------------------------------------------------


def land_avl(lake: Lake, sims: Simulators, days: list[date]) -> None:
    """`raw/avl/trips` for `days`, as the asset's run does (windows landed per UTC day)."""
    server = sims.avl
    client = AvlClient(
        "http://avl.sim",
        token=server.token,
        api_key=server.api_key,
        tenant=server.tenant,
        limiter=None,
    )

    def land(window_days: list[date], table: pa.Table) -> tuple[int, int]:
        written = lake.replace_partitions("avl", "trips", window_days, table)
        return len(written), sum(w.bytes for w in written.values())

    with connected(client, server):
        extract_trips(client, days, tz=ZoneInfo(server.timezone), land=land)


def land_metrotec(lake: Lake, sims: Simulators, days: list[date]) -> None:
    """The vehicle snapshot of the fetch day, then the four per-vehicle tables for `days`."""
    client = sims.metrotec_client()
    now = sims.clock.now
    fetched_on = now.date()

    def land(table: str, window_days: list[date], data: pa.Table) -> tuple[int, int]:
        written = lake.replace_partitions(METROTEC, table, window_days, data)
        return len(written), sum(w.bytes for w in written.values())

    def quarantine(table: str, by_day: dict[date, pa.Table]) -> None:
        for day, rows in by_day.items():
            lake.write_quarantine(METROTEC, day, table, rows)

    with connected(client, sims.metrotec):
        typed = type_vehicles(client.vehicles(), now)
        if typed.quarantined:
            lake.write_quarantine(
                METROTEC, fetched_on, "vehicles", quarantine_table(typed.quarantined, now)
            )
        lake.replace_partition(METROTEC, "vehicles", fetched_on, typed.table)
        extract_range(
            client,
            typed.table.column("id").to_pylist(),
            days,
            tables=METROTEC_TABLES,
            land=land,
            quarantine=quarantine,
            window_days=MAX_WINDOW_DAYS,
        )


def drain_kt1(lake: Lake, sims: Simulators) -> None:
    """Drain what the stream queued by now (the asset's `drain_stream`, default grouping)."""
    server = sims.kt1()
    client = Kt1Client("http://kt1.sim", token=server.token, long_poll_s=KT1_EMPTY_POLL_S)
    with connected(client, server):
        drain_stream(client, lake, budget_s=24 * 3600.0)


def autopi_exports(sims: Simulators, ready_after: datetime, ready_by: datetime) -> list[str]:
    """Trip ids whose export became ready in (ready_after, ready_by]: what one drain lands."""
    world = sims.fleet.world
    out = []
    for trip in world.trips(vehicle_indexes=[v.index for v in world.vehicles_of("autopi")]):
        ready = sims.autopi.task_for_trip(trip.trip_id).versions[-1].ready_at
        if ready_after < ready <= ready_by:
            out.append(trip.trip_id)
    return out


def _export(server: AutoPiServer, trip_id: str) -> tuple[int, bytes]:
    """(task id, TRIP_ID.json.gz) of the trip's newest export."""
    task = server.task_for_trip(trip_id)
    return task.task_id, server.export_bytes(task, len(task.versions) - 1)


def land_autopi(lake: Lake, server: AutoPiServer, trip_ids: list[str]) -> None:
    """Each export as the drain lands it: downloaded to a file, then `land_export`."""
    with tempfile.TemporaryDirectory(prefix="facts-autopi-") as scratch:
        path = Path(scratch) / "export.json.gz"
        for trip_id in trip_ids:
            task_id, data = _export(server, trip_id)
            path.write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            land_export(lake, path, task_id=task_id, trip_id=trip_id, sha256=digest)
    ensure_schema_files(lake)


def _datapoint(point: dict[str, Any]) -> dict[str, Any]:
    """One export line as its DATAPOINTS_SCHEMA row (the simulator sends declared keys only)."""
    row: dict[str, Any] = {}
    for key, value in point.items():
        if key == LOC:
            row[f"{LOC}.lat"], row[f"{LOC}.lon"] = float(value["lat"]), float(value["lon"])
            continue
        kind = DECLARED[key]
        if kind == TS:
            row[key] = datetime.fromisoformat(value)
        elif kind == F64:
            row[key] = float(value)
        else:
            row[key] = value
    return row


def land_autopi_backfill(lake: Lake, server: AutoPiServer, trip_ids: list[str]) -> None:
    """`land_export`'s two files per trip, typed in one pass instead of its streaming pipeline.

    A year of a fleet is ~80,000 exports; the drain's per-export threads and scratch files cost
    more than the rows. `verify_autopi_backfill` proves the files equal `land_export`'s.
    """
    strings = [f.name for f in DATAPOINTS_SCHEMA if pa.types.is_string(f.type)]
    for trip_id in trip_ids:
        task_id, data = _export(server, trip_id)
        first, *lines = gzip.decompress(data).splitlines()
        trip = parse_trip(first, trip_id)
        rows = [
            {"trip_id": trip_id, "line_no": n, **_datapoint(json.loads(line))}
            for n, line in enumerate(lines, start=2)
        ]
        stream = lake.open_stream(
            "autopi", "datapoints", trip.day, trip_id, DATAPOINTS_SCHEMA, use_dictionary=strings
        )
        stream.write(pa.Table.from_pylist(rows, schema=DATAPOINTS_SCHEMA))
        stream.commit()
        row = {
            **trip.row,
            "task_id": task_id,
            "export_sha256": hashlib.sha256(data).hexdigest(),
            "export_bytes": len(data),
            "datapoints": len(rows),
            "malformed_lines": 0,
            "undeclared_keys": None,
            "landed_at": datetime.now(UTC),
        }
        table = pa.Table.from_pylist([row], schema=AUTOPI_TRIPS_SCHEMA)
        lake.write_file("autopi", "trips", trip.day, trip_id, table)
    ensure_schema_files(lake)


def verify_autopi_backfill(server: AutoPiServer, trip_ids: list[str]) -> None:
    """Land `trip_ids` both ways into scratch lakes; raise unless every file reads back equal
    (schema and rows; `landed_at` aside)."""
    with tempfile.TemporaryDirectory(prefix="facts-verify-") as scratch:
        real, fast = Lake(Path(scratch) / "real"), Lake(Path(scratch) / "fast")
        land_autopi(real, server, trip_ids)
        land_autopi_backfill(fast, server, trip_ids)
        for table in ("trips", "datapoints"):
            real_files = [p.relative_to(real.root) for p in real.files("autopi", table)]
            fast_files = [p.relative_to(fast.root) for p in fast.files("autopi", table)]
            if real_files != fast_files:
                raise AssertionError(f"autopi/{table}: files differ from land_export's")
            for name in real_files:
                a, b = pq.read_table(real.root / name), pq.read_table(fast.root / name)
                if table == "trips":
                    a, b = a.drop_columns(["landed_at"]), b.drop_columns(["landed_at"])
                if not (a.schema.equals(b.schema, check_metadata=True) and a.equals(b)):
                    raise AssertionError(f"{name}: differs from what land_export writes")


# --- the initial landing, on both cores ----------------------------------------------------

Job = tuple[str, list[Any]]  # (source, its days or AutoPi trip ids)

_SIMS: Simulators | None = None  # set before the pool forks; workers inherit it
_LAKE: Lake | None = None


def _run_job(job: Job) -> tuple[str, float]:
    """One slice of the initial landing, in a forked worker: (source, seconds)."""
    assert _SIMS is not None and _LAKE is not None, "set before the pool forks"
    source, items = job
    started = time.perf_counter()
    if source == "avl":
        land_avl(_LAKE, _SIMS, items)
    elif source == "metrotec":
        land_metrotec(_LAKE, _SIMS, items)
    else:
        land_autopi_backfill(_LAKE, _SIMS.autopi, items)
    return source, time.perf_counter() - started


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[k : k + size] for k in range(0, len(items), size)]


def land_initial(sims: Simulators, lake: Lake, workers: int = 2) -> dict[str, float]:
    """Every source as of the run after the fleet's first `days`: AVL, Metrotec and AutoPi
    slices in `workers` forked processes, the kt1 drain here beside them. Returns the seconds
    each source's landing took, summed over its slices (warming Metrotec counts as Metrotec).
    """
    global _SIMS, _LAKE
    fleet = sims.fleet
    first = datetime.combine(fleet.days[0], dtime.min, UTC)
    trip_ids = autopi_exports(sims, first - timedelta(days=1), sims.clock.now)
    verify_autopi_backfill(sims.autopi, trip_ids[:AUTOPI_VERIFY_TRIPS])
    started = time.perf_counter()
    sims.warm_metrotec()
    seconds = {"metrotec": time.perf_counter() - started}
    # Metrotec and AVL replace whole day partitions: their slices are disjoint day ranges.
    jobs: list[Job] = [("autopi", ids) for ids in _chunks(trip_ids, len(trip_ids) // 16 + 1)]
    for days in _chunks(fleet.days, MAX_WINDOW_DAYS):
        jobs += [("metrotec", days), ("avl", days)]
    _SIMS, _LAKE = sims, lake
    try:
        with mp.get_context("fork").Pool(workers) as pool:
            pending = pool.imap_unordered(_run_job, jobs)
            started = time.perf_counter()
            drain_kt1(lake, sims)
            seconds["kt1"] = time.perf_counter() - started
            for source, spent in pending:
                seconds[source] = seconds.get(source, 0.0) + spent
    finally:
        _SIMS = _LAKE = None
    return seconds


# --- the lake of one size, and a day of it re-landed ----------------------------------------

LANDED = ".landed.json"
"""Written into the lake once it is complete: the spec it was landed for."""


@dataclass
class Landing:
    """What landing one size's lake took (seconds per source); empty when an earlier run's lake
    was reused."""

    trips: int
    world_s: float
    initial: dict[str, float]
    initial_s: float


def land_lakes(spec: FleetSpec, initial: Path) -> Landing:
    """The lake of `spec`'s first `days` days, unless `initial` already holds one landed for it.

    Run it in a child process (`in_child`): the world and simulators take gigabytes that must
    not stay resident beside DuckDB during the builds.
    """
    marker = initial / LANDED
    if marker.exists() and marker.read_text() == spec.as_json():
        return Landing(0, 0.0, {}, 0.0)
    skip_fsync()
    started = time.perf_counter()
    world = spec.world()
    world.trips()
    world.refuels()  # the per-vehicle odometer/fuel pass, shared by the forked landers
    fleet = Fleet(world, spec.sampling)
    world_s = time.perf_counter() - started
    sims = Simulators(fleet)
    try:
        started = time.perf_counter()
        shutil.rmtree(initial, ignore_errors=True)
        seconds = land_initial(sims, Lake(initial))
        marker.write_text(spec.as_json())
    finally:
        sims.close()
    return Landing(len(world.trips()), world_s, seconds, time.perf_counter() - started)


@dataclass(frozen=True)
class Relanded:
    """A day of the lake re-landed: its files rewritten, one AVL trip's `kms` changed."""

    day: date
    files: int
    device_name: str
    trip_start: datetime
    kms: float  # the new value


def reland_day(initial: Path, changed: Path, day: date) -> Relanded:
    """`changed`: a hard-linked copy of `initial` whose `day` folders (every raw table) hold
    new files, as a re-landing writes them (same names, a temp file renamed over each, so new
    modification times), equal to the old but for one AVL trip, whose `kms` grows by 1.5.
    Renames break the hard links: `initial` stays as it was."""
    shutil.rmtree(changed, ignore_errors=True)
    shutil.copytree(initial, changed, copy_function=os.link, ignore=shutil.ignore_patterns(LANDED))
    files = sorted(changed.glob(f"*/*/day={day.isoformat()}/*.parquet"))
    trip: tuple[str, datetime, float] | None = None
    for path in files:
        table = pq.read_table(path)
        if path.parent.parent.name == "trips" and path.parent.parent.parent.name == "avl":
            rows = table.to_pylist()
            first = min(
                range(len(rows)), key=lambda i: (rows[i]["device_name"], rows[i]["trip_start"])
            )
            rows[first]["kms"] = (rows[first]["kms"] or 0.0) + 1.5
            trip = (rows[first]["device_name"], rows[first]["trip_start"], rows[first]["kms"])
            table = pa.Table.from_pylist(rows, schema=table.schema)
        staged = path.with_name(path.name + ".tmp")
        pq.write_table(table, staged)
        staged.replace(path)
    if trip is None:
        raise RuntimeError(f"no AVL trips landed on {day}: choose another day")
    return Relanded(day, len(files), *trip)


def in_child(work: Callable[..., Any], *args: Any) -> Any:
    """`work(*args)` in a forked process; its result (or its traceback, raised here)."""
    context = mp.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def run() -> None:
        try:
            send.send((True, work(*args)))
        except BaseException:
            send.send((False, traceback.format_exc()))

    child = context.Process(target=run, name="facts-landing")
    child.start()
    ok, value = receive.recv()
    child.join()
    if not ok:
        raise RuntimeError(f"landing failed in the child process:\n{value}")
    return value
