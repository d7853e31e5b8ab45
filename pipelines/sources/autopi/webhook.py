"""`fleet webhook`: a small receiver for AutoPi's `trip_export_finished` trigger signal.

It only records the signal (task id, trip id, when it arrived) in the AutoPi ledger and
answers 202 at once; `autopi_exports_sensor` sees it at its next tick and asks for a drain of
that task. Nothing is downloaded and no run is launched from the request thread, so a burst
of signals (AutoPi's daily re-broadcast) costs a few SQLite inserts. A signal already recorded
is answered 202 `duplicate` and not recorded again (see `ExportLedger.add_signal`).

The shared secret travels in the `X-Webhook-Secret` header (set it as a custom header of the
AutoPi trigger) and is compared in constant time; it is never logged or stored.

Every request gets an answer (a bad body is a 400 saying why, an unexpected failure a 500),
and no client can hold the receiver: each read waits at most `timeout` seconds, a whole
request must arrive within `request_deadline`, and at most `max_threads` connections are
served at once; beyond that a connection is answered 503 at once and closed.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import json
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from pipelines.settings import MissingCredentialError
from pipelines.sources.autopi.state import ExportLedger

SIGNAL = "trip_export_finished"
SECRET_HEADER = "X-Webhook-Secret"
MAX_BODY = 64 * 1024
MAX_DEPTH = 32  # a signal is one flat object; anything deeper is not one
MAX_TASK_ID = 2**63 - 1  # AutoPi task ids are positive; SQLite stores at most this
MAX_TEXT = 256  # trip_id / finished_at longer than this are not AutoPi's
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_MAX_THREADS = 32
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_REQUEST_DEADLINE_S = 30.0
BUSY_LOG_EVERY_S = 60.0

log = logging.getLogger(__name__)


def _json_reply(status: int, reason: str, body: dict[str, Any], *extra: str) -> bytes:
    payload = json.dumps(body).encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        *extra,
        "Connection: close",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


# Written by the accepting thread itself when every handler slot is taken (no thread needed).
_BUSY = _json_reply(503, "Service Unavailable", {"detail": "Busy; retry."}, "Retry-After: 1")


class BadSignal(ValueError):
    """A body that is not a usable signal; its message is the 400's one-line `detail`."""


