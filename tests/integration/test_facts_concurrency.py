"""Analysts and builds share the facts' DuckLake catalog: real processes on real files.

A small AVL lake (4 vehicles) is landed from the simulator: days A, then days B. The facts of
A are built once and saved; each scenario restores them (at the same path: the catalog records
its data path), lands B (copies of the same landed files, so every scenario and the reference
see identical raw data) and runs builds with `dagster asset materialize` in processes of their
own, beside analysts' processes that query `pipelines.facts.connect(read_only=True)` and
`fleet sql`. Nothing is mocked. The reference is a build from scratch of A+B into a catalog
of its own; "old" means the facts of A, "new" those of A+B.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from dagster import AssetKey, AssetSelection, materialize

from pipelines.facts import BUILD_MESSAGE, FactsCatalog
from pipelines.simulator.avl import AvlServer
from pipelines.simulator.avl import env as avl_env
from pipelines.simulator.world import World
from tests.conftest import SIM_NOW, WORLD_END, facts_connect, facts_env
from tests.support.polling import wait_for

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
FIRST_A, LAST_A = date(2026, 3, 10), date(2026, 3, 12)
FIRST_B, LAST_B = date(2026, 3, 13), date(2026, 3, 14)
MARTS = ["fct_trips", "fct_fuel_events", "fct_idle_periods", "dim_vehicles", "fleet_daily"]
# What the facts automation builds after AVL trips land: their staging model and everything
# downstream of it (every mart), with the dbt tests of those models.
AFTER_AVL = "key:stg_avl__trips+"
MATERIALIZE = ["asset", "materialize", "-m", "pipelines.definitions"]
BUILD_TIMEOUT_S = 900.0
WAITED_LINE = re.compile(r"waited \d+s for another build of the facts")
# dbt's line (and Dagster's event) once the build has committed its new fct_trips.
FCT_TRIPS_BUILT = re.compile(
    r"OK created sql table model main\.fct_trips |Materialized value fct_trips\."
)
_OURS = ("AVL_", "AUTOPI_", "KT1_", "METROTEC_", "FLEET_", "DAGSTER_HOME")


# An analyst's process: asks the two questions again and again until told to stop, one JSON
# line per answer. `held`: one connection for the whole run; `fresh`: a new one per answer.
READER = """
import json, sys, time
from pathlib import Path
from pipelines.facts import connect

mode, out, stop = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
held = connect(read_only=True) if mode == "held" else None
with out.open("a") as log:
    while not stop.exists():
        t0 = time.time()
        con = held
        try:
            con = con or connect(read_only=True)
            trips = con.execute("select count(*) from fct_trips").fetchone()[0]
            daily = con.execute("select sum(trips) from fleet_daily").fetchone()[0]
            answer = {"trips": trips, "daily": daily}
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            if con is not None and con is not held:
                con.close()
        log.write(json.dumps({"t0": t0, "t1": time.time(), **answer}) + "\\n")
        log.flush()
        time.sleep(0.05)
