"""The AutoPi webhook receiver under abuse, with the real server on a real socket: every
request is answered, stalled clients are dropped, threads stay bounded, and a replayed signal
is recorded once."""

from __future__ import annotations

import json
import logging
import select
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from pipelines.lake import Lake
from pipelines.sources.autopi.client import ExportTask
from pipelines.sources.autopi.drain import waiting_exports
from pipelines.sources.autopi.state import ExportLedger
from pipelines.sources.autopi.webhook import SECRET_HEADER, WebhookServer, make_webhook_server
from pipelines.state import shared as shared_state

SECRET = "hook-secret-123"


def ledger(tmp_path: Path) -> ExportLedger:
    """The AutoPi ledger of the lake `tmp_path/lake`, in a state database under `tmp_path`."""
    store = shared_state(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    return ExportLedger.of(Lake(tmp_path / "lake"), store)


AUTH = {SECRET_HEADER: SECRET}
Start = Callable[..., WebhookServer]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Starts receivers (keyword arguments go to the server) and stops them after the test."""
    running: list[tuple[WebhookServer, threading.Thread]] = []

    def _start(**kwargs: float) -> WebhookServer:
        hook = make_webhook_server("127.0.0.1", 0, SECRET, ledger(tmp_path), **kwargs)
        thread = threading.Thread(target=hook.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        running.append((hook, thread))
        return hook

    yield _start
    for hook, thread in running:
        hook.shutdown()
        hook.server_close()
        thread.join()


@pytest.fixture
def hook(start: Start) -> WebhookServer:
    return start()


def post(hook: WebhookServer, data: bytes | str, **headers: str) -> requests.Response:
    return requests.post(hook.url, data=data, headers={**AUTH, **headers}, timeout=5)


def signal(**fields: object) -> str:
    return json.dumps({"signal": "trip_export_finished", **fields})


DEEP = b"[" * 60_000  # deep, yet under MAX_BODY
BAD_BODIES = {
    "deep list": DEEP,
    "deep inside the object": b'{"signal": "trip_export_finished", "task_id": 1, "x": ' + DEEP,
    "deep but closed": b'{"task_id": 1, "x": ' + b"[" * 40 + b"]" * 40 + b"}",
    "400-digit task_id": signal(task_id=int("9" * 400)).encode(),
    "400-digit task_id string": signal(task_id="9" * 400).encode(),
    "superscript two": signal(task_id="²").encode(),
    "arabic-indic three": signal(task_id="٣").encode(),
    "task_id 2**63": signal(task_id=2**63).encode(),
    "task_id 0": signal(task_id=0).encode(),
    "negative task_id": signal(task_id=-5).encode(),
    "a list": b"[1, 2]",
    "a string": b'"trip_export_finished"',
    "a number": b"5",
    "null": b"null",
    "trip_id an object": signal(task_id=1, trip_id={"a": 1}).encode(),
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_bad_body_is_answered_400_with_a_one_line_reason(
    hook: WebhookServer, body: bytes
) -> None:
    resp = post(hook, body)
    assert resp.status_code == 400
    detail = resp.json()["detail"]
    assert detail and "\n" not in detail
    assert hook.ledger.signals() == []
    assert requests.get(hook.url + "healthz", timeout=5).status_code == 200


def test_a_non_ascii_content_length_is_answered_411(hook: WebhookServer) -> None:
    with socket.create_connection(hook.server_address[:2], timeout=5) as sock:
        sock.sendall("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ²\r\n\r\n".encode("latin-1"))
        assert read_until_closed(sock).startswith(b"HTTP/1.1 411 ")


def test_an_unexpected_failure_is_answered_500_and_logged_once_without_the_secret(
    hook: WebhookServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> bool:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(hook.ledger, "add_signal", broken)
    with caplog.at_level(logging.INFO, logger="pipelines.sources.autopi.webhook"):
        resp = post(hook, signal(task_id=7))
    assert resp.status_code == 500
    assert resp.json()["detail"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "disk I/O error" in caplog.text
    assert SECRET not in caplog.text and SECRET_HEADER not in caplog.text


def read_until_closed(sock: socket.socket, limit_s: float = 5.0) -> bytes:
    """Everything the server sends until it closes; raises TimeoutError if it never does."""
    sock.settimeout(limit_s)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_client_stalling_mid_body_gets_408_and_is_dropped_after_the_timeout(
    start: Start,
) -> None:
    hook = start(timeout=1.0)
    with socket.create_connection(hook.server_address[:2], timeout=5) as sock:
        head = f"POST / HTTP/1.1\r\nHost: x\r\n{SECRET_HEADER}: {SECRET}\r\nContent-Length: 100\r\n"
        sock.sendall(head.encode() + b"\r\n{")
        began = time.monotonic()
        reply = read_until_closed(sock)
        assert 0.8 <= time.monotonic() - began < 3.0
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert hook.ledger.signals() == []


def test_a_client_stalling_in_its_headers_is_dropped_after_the_timeout(start: Start) -> None:
    hook = start(timeout=1.0)
    with socket.create_connection(hook.server_address[:2], timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le")
        began = time.monotonic()
        assert read_until_closed(sock) == b""
        assert 0.8 <= time.monotonic() - began < 3.0


def test_a_client_trickling_bytes_is_dropped_at_the_request_deadline(start: Start) -> None:
    hook = start(timeout=1.0, request_deadline=2.0)
    with socket.create_connection(hook.server_address[:2], timeout=5) as sock:
        began = time.monotonic()
        closed_after = None
        for byte in b"POST / HTTP/1.1\r\nHost: a-very-long-host-name.example\r\n":
            try:
                sock.sendall(bytes([byte]))
                readable, _, _ = select.select([sock], [], [], 0.3)
                if readable and sock.recv(1024) == b"":
                    closed_after = time.monotonic() - began
                    break
            except ConnectionError:
                closed_after = time.monotonic() - began
                break
            if time.monotonic() - began > 6:
                break
    assert closed_after is not None, "a trickling client was never dropped"
    assert 1.8 <= closed_after < 3.5


def test_a_flood_of_slow_connections_keeps_threads_bounded_and_signals_flowing(
    start: Start,
) -> None:
    bound = 8
    hook = start(max_threads=bound, timeout=1.0, request_deadline=5.0)
    peak = threading.active_count()
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, threading.active_count())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    baseline = threading.active_count()
    slow: list[socket.socket] = []
    try:
        for _ in range(300):
            sock = socket.create_connection(hook.server_address[:2], timeout=5)
            slow.append(sock)
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n")  # never ends
        began = time.monotonic()
        status = None
        while time.monotonic() - began < 5:
            try:
                status = post(hook, signal(task_id=42, trip_id="t-42")).status_code
            except requests.ConnectionError:
                status = None  # refused while busy; AutoPi would retry too
            if status == 202:
                break
            time.sleep(0.05)
        waited = time.monotonic() - began
    finally:
        stop.set()
        sampler.join()
        for sock in slow:
            sock.close()
    assert status == 202 and waited < 5
    assert peak <= baseline + bound + 2, f"{peak} threads for a bound of {bound}"
    assert hook.busy > 0
    assert [s.task_id for s in hook.ledger.signals()] == [42]


def test_a_replayed_signal_is_recorded_once(hook: WebhookServer) -> None:
    body = signal(task_id=11, trip_id="t-11", finished_at="2026-03-31T10:00:00Z")
    first, again = post(hook, body), post(hook, body)
    assert (first.status_code, first.json()["status"]) == (202, "recorded")
    assert (again.status_code, again.json()["status"]) == (202, "duplicate")
    rebroadcast = signal(
        task_id=11, trip_id="t-11", finished_at="2026-03-31T10:00:00Z", rebroadcast=True
    )
    assert post(hook, rebroadcast).json()["status"] == "duplicate"  # not looked at yet
    assert len(hook.ledger.signals()) == 1
    assert (hook.received, hook.duplicates) == (1, 2)
    reexport = signal(task_id=11, trip_id="t-11", finished_at="2026-04-01T08:00:00Z")
    assert post(hook, reexport).json()["status"] == "recorded"  # same task, new result
    odd = signal(task_id=13, trip_id='t-13 "[' + "[{" * 40 + "\\", finished_at="x")
    assert post(hook, odd).json()["status"] == "recorded"  # brackets in a string: not nesting
    assert post(hook, odd).json()["status"] == "duplicate"
    assert len(hook.ledger.signals()) == 3


def test_a_rebroadcast_after_a_landing_still_makes_the_sensor_probe_again(
    hook: WebhookServer,
) -> None:
    fields = {"task_id": 12, "trip_id": "t-12", "finished_at": "2026-03-31T10:00:00Z"}
    assert post(hook, signal(**fields)).json()["status"] == "recorded"
    hook.ledger.record_landed(12, "t-12", "sha", "2026-03-31")
    hook.ledger.record_cleared(12)
    tasks = [ExportTask(task_id=12, trip_id="t-12", state="SUCCESS", created_at=None)]
    assert waiting_exports(tasks, hook.ledger) == {}
    # AutoPi rebroadcasts exports it still holds uncleared: our clear did not take.
    assert post(hook, signal(**fields, rebroadcast=True)).json()["status"] == "recorded"
    assert waiting_exports(tasks, hook.ledger) == {12: "signalled"}
    assert post(hook, signal(**fields, rebroadcast=True)).json()["status"] == "duplicate"
    (only,) = hook.ledger.signals()
    assert only.rebroadcast and only.received_at > hook.ledger.get(12).landed_at


def test_a_ledger_an_older_version_kept_in_the_lake_is_imported_once(tmp_path: Path) -> None:
    path = tmp_path / "lake" / "autopi" / "_state" / "autopi.sqlite3"
    path.parent.mkdir(parents=True)
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE signals (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            received_at REAL NOT NULL,
            task_id INTEGER NOT NULL,
            trip_id TEXT,
            finished_at TEXT,
            rebroadcast INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX signals_task ON signals(task_id, received_at);
        INSERT INTO signals (received_at, task_id, trip_id, finished_at) VALUES
            (1.0, 7, 't-7', 'F'), (2.0, 7, 't-7', 'F'), (3.0, 7, 't-7', 'F'),
            (1.0, 8, NULL, NULL), (2.0, 8, NULL, NULL), (1.5, 9, 't-9', 'G');
        """
    )
    old.commit()
    old.close()
    with ledger(tmp_path) as led:
        got = sorted((s.task_id, s.received_at) for s in led.signals())
        assert got == [(7, 3.0), (8, 2.0), (9, 1.5)]  # the latest copy of each
        assert led.add_signal(7, trip_id="t-7", finished_at="F") is False
        assert led.add_signal(8) is False
        assert led.add_signal(9, trip_id="t-9", finished_at="H") is True
    # The lake no longer holds state: the file is kept, renamed, and not imported again.
    assert not path.exists() and path.with_name("autopi.sqlite3.imported").is_file()
    with ledger(tmp_path) as led:
        assert len(led.signals()) == 4
