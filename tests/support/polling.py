"""Waiting for another process or server to reach a state, with a message that says which."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    what: str,
    predicate: Callable[[], T],
    timeout_s: float,
    *,
    state: Callable[[], str] = lambda: "",
    poll_s: float = 0.2,
) -> T:
    """The predicate's first truthy value; after `timeout_s`, an AssertionError naming `what`
    and, from `state`, what the world looked like then."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}{state()}")
