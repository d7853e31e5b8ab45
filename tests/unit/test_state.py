"""The shared state on its one-machine default (SQLite): URLs, leases, the retired variable."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipelines.locks import pid_alive
from pipelines.settings import FleetSettings
from pipelines.state import Busy, Lease, StateStore, redact, sqlite_path


def test_sqlite_urls_name_relative_and_absolute_files() -> None:
    assert sqlite_path("sqlite:///data/fleet_state.sqlite3") == Path("data/fleet_state.sqlite3")
    assert sqlite_path("sqlite:////tmp/x/state.db") == Path("/tmp/x/state.db")
    with pytest.raises(ValueError, match="FLEET_STATE_URL='sqlite:/x' is not sqlite:///PATH"):
        sqlite_path("sqlite:/x")


def test_the_default_state_is_a_sqlite_file_under_data(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEET_STATE_URL", raising=False)
    url = FleetSettings().fleet_state_url
    store = StateStore(url)
    with store.transaction("t") as tx:
        assert tx.now() > 1.7e9
    store.close()
    assert (tmp_path / "data" / "fleet_state.sqlite3").is_file()


def test_passwords_are_redacted() -> None:
    assert redact("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


def test_a_lease_is_exclusive_and_free_again_once_released(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    first = Lease(store, "drain", "test drain", where="lake-x")
    first.acquire(wait_s=0)
    second = Lease(store, "drain", "test drain", where="lake-x")
    with pytest.raises(Busy, match="another test drain is running on lake-x"):
        second.acquire(wait_s=0.3)
    first.release()
    assert second.acquire(wait_s=0) < 1
    second.release()
    store.close()


def _held_by(store: StateStore, pid: int) -> None:
    """The `drain` lease held for ten minutes by `pid` on this machine."""
    Lease(store, "drain", "test drain")  # creates the table
    with store.transaction("lease:drain") as tx:
        now = tx.now()
        tx.execute(
            "INSERT INTO leases (name, holder, acquired_at, expires_at) VALUES (?, ?, ?, ?)",
            ("drain", f"{os.uname().nodename}:{pid}:feed", now, now + 600),
        )


def test_a_lease_of_a_process_gone_from_this_machine_is_free_at_once(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    _held_by(store, int(gone.stdout))
    lease = Lease(store, "drain", "test drain")
    assert lease.acquire(wait_s=0) < 1
    lease.release()
    store.close()


def test_a_lease_of_a_live_process_on_this_machine_stays_held(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    _held_by(store, os.getppid())
    with pytest.raises(Busy, match="another test drain is running"):
        Lease(store, "drain", "test drain").acquire(wait_s=0.2)
    store.close()


def test_pid_alive_tells_a_running_process_from_a_finished_one() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert pid_alive(os.getpid()) and pid_alive(os.getppid())
    assert not pid_alive(child.pid)


def test_the_retired_ratelimit_variable_is_named_in_one_warning(monkeypatch) -> None:
    monkeypatch.setenv("FLEET_RATELIMIT_DB", "/tmp/old.sqlite3")
    (line,) = FleetSettings().retired_warnings()
    assert (
        line.startswith("FLEET_RATELIMIT_DB is retired and ignored") and "FLEET_STATE_URL" in line
    )


def _open_and_write(path: Path, go: Any, answers: Any) -> None:
    go.wait()
    try:
        store = StateStore(f"sqlite:///{path}")
        store.ensure_schema("race", "CREATE TABLE IF NOT EXISTS race (pid INTEGER)")
        with store.transaction("race") as tx:
            tx.execute("INSERT INTO race (pid) VALUES (?)", (os.getpid(),))
        answers.put("ok")
    except Exception as exc:
        answers.put(str(exc))


def test_processes_opening_a_new_sqlite_state_together_all_get_it(tmp_path: Path) -> None:
    """Runs starting together on a fresh state file (the demo, two workers' first runs) each
    open it; SQLite answers the loser of the switch to WAL `database is locked` at once, which
    failed that run before any request was sent."""
    forked = multiprocessing.get_context("fork")
    answers: list[str] = []
    for round_ in range(60):
        path = tmp_path / f"state{round_}.sqlite3"
        go, queue = forked.Event(), forked.Queue()
        procs = [forked.Process(target=_open_and_write, args=(path, go, queue)) for _ in range(3)]
        for proc in procs:
            proc.start()
        go.set()
        answers += [queue.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
        with sqlite3.connect(path) as con:
            assert con.execute("SELECT count(*) FROM race").fetchone() == (3,)
    assert set(answers) == {"ok"}, [a for a in answers if a != "ok"][:3]
