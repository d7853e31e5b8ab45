"""Streaming result downloads (`ApiClient.download` under `AutoPiClient.download_result`):
a cut body is resumed with Range when the server allows it, fetched again when it does not,
and the file on disk is only ever one complete body."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipelines.http import VendorAPIError
from pipelines.retry import RetryPolicy
from pipelines.sources.autopi.client import AutoPiClient

BODY = os.urandom(3 * 1024 * 1024 + 17)


class FileServer:
    """Serves BODY at /tasks/1/result/; cuts the first `cuts` responses half way."""

    def __init__(self, *, ranges: bool, cuts: int, etag: str = '"v1"') -> None:
        self.ranges = ranges
        self.cuts = cuts
        self.etag = etag
        self.requests: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.requests.append(headers)
                if self.path != "/tasks/1/result/":
                    self.send_response(404)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                    return
                start = 0
                wanted = headers.get("range", "")
                if (
                    outer.ranges
                    and wanted.startswith("bytes=")
                    and headers.get("if-range") == outer.etag
                ):
                    start = int(wanted[6:].split("-")[0])
                body = BODY[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", outer.etag)
                if outer.ranges:
                    self.send_header("Accept-Ranges", "bytes")
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
                self.end_headers()
                if outer.cuts > 0:
                    outer.cuts -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[FileServer] = []

    def start(**kwargs: Any) -> FileServer:
        servers.append(FileServer(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def client(server: FileServer, attempts: int = 6) -> AutoPiClient:
    return AutoPiClient(
        server.url,
        token="t",
        retry=RetryPolicy(max_attempts=attempts, backoff_base_s=0.01, backoff_cap_s=0.02),
    )


def test_a_cut_download_resumes_with_a_range_and_is_complete(serve: Any, tmp_path: Path) -> None:
    server = serve(ranges=True, cuts=2)
    api = client(server)
    dest = tmp_path / "r.json.gz"
    assert api.download_result(1, dest) == len(BODY)
    assert dest.read_bytes() == BODY
    first, second, third = server.requests
    assert "range" not in first
    resumed_at = [int(r["range"].removeprefix("bytes=").rstrip("-")) for r in (second, third)]
    assert 0 < resumed_at[0] <= len(BODY) // 2 < resumed_at[1]  # from what had been written
    assert second["if-range"] == third["if-range"] == '"v1"'
    assert all(r["accept-encoding"] == "identity" for r in server.requests)
    assert api.stats.retries == 2 and api.stats.bytes_received == len(BODY)


def test_without_range_support_a_cut_download_starts_over(serve: Any, tmp_path: Path) -> None:
    server = serve(ranges=False, cuts=1)
    dest = tmp_path / "r.json.gz"
    assert client(server).download_result(1, dest) == len(BODY)
    assert dest.read_bytes() == BODY
    assert [("range" in r) for r in server.requests] == [False, False]


def test_a_body_that_changed_since_the_cut_is_fetched_whole(serve: Any, tmp_path: Path) -> None:
    server = serve(ranges=True, cuts=1)
    api = client(server)
    dest = tmp_path / "r.json.gz"
    original = server.etag
    server.etag = original  # first response carries v1 ...

    def bump() -> None:  # ... and the result is replaced before the retry
        server.etag = '"v2"'

    api._sleep = lambda _s: bump()
    assert api.download_result(1, dest) == len(BODY)
    assert dest.read_bytes() == BODY  # a 200 with the whole body replaced the partial one
    assert server.requests[1]["if-range"] == '"v1"'


def test_a_download_cut_every_time_raises_and_says_so(serve: Any, tmp_path: Path) -> None:
    server = serve(ranges=False, cuts=100)
    with pytest.raises(VendorAPIError, match="download incomplete"):
        client(server, attempts=3).download_result(1, tmp_path / "r.json.gz")
    assert len(server.requests) == 3


def test_a_missing_result_is_none_not_an_error(serve: Any, tmp_path: Path) -> None:
    server = serve(ranges=False, cuts=0)
    assert client(server).download_result(2, tmp_path / "r.json.gz") is None
