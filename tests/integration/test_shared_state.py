"""State shared beyond one machine, on a real Postgres server (FLEET_STATE_URL=postgresql://...):
the rate-limit ledger across processes, the single-drain lease, the AutoPi ledger, and what the
state's URL never shows. Each process opens its own connection, as on separate machines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pipelines.lake import Lake
from pipelines.simulator.avl import AvlServer
from pipelines.simulator.avl import env as avl_env
from pipelines.sources.autopi.state import ExportLedger
from pipelines.sources.kt1.drain import DrainBusy, drain_lock
from pipelines.state import Lease, StateStore, redact
from pipelines.state import shared as shared_state
from tests.conftest import SIM_NOW
from tests.support.rate_limits import max_in_any_window

REPO = Path(__file__).resolve().parents[2]
N, WINDOW = 4, 2.0

CALLER = textwrap.dedent(
    """
    import json, sys, time
    from datetime import datetime, timedelta
    from pathlib import Path
    from pipelines.sources.avl.resources import AvlResource
    count, out, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    # The configuration path of a real run: FLEET_STATE_URL -> the AVL resource's limiter.
    resource = AvlResource.from_env().process_config_and_initialize()
    client = resource.client("raw/avl/trips")
    Path(out + ".ready").touch()
    while not Path(go).exists():
        time.sleep(0.005)
    start = datetime(2026, 3, 1)
    for i in range(count):
        day = start + timedelta(days=i)
        client.trips_page(startdate=day, enddate=day + timedelta(hours=23, minutes=59))
    Path(out).write_text(json.dumps(client.stats.as_metadata()))
    """
)


@pytest.fixture
def state_url(postgres_server, request) -> str:
    """A fresh Postgres database for this test's shared state."""
    name = "state_" + request.node.name.lower().replace("[", "_").replace("]", "")[:40]
    postgres_server.execute(f'drop database if exists "{name}"')
    return postgres_server.url(postgres_server.create_database(name))


def test_three_processes_on_the_postgres_limiter_never_exceed_the_window_under_latency(
    world, fleet_env, state_url, monkeypatch
) -> None:
    server = AvlServer(world, rate_limit=(N, WINDOW), clock=lambda: SIM_NOW).start()
    try:
        server.faults.update(latency_min_s=0.05, latency_max_s=0.3, seed=7)
        env = {**os.environ, **avl_env(server), "FLEET_STATE_URL": state_url}
        go = fleet_env.lake_dir.parent / "go"
        outs = [fleet_env.lake_dir.parent / f"caller{i}.json" for i in range(3)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CALLER, "4", str(out), str(go)], env=env, cwd=REPO
            )
            for out in outs
        ]
        deadline = time.monotonic() + 90
        while not all(Path(f"{out}.ready").exists() for out in outs):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.02)
        started = time.monotonic()
        go.touch()
        for p in procs:
            assert p.wait(timeout=120) == 0
        wall = time.monotonic() - started
        stats = [json.loads(out.read_text()) for out in outs]
        arrivals = [r.at for r in server.log if r.path.endswith("/trips")]
    finally:
        server.stop()
    assert server.rate_limited == 0  # the simulator refused nothing: no 429
    assert sum(s["api_requests"] for s in stats) == 12 == len(arrivals)
    assert sum(s["http_429s"] for s in stats) == 0
    assert max_in_any_window(arrivals, WINDOW) <= N
    # 12 requests at 4 per 2 s need two full windows after the first burst, plus latency.
    assert wall >= 2 * WINDOW
    # The limiter's ledger is in Postgres, not in the lake or a local file.
    store = StateStore(state_url)
    with store.transaction("look") as tx:
        assert tx.execute("select count(*) from rate_slots").fetchone()[0] >= 1
    store.close()


