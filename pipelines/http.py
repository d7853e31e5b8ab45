"""The one HTTP client base of every vendor client: a keep-alive session, timeouts, retries
under the policy of pipelines.retry, a slot of the shared limiter (pipelines.ratelimit) per
attempt, request stats, and resumable downloads.

A hung or failing vendor must fail a run in minutes, visibly: timeouts and a time budget bound
the retries of each request, every retry is a WARNING line, and the final error says how many
attempts were made over how long. Errors and logs name paths only (no query strings, headers,
bodies or tokens), and a vendor's HTML error page is summarised (pipelines.error_bodies), never
quoted.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter

from pipelines import __version__
from pipelines.error_bodies import ErrorParser, parse_json_error
from pipelines.ratelimit import SlidingWindowLimiter, Slot
from pipelines.retry import RETRYABLE_STATUSES, TRANSIENT_ERRORS, RetryPolicy

# Under "dagster.builtin", the namespace Dagster's get_dagster_logger uses: inside a run each
# retry line lands in the run's own logs (the UI's), outside one it is a plain Python logger.
RETRY_LOG = logging.getLogger("dagster.builtin.fleet.http")

DEFAULT_USER_AGENT = f"fleet-pipelines/{__version__}"
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 30.0
"""Long enough for any answer but a long poll (whose caller passes its own), short enough that
a hung API costs a few attempts of it, not minutes each."""


class VendorAPIError(RuntimeError):
    """A vendor answered with an error we must not retry (or ran out of retries).

    The message is one line. Given `attempts`, it says how many were made and over how long
    (`elapsed_s`), so a failed run tells a burst of 503s from a single refusal; `note` says
    why retrying stopped early (the time budget).
    """

    def __init__(
        self,
        vendor: str,
        status: int | None,
        code: str,
        message: str,
        where: str,
        *,
        attempts: int | None = None,
        elapsed_s: float | None = None,
        note: str = "",
    ) -> None:
        self.vendor = vendor
        self.status = status
        self.code = code
        self.vendor_message = message
        self.where = where
        self.attempts = attempts
        self.elapsed_s = elapsed_s
        status_text = f"HTTP {status}" if status is not None else "no response"
        after = ""
        if attempts is not None:
            plural = "" if attempts == 1 else "s"
            after = f" after {attempts} attempt{plural} in {_seconds(elapsed_s or 0.0)}"
        detail = " ".join(part for part in (status_text, code) if part)
        if message:
            detail = f"{detail}: {message}"
        text = f"{vendor} API {where} failed{after}: {detail}"
        if note:
            text = f"{text}; {note}"
        super().__init__(" ".join(text.split()))


def _seconds(value: float) -> str:
    return f"{value:.1f}s" if value < 10 else f"{value:.0f}s"


@dataclass
class RequestStats:
    """What every raw materialization reports about its API traffic (docs/operations.md)."""

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


Timeout = float | tuple[float, float]
"""(connect, read) seconds, or one number: the read timeout, with connect at most 10 s."""


def as_timeout(value: Timeout) -> tuple[float, float]:
    """(connect, read) seconds from either form; ValueError for anything not positive."""
    if isinstance(value, tuple):
        connect, read = value
    else:
        read = value
        connect = min(DEFAULT_CONNECT_TIMEOUT_S, read)
    for seconds in (connect, read):
        if isinstance(seconds, bool) or not (
            isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0
        ):
            raise ValueError(f"HTTP timeout must be positive seconds, got {value!r}")
    return float(connect), float(read)


class WarningLog(Protocol):
    """Where retries are reported: a `logging.Logger`, or Dagster's `context.log`."""

    def warning(self, msg: str, /) -> None: ...


def _where(method: str, path: str) -> str:
    """`METHOD /path` for errors and logs: a query string a caller left in `path` is dropped."""
    return f"{method} /{path.lstrip('/').split('?', 1)[0]}"


def _failure_text(exc: BaseException, timeout: tuple[float, float]) -> str:
    if isinstance(exc, requests.ConnectTimeout):
        return f"no connection within {timeout[0]:g}s"
    if isinstance(exc, requests.ReadTimeout):
        return f"no answer within {timeout[1]:g}s"
    return "connection failed"