"""


@dataclass(frozen=True)
class Facts:
    """Every row of each mart (sorted) and the two counts analysts ask for."""

    rows: dict[str, list[tuple[Any, ...]]]
    counts: tuple[int, int]  # count(*) of fct_trips, sum(trips) of fleet_daily


def read_facts(catalog_path: Path) -> Facts:
    with facts_connect(catalog_path) as con:
        rows = {
            mart: con.execute(f"select * from {mart} order by all").fetchall() for mart in MARTS
        }
        trips, daily = con.execute(
            "select (select count(*) from fct_trips), (select sum(trips) from fleet_daily)"
        ).fetchone()
    return Facts(rows, (int(trips), int(daily)))


def differences(actual: Facts, expected: Facts) -> dict[str, str]:
    """Per mart whose rows differ as multisets (EXCEPT ALL both ways): how many each way."""
    found = {}
    for mart in MARTS:
        mine, theirs = Counter(actual.rows[mart]), Counter(expected.rows[mart])
        extra, missing = mine - theirs, theirs - mine
        if extra or missing:
            found[mart] = f"{extra.total()} rows not in the reference, {missing.total()} missing"
    return found


@dataclass(frozen=True)
class Snapshot:
    id: int
    at: float  # epoch seconds
    message: str | None
    changes: dict[str, list[str]]


def snapshots(catalog_path: Path) -> list[Snapshot]:
    """Every commit of the catalog, the newest included (as `latest=True` sees it)."""
    with facts_connect(catalog_path, latest=True) as con:
        rows = con.execute(
            "select snapshot_id, epoch(snapshot_time), commit_message, changes "
            "from facts.snapshots() order by snapshot_id"
        ).fetchall()
    return [Snapshot(int(i), float(at), msg, dict(ch or {})) for i, at, msg, ch in rows]


def markers(history: list[Snapshot]) -> list[Snapshot]:
    return [s for s in history if s.message == BUILD_MESSAGE]


def build_starts(catalog_path: Path, history: list[Snapshot]) -> list[Snapshot]:
    """Each build's first commit: a build after AVL trips land starts with stg_avl__trips,
    replacing its days (a delete and an insert in one commit)."""
    with facts_connect(catalog_path, latest=True) as con:
        (table_id,) = con.execute(
            "select table_id from __ducklake_metadata_facts.ducklake_table "
            "where table_name = 'stg_avl__trips' and end_snapshot is null"
        ).fetchone()
    return [s for s in history if str(table_id) in s.changes.get("tables_deleted_from", [])]


@contextlib.contextmanager
def environment(values: dict[str, str], cwd: Path) -> Iterator[None]:
    """Run in-process Dagster in `cwd` with exactly the variables `values` adds to a clean
    environment; everything is put back after (the dbt asset sets variables of its own)."""
    saved, here = dict(os.environ), Path.cwd()
    os.environ.clear()
    os.environ.update({k: v for k, v in saved.items() if not k.startswith(_OURS)} | values)
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(saved)


def full_build_in_process() -> None:
    """Every dbt model, from whatever the catalog holds (nothing: from scratch). dbt tests are
    left out: they check the models' SQL, not what the build leaves behind."""
    from pipelines.definitions import build_defs

    defs = build_defs()
    selection = AssetSelection.from_string("kind:dbt").without_checks()
    days = {
        "dagster/asset_partition_range_start": FIRST_A.isoformat(),
        "dagster/asset_partition_range_end": LAST_B.isoformat(),
    }
    assert materialize(
        list(defs.assets), resources=defs.resources, selection=selection, tags=days
    ).success


