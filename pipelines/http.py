"""The one HTTP stack of every vendor client: session, retry policy, and a sliding-window
rate limiter shared by every process on the machine (a SQLite ledger of request slots).
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from pipelines import __version__

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = f"fleet-pipelines/{__version__}"
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
TRANSIENT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class VendorAPIError(RuntimeError):
    """A vendor answered with an error we must not retry (or ran out of retries)."""

    def __init__(
        self, vendor: str, status: int | None, code: str, message: str, where: str
    ) -> None:
        self.vendor = vendor
        self.status = status
        self.code = code
        self.vendor_message = message
        status_text = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"{vendor} API {where} failed: {status_text} {code}: {message}".strip())


# --- rate limiting ------------------------------------------------------------------------


@dataclass
class Slot:
    """One reserved request slot; released when the response is in hand."""

    limiter: SlidingWindowLimiter | None
    slot_id: int | None
    waited_s: float


class SlidingWindowLimiter:
    """At most `max_requests` in any window of `window_s`, across threads and processes.

    Each request holds a row in a SQLite ledger keyed by `key`. A slot counts from when it
    is reserved and, once released, until `window_s` after the *response* arrived: the server
    saw the request no later than that, so spacing releases by a full window can never let
    N+1 requests land in one server-side window, whatever the latency. Slots of a process that
    died mid-request stop counting after `stale_after_s`.
    """

    def __init__(
        self,
        key: str,
        max_requests: int,
        window_s: float,
        db_path: Path,
        *,
        margin_s: float = 0.01,
        stale_after_s: float = 300.0,
    ) -> None:
        self.key = key
        self.max_requests = max_requests
        self.window_s = window_s
        self.margin_s = margin_s
        self.stale_after_s = stale_after_s
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            db_path, timeout=60, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS slots ("
                " id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL,"
                " reserved_at REAL NOT NULL, released_at REAL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS slots_key ON slots(key, released_at)")

    def _try_reserve(self) -> tuple[int | None, float]:
        """Reserve a slot now, or say how long to wait before trying again."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                horizon = now - self.window_s - self.margin_s
                stale = now - self.stale_after_s
                self._db.execute(
                    "DELETE FROM slots WHERE key = ? AND ("
                    " (released_at IS NOT NULL AND released_at < ?)"
                    " OR (released_at IS NULL AND reserved_at < ?))",
                    (self.key, horizon, stale - self.window_s),
                )
                rows = self._db.execute(
                    "SELECT reserved_at, released_at FROM slots WHERE key = ? AND ("
                    " released_at >= ? OR released_at IS NULL)",
                    (self.key, horizon),
                ).fetchall()
                ends = []  # when each counted slot stops counting
                in_flight = 0
                for reserved_at, released_at in rows:
                    if released_at is not None:
                        ends.append(released_at + self.window_s + self.margin_s)
                    elif reserved_at >= stale:
                        in_flight += 1
                    else:  # its process died mid-request: count it as released when it went stale
                        ends.append(reserved_at + self.stale_after_s + self.window_s)
                ends = [e for e in ends if e > now]
                if len(ends) + in_flight < self.max_requests:
                    cur = self._db.execute(
                        "INSERT INTO slots (key, reserved_at) VALUES (?, ?)", (self.key, now)
                    )
                    self._db.execute("COMMIT")
                    return cur.lastrowid, 0.0
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        ends.sort()
        must_expire = len(ends) + in_flight - self.max_requests  # 0-based index into ends
        if must_expire < len(ends):
            return None, max(ends[must_expire] - now, 0.001)
        return None, 0.02  # every slot is in flight: poll until one is released

    def acquire(self) -> Slot:
        waited = 0.0
        while True:
            slot_id, wait = self._try_reserve()
            if slot_id is not None:
                return Slot(self, slot_id, waited)
            # Re-check at least once a second: another process may release early.
            pause = min(wait, 1.0)
            time.sleep(pause)
            waited += pause

    def release(self, slot: Slot) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE slots SET released_at = ? WHERE id = ?", (time.time(), slot.slot_id)
            )

    @contextmanager
    def slot(self) -> Iterator[Slot]:
        s = self.acquire()
        try:
            yield s
        finally:
            self.release(s)

    def close(self) -> None:
        with self._lock:
            self._db.close()


