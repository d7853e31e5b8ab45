"""Landing only complete answers: a day holding AVL trips is replaced only by an answer asked
with the same or a wider device filter and at least as many vehicles.

What each day file was asked and holds is recorded in its Parquet metadata, so the guard can
judge a new answer against it without reading the rows (files landed before the record existed
are read for their device names).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.atomic_files import WriteResult
from pipelines.lake import Lake, quarantine_table
from pipelines.sources.avl.rows import SOURCE, TABLE

FILE_NAME = "data"
"""Each day's one data file, and its quarantine's name: re-landing a day replaces both."""

# Parquet key-value metadata of each landed day file: the question asked and what came back.
META_DEVICES = b"avl.devices"  # "all", or the AVL_DEVICES ids asked for, sorted, comma-separated
META_DEVICE_NAMES = b"avl.device_names"  # JSON list of the distinct device_name values landed
META_ROWS = b"avl.rows"
ALL_DEVICES = "all"


@dataclass(frozen=True)
class DayAnswer:
    """What a day's file holds, or what an answer would put there."""

    devices: frozenset[str] | None  # the AVL_DEVICES filter asked with; None = all visible
    device_names: frozenset[str]
    rows: int
    devices_known: bool = True  # False for files landed before the filter was recorded

    def metadata(self) -> dict[bytes, bytes]:
        devices = ALL_DEVICES if self.devices is None else ",".join(sorted(self.devices))
        return {
            META_DEVICES: devices.encode(),
            META_DEVICE_NAMES: json.dumps(sorted(self.device_names)).encode(),
            META_ROWS: str(self.rows).encode(),
        }


def show_devices(devices: frozenset[str] | None, limit: int = 5) -> str:
    if devices is None:
        return ALL_DEVICES
    ids = sorted(devices)
    more = f" (+{len(ids) - limit} more)" if len(ids) > limit else ""
    return ",".join(ids[:limit]) + more if ids else "(none)"


def read_landed(lake: Lake, day: date) -> DayAnswer | None:
    """What the day's files record (read from the rows for files landed before the record
    existed); None when the day has no readable file, so there is nothing to protect."""
    rows = 0
    names: set[str] = set()
    devices: set[str] = set()
    every_device, known, found = False, True, False
    for file in lake.files(SOURCE, TABLE, day):
        try:
            meta = lake.read_metadata(file)
            recorded = meta.metadata or {}
            if META_DEVICE_NAMES in recorded:
                landed = set(json.loads(recorded[META_DEVICE_NAMES]))
            elif meta.num_rows:
                column = lake.read_file(file, columns=["device_name"]).column(0)
                landed = set(pc.unique(column).drop_null().to_pylist())
            else:
                landed = set()
        except (OSError, ValueError, pa.ArrowException):
            continue  # unreadable: replacing it is a repair
        found = True
        rows += meta.num_rows
        names |= landed
        asked = recorded.get(META_DEVICES, b"").decode()
        known = known and bool(asked)
        every_device = every_device or asked == ALL_DEVICES
        devices |= {d for d in asked.split(",") if d and asked != ALL_DEVICES}
    if not found:
        return None
    filter_ = None if every_device or not known else frozenset(devices)
    return DayAnswer(filter_, frozenset(names), rows, known)


def refusal_reason(held: DayAnswer | None, new: DayAnswer) -> str | None:
    """Why `new` may not replace `held` (the first cause of narrowing, the others follow from
    it); None when it may.

    The rule: a day holding rows is replaced only by an answer asked with the same or a wider
    device filter (every device asked before is asked again, "all" only by "all"), with rows,
    and with at least as many distinct device_names as the day holds. Re-pulls that add,
    correct, merge or drop trips of the same devices, or rename a device, pass; a narrowed or
    mistyped AVL_DEVICES, or a tenant that suddenly sees fewer vehicles, does not.
    """
    if held is None or held.rows == 0:
        return None
    if held.devices_known and not _covers(new.devices, held.devices):
        return (
            f"AVL_DEVICES={show_devices(new.devices)} asks for fewer devices than the landing "
            f"it would replace ({show_devices(held.devices)})"
        )
    if new.rows == 0:
        return "the API answered no rows"
    if len(new.device_names) < len(held.device_names):
        return "the answer has fewer vehicles than the day holds"
    return None


def _covers(new: frozenset[str] | None, held: frozenset[str] | None) -> bool:
    if new is None:
        return True
    return held is not None and held <= new


@dataclass(frozen=True)
class Refusal:
    held: DayAnswer
    new: DayAnswer
    reason: str


@dataclass(frozen=True)
class RefusedRange:
    """Consecutive refused days with the same reason, for one log line."""

    first: date
    last: date
    reason: str
    held_rows: int
    new_rows: int

    @property
    def days(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}..{self.last}"


class GuardedLanding:
    """Lands each day of a window, unless the answer is narrower than what the day holds.

    `land` is extract_trips' lander; `quarantine` its quarantine writer. A refused day keeps
    its data and quarantine files untouched; `refused` says why.
    """

    def __init__(self, lake: Lake, devices: Sequence[str], *, allow_narrower: bool = False) -> None:
        self.lake = lake
        self.devices = frozenset(devices) or None
        self.allow_narrower = allow_narrower
        self.written: dict[date, WriteResult] = {}
        self.refused: dict[date, Refusal] = {}

    def land(self, window_days: list[date], table: pa.Table) -> tuple[int, int]:
        files = size = 0
        for day in window_days:
            rows = table.filter(pc.equal(table["day"], pa.scalar(day, pa.date32())))
            rows = rows.drop_columns(["day"])
            names = frozenset(pc.unique(rows["device_name"]).to_pylist())
            answer = DayAnswer(self.devices, names, rows.num_rows)
            if not self.allow_narrower:
                held = read_landed(self.lake, day)
                reason = refusal_reason(held, answer)
                if held is not None and reason is not None:
                    self.refused[day] = Refusal(held, answer, reason)
                    continue
            rows = rows.replace_schema_metadata(answer.metadata())
            result = self.lake.replace_partition(SOURCE, TABLE, day, rows, name=FILE_NAME)
            self.written[day] = result
            files += 1
            size += result.bytes
        return files, size

    def quarantine(self, window_days: list[date], by_day: Mapping[date, pa.Table]) -> None:
        for day in window_days:
            if day not in self.refused:
                rows = by_day.get(day, quarantine_table([], datetime.now(UTC)))
                self.lake.write_quarantine(SOURCE, day, FILE_NAME, rows)

    @property
    def rows_written(self) -> int:
        return sum(w.rows for w in self.written.values())

    def refused_ranges(self) -> list[RefusedRange]:
        ranges: list[RefusedRange] = []
        for day in sorted(self.refused):
            r = self.refused[day]
            last = ranges[-1] if ranges else None
            if last and last.reason == r.reason and (day - last.last).days == 1:
                ranges[-1] = RefusedRange(
                    last.first,
                    day,
                    r.reason,
                    last.held_rows + r.held.rows,
                    last.new_rows + r.new.rows,
                )
            else:
                ranges.append(RefusedRange(day, day, r.reason, r.held.rows, r.new.rows))
        return ranges
