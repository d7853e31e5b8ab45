"""The shared HTTP stack: machine-wide sliding-window limiter, the retry policy and its bounds,
retry logging, and one-line error summaries."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from pipelines.error_bodies import parse_json_error
from pipelines.http import RETRY_LOG, ApiClient, VendorAPIError
from pipelines.ratelimit import SlidingWindowLimiter
from pipelines.retry import RetryPolicy
from pipelines.simulator.httpd import Response, SimServer
from tests.support.rate_limits import max_in_any_window

N, WINDOW = 4, 0.4

HAMMER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from pipelines.ratelimit import SlidingWindowLimiter
    db, n, window, count, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    limiter = SlidingWindowLimiter("shared-api", n, window, Path(db))
    # Start together, whatever the imports cost on a busy machine: ready, then wait for go.
    Path(out + ".ready").touch()
    while not Path(db + ".go").exists():
        time.sleep(0.005)
    sent = []
    for _ in range(count):
        slot = limiter.acquire()
        sent.append(time.time())   # the moment a request would leave
        time.sleep(0.002)          # the request is in flight
        limiter.release(slot)
    Path(out).write_text(json.dumps(sent))
    """
)


def test_two_processes_never_put_more_than_n_requests_in_any_window(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    outs = [tmp_path / f"p{i}.json" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER, str(db), str(N), str(WINDOW), "14", str(out)]
        )
        for out in outs
    ]
    deadline = time.monotonic() + 60
    while not all(Path(f"{out}.ready").exists() for out in outs):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    Path(f"{db}.go").touch()
    for p in procs:
        assert p.wait(timeout=60) == 0
    sent = [t for out in outs for t in json.loads(out.read_text())]
    assert len(sent) == 28
    assert max_in_any_window(sent, WINDOW) <= N
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
    # The message now says how many attempts were made and over how long.
    with pytest.raises(
        VendorAPIError, match=r"GET /ok failed after 5 attempts in [\d.]+s: HTTP 503"
    ):
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


# --- bounds: defaults, knobs ----------------------------------------------------------------


def test_defaults_fail_a_hung_api_within_three_minutes() -> None:
    client = ApiClient("http://127.0.0.1:9")
    connect, read = client.timeout
    assert (connect, read) == (10.0, 30.0)
    # The last attempt starts inside the budget and lasts at most one timeout.
    assert client.retry.budget_s + connect + read <= 190
    assert client.retry.max_attempts == 6


def test_a_long_poll_client_keeps_its_own_longer_timeout() -> None:
    from pipelines.sources.kt1.client import Kt1Client

    assert Kt1Client("http://127.0.0.1:9", token="t", long_poll_s=45.0).timeout == (10.0, 60.0)


def test_timeout_knob_takes_one_number_or_a_pair() -> None:
    assert ApiClient("http://x", timeout=45).timeout == (10.0, 45.0)
    assert ApiClient("http://x", timeout=2.5).timeout == (2.5, 2.5)
    assert ApiClient("http://x", timeout=(3, 40)).timeout == (3.0, 40.0)
    with pytest.raises(ValueError, match="positive seconds"):
        ApiClient("http://x", timeout=0)


def test_bounded_retry_policy_from_operator_settings() -> None:
    assert RetryPolicy.bounded() == RetryPolicy()
    policy = RetryPolicy.bounded(max_attempts=3, budget_s=60)
    assert (policy.max_attempts, policy.budget_s) == (3, 60.0)
    assert RetryPolicy.bounded(budget_s=20).max_attempts == RetryPolicy().max_attempts
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy.bounded(max_attempts=0)
    with pytest.raises(ValueError, match="budget_s"):
        RetryPolicy.bounded(budget_s=-1)
    with pytest.raises(ValueError, match="budget_s"):
        RetryPolicy.bounded(budget_s=float("inf"))


def test_retrying_stops_when_the_next_wait_would_pass_the_budget(flaky: FlakyServer) -> None:
    flaky.faults.next_5xx = 10
    sleeps: list[float] = []
    policy = RetryPolicy(max_attempts=10, backoff_base_s=1.0, backoff_cap_s=1.0, budget_s=2.5)
    client = ApiClient(flaky.url, retry=policy, sleep=sleeps.append)
    with pytest.raises(VendorAPIError) as err:
        client.get_json("ok")
    assert sleeps == [1.0, 1.0] and client.stats.requests == 3
    message = str(err.value)
    assert message.startswith("HTTP API GET /ok failed after 3 attempts in ")
    assert message.endswith(
        "HTTP 503 INTERNAL_ERROR: Injected server error; a retry in 1.0s would pass the 2.5s retry budget"
    )
    assert err.value.attempts == 3 and 2.0 <= err.value.elapsed_s < 2.5


def test_waiting_for_the_rate_limiter_does_not_spend_the_retry_budget(
    flaky: FlakyServer, tmp_path: Path
) -> None:
    flaky.faults.next_5xx = 2
    limiter = SlidingWindowLimiter("budget", 1, 1.0, tmp_path / "l.sqlite3")
    policy = RetryPolicy(max_attempts=5, backoff_base_s=0.01, backoff_cap_s=0.01, budget_s=0.8)
    client = ApiClient(flaky.url, limiter=limiter, retry=policy, sleep=lambda s: None)
    assert client.get_json("ok")["ok"] is True
    # Two limiter waits of ~1 s each: more than the budget, yet it was not spent.
    assert client.stats.retries == 2 and client.stats.rate_limit_wait_s > policy.budget_s


