"""Build the fleet report: read the marts, render the page, write it where people find it.

Each build writes `fleet_report_<UTC time>.html` and replaces `latest.html` in the report folder
(FLEET_REPORT_DIR), both atomically (a temporary file in the same folder, then `os.replace`), so
a browser or a file share never sees half a page. The oldest timestamped files beyond `keep` are
removed: one build per facts build would otherwise fill the disk over the years.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.facts import FactsCatalog
    from pipelines.report.data import ReportData, ReportOptions

LATEST = "latest.html"
PREFIX = "fleet_report_"
DEFAULT_KEEP = 60
"""Timestamped reports kept in the folder (about two months of daily builds); 0 keeps all."""


@dataclass(frozen=True)
class BuiltReport:
    data: ReportData
    path: Path
    """The file written: the timestamped one, or `--out`'s."""
    latest: Path | None
    bytes: int
    seconds: dict[str, float]
    """Wall seconds per phase: read (the marts), render (charts and HTML), write."""


def report_dir() -> Path:
    """FLEET_REPORT_DIR, absolute."""
    from pipelines.settings import get_settings

    return get_settings().report_dir


def latest_report_path() -> Path:
    """Where the newest report is (whether or not one was built yet)."""
    return report_dir() / LATEST


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` so a reader sees the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def prune(folder: Path, keep: int) -> list[Path]:
    """Remove the oldest timestamped reports beyond `keep` (their names sort by time)."""
    if keep <= 0:
        return []
    reports = sorted(folder.glob(f"{PREFIX}*.html"))
    gone = reports[:-keep]
    for path in gone:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return gone


def build_report(
    options: ReportOptions,
    *,
    catalog: FactsCatalog | None = None,
    out: Path | None = None,
    folder: Path | None = None,
    keep: int = DEFAULT_KEEP,
    today: date | None = None,
) -> BuiltReport:
    """Read the newest complete build of the facts and write the report.

    `out` writes that one file only; otherwise the timestamped file and `latest.html` go to
    `folder` (default FLEET_REPORT_DIR). Raises FactsError when the facts cannot be opened.
    """
    # Imported here: `fleet` loads this module for every command, DuckDB and matplotlib are slow.
    from pipelines.facts import connect
    from pipelines.report.queries import collect
    from pipelines.report.render import render

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    con = connect(read_only=True, catalog=catalog)
    try:
        data = collect(con, options, today=today)
    finally:
        con.close()
    seconds["read"] = time.perf_counter() - started
    written_at = datetime.now(UTC)
    started = time.perf_counter()
    text = render(data, written_at)
    seconds["render"] = time.perf_counter() - started
    started = time.perf_counter()
    latest = None
    if out is not None:
        path = out.expanduser().resolve()
        write_atomically(path, text)
    else:
        folder = (folder or report_dir()).expanduser().resolve()
        path = folder / f"{PREFIX}{written_at.strftime('%Y%m%dT%H%M%SZ')}.html"
        write_atomically(path, text)
        latest = folder / LATEST
        write_atomically(latest, text)
        prune(folder, keep)
    seconds["write"] = time.perf_counter() - started
    return BuiltReport(data, path, latest, len(text.encode()), seconds)