class WebhookServer(ThreadingHTTPServer):
    """The receiver; `serve_forever()` serves it, `url` says where (tests use port 0).

    `max_threads` bounds the handler threads (a flood of connections must not become a flood
    of threads), `timeout` bounds each read from a client and `request_deadline` a whole
    request, so a client that stalls or trickles is dropped instead of holding a thread.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # a burst waits in the kernel's queue, not refused by it

    def __init__(
        self,
        host: str,
        port: int,
        secret: str,
        ledger: ExportLedger,
        *,
        max_threads: int = DEFAULT_MAX_THREADS,
        timeout: float = DEFAULT_TIMEOUT_S,
        request_deadline: float = DEFAULT_REQUEST_DEADLINE_S,
    ) -> None:
        if not secret:
            raise MissingCredentialError(
                "AUTOPI_WEBHOOK_SECRET is not set (needed by fleet webhook)"
            )
        if max_threads < 1 or timeout <= 0 or request_deadline <= 0:
            raise ValueError("max_threads must be >= 1 and the timeouts > 0")
        self.secret = secret.encode()
        self.ledger = ledger
        self.max_threads = max_threads
        self.request_timeout = timeout
        self.request_deadline = request_deadline
        self.received = 0
        self.rejected = 0
        self.duplicates = 0
        self.busy = 0
        self._count_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_threads)
        self._open: set[socket.socket] = set()
        self._busy_logged_at = float("-inf")
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def authorized(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.secret)

    def count(self, outcome: Literal["received", "rejected", "duplicates", "busy"]) -> None:
        """Bump one of `received`, `rejected`, `duplicates`, `busy` (handler threads race)."""
        with self._count_lock:
            setattr(self, outcome, getattr(self, outcome) + 1)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a handler thread only if a slot is free; otherwise answer 503 from here."""
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        with self._count_lock:
            self._open.add(request)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request: socket.socket) -> None:
        with self._count_lock:
            self._open.discard(request)
        self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        """503 without reading the request: costs the accepting thread microseconds, never a
        wait (the reply fits the fresh socket's send buffer)."""
        self.count("busy")
        now = time.monotonic()
        if now - self._busy_logged_at >= BUSY_LOG_EVERY_S:
            self._busy_logged_at = now
            log.warning(
                "AutoPi webhook: all %d handler slots busy; refusing connections with 503",
                self.max_threads,
            )
        with contextlib.suppress(OSError):
            request.setblocking(False)
            request.send(_BUSY)
            for _ in range(4):  # drain what already arrived, so closing sends FIN, not RST
                if not request.recv(65536):
                    break
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """What escaped a handler (a client gone mid-reply): one log line, no traceback spam.
        Failures while answering are logged by the handler itself."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.debug("AutoPi webhook: connection dropped: %s", type(exc).__name__)
        else:
            log.error("AutoPi webhook: connection failed", exc_info=exc)

    def server_close(self) -> None:
        """Stop reading from open connections first so closing never waits on a slow client."""
        with self._count_lock:
            still_open = list(self._open)
        for sock in still_open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
        super().server_close()  # joins the handler threads
        self.ledger.close()


class _DeadlineReader(io.RawIOBase):
    """Socket reads that give up after `timeout` idle seconds or at the request's deadline, so
    a client trickling one byte at a time cannot keep a request open forever."""

    def __init__(self, sock: socket.socket, timeout: float, deadline: Callable[[], float]) -> None:
        super().__init__()
        self._sock = sock
        self._timeout = timeout
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline() - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request deadline passed")
        self._sock.settimeout(min(self._timeout, remaining))
        return self._sock.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer
    protocol_version = "HTTP/1.1"
    server_version = "fleet-autopi-webhook"
    timeout = DEFAULT_TIMEOUT_S  # replaced by the server's in setup()

    def setup(self) -> None:
        self.timeout = self.server.request_timeout
        self._deadline = time.monotonic() + self.server.request_deadline
        super().setup()
        self.rfile.close()
        raw = _DeadlineReader(self.connection, self.timeout, lambda: self._deadline)
        self.rfile = io.BufferedReader(raw)

    def handle_one_request(self) -> None:
        self._deadline = time.monotonic() + self.server.request_deadline
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:
        return  # the default logs every request line; we log outcomes, never headers

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.connection.settimeout(self.timeout)  # a read may have left a shorter one
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path.split("?")[0].rstrip("/") in ("", "/healthz"):
            self._reply(200, {"status": "ok", "signal": SIGNAL})
        else:
            self._reply(404, {"detail": "Not found."})

    def do_POST(self) -> None:
        """Always answers (unless the client is gone): whatever fails becomes a 500 reply."""
        try:
            answer = self._answer()
        except Exception:
            # The traceback names code and the error, never a header or the secret.
            log.exception("AutoPi webhook: request failed; answered 500, nothing recorded")
            self.close_connection = True
            answer = (500, {"detail": "Internal error; the signal was not recorded."})
        if answer is not None:
            self._reply(*answer)

    def _answer(self) -> tuple[int, dict[str, Any]] | None:
        """The reply to one POST; None when the client went away before sending its body."""
        length = _content_length(self.headers.get("Content-Length"))
        if length is None or length > MAX_BODY:
            self.close_connection = True  # the body, if any, is left unread
            status = 411 if length is None else 413
            return status, {"detail": "Body missing or too large."}
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            return 408, {"detail": "Body not received in time."}
        except ConnectionError:
            self.close_connection = True
            return None
        if not self.server.authorized(self.headers.get(SECRET_HEADER)):
            self.server.count("rejected")
            log.warning("AutoPi webhook: request with a missing or wrong secret rejected")
            return 401, {"detail": "Invalid or missing webhook secret."}
        try:
            signal = parse_signal(body)
        except BadSignal as exc:
            log.info("AutoPi webhook: bad body answered 400: %s", exc)
            return 400, {"detail": str(exc)}
        if signal is None:
            return 202, {"status": "ignored", "detail": f"not a {SIGNAL} signal"}
        task_id, trip_id, finished_at, rebroadcast = signal
        new = self.server.ledger.add_signal(
            task_id, trip_id=trip_id, finished_at=finished_at, rebroadcast=rebroadcast
        )
        if not new:
            self.server.count("duplicates")
            log.info("AutoPi webhook: repeated signal for task %s not recorded again", task_id)
            return 202, {"status": "duplicate", "task_id": task_id}
        self.server.count("received")
        log.info("AutoPi webhook: export of task %s signalled", task_id)
        return 202, {"status": "recorded", "task_id": task_id}


def _content_length(value: str | None) -> int | None:
    """Plain ASCII digits only: `"²".isdigit()` is True but `int("²")` fails."""
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 12:
        return None
    return int(value)


_STRUCTURE = re.compile(rb'[\[\]{}"\\]')


def _too_deep(body: bytes, limit: int) -> bool:
    """Whether valid JSON nests deeper than `limit`, in one linear pass over the brackets and
    quotes (json.loads would recurse once per level before failing)."""
    depth = 0
    in_string = False
    skip = -1
    for match in _STRUCTURE.finditer(body):
        at = match.start()
        if at == skip:
            continue  # the character after a backslash
        char = body[at : at + 1]
        if in_string:
            if char == b"\\":
                skip = at + 1
            elif char == b'"':
                in_string = False
        elif char == b'"':
            in_string = True
        elif char in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif char in (b"]", b"}"):
            depth -= 1
    return False


def _task_id(value: object) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        if len(value) > len(str(MAX_TASK_ID)):
            raise BadSignal(f"task_id is out of range (1..{MAX_TASK_ID}).")
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadSignal("task_id is missing or not an integer.")
    if not 1 <= value <= MAX_TASK_ID:
        raise BadSignal(f"task_id is out of range (1..{MAX_TASK_ID}).")
    return value


def _text(signal: dict[str, Any], key: str) -> str | None:
    value = signal.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadSignal(f"{key} is not a string.")
    text = str(value)
    if len(text) > MAX_TEXT:
        raise BadSignal(f"{key} is longer than {MAX_TEXT} characters.")
    return text


def parse_signal(body: bytes) -> tuple[int, str | None, str | None, bool] | None:
    """(task_id, trip_id, finished_at, rebroadcast) of a `trip_export_finished` body, None for
    another signal; raises `BadSignal` (a 400) for anything else, never another error."""
    if _too_deep(body, MAX_DEPTH):
        raise BadSignal(f"Body nests deeper than {MAX_DEPTH} levels.")
    try:
        signal = json.loads(body)
    except RecursionError:
        raise BadSignal(f"Body nests deeper than {MAX_DEPTH} levels.") from None
    except ValueError:  # also bad UTF-8 and integers too long to convert
        raise BadSignal("Body is not JSON.") from None
    if not isinstance(signal, dict):
        raise BadSignal("Body is not a JSON object.")
    if signal.get("signal", SIGNAL) != SIGNAL:
        return None
    return (
        _task_id(signal.get("task_id")),
        _text(signal, "trip_id"),
        _text(signal, "finished_at"),
        signal.get("rebroadcast") is True,
    )


def make_webhook_server(
    host: str,
    port: int,
    secret: str | None,
    ledger: ExportLedger,
    *,
    max_threads: int = DEFAULT_MAX_THREADS,
    timeout: float = DEFAULT_TIMEOUT_S,
    request_deadline: float = DEFAULT_REQUEST_DEADLINE_S,
) -> WebhookServer:
    """A bound receiver writing to `ledger`; raises `MissingCredentialError`
    when no secret is configured (an open receiver would let anyone trigger drains)."""
    if not secret:
        raise MissingCredentialError("AUTOPI_WEBHOOK_SECRET is not set (needed by fleet webhook)")
    return WebhookServer(
        host,
        port,
        secret,
        ledger,
        max_threads=max_threads,
        timeout=timeout,
        request_deadline=request_deadline,
    )


def serve_webhook(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    secret: str | None = None,
    state: str | Path | None = None,
) -> int:
    """What `fleet webhook` runs: serve until interrupted. Secret and ledger path default to
    `AUTOPI_WEBHOOK_SECRET` and the AutoPi ledger of FLEET_LAKE_DIR in FLEET_STATE_URL."""
    from pipelines.lake import Lake
    from pipelines.settings import environment, get_settings, load_env_file
    from pipelines.state import StateStore
    from pipelines.state import shared as shared_state

    load_env_file()
    settings = get_settings()
    if secret is None:
        secret = environment().get("AUTOPI_WEBHOOK_SECRET")
    if not secret:
        print(MissingCredentialError("AUTOPI_WEBHOOK_SECRET is not set (needed by fleet webhook)"))
        return 2
    try:
        if state is None:
            store = StateStore.from_settings()
        else:  # a state URL, or a SQLite file's path
            text = str(state)
            store = shared_state(text if "://" in text else f"sqlite:///{Path(text).resolve()}")
    except (ConnectionError, ValueError) as exc:
        print(exc)
        return 2
    ledger = ExportLedger.of(Lake(settings.lake_dir), store)
    server = make_webhook_server(host, port, secret, ledger)
    print(
        f"AutoPi webhook receiver on {server.url} (POST, header {SECRET_HEADER}); "
        f"ledger in {store.describe()}"
    )
    print("Signals are picked up by autopi_exports_sensor at its next tick. Ctrl-C stops.")
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