# --- retries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """429 honours Retry-After; 5xx and broken connections back off exponentially with jitter."""

    max_attempts: int = 6
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    retry_after_cap_s: float = 300.0

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [base, min(cap, base * 2**attempt)]."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2**attempt)
        return random.uniform(min(self.backoff_base_s, ceiling), ceiling)

    def retry_after(self, response: requests.Response, attempt: int) -> float:
        value = response.headers.get("Retry-After")
        if value:
            try:
                seconds = float(value)
            except ValueError:
                try:
                    seconds = parsedate_to_datetime(value).timestamp() - time.time()
                except (TypeError, ValueError):
                    seconds = self.backoff(attempt)
            return min(max(seconds, 0.0), self.retry_after_cap_s)
        return self.backoff(attempt)


@dataclass
class RequestStats:
    """What every raw materialization reports about its API traffic (DESIGN §4)."""

    requests: int = 0
    retries: int = 0
    http_429: int = 0
    rate_limit_wait_s: float = 0.0
    bytes_received: int = 0
    by_status: dict[int, int] = field(default_factory=dict)

    def as_metadata(self) -> dict[str, float | int]:
        return {
            "api_requests": self.requests,
            "retries": self.retries,
            "http_429s": self.http_429,
            "rate_limit_wait_s": round(self.rate_limit_wait_s, 3),
        }


