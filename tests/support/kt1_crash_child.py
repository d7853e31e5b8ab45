"""Child process of the kt1 crash tests: drain the stream, SIGKILL ourselves at a named stage.

`python -m tests.support.kt1_crash_child URL LAKE_DIR STAGE NTH LONG_POLL_S GROUP_MAX_BATCHES`
(from the repository's root), token in KT1_TOKEN. STAGE is a drain stage (`after_get`, `mid_write`, `after_write`, `after_delete`) or
`inside_write`: killed inside `Lake.write_file`, after the temp file is fsynced and before its
rename. The process dies on the NTH time it reaches the stage; exit code 3 means it never did.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from pathlib import Path

import pipelines.atomic_files as lake_module
from pipelines.lake import Lake
from pipelines.sources.kt1.client import Kt1Client
from pipelines.sources.kt1.drain import drain_stream


def main() -> int:
    url, lake_dir, stage, nth, long_poll_s, group_max_batches = sys.argv[1:7]
    reached: Counter[str] = Counter()

    def reach(name: str) -> None:
        reached[name] += 1
        if name == stage and reached[name] == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)

    fsync_file = lake_module._fsync_file

    def fsync_then_maybe_die(path: Path) -> None:
        fsync_file(path)
        reach("inside_write")

    lake_module._fsync_file = fsync_then_maybe_die
    client = Kt1Client(url, token=os.environ["KT1_TOKEN"], long_poll_s=float(long_poll_s))
    drain_stream(
        client,
        Lake(Path(lake_dir)),
        budget_s=60,
        group_max_batches=int(group_max_batches),
        on_stage=reach,
    )
    return 3


if __name__ == "__main__":
    raise SystemExit(main())