class ApiClient:
    """Base of the vendor clients: one session, the retry policy, the shared limiter, stats.

    Vendor modules subclass it, add their auth headers and typed methods, and never see a
    retry loop or a rate limit. `timeout` and `retry` bound how long a failing vendor can hold
    a run; `log` receives one WARNING line per retry (default: RETRY_LOG, which a run shows).
    """

    vendor = "HTTP"

    def __init__(
        self,
        base_url: str,
        *,
        limiter: SlidingWindowLimiter | None = None,
        retry: RetryPolicy | None = None,
        timeout: Timeout = (DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_READ_TIMEOUT_S),
        user_agent: str = DEFAULT_USER_AGENT,
        headers: Mapping[str, str] | None = None,
        error_parser: ErrorParser = parse_json_error,
        sleep: Callable[[float], None] = time.sleep,
        log: WarningLog | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.retry = retry or RetryPolicy()
        self.timeout = as_timeout(timeout)
        self.session = make_session(user_agent, headers)
        self.stats = RequestStats()
        self._parse_error = error_parser
        self._sleep = sleep
        self._log: WarningLog = log if log is not None else RETRY_LOG

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _acquire(self) -> Slot:
        if self.limiter is None:
            return Slot(None, None, 0.0)
        slot = self.limiter.acquire()
        self.stats.rate_limit_wait_s += slot.waited_s
        return slot

    def _stop_retrying(
        self, attempt: int, spent_s: float, delay: float, *, retry_after: bool = False
    ) -> str | None:
        """None to retry after `delay`; otherwise why not ("" once every attempt is used)."""
        if attempt >= self.retry.max_attempts:
            return ""
        left = self.retry.budget_s - spent_s
        if delay <= left:
            return None
        if retry_after:
            return (
                f"Retry-After {_seconds(delay)} is past the retry budget "
                f"({_seconds(max(left, 0.0))} of {self.retry.budget_s:g}s left)"
            )
        return f"a retry in {_seconds(delay)} would pass the {self.retry.budget_s:g}s retry budget"

    def _log_retry(self, where: str, failure: str, attempt: int, delay: float, verb: str) -> None:
        wait = f"{delay:.2f}s" if delay < 1 else f"{delay:.1f}s"
        self._log.warning(
            f"{self.vendor} {where}: {failure}, attempt {attempt + 1} of "
            f"{self.retry.max_attempts}, {verb} in {wait}"
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        timeout: Timeout | None = None,
        passthrough: Collection[int] = (),
        passthrough_if: Callable[[requests.Response], bool] | None = None,
    ) -> requests.Response:
        """Send with retries; return a 2xx (or a `passthrough` status) response, else raise.

        `passthrough_if`, when given, must also accept a `passthrough` response for it to be
        handed back; one it refuses gets the usual policy (e.g. a 500 that is not the vendor's
        "empty" answer is retried). `timeout` overrides the client's for this request (a long
        poll). Only paths are ever put in errors and logs: no query strings, headers or bodies.
        """
        where = _where(method, path)
        limits = as_timeout(timeout) if timeout is not None else self.timeout
        spent = 0.0  # attempts plus back-off waits: what the retry budget bounds
        attempt = 0
        while True:
            attempt += 1
            slot = self._acquire()
            started = time.monotonic()
            try:
                self.stats.requests += 1
                response = self.session.request(
                    method,
                    self.url(path),
                    params=params,
                    json=json,
                    headers=headers,
                    stream=stream,
                    timeout=limits,
                )
            except TRANSIENT_ERRORS as exc:
                spent += time.monotonic() - started
                if slot.limiter:
                    slot.limiter.release(slot)
                failure = type(exc).__name__
                delay = self.retry.backoff(attempt)
                why = self._stop_retrying(attempt, spent, delay)
                if why is not None:
                    raise VendorAPIError(
                        self.vendor,
                        None,
                        failure,
                        _failure_text(exc, limits),
                        where,
                        attempts=attempt,
                        elapsed_s=spent,
                        note=why,
                    ) from None
                self._log_retry(where, failure, attempt, delay, "retrying")
                self.stats.retries += 1
                self._sleep(delay)
                spent += delay
                continue
            spent += time.monotonic() - started
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
            why = ""
            if status in RETRYABLE_STATUSES:
                asked = status == 429 and bool(response.headers.get("Retry-After"))
                delay = (
                    self.retry.retry_after(response, attempt)
                    if status == 429
                    else self.retry.backoff(attempt)
                )
                why = self._stop_retrying(attempt, spent, delay, retry_after=asked)
                if why is None:
                    self._log_retry(where, f"HTTP {status}", attempt, delay, "retrying")
                    response.close()
                    self.stats.retries += 1
                    self._sleep(delay)
                    spent += delay
                    continue
            code, message = self._parse_error(response)
            response.close()
            gave_up = status in RETRYABLE_STATUSES or attempt > 1
            raise VendorAPIError(
                self.vendor,
                status,
                code,
                message,
                where,
                attempts=attempt if gave_up else None,
                elapsed_s=spent if gave_up else None,
                note=why,
            )

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
                _where("GET", path),
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
        Only `max_attempts` bounds the body attempts: a large body may rightly take longer than
        the retry budget (each request inside still has its own budget and timeouts).
        """
        where = _where("GET", path)
        started = time.monotonic()
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
                raise VendorAPIError(
                    self.vendor,
                    None,
                    failure,
                    "download incomplete",
                    where,
                    attempts=attempt,
                    elapsed_s=time.monotonic() - started,
                )
            delay = self.retry.backoff(attempt)
            self._log_retry(
                where,
                f"body cut at {written} bytes ({failure})",
                attempt,
                delay,
                "resuming" if written and validator else "retrying",
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