def make_session(
    user_agent: str = DEFAULT_USER_AGENT, headers: Mapping[str, str] | None = None
) -> requests.Session:
    """Keep-alive, gzip, an identifiable User-Agent; retries are ours, not urllib3's."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(
        {
            "User-Agent": user_agent,
            "Accept-Encoding": "gzip, deflate",
            "Connection": "keep-alive",
        }
    )
    if headers:
        session.headers.update(headers)
    return session


ErrorParser = Callable[[requests.Response], tuple[str, str]]


def parse_json_error(response: requests.Response) -> tuple[str, str]:
    """(code, message) from the vendors' JSON error shapes, never the raw body.

    `{"error": {"code", "message"}}` (AVL), `{"detail", "code"}` (AutoPi, DRF),
    `{"statusCode", "error", "message"}` (kt1), `{"error", "message"}` (Metrotec).
    """
    try:
        body = response.json()
    except ValueError:
        text = (response.text or "").strip().splitlines()
        return response.reason or "", (text[0][:200] if text else "")
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            code = err.get("code") or err.get("error") or response.reason or ""
            message = err.get("message") or err.get("detail") or err.get("msg") or ""
            return str(code), str(message)[:200]
        return str(err), str(body.get("message") or body.get("detail") or "")[:200]
    return response.reason or "", str(body)[:200]


class ApiClient:
    """Base of the vendor clients: one session, the retry policy, the shared limiter, stats.

    Vendor modules subclass it, add their auth headers and typed methods, and never see a
    retry loop or a rate limit.
    """

    vendor = "HTTP"

    def __init__(
        self,
        base_url: str,
        *,
        limiter: SlidingWindowLimiter | None = None,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (10.0, 120.0),
        user_agent: str = DEFAULT_USER_AGENT,
        headers: Mapping[str, str] | None = None,
        error_parser: ErrorParser = parse_json_error,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.session = make_session(user_agent, headers)
        self.stats = RequestStats()
        self._parse_error = error_parser
        self._sleep = sleep

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _acquire(self) -> Slot:
        if self.limiter is None:
            return Slot(None, None, 0.0)
        slot = self.limiter.acquire()
        self.stats.rate_limit_wait_s += slot.waited_s
        return slot

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        timeout: tuple[float, float] | None = None,
        passthrough: Collection[int] = (),
        passthrough_if: Callable[[requests.Response], bool] | None = None,
    ) -> requests.Response:
        """Send with retries; return a 2xx (or a `passthrough` status) response, else raise.

        `passthrough_if`, when given, must also accept a `passthrough` response for it to be
        handed back; one it refuses gets the usual policy (e.g. a 500 that is not the vendor's
        "empty" answer is retried). Only paths are ever put in errors and logs: no query
        strings, headers or bodies.
        """
        where = f"{method} /{path.lstrip('/')}"
        attempt = 0
        while True:
            attempt += 1
            slot = self._acquire()
            try:
                self.stats.requests += 1
                response = self.session.request(
                    method,
                    self.url(path),
                    params=params,
                    json=json,
                    headers=headers,
                    stream=stream,
                    timeout=timeout or self.timeout,
                )
            except TRANSIENT_ERRORS as exc:
                if slot.limiter:
                    slot.limiter.release(slot)
                if attempt >= self.retry.max_attempts:
                    raise VendorAPIError(
                        self.vendor, None, type(exc).__name__, "connection failed", where
                    ) from None
                delay = self.retry.backoff(attempt)
                log.warning(
                    "%s %s: %s, retry %d in %.1fs",
                    self.vendor,
                    where,
                    type(exc).__name__,
                    attempt,
                    delay,
                )
                self.stats.retries += 1
                self._sleep(delay)
                continue
            if slot.limiter:
                slot.limiter.release(slot)
            status = response.status_code
            self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
            if not stream:
                self.stats.bytes_received += len(response.content)
            if status < 300 or (
                status in passthrough and (passthrough_if is None or passthrough_if(response))
            ):
                return response
            if status == 429:
                self.stats.http_429 += 1
            if status in RETRYABLE_STATUSES and attempt < self.retry.max_attempts:
                delay = (
                    self.retry.retry_after(response, attempt)
                    if status == 429
                    else self.retry.backoff(attempt)
                )
                log.warning(
                    "%s %s: HTTP %d, retry %d in %.1fs", self.vendor, where, status, attempt, delay
                )
                response.close()
                self.stats.retries += 1
                self._sleep(delay)
                continue
            code, message = self._parse_error(response)
            response.close()
            raise VendorAPIError(self.vendor, status, code, message, where)

    def get_json(self, path: str, **kwargs: Any) -> Any:
        response = self.request("GET", path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise VendorAPIError(
                self.vendor,
                response.status_code,
                "BAD_JSON",
                "response body is not JSON",
                f"GET /{path}",
            ) from None

    def close(self) -> None:
        self.session.close()

    def download(
        self,
        path: str,
        dest: Path,
        *,
        params: Mapping[str, Any] | None = None,
        chunk_size: int = 1 << 20,
    ) -> int:
        """Stream a file body to `dest` (never whole in memory); return the bytes written.

        A body cut short (dropped connection, or fewer bytes than Content-Length) is resumed
        with `Range` + `If-Range` when the server advertised `Accept-Ranges: bytes` and a
        validator, else fetched again from the start, under the same retry policy and limiter
        as every request. On return `dest` holds exactly one complete body; otherwise it raises.
        """
        where = f"GET /{path.lstrip('/')}"
        written = 0
        validator: str | None = None  # strong ETag or Last-Modified of the body being resumed
        attempt = 0
        while True:
            attempt += 1
            # `identity`: the file's own bytes, so Content-Length counts what we write.
            headers = {"Accept-Encoding": "identity"}
            if written and validator:
                headers.update({"Range": f"bytes={written}-", "If-Range": validator})
            response = self.request("GET", path, params=params, headers=headers, stream=True)
            failure = "SHORT_BODY"
            try:
                partial = response.status_code == 206
                resumed = partial and written > 0 and _range_start(response) == written
                if resumed:
                    total = _range_total(response)
                elif partial:  # not the range asked for: ask for the whole body again
                    written, validator = 0, None
                    raise _UnusableRange
                else:  # a full body (or a server that ignored the range): start over
                    written = 0
                    total = _body_length(response)
                    validator = _validator(response)
                with dest.open("ab" if resumed else "wb") as out:
                    for chunk in response.iter_content(chunk_size):
                        out.write(chunk)
                        written += len(chunk)
                if total is None or written == total:
                    self.stats.bytes_received += written
                    return written
                if written > total:
                    written, validator = 0, None  # nonsense length: never resume from it
            except _UnusableRange:
                failure = "BAD_RANGE"
            except TRANSIENT_ERRORS as exc:
                failure = type(exc).__name__
            finally:
                response.close()
            if attempt >= self.retry.max_attempts:
                raise VendorAPIError(self.vendor, None, failure, "download incomplete", where)
            delay = self.retry.backoff(attempt)
            log.warning(
                "%s %s: body cut at %d bytes (%s), %s %d in %.1fs",
                self.vendor,
                where,
                written,
                failure,
                "resume" if written and validator else "retry",
                attempt,
                delay,
            )
            self.stats.retries += 1
            self._sleep(delay)


class _UnusableRange(Exception):
    """A 206 for a range other than the one asked for."""


def _body_length(response: requests.Response) -> int | None:
    """Content-Length of an unencoded body (an encoded one is checked by urllib3 instead)."""
    if response.headers.get("Content-Encoding", "identity") != "identity":
        return None
    value = response.headers.get("Content-Length", "")
    return int(value) if value.isdigit() else None


def _validator(response: requests.Response) -> str | None:
    """What makes a resumed range safe: the body must not have changed in between."""
    if response.headers.get("Accept-Ranges") != "bytes" or _body_length(response) is None:
        return None
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


def _range_start(response: requests.Response) -> int | None:
    unit, _, spec = response.headers.get("Content-Range", "").partition(" ")
    first = spec.partition("-")[0]
    return int(first) if unit == "bytes" and first.isdigit() else None


def _range_total(response: requests.Response) -> int | None:
    total = response.headers.get("Content-Range", "").rpartition("/")[2]
    return int(total) if total.isdigit() else None
