"""The shared HTTP stack against real misbehaving servers on 127.0.0.1: one that accepts and
never answers, a proxy's HTML error page, and a Retry-After longer than the retry budget."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipelines.http import RETRY_LOG, ApiClient, VendorAPIError
from pipelines.retry import RetryPolicy

Handler = Callable[[BaseHTTPRequestHandler], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def _serve(handle: Handler) -> Iterator[tuple[str, list[str]]]:
    """Serve `handle` for every request; yield the base URL and the paths requested."""
    seen: list[str] = []

    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            seen.append(self.path)
            handle(self)

    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _reply(status: int, body: bytes, content_type: str, **headers: str) -> Handler:
    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            h.send_header(name.replace("_", "-"), value)
        h.end_headers()
        h.wfile.write(body)

    return handle


@pytest.fixture
def hung() -> Iterator[tuple[str, list[str]]]:
    """Accepts every connection, reads the request, never answers (until teardown)."""
    release = threading.Event()

    def handle(h: BaseHTTPRequestHandler) -> None:
        release.wait(60)
        h.close_connection = True

    try:
        yield from _serve(handle)
    finally:
        release.set()


def test_a_hung_api_fails_within_the_budget_and_says_so(hung, caplog) -> None:
    url, seen = hung
    # Fifty attempts allowed: only the time budget can stop this in seconds.
    client = ApiClient(url, timeout=(1.0, 0.5), retry=RetryPolicy.bounded(50, budget_s=3))
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger=RETRY_LOG.name),
        pytest.raises(VendorAPIError) as err,
    ):
        client.get_json("v1/trips", params={"token": "s3cr3t"})
    took = time.monotonic() - started
    assert took < 10
    message = str(err.value)
    assert message.startswith("HTTP API GET /v1/trips failed after ")
    assert "no response ReadTimeout: no answer within 0.5s" in message
    assert "retry budget" in message and "\n" not in message and "s3cr3t" not in message
    assert 2 <= err.value.attempts == len(seen) < 50
    retries = [r.getMessage() for r in caplog.records if r.name == RETRY_LOG.name]
    assert len(retries) == err.value.attempts - 1
    assert retries[0].startswith("HTTP GET /v1/trips: ReadTimeout, attempt 2 of 50, retrying in ")
    assert "s3cr3t" not in caplog.text


def test_a_long_poll_passes_its_own_timeout_per_request(hung) -> None:
    url, _ = hung
    client = ApiClient(url, timeout=(1.0, 0.2), retry=RetryPolicy.bounded(1))
    started = time.monotonic()
    with pytest.raises(VendorAPIError, match=r"no answer within 1\.5s"):
        client.request("GET", "stream", timeout=(1.0, 1.5))
    assert time.monotonic() - started >= 1.4


NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[str]]]:
    yield from _serve(_reply(502, NGINX_502, "text/html"))


def test_a_proxys_html_error_page_is_summarised_by_its_title(proxy) -> None:
    url, seen = proxy
    client = ApiClient(url, retry=RetryPolicy.bounded(2), sleep=lambda s: None)
    with pytest.raises(VendorAPIError) as err:
        client.get_json("apidev/v1/reports/avl/trips")
    message = str(err.value)
    assert message.startswith("HTTP API GET /apidev/v1/reports/avl/trips failed after 2 attempts")
    assert message.endswith(": HTTP 502 Bad Gateway: 502 Bad Gateway")
    assert "<" not in message and "nginx" not in message and "\n" not in message
    assert err.value.status == 502 and len(seen) == 2


@pytest.fixture
def throttled() -> Iterator[tuple[str, list[str]]]:
    body = b'{"error": {"code": "RATE_LIMITED", "message": "slow down"}}'
    yield from _serve(_reply(429, body, "application/json", Retry_After="120"))


def test_a_retry_after_past_the_budget_fails_now_instead_of_sleeping(throttled) -> None:
    url, seen = throttled
    sleeps: list[float] = []
    client = ApiClient(url, retry=RetryPolicy.bounded(6, budget_s=5), sleep=sleeps.append)
    with pytest.raises(VendorAPIError) as err:
        client.get_json("ok")
    assert sleeps == [] and len(seen) == 1
    assert str(err.value).startswith("HTTP API GET /ok failed after 1 attempt in ")
    assert re.search(
        r"HTTP 429 RATE_LIMITED: slow down; "
        r"Retry-After 120s is past the retry budget \([\d.]+s of 5s left\)$",
        str(err.value),
    )
