"""What a rate limit promises, measured on the moments requests left or arrived."""

from __future__ import annotations


def max_in_any_window(times: list[float], window: float) -> int:
    """The most of `times` that fall within any `window` seconds: what a sliding-window limit
    of N per `window` must keep at N or below, wherever the window is placed."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