@dataclass
class Lab:
    root: Path
    reference: Facts  # a build from scratch of A+B
    base: Facts  # the build of A every scenario starts from
    base_marker: int  # its marker commit
    builds: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def catalog(self) -> Path:
        return self.work / "fleet_catalog.sqlite"

    def reset(self) -> Path:
        """The catalog and lake as the build of A left them."""
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.copytree(self.root / "base", self.work)  # copy2: the files' mtimes too
        return self.work

    def land_b(self) -> None:
        """Days B land in the lake (the files landed for the reference, mtimes and all)."""
        for day in _days(FIRST_B, LAST_B):
            source = self.root / "ref" / "lake" / "avl" / "trips" / f"day={day}"
            shutil.copytree(source, self.work / "lake" / "avl" / "trips" / f"day={day}")

    def env(self) -> dict[str, str]:
        """What a process on the work catalog gets: no Dagster home (each run's instance is
        its own, so only the catalog's OS lock keeps builds apart) and no source settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
        return env | paths_env(self.work, self.root)

    def start_build(self, log: Path, selection: str = AFTER_AVL) -> subprocess.Popen[bytes]:
        """`dagster asset materialize` in its own process group, as an operator starts one."""
        with log.open("wb") as out:
            build = subprocess.Popen(
                [
                    str(BIN / "dagster"),
                    *MATERIALIZE,
                    "--select",
                    selection,
                    "--partition-range",  # the fact days: every day of A and B
                    f"{FIRST_A}...{LAST_B}",
                ],
                cwd=self.work,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.builds.append(build)
        return build

    def kill_leftovers(self) -> None:
        """SIGKILL the process group of every build still running (a test failed)."""
        for build in self.builds:
            if build.poll() is None:
                os.killpg(build.pid, signal.SIGKILL)
                build.wait()
        self.builds.clear()


def paths_env(folder: Path, root: Path) -> dict[str, str]:
    return {
        "FLEET_LAKE_DIR": str(folder / "lake"),
        **facts_env(folder / "fleet_catalog.sqlite"),
        "FLEET_STATE_URL": f"sqlite:///{root / 'state.sqlite3'}",
        "FLEET_START_DATE": "2025-12-01",
    }


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def finish(build: subprocess.Popen[bytes], log: Path) -> str:
    """Wait for a build process; its output, asserting it succeeded."""
    try:
        build.wait(timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(build.pid, signal.SIGKILL)
        build.wait()
    text = log.read_text(errors="replace")
    assert build.returncode == 0, f"build failed ({build.returncode}):\n{text[-4000:]}"
    return text


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """Days A and B landed from the simulator; the reference (A+B built from scratch) and the
    saved build of A."""
    root = tmp_path_factory.mktemp("facts-concurrency")
    ref, work = root / "ref", root / "work"
    world = World(seed=11, vehicles=4, end_day=WORLD_END, days=31)
    server = AvlServer(world, rate_limit=(10, 1.0), clock=lambda: SIM_NOW).start()
    try:
        with environment({**avl_env(server), **paths_env(ref, root)}, root):
            from pipelines.definitions import build_defs

            defs = build_defs()
            landed = materialize(
                list(defs.assets),
                resources=defs.resources,
                selection=[AssetKey(["raw", "avl", "trips"])],
                tags={
                    "dagster/asset_partition_range_start": FIRST_A.isoformat(),
                    "dagster/asset_partition_range_end": LAST_B.isoformat(),
                },
            )
            assert landed.success
            full_build_in_process()
    finally:
        server.stop()
    b_days = {f"day={day}" for day in _days(FIRST_B, LAST_B)}
    shutil.copytree(
        ref / "lake", work / "lake", ignore=lambda _, names: [n for n in names if n in b_days]
    )
    with environment(paths_env(work, root), root):
        full_build_in_process()
    shutil.copytree(work, root / "base")
    reference, base = (
        read_facts(ref / "fleet_catalog.sqlite"),
        read_facts(work / "fleet_catalog.sqlite"),
    )
    assert base.counts[0] == base.counts[1] > 0  # AVL alone: each trip is one of fleet_daily's
    assert reference.counts[0] == reference.counts[1] > base.counts[0]  # days B add trips
    return Lab(root, reference, base, markers(snapshots(work / "fleet_catalog.sqlite"))[-1].id)


@pytest.fixture(autouse=True)
def no_build_left_running(lab: Lab) -> Iterator[None]:
    yield
    lab.kill_leftovers()


# --- a build with analysts querying throughout --------------------------------------------


@dataclass(frozen=True)
class Answer:
    t0: float
    t1: float
    counts: tuple[int, int] | None
    error: str | None = None


@dataclass(frozen=True)
class SqlRun:
    t0: float
    t1: float
    returncode: int
    output: str

    def numbers(self) -> set[int]:
        """The figures of the table `fleet sql` printed (a line holding only a number)."""
        return {int(n) for n in re.findall(r"^\W*(\d+)\W*$", self.output, re.MULTILINE)}


@dataclass(frozen=True)
class UnderReaders:
    build_log: str
    build_ended: float
    readers: dict[str, list[Answer]]
    sql_runs: list[SqlRun]
    mid_build: tuple[float, float]  # from the build's 2nd commit to its marker's commit
    facts: Facts


def fleet_sql(lab: Lab, query: str) -> SqlRun:
    t0 = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "sql", query],
        cwd=lab.work,
        env=lab.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return SqlRun(t0, time.time(), done.returncode, done.stdout + done.stderr)


def answers(path: Path) -> list[Answer]:
    found = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        counts = (row["trips"], row["daily"]) if "error" not in row else None
        found.append(Answer(row["t0"], row["t1"], counts, row.get("error")))
    return found


@pytest.fixture(scope="module")
def under_readers(lab: Lab) -> UnderReaders:
    """One build of days B while two analysts' processes query the facts (one connection
    held open throughout, one connecting anew for each answer) and `fleet sql` runs again
    and again; everything they saw, with when they saw it."""
    work = lab.reset()
    lab.land_b()
    stop = work / "readers.stop"
    outs = {mode: work / f"reader-{mode}.jsonl" for mode in ("held", "fresh")}
    readers = {}
    for mode, out in outs.items():
        with (work / f"reader-{mode}.err").open("wb") as err:
            readers[mode] = subprocess.Popen(
                [sys.executable, "-c", READER, mode, str(out), str(stop)],
                cwd=work,
                env=lab.env(),
                stderr=err,
            )
    try:
        for mode, out in outs.items():
            wait_for(
                f"the {mode} reader's first answer",
                lambda o=out: o.exists() and o.stat().st_size,
                120,
            )
        log = work / "build.log"
        build = lab.start_build(log)
        sql_runs = []
        while build.poll() is None:
            sql_runs.append(fleet_sql(lab, "select count(*) from fct_trips"))
        ended = time.time()
        build_log = finish(build, log)
        sql_runs.append(fleet_sql(lab, "select count(*) from fct_trips"))
        for mode, out in outs.items():
            wait_for(
                f"the {mode} reader's answer after the build",
                lambda o=out: any(a.t0 > ended for a in answers(o)),
                60,
            )
    finally:
        lab.kill_leftovers()
        stop.touch()
        for reader in readers.values():
            try:
                reader.wait(timeout=60)
            except subprocess.TimeoutExpired:
                reader.kill()
                reader.wait()
    for mode, reader in readers.items():
        err = (work / f"reader-{mode}.err").read_text()
        assert reader.returncode == 0, f"{mode} reader died: {err[-2000:]}"
    history = [s for s in snapshots(lab.catalog) if s.id > lab.base_marker]
    new_markers = markers(history)
    assert len(new_markers) == 1, f"expected one new complete build, found {new_markers}"
    assert history[1].id < new_markers[0].id
    return UnderReaders(
        build_log=build_log,
        build_ended=ended,
        readers={mode: answers(out) for mode, out in outs.items()},
        sql_runs=sql_runs,
        mid_build=(history[1].at, new_markers[0].at),
        facts=read_facts(lab.catalog),
    )


def check_answers(lab: Lab, run: UnderReaders, mode: str) -> list[Answer]:
    """Every answer of a reader is the old or the new facts, whole, and never the new facts
    before the build's marker commit; returns the answers given mid-build."""
    old, new = lab.base.counts, lab.reference.counts
    given = run.readers[mode]
    errors = [a.error for a in given if a.error]
    assert not errors, f"{len(errors)} of {len(given)} queries failed, e.g. {errors[0]}"
    wrong = [a.counts for a in given if a.counts not in (old, new)]
    assert not wrong, f"answers neither {old} (old) nor {new} (new): {sorted(set(wrong))}"
    start, marker = run.mid_build
    early = [a for a in given if a.t1 < marker and a.counts != old]
    assert not early, f"{len(early)} answers showed the new facts before the build completed"
    during = [a for a in given if a.t0 > start and a.t1 < marker]
    assert len(during) >= 3, f"only {len(during)} answers fell inside the build"
    return during


