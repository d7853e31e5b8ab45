"""Split partition days into API request windows: one rule, used by every windowed source."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True)
class DayRange:
    """Whole days `first`..`last`, both included: a check's window, a report's period, an API
    request's window all count and walk their days the same way."""

    first: date
    last: date

    @property
    def count(self) -> int:
        return (self.last - self.first).days + 1

    def dates(self) -> Iterator[date]:
        for offset in range(self.count):
            yield self.first + timedelta(days=offset)


def day_runs(
    days: Sequence[date],
    max_days: int,
    fits: Callable[[date, date], bool] = lambda first, last: True,
) -> list[tuple[date, date]]:
    """The fewest runs of consecutive days, each at most `max_days` long and `fits`.

    `fits(first, last)` lets a source add its own limit (AVL measures a window in local wall
    time); a run it rejects is shortened a day at a time, down to a single day.
    """
    ordered = sorted(set(days))
    runs: list[tuple[date, date]] = []
    i = 0
    while i < len(ordered):
        j = i
        while (
            j + 1 < len(ordered)
            and ordered[j + 1] - ordered[j] == timedelta(days=1)
            and (ordered[j + 1] - ordered[i]).days < max_days
        ):
            j += 1
        while j > i and not fits(ordered[i], ordered[j]):
            j -= 1
        runs.append((ordered[i], ordered[j]))
        i = j + 1
    return runs
