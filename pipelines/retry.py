"""When a vendor request is tried again and how long to wait: the one retry policy of every
client (429 honours Retry-After, 5xx and broken connections back off with full jitter).

Apart from the client so the policy is a value an operator bounds (settings build it with
`RetryPolicy.bounded`) and a test can pin, without a session or a server.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import requests

DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_RETRY_BUDGET_S = 150.0
"""Attempts plus back-off waits of one request; with the default read timeout a hung API
fails in under 3 minutes (the last attempt may start just inside the budget)."""

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
TRANSIENT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """429 honours Retry-After; 5xx and broken connections back off exponentially with jitter.

    Retrying stops after `max_attempts`, or sooner when the next wait would take one request
    past `budget_s` (its attempts plus the waits between them; time queued on the rate limiter
    does not count, since that is our own pacing, not the vendor failing).
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    retry_after_cap_s: float = 300.0
    budget_s: float = DEFAULT_RETRY_BUDGET_S

    @classmethod
    def bounded(cls, max_attempts: int | None = None, budget_s: float | None = None) -> RetryPolicy:
        """The default policy with an operator's bounds; None keeps a default.

        Raises ValueError (one line) for bounds that would never send a request or never stop.
        """
        attempts = DEFAULT_MAX_ATTEMPTS if max_attempts is None else max_attempts
        budget = DEFAULT_RETRY_BUDGET_S if budget_s is None else budget_s
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"max_attempts must be a whole number >= 1, got {max_attempts!r}")
        if isinstance(budget, bool) or not (
            isinstance(budget, int | float) and math.isfinite(budget) and budget > 0
        ):
            raise ValueError(f"budget_s must be a positive number of seconds, got {budget_s!r}")
        return cls(max_attempts=attempts, budget_s=float(budget))

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
