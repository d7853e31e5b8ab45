"""Shared HTTP plumbing of the four simulated vendor servers: routing, gzip, keep-alive,
request log, and fault switches (extra 429s, 5xx, slow responses, cut bodies, malformed lines).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import re
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    received_at: float

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Response:
    status: int = 200
    body: bytes | Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    compressible: bool = True

    def payload(self) -> bytes:
        if isinstance(self.body, bytes | bytearray):
            return bytes(self.body)
        return json.dumps(self.body, separators=(",", ":")).encode()


@dataclass
class Faults:
    """Fault switches. `next_*` counters fire on the next N requests; `*_rate` fire at random.

    `malformed_rate` is read by servers that emit JSON lines (AutoPi, kt1) to corrupt lines;
    `bad_value_rate` by servers that spoil values inside well-formed rows (NaN, Infinity,
    decimal-comma numbers, day-first times; each server says where).
    """

    next_429: int = 0
    next_5xx: int = 0
    next_cut: int = 0
    next_slow: int = 0
    rate_429: float = 0.0
    rate_5xx: float = 0.0
    rate_cut: float = 0.0
    rate_slow: float = 0.0
    slow_s: float = 2.0
    status_5xx: int = 503
    malformed_rate: float = 0.0
    bad_value_rate: float = 0.0
    # Network latency of every request (uniform in [min, max]): half before the server
    # handles it, half after, as on a real link.
    latency_min_s: float = 0.0
    latency_max_s: float = 0.0
    seed: int = 0

    def update(self, **changes: Any) -> None:
        for key, value in changes.items():
            if not hasattr(self, key):
                raise KeyError(f"unknown fault switch {key!r}")
            setattr(self, key, type(getattr(self, key))(value))


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int
    at: float
    fault: str | None = None


Route = Callable[[Request], Response]


class SimServer:
    """One vendor's simulated API on 127.0.0.1, served from a daemon thread."""

    name = "sim"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.faults = Faults()
        self._rng = random.Random(0)
        self._lock = threading.Lock()
        self.log: deque[RequestRecord] = deque(maxlen=200_000)
        self.status_counts: Counter[int] = Counter()
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Response]]] = []
        self._register_routes()
        self.route("POST", r"/_sim/faults", self._set_faults)
        self.route("GET", r"/_sim/stats", self._stats)
        self._httpd = _Httpd((host, port), _make_handler(self))
        self._thread: threading.Thread | None = None

    @property
    def bad_value_rate(self) -> float:
        """`faults.bad_value_rate`, also settable here."""
        return self.faults.bad_value_rate

    @bad_value_rate.setter
    def bad_value_rate(self, rate: float) -> None:
        self.faults.bad_value_rate = float(rate)

    # --- subclass API ---------------------------------------------------------------------
    def _register_routes(self) -> None:
        raise NotImplementedError

    def error(self, status: int, code: str, message: str) -> Response:
        """The vendor's error body; subclasses override with their own shape."""
        return Response(status, {"error": code, "message": message})

    def route(self, method: str, pattern: str, handler: Callable[..., Response]) -> None:
        self._routes.append((method, re.compile(pattern + r"/?$"), handler))

    # --- lifecycle ------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SimServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # quick shutdown between tests
            name=f"sim-{self.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- observation ----------------------------------------------------------------------
    def requests(self, path_prefix: str = "") -> list[RequestRecord]:
        with self._lock:
            return [
                r
                for r in self.log
                if r.path.startswith(path_prefix) and not r.path.startswith("/_sim")
            ]

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()
            self.status_counts.clear()

    def _stats(self, req: Request) -> Response:
        with self._lock:
            counts = {str(k): v for k, v in self.status_counts.items()}
        return Response(200, {"status_counts": counts, "faults": asdict(self.faults)})

    def _set_faults(self, req: Request) -> Response:
        try:
            self.faults.update(**(req.json() or {}))
        except (KeyError, ValueError, TypeError) as exc:
            return Response(400, {"error": str(exc)})
        self._rng.seed(self.faults.seed)
        return Response(200, asdict(self.faults))

    # --- dispatch -------------------------------------------------------------------------
    def _pick_fault(self, path: str) -> str | None:
        if path.startswith("/_sim"):
            return None
        f = self.faults
        with self._lock:
            for name in ("slow", "429", "5xx", "cut"):
                attr = f"next_{name}"
                if getattr(f, attr) > 0:
                    setattr(f, attr, getattr(f, attr) - 1)
                    return name
            for name in ("slow", "429", "5xx", "cut"):
                rate = getattr(f, f"rate_{name}")
                if rate and self._rng.random() < rate:
                    return name
        return None

    def dispatch(self, req: Request) -> tuple[Response, str | None]:
        latency = self._latency(req.path)
        time.sleep(latency / 2)
        try:
            return self._dispatch(req)
        finally:
            time.sleep(latency / 2)

    def _latency(self, path: str) -> float:
        f = self.faults
        if path.startswith("/_sim") or f.latency_max_s <= 0:
            return 0.0
        with self._lock:
            return self._rng.uniform(f.latency_min_s, max(f.latency_min_s, f.latency_max_s))

    def _dispatch(self, req: Request) -> tuple[Response, str | None]:
        fault = self._pick_fault(req.path)
        if fault == "slow":
            time.sleep(self.faults.slow_s)
        if fault == "429":
            resp = self.error(429, "RATE_LIMITED", "Too many requests (injected)")
            resp.headers.setdefault("Retry-After", "1")
            return resp, fault
        if fault == "5xx":
            return self.error(
                self.faults.status_5xx, "INTERNAL_ERROR", "Injected server error"
            ), fault
        for method, pattern, handler in self._routes:
            m = pattern.match(req.path)
            if m and method == req.method:
                return handler(req, **m.groupdict()), fault
        if any(p.match(req.path) for _, p, _ in self._routes):
            return self.error(405, "METHOD_NOT_ALLOWED", f"{req.method} not allowed"), fault
        return self.error(404, "NOT_FOUND", f"no route for {req.path}"), fault

    def record(self, req: Request, status: int, fault: str | None) -> None:
        with self._lock:
            self.log.append(
                RequestRecord(
                    req.method, req.path, req.query, req.headers, status, req.received_at, fault
                )
            )
            self.status_counts[status] += 1


class _Httpd(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def _make_handler(server: SimServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive
        # Headers and body go out in two writes; with Nagle on, the client's delayed ACK stalls
        # every keep-alive response by ~40 ms.
        disable_nagle_algorithm = True
        server_version = f"fleet-sim-{server.name}"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _handle(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            req = Request(
                method=self.command,
                path=split.path,
                query=parse_qs(split.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                received_at=time.time(),
            )
            try:
                resp, fault = server.dispatch(req)
            except Exception as exc:  # a simulator bug must still answer like a server
                resp, fault = (
                    server.error(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"),
                    None,
                )
            server.record(req, resp.status, fault)
            payload = resp.payload()
            headers = dict(resp.headers)
            accepts_gzip = "gzip" in (req.header("accept-encoding") or "")
            if resp.compressible and accepts_gzip and len(payload) > 256:
                payload = gzip.compress(payload, compresslevel=5)
                headers["Content-Encoding"] = "gzip"
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in headers.items():
                self.send_header(key, value)
            if fault == "cut":
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command == "HEAD":
                return
            if fault == "cut":
                # Half the body, then a hard close: the client sees an incomplete read.
                self.wfile.write(payload[: max(1, len(payload) // 2)])
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            try:
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = _handle

    return Handler