def test_a_build_beside_querying_analysts_succeeds_and_equals_a_full_rebuild(
    lab: Lab, under_readers: UnderReaders
) -> None:
    """Analysts querying the facts never hold a build back: the build run beside them
    succeeds, and leaves exactly the facts a build from scratch of the same lake gives."""
    assert not differences(under_readers.facts, lab.reference), differences(
        under_readers.facts, lab.reference
    )
    assert not WAITED_LINE.search(under_readers.build_log)


def test_a_connection_held_open_through_a_build_keeps_answering_from_one_complete_build(
    lab: Lab, under_readers: UnderReaders
) -> None:
    """An analyst's connection opened before a build and queried throughout it (and after)
    gets an answer every time, each from one complete build: the counts of fct_trips and of
    fleet_daily agree, never a model of the new build beside one of the old, never a missing
    or empty table."""
    check_answers(lab, under_readers, "held")


def test_a_new_connection_per_query_sees_the_previous_build_until_the_new_one_is_complete(
    lab: Lab, under_readers: UnderReaders
) -> None:
    """An analyst who connects anew for each query during a build gets the previous build's
    facts, whole, until the build is complete, and the new build's after it: never a mix,
    never back to the old once the new was seen."""
    check_answers(lab, under_readers, "fresh")
    given = under_readers.readers["fresh"]
    seen_new = [n for n, a in enumerate(given) if a.counts == lab.reference.counts]
    assert seen_new, "no fresh connection saw the new build"
    assert all(a.counts == lab.reference.counts for a in given[seen_new[0] :])
    after = [a for a in given if a.t0 > under_readers.build_ended]
    assert after and all(a.counts == lab.reference.counts for a in after)


