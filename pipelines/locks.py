"""One at a time, whatever started it: an OS file lock around work that must never run twice at
once on one lake (a kt1 drain, an AutoPi drain), so the guarantee holds without Dagster's pools
(a CLI run, a second instance). The kernel drops the lock when its holder exits, even by SIGKILL,
so a dead holder never blocks the next one. `pid_alive` is the one test of whether a holder
(a lease, a writer's temp file) still runs on this host."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

POLL_S = 0.2


class Busy(RuntimeError):
    """The lock stayed held for the whole wait; the message says by what and where."""


@contextlib.contextmanager
def exclusive(directory: Path, name: str, what: str, wait_s: float) -> Iterator[float]:
    """Hold `directory/name` exclusively; yields the seconds waited for it.

    Raises `Busy` ("another <what> is running on <directory> ...") after `wait_s`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o644)
    started = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - started >= wait_s:
                    raise Busy(
                        f"another {what} is running on {directory} (waited {wait_s:.0f}s)"
                    ) from None
                time.sleep(POLL_S)
        yield time.monotonic() - started
    finally:
        os.close(fd)  # closing drops the lock


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host; errs towards alive (a pid we may not
    signal, or one out of range), since a live holder's work must never be taken from it."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True
