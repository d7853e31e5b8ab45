"""The shared HTTP stack: machine-wide sliding-window limiter and the retry policy."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipelines.http import ApiClient, RetryPolicy, SlidingWindowLimiter, VendorAPIError
from pipelines.simulator.httpd import Response, SimServer

N, WINDOW = 4, 0.4

HAMMER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from pipelines.http import SlidingWindowLimiter
    db, n, window, count, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    limiter = SlidingWindowLimiter("shared-api", n, window, Path(db))
    sent = []
    for _ in range(count):
        slot = limiter.acquire()
        sent.append(time.time())   # the moment a request would leave
        time.sleep(0.002)          # the request is in flight
        limiter.release(slot)
    Path(out).write_text(json.dumps(sent))
    """
)


def _max_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def test_two_processes_never_put_more_than_n_requests_in_any_window(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    outs = [tmp_path / f"p{i}.json" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER, str(db), str(N), str(WINDOW), "14", str(out)]
        )
        for out in outs
    ]
    for p in procs:
        assert p.wait(timeout=60) == 0
    sent = [t for out in outs for t in json.loads(out.read_text())]
    assert len(sent) == 28
    assert _max_in_any_window(sent, WINDOW) <= N
    # Both processes made progress interleaved, not one after the other.
    first, second = (json.loads(o.read_text()) for o in outs)
    assert min(second) < max(first) and min(first) < max(second)


def test_limiter_lets_a_burst_of_n_through_without_waiting(tmp_path: Path) -> None:
    limiter = SlidingWindowLimiter("burst", 5, 30.0, tmp_path / "l.sqlite3")
    waits = []
    for _ in range(5):
        with limiter.slot() as slot:
            waits.append(slot.waited_s)
    assert waits == [0.0] * 5


def test_slot_of_a_process_killed_mid_request_stops_counting(tmp_path: Path) -> None:
    db = tmp_path / "l.sqlite3"
    dead = SlidingWindowLimiter("k", 1, 0.1, db, stale_after_s=0.2)
    dead.acquire()  # never released, as if the process died with the request in flight
    alive = SlidingWindowLimiter("k", 1, 0.1, db, stale_after_s=0.2)
    with alive.slot() as slot:
        assert 0.2 <= slot.waited_s < 5


class FlakyServer(SimServer):
    """A tiny vendor for retry tests: `/ok` answers JSON, `/denied` a vendor error."""

    name = "flaky"

    def _register_routes(self) -> None:
        self.route("GET", r"/ok", lambda req: Response(200, {"ok": True, "pad": "x" * 2000}))
        self.route(
            "GET",
            r"/denied",
            lambda req: Response(403, {"error": {"code": "FORBIDDEN", "message": "no permission"}}),
        )


@pytest.fixture
def flaky():
    with FlakyServer() as server:
        yield server


def _client(server: SimServer, sleeps: list[float]) -> ApiClient:
    return ApiClient(
        server.url, retry=RetryPolicy(max_attempts=5, backoff_base_s=0.01), sleep=sleeps.append
    )


def test_429_is_retried_after_the_servers_retry_after(flaky: FlakyServer) -> None:
    flaky.faults.next_429 = 2
    sleeps: list[float] = []
    client = _client(flaky, sleeps)
    assert client.get_json("ok")["ok"] is True
    assert sleeps == [1.0, 1.0]
    assert (client.stats.requests, client.stats.retries, client.stats.http_429) == (3, 2, 2)


def test_5xx_burst_backs_off_with_growing_capped_delays(flaky: FlakyServer) -> None:
    flaky.faults.next_5xx = 3
    sleeps: list[float] = []
    client = _client(flaky, sleeps)
    assert client.get_json("ok")["ok"] is True
    assert len(sleeps) == 3 and all(0 < s <= 30 for s in sleeps)
    assert client.stats.retries == 3


def test_connection_cut_mid_body_is_retried(flaky: FlakyServer) -> None:
    flaky.faults.next_cut = 2
    sleeps: list[float] = []
    client = _client(flaky, sleeps)
    assert len(client.get_json("ok")["pad"]) == 2000
    assert client.stats.retries == 2


def test_4xx_fails_at_once_with_the_vendors_code_and_message(flaky: FlakyServer) -> None:
    sleeps: list[float] = []
    client = _client(flaky, sleeps)
    with pytest.raises(VendorAPIError) as err:
        client.get_json("denied", params={"secret_looking": "s3cr3t"})
    assert err.value.status == 403 and err.value.code == "FORBIDDEN"
    assert "no permission" in str(err.value)
    assert "s3cr3t" not in str(err.value)  # no query strings in errors
    assert sleeps == [] and client.stats.requests == 1


def test_retries_give_up_with_one_clear_error(flaky: FlakyServer) -> None:
    flaky.faults.next_5xx = 10
    client = _client(flaky, [])
    with pytest.raises(VendorAPIError, match=r"GET /ok failed: HTTP 503"):
        client.get_json("ok")
    assert client.stats.requests == 5


def test_session_sends_user_agent_and_accepts_gzip(flaky: FlakyServer) -> None:
    client = _client(flaky, [])
    started = time.time()
    client.get_json("ok")
    record = flaky.requests("/ok")[-1]
    assert record.headers["user-agent"].startswith("fleet-pipelines/")
    assert "gzip" in record.headers["accept-encoding"]
    assert record.at >= started