# --- retries are visible ----------------------------------------------------------------------


def test_each_retry_is_a_warning_with_attempt_status_and_wait(flaky: FlakyServer, caplog) -> None:
    flaky.faults.next_5xx = 2
    client = _client(flaky, [])
    with caplog.at_level(logging.WARNING, logger=RETRY_LOG.name):
        client.get_json("ok", params={"token": "s3cr3t"})
    lines = [r.getMessage() for r in caplog.records if r.name == RETRY_LOG.name]
    assert len(lines) == 2 and all(r.levelno == logging.WARNING for r in caplog.records)
    assert lines[0].startswith("HTTP GET /ok: HTTP 503, attempt 2 of 5, retrying in ")
    assert lines[1].startswith("HTTP GET /ok: HTTP 503, attempt 3 of 5, retrying in ")
    assert "s3cr3t" not in caplog.text


def test_a_connection_failure_retry_names_the_exception_class(flaky: FlakyServer, caplog) -> None:
    flaky.faults.next_cut = 1
    client = _client(flaky, [])
    with caplog.at_level(logging.WARNING, logger=RETRY_LOG.name):
        client.get_json("ok")
    assert "HTTP GET /ok: ChunkedEncodingError, attempt 2 of 5, retrying in " in caplog.text


def test_retries_go_to_a_given_log_instead(flaky: FlakyServer, caplog) -> None:
    class ContextLog:  # the shape of Dagster's context.log that we use
        def __init__(self) -> None:
            self.lines: list[str] = []

        def warning(self, msg: str) -> None:
            self.lines.append(msg)

        def info(self, msg: str) -> None:
            raise AssertionError("retries are warnings")

    flaky.faults.next_429 = 1
    context_log = ContextLog()
    client = ApiClient(
        flaky.url, retry=RetryPolicy(max_attempts=5), sleep=lambda s: None, log=context_log
    )
    with caplog.at_level(logging.WARNING, logger=RETRY_LOG.name):
        client.get_json("ok")
    assert context_log.lines == ["HTTP GET /ok: HTTP 429, attempt 2 of 5, retrying in 1.0s"]
    assert not [r for r in caplog.records if r.name == RETRY_LOG.name]


def test_a_refusal_after_retries_says_how_many_attempts(flaky: FlakyServer) -> None:
    flaky.faults.next_5xx = 1
    client = _client(flaky, [])
    with pytest.raises(
        VendorAPIError,
        match=r"GET /denied failed after 2 attempts in [\d.]+s: HTTP 403 FORBIDDEN: no permission$",
    ):
        client.get_json("denied")


def test_a_cut_download_logs_each_retry(flaky: FlakyServer, tmp_path: Path, caplog) -> None:
    flaky.faults.next_cut = 1
    client = _client(flaky, [])
    with caplog.at_level(logging.WARNING, logger=RETRY_LOG.name):
        assert client.download("ok", tmp_path / "ok.json") > 2000
    assert "HTTP GET /ok: body cut at " in caplog.text
    assert "attempt 2 of 5, retrying in " in caplog.text


def test_paths_only_even_when_a_caller_leaves_a_query_in_the_path(flaky: FlakyServer) -> None:
    with pytest.raises(VendorAPIError) as err:
        _client(flaky, []).get_json("denied?api_key=s3cr3t")
    assert "s3cr3t" not in str(err.value) and "GET /denied failed: HTTP 403" in str(err.value)


# --- error bodies summarised, never quoted ------------------------------------------------------


def _response(status: int, body: str, content_type: str, reason: str = "") -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.reason = reason
    response.headers["Content-Type"] = content_type
    response._content = body.encode()
    response.encoding = "utf-8"
    return response


NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def test_an_html_error_page_is_named_by_its_title() -> None:
    code, message = parse_json_error(_response(502, NGINX_502, "text/html", "Bad Gateway"))
    assert (code, message) == ("Bad Gateway", "502 Bad Gateway")


def test_title_text_is_unescaped_collapsed_and_bounded() -> None:
    page = "<!DOCTYPE html><html><head><title>\n  Service &amp; Co &mdash;\n  " + "down " * 60
    page += "</title></head><body>x</body></html>"
    _, message = parse_json_error(_response(503, page, "text/html; charset=utf-8"))
    assert message.startswith("Service & Co \u2014 down down")
    assert len(message) <= 120 and "\n" not in message and "  " not in message


def test_an_html_page_without_title_uses_its_first_heading_else_its_text() -> None:
    page = (
        "<html><body><div><h2 class=x>Upstream <b>timed</b> out</h2><p>Ray ID 1</p></body></html>"
    )
    assert parse_json_error(_response(504, page, "text/html"))[1] == "Upstream timed out"
    page = "<html><head><style>p {color: red}</style></head><body><p>Maintenance</p></body></html>"
    assert parse_json_error(_response(503, page, "text/html"))[1] == "Maintenance"
    # Content-Type may lie: markup is recognised by itself.
    assert parse_json_error(_response(502, NGINX_502, "text/plain"))[1] == "502 Bad Gateway"


def test_a_plain_text_body_gives_its_first_non_empty_line_without_tags() -> None:
    body = "\n\n   upstream <b>connect</b> error   \nreset reason: overflow\n"
    assert parse_json_error(_response(503, body, "text/plain"))[1] == "upstream connect error"
    assert len(parse_json_error(_response(500, "x" * 5000, "text/plain"))[1]) <= 120
    assert parse_json_error(_response(500, "", "text/plain"))[1] == ""