KT1_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pipelines.lake import Lake
    from pipelines.sources.kt1.drain import drain_lock
    lake, marks = sys.argv[1], Path(sys.argv[2])
    with drain_lock(Lake(Path(lake)), wait_s=60):
        marks.with_suffix(".in").write_text(str(time.time()))
        time.sleep(float(sys.argv[3]))
        marks.with_suffix(".out").write_text(str(time.time()))
    """
)


def _holder(lake: Path, marks: Path, hold_s: float, state_url: str) -> subprocess.Popen:
    env = {**os.environ, "FLEET_STATE_URL": state_url}
    return subprocess.Popen(
        [sys.executable, "-c", KT1_HOLDER, str(lake), str(marks), str(hold_s)], env=env, cwd=REPO
    )


def test_two_drains_in_separate_processes_never_hold_the_lease_at_once(
    fleet_env, state_url, tmp_path
) -> None:
    a = _holder(fleet_env.lake_dir, tmp_path / "a", 1.5, state_url)
    b = _holder(fleet_env.lake_dir, tmp_path / "b", 1.5, state_url)
    assert a.wait(timeout=90) == 0 and b.wait(timeout=90) == 0
    spans = sorted(
        (float((tmp_path / f"{n}.in").read_text()), float((tmp_path / f"{n}.out").read_text()))
        for n in "ab"
    )
    assert spans[0][1] <= spans[1][0]  # the second began after the first ended


def test_a_drainer_killed_holding_the_lease_blocks_the_next_one_only_until_it_lapses(
    fleet_env, state_url, tmp_path
) -> None:
    # Killed on this machine: its process is gone, so the lease is free at once.
    child = _holder(fleet_env.lake_dir, tmp_path / "k", 600, state_url)
    deadline = time.monotonic() + 60
    while not (tmp_path / "k.in").exists():
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    store = shared_state(state_url)
    lake = Lake(fleet_env.lake_dir)
    with drain_lock(lake, wait_s=5, state=store) as lease:
        assert lease.waited_s < 2
    # Killed on another machine (its lease row is all that is left of it): the next drain
    # waits for the lease to lapse, then runs.
    name = f"kt1-drain:{lake.root.resolve()}"
    with store.transaction("plant") as tx:
        now = tx.now()
        tx.execute(
            "insert into leases (name, holder, acquired_at, expires_at) values (?, ?, ?, ?)",
            (name, "another-machine:4242:dead", now, now + 3.0),
        )
    busy = r"another kt1 drain is running on .*another-machine"
    with pytest.raises(DrainBusy, match=busy), drain_lock(lake, wait_s=0.5, state=store):
        pass
    with drain_lock(lake, wait_s=30, state=store) as lease:
        assert 1.5 <= lease.waited_s <= 10


def test_a_lease_that_cannot_be_renewed_is_reported_lost(state_url) -> None:
    store = StateStore(state_url)
    lease = Lease(store, "probe", "probe", ttl_s=0.6)
    lease.acquire(wait_s=1)
    # Another holder takes over after a pause longer than the lease (a frozen process).
    with store.transaction("steal") as tx:
        tx.execute("update leases set holder = 'thief:1:x' where name = 'probe'")
    time.sleep(0.6)
    with pytest.raises(RuntimeError, match="expired before renewal"):
        lease.check()
    lease.release()
    store.close()


def test_the_autopi_ledger_is_shared_through_postgres_and_kept_per_lake(
    state_url, tmp_path
) -> None:
    one, two = StateStore(state_url), StateStore(state_url)  # two machines' connections
    lake_a, lake_b = Lake(tmp_path / "a"), Lake(tmp_path / "b")
    ExportLedger.of(lake_a, one).record_landed(7, "t-7", "sha", "2026-03-01")
    ExportLedger.of(lake_a, one).record_cleared(7)
    seen = ExportLedger.of(lake_a, two).get(7)
    assert seen is not None and seen.cleared_at is not None and seen.sha256 == "sha"
    assert ExportLedger.of(lake_b, two).get(7) is None  # another lake landed nothing yet
    # Signals recorded concurrently from many threads stay one row per signal.
    ledger = ExportLedger.of(lake_a, two)
    threads = [
        threading.Thread(target=ledger.add_signal, args=(9,), kwargs={"finished_at": "F"})
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ExportLedger.of(lake_a, one).signals()) == 1
    one.close()
    two.close()


def test_a_state_url_with_a_password_never_shows_it(postgres_server) -> None:
    secret = "pa55-Word-never-shown"
    role = postgres_server.create_role("fleet_state", secret)
    dbname = postgres_server.create_database("state_pw")
    url = postgres_server.url_with_password(role, secret, dbname)
    store = StateStore(url)
    assert secret not in store.describe() and secret not in redact(url)
    with store.transaction("x") as tx:
        assert tx.now() > 0
    store.close()
    wrong = url.replace(secret, "wrong-" + secret)
    with pytest.raises(ConnectionError) as err:
        StateStore(wrong)
    assert secret not in str(err.value) and "FLEET_STATE_URL" in str(err.value)


def test_a_bad_state_url_fails_with_one_line() -> None:
    with pytest.raises(ValueError, match=r"FLEET_STATE_URL=.*sqlite:///PATH or postgresql://"):
        StateStore("mysql://nope")