def test_fleet_sql_answers_while_a_build_runs(lab: Lab, under_readers: UnderReaders) -> None:
    """`fleet sql "select count(*) from fct_trips"` run during a build exits 0 and prints the
    previous build's count (or, once the build is complete, the new one)."""
    runs = under_readers.sql_runs
    for run in runs:
        assert run.returncode == 0, run.output
        assert run.numbers() in ({lab.base.counts[0]}, {lab.reference.counts[0]}), run.output
    start, marker = under_readers.mid_build
    during = [r for r in runs if r.t0 > start and r.t1 < marker]
    assert during, f"no `fleet sql` ran inside the build ({len(runs)} runs)"
    assert all(r.numbers() == {lab.base.counts[0]} for r in during)
    assert runs[-1].numbers() == {lab.reference.counts[0]}  # after the build: the new count


# --- two builds at once -------------------------------------------------------------------


def test_two_builds_started_at_once_run_one_after_the_other_and_leave_correct_facts(
    lab: Lab,
) -> None:
    """Two builds launched at the same moment (two processes, as two operators or a schedule
    and an operator would) both succeed: one waits for the other's lock and says so, their
    commits do not interleave, and the facts equal a build from scratch of the same lake."""
    work = lab.reset()
    lab.land_b()
    logs = [work / f"build-{n}.log" for n in (1, 2)]
    builds = [lab.start_build(log) for log in logs]
    outputs = [finish(build, log) for build, log in zip(builds, logs, strict=True)]
    waited = [n for n, text in enumerate(outputs) if WAITED_LINE.search(text)]
    assert len(waited) == 1, f"expected one build to wait for the other, found {waited}"
    history = [s for s in snapshots(lab.catalog) if s.id > lab.base_marker]
    ends = [s.id for s in markers(history)]
    starts = [s.id for s in build_starts(lab.catalog, history)]
    assert len(ends) == len(starts) == 2, (starts, ends)
    assert starts[0] < ends[0] < starts[1] < ends[1], "the two builds' commits interleaved"
    assert not differences(read_facts(lab.catalog), lab.reference)


# --- a build killed mid-way ----------------------------------------------------------------


def process_group_alive(pgid: int) -> bool:
    """Any process of the group still running (a killed one's zombie aside)?"""
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
    return False


def test_a_build_killed_mid_way_leaves_readers_the_previous_build_and_the_next_build_repairs(
    lab: Lab,
) -> None:
    """A build SIGKILLed after it committed part of its models (the new fct_trips, say):
    analysts keep seeing exactly the previous build's facts, the lock is free at once, and
    the next build completes with exactly the facts of a build from scratch of the lake."""
    work = lab.reset()
    lab.land_b()
    log = work / "killed.log"
    build = lab.start_build(log)
    wait_for(
        "the build to commit its new fct_trips",
        lambda: build.poll() is not None or FCT_TRIPS_BUILT.search(log.read_text(errors="replace")),
        BUILD_TIMEOUT_S,
        poll_s=0.05,
    )
    assert build.poll() is None, f"the build ended ({build.returncode}) before it was killed"
    os.killpg(build.pid, signal.SIGKILL)
    build.wait()
    assert build.returncode == -signal.SIGKILL, log.read_text(errors="replace")[-4000:]
    wait_for(
        "every process of the build to be gone", lambda: not process_group_alive(build.pid), 30
    )
    history = [s for s in snapshots(lab.catalog) if s.id > lab.base_marker]
    assert not markers(history), "the build completed before it was killed"
    with facts_connect(lab.catalog, latest=True) as con:
        (trips,) = con.execute("select count(*) from fct_trips").fetchone()
    assert trips == lab.reference.counts[0]  # the catalog's newest commit holds new models ...
    assert not differences(read_facts(lab.catalog), lab.base)  # ... readers see the old build
    catalog = FactsCatalog.of(f"sqlite:{lab.catalog}", str(work / "facts"))
    with catalog.build_lock(wait_s=0):  # the kernel dropped the killed build's lock
        pass

    log = work / "next.log"
    finish(lab.start_build(log), log)
    history = [s for s in snapshots(lab.catalog) if s.id > lab.base_marker]
    assert len(markers(history)) == 1
    assert not differences(read_facts(lab.catalog), lab.reference)
