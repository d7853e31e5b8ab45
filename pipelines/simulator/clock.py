"""A hand-moved simulated "now" for the vendor servers (tests, benchmarks, replays)."""

from __future__ import annotations

from datetime import datetime, timedelta


class ManualClock:
    """Callable like the servers' `clock=`; `advance` or set `now` to move time."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
