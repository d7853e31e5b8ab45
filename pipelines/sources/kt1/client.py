"""Key Telematics HTTP Export Task client: long-poll `GET /v2/stream`, `DELETE /v2/stream/{id}`.

Knows nothing of Dagster. The queue is at-least-once: a GET takes a batch out of the queue, a
DELETE acknowledges it for good, and a batch not acknowledged within ~2 minutes comes back
(possibly under a new id). Callers must land a batch durably *before* calling `acknowledge`.

The reference answers an empty queue with a 500 after waiting up to 45 s, and also answers an
unknown or expired batch id with a 500. So a 500 on GET that came back after a real wait means
"empty"; one that came back at once is an error and is retried with backoff like any 5xx.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import requests

from pipelines.error_bodies import parse_json_error
from pipelines.http import ApiClient, VendorAPIError
from pipelines.retry import RetryPolicy

log = logging.getLogger(__name__)

STREAM_PATH = "v2/stream"
SERVER_LONG_POLL_S = 45.0
"""The longest the reference says the server holds an empty GET before answering 500."""
REDELIVERY_S = 120.0
"""An unacknowledged batch is queued again this long after its GET (the reference's 2 min)."""
FAST_500_S = 0.25
"""A GET 500 faster than this (or than half the long poll, if shorter) did not wait: an error."""
_EXPIRED_WORDS = re.compile(r"invalid|unknown|expired|not.?found|no such", re.IGNORECASE)


class AckOutcome(StrEnum):
    ACKNOWLEDGED = "acknowledged"
    EXPIRED = "expired"  # unknown or expired id: the batch is (or will be) redelivered
    FAILED = "failed"  # 500s until retries ran out: treated like expired, and counted


@dataclass
class Kt1Batch:
    """One delivered batch: its id (None when the body has none) and the body as sent.

    Items are typed in bulk when the batch lands (`extract.split_batches`), not here: parsing
    them one by one in Python would be most of a drain's CPU time.
    """

    batch_id: str | None
    body: str
    fetched_at: datetime
    compressed: bool = False

    @property
    def items(self) -> list[Any]:
        """The parsed items (for tests and debugging; the drain never needs them)."""
        try:
            body = json.loads(self.body)
        except ValueError:
            return []
        items = body.get("items") if isinstance(body, dict) else None
        return items if isinstance(items, list) else []


@dataclass
class StreamStats:
    """Queue-level counts the drain reports beside the HTTP stats."""

    batches: int = 0
    empty_polls: int = 0
    acks: int = 0
    acks_expired: int = 0
    acks_failed: int = 0
    compressed_batches: int = 0
    expired_ids: list[str] = field(default_factory=list)


class Kt1Client(ApiClient):
    """The export stream of one HTTP Export Task, authenticated by `x-access-token`."""

    vendor = "kt1"

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        long_poll_s: float = SERVER_LONG_POLL_S,
        gzip: bool = True,
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        headers = {"x-access-token": token, "Accept": "application/json"}
        if not gzip:
            headers["Accept-Encoding"] = "identity"
        # The read timeout must outlast the server's long poll, or every empty poll would
        # look like a dead connection.
        super().__init__(
            base_url,
            headers=headers,
            retry=retry,
            timeout=(10.0, long_poll_s + 15.0),
            **kwargs,
        )
        # requests re-reads the proxy and CA environment on every request (~0.3 ms each); a
        # drain makes thousands a minute, so read it once, for this host, here.
        self.session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if ca_bundle:
            self.session.verify = ca_bundle
        self.session.trust_env = False
        self.long_poll_s = long_poll_s
        self.empty_after_s = min(FAST_500_S, long_poll_s / 2)
        self.stream = StreamStats()

    def _waited(self, response: requests.Response) -> bool:
        return response.elapsed.total_seconds() >= self.empty_after_s

    def next_batch(self) -> Kt1Batch | None:
        """The next batch, or None when the server long-polled and found the queue empty."""
        response = self.request("GET", STREAM_PATH, passthrough={500}, passthrough_if=self._waited)
        if response.status_code == 500:
            self.stream.empty_polls += 1
            return None
        compressed = "gzip" in response.headers.get("Content-Encoding", "")
        self.stream.batches += 1
        self.stream.compressed_batches += int(compressed)
        return parse_batch(response.content, datetime.now(UTC), compressed=compressed)

    def acknowledge(self, batch_id: str) -> AckOutcome:
        """DELETE a landed batch. An unknown or expired id is logged, not fatal: the batch is
        redelivered and the copy is removed by item identity downstream.
        """
        path = f"{STREAM_PATH}/{batch_id}"
        try:
            response = self.request(
                "DELETE", path, passthrough={404, 500}, passthrough_if=_names_a_bad_id
            )
        except VendorAPIError as exc:
            if exc.status != 500:
                raise
            # The reference's only documented DELETE 500 is a wrong id; after retries we treat
            # it as one: nothing is lost, the batch comes back and is de-duplicated.
            self.stream.acks_failed += 1
            log.warning("kt1 DELETE /%s: %s; it will be redelivered", path, exc.vendor_message)
            return AckOutcome.FAILED
        if response.status_code in (404, 500):
            code, message = parse_json_error(response)
            self.stream.acks_expired += 1
            self.stream.expired_ids.append(batch_id)
            log.warning(
                "kt1 DELETE /%s: HTTP %d %s %s; already expired, it will be redelivered",
                path,
                response.status_code,
                code,
                message,
            )
            return AckOutcome.EXPIRED
        self.stream.acks += 1
        return AckOutcome.ACKNOWLEDGED


def _names_a_bad_id(response: requests.Response) -> bool:
    """404, or a 500 whose body says the id is invalid/unknown/expired (other 500s retry)."""
    if response.status_code == 404:
        return True
    code, message = parse_json_error(response)
    return bool(_EXPIRED_WORDS.search(f"{code} {message}"))


_HEAD = re.compile(r'\s*\{\s*"id"\s*:\s*("(?:[^"\\]|\\.)*")')


def batch_id_of(body: str) -> str | None:
    """The batch id, read from the head of the body when it is laid out as usual (fast), else
    from the parsed body; None when there is no non-empty string id to acknowledge.
    """
    head = _HEAD.match(body)
    if head is not None:
        batch_id = json.loads(head.group(1))
    else:
        try:
            parsed = json.loads(body)
        except ValueError:
            return None
        batch_id = parsed.get("id") if isinstance(parsed, dict) else None
    return batch_id if isinstance(batch_id, str) and batch_id else None


def parse_batch(content: bytes, fetched_at: datetime, *, compressed: bool = False) -> Kt1Batch:
    """A 200 body as a batch; bytes that are not UTF-8 are kept with replacement characters."""
    body = content.decode("utf-8", "replace")
    return Kt1Batch(batch_id_of(body), body, fetched_at, compressed)
