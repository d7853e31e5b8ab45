"""The simulators answered in process: the real clients' `requests` sessions hand each request
to a simulator's `dispatch`, with no socket, gzip or rate-limit wait, and the lake's writes
skip fsync, since the landing's durability is not what the facts bench measures."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

import pipelines.atomic_files
from pipelines.http import ApiClient
from pipelines.simulator.httpd import Request, SimServer


class InProcessTransport(BaseAdapter):
    """A `requests` transport that hands each request to a simulator's `dispatch`.

    Builds the simulator's `Request` the way its HTTP handler does; the answer comes back
    uncompressed, with `elapsed` measured by requests as usual (kt1 reads an empty poll from it).
    """

    def __init__(self, server: SimServer) -> None:
        super().__init__()
        self.server = server

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        split = urlsplit(request.url or "")
        body = request.body or b""
        sim_request = Request(
            method=request.method or "GET",
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body.encode() if isinstance(body, str) else bytes(body),
            received_at=time.time(),
        )
        answer, _fault = self.server.dispatch(sim_request)
        payload = answer.payload()
        response = requests.Response()
        response.status_code = answer.status
        response.reason = HTTPStatus(answer.status).phrase
        response.headers = CaseInsensitiveDict(
            {"Content-Type": answer.content_type, "Content-Length": str(len(payload))}
        )
        response.headers.update(answer.headers)
        response._content = payload
        response._content_consumed = True
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def close_unserved(server: SimServer) -> None:
    """Release the socket a simulator binds on creation; `stop()` would wait for a serve loop
    that never ran (in-process requests need none)."""
    server._httpd.server_close()


@contextlib.contextmanager
def connected(client: ApiClient, server: SimServer) -> Iterator[None]:
    """Route `client` to `server` in-process for the block, then close the client."""
    client.session.mount(client.base_url, InProcessTransport(server))
    try:
        yield
    finally:
        client.close()


def skip_fsync() -> None:
    """The lake's writes stay atomic (temp file, rename) but are not flushed to the disk."""

    def no_fsync(_path: Path) -> None:
        return None

    pipelines.atomic_files._fsync_file = no_fsync
    pipelines.atomic_files._fsync_dir = no_fsync
