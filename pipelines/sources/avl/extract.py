"""AVL rows → validated, typed, de-duplicated Arrow tables per UTC day, landed only from answers
at least as complete as what a day holds. No Dagster, no HTTP details."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.lake import Lake, WriteResult, quarantine_table
from pipelines.sources.avl.client import AvlClient, device_batches, plan_windows

SOURCE = "avl"
TABLE = "trips"
FILE_NAME = "data"
"""Each day's one data file, and its quarantine's name: re-landing a day replaces both."""

TS = pa.timestamp("us", tz="UTC")
TRIPS_SCHEMA = pa.schema(
    [
        pa.field("device_name", pa.string(), nullable=False),
        pa.field("trip_start", TS, nullable=False),
        pa.field("trip_start_local", pa.string()),
        pa.field("trip_start_address", pa.string()),
        pa.field("trip_start_lat", pa.float64()),
        pa.field("trip_start_lon", pa.float64()),
        pa.field("trip_end", TS),
        pa.field("trip_end_local", pa.string()),
        pa.field("trip_end_address", pa.string()),
        pa.field("trip_end_lat", pa.float64()),
        pa.field("trip_end_lon", pa.float64()),
        pa.field("kms", pa.float64()),
        pa.field("duration_min", pa.float64()),
        pa.field("idle_min", pa.float64()),
        pa.field("max_speed", pa.float64()),
        pa.field("fuel", pa.float64()),
        pa.field("cost", pa.float64()),
        pa.field("extracted_at", TS, nullable=False),
        pa.field("day", pa.date32(), nullable=False),
    ]
)
_FLOATS = (
    "trip_start_lat",
    "trip_start_lon",
    "trip_end_lat",
    "trip_end_lon",
    "kms",
    "duration_min",
    "idle_min",
    "max_speed",
    "fuel",
    "cost",
)
_STRINGS = ("trip_start_address", "trip_end_address")
# A number sent as text: plain decimal notation only ("12,5", "1_000", "NaN" are not numbers).
_NUMBER_TEXT = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")

# Parquet key-value metadata of each landed day file: the question asked and what came back.
META_DEVICES = b"avl.devices"  # "all", or the AVL_DEVICES ids asked for, sorted, comma-separated
META_DEVICE_NAMES = b"avl.device_names"  # JSON list of the distinct device_name values landed
META_ROWS = b"avl.rows"
ALL_DEVICES = "all"


class BadValue(ValueError):
    """One field of a row that cannot be landed; str() is the quarantine reason."""

    def __init__(self, name: str, value: Any, problem: str) -> None:
        self.field = name
        self.value = value
        super().__init__(f"{name}: {_shown(value)} {problem}")


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else _as_text(value) or "null"


def _as_text(value: Any) -> str | None:
    """A raw value as the quarantine's `value` text: strings as sent, others as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def to_utc(value: Any, tz: ZoneInfo, name: str = "timestamp") -> datetime | None:
    """An offset-less API timestamp read in the account's zone (earliest reading of a DST fold).

    Raises `BadValue` for anything but an ISO 8601 date-time (e.g. `05/03/2026 07:15:00`).
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadValue(name, value, "is not an ISO 8601 date-time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadValue(name, value, "is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(UTC)


def _float(name: str, value: Any) -> float | None:
    """A finite number, or None for null; NaN, infinities and "12,5" raise `BadValue`."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadValue(name, value, "is not a number")
    if isinstance(value, str) and not _NUMBER_TEXT.fullmatch(value.strip()):
        raise BadValue(name, value, "is not a number")
    try:
        number = float(value)
    except OverflowError:
        raise BadValue(name, value, "is out of range") from None
    if not math.isfinite(number):
        raise BadValue(name, value, "is not a finite number")
    return number


def _text(name: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise BadValue(name, value, "is not text")


def _device_name(name: str, value: Any) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadValue(name, value, "is missing: the row has no vehicle")
    if not isinstance(value, str):
        raise BadValue(name, value, "is not text")
    return value


def _typed_fields(row: dict[str, Any], tz: ZoneInfo) -> tuple[dict[str, Any], list[BadValue]]:
    """Every field of a row typed, and every value that could not be."""

    def timestamp(name: str, value: Any) -> datetime | None:
        return to_utc(value, tz, name)

    parsers: list[tuple[str, Callable[[str, Any], Any]]] = [
        ("device_name", _device_name),
        ("trip_start", timestamp),
        ("trip_end", timestamp),
        *((name, _float) for name in _FLOATS),
        *((name, _text) for name in _STRINGS),
    ]
    values: dict[str, Any] = {}
    problems: list[BadValue] = []
    for name, parse in parsers:
        try:
            values[name] = parse(name, row.get(name))
        except BadValue as bad:
            problems.append(bad)
    return values, problems


@dataclass
class Typed:
    """One answer's rows: landable ones as a table, and the rest with the reason why not."""

    table: pa.Table
    quarantined: list[tuple[date, dict[str, Any]]]  # (day, quarantine record)
    null_trip_start: int
    duplicates: int


def rows_to_table(
    rows: Sequence[Any], tz: ZoneInfo, extracted_at: datetime, fallback_day: date
) -> Typed:
    """Validate and type rows where they enter; drop rows without `trip_start` (not trips) and
    duplicate natural keys (`device_name`, `trip_start`: the API has no trip or device id).

    A row with a value that cannot be trusted (a number that is not one or not finite, an
    unreadable timestamp, no device_name) is quarantined whole, on its trip_start's UTC day
    (`fallback_day` when that is unreadable): a partly landed trip would be wrong facts.
    """
    by_key: dict[tuple[str, datetime], dict[str, Any]] = {}
    quarantined: list[tuple[date, dict[str, Any]]] = []
    nulls = 0
    dupes = 0
    for row in rows:
        if not isinstance(row, dict):
            quarantined.append((fallback_day, _quarantine_record(row, "row is not a JSON object")))
            continue
        if row.get("trip_start") is None or row.get("trip_start") == "":
            nulls += 1
            continue
        record, problems = _typed_fields(row, tz)
        start: datetime | None = record.get("trip_start")
        if problems:
            first = problems[0]
            reason = "; ".join(str(p) for p in problems)
            day = start.date() if start is not None else fallback_day
            quarantined.append((day, _quarantine_record(row, reason, first.field, first.value)))
            continue
        record.update(
            trip_start_local=row["trip_start"],
            trip_end_local=row.get("trip_end"),
            extracted_at=extracted_at,
            day=record["trip_start"].date(),
        )
        key = (record["device_name"], record["trip_start"])
        if key in by_key:
            dupes += 1
        by_key[key] = record  # the later page wins: it is the fresher answer
    ordered = sorted(by_key.values(), key=lambda r: (r["trip_start"], r["device_name"]))
    table = pa.Table.from_pylist(ordered, schema=TRIPS_SCHEMA)
    return Typed(table, quarantined, nulls, dupes)


def _quarantine_record(
    row: Any, reason: str, name: str | None = None, value: Any = None
) -> dict[str, Any]:
    return {
        "table": TABLE,
        "reason": reason,
        "field": name,
        "value": _as_text(value),
        "payload": json.dumps(row, ensure_ascii=False, default=str),
    }


# ---- landing only complete answers ---------------------------------------------------------


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


# ---- extraction ----------------------------------------------------------------------------


@dataclass
class AvlExtract:
    """What a run fetched and landed, with the counts a user needs to trust it."""

    rows_received: int = 0
    rows_loaded: int = 0
    null_trip_start: int = 0
    duplicates_dropped: int = 0
    outside_range: int = 0
    in_progress: int = 0
    quarantined: int = 0
    quarantine_examples: list[str] = field(default_factory=list)  # first reasons, for a log
    untrusted_totals: int = 0  # pages whose meta.total was not an integer
    total_mismatches: list[dict[str, Any]] = field(default_factory=list)
    windows: int = 0
    files: int = 0
    bytes: int = 0


# Lands one window's rows (every day of it, empty days too); returns (files, bytes) written.
Lander = Callable[[list[date], pa.Table], tuple[int, int]]
# Writes one window's quarantine per day (a day missing from the mapping has none); after Lander.
Quarantiner = Callable[[list[date], Mapping[date, pa.Table]], None]


def extract_trips(
    client: AvlClient,
    days: Sequence[date],
    *,
    tz: ZoneInfo,
    land: Lander,
    quarantine: Quarantiner | None = None,
    devices: Sequence[str] = (),
    idle_min: int = 0,
    duration_min: int = 0,
    progress: Callable[[str], None] | None = None,
) -> AvlExtract:
    """Fetch every row of `days` (UTC) with the fewest requests that prove it is every row, and
    land it.

    Windows cover disjoint UTC days, so each is typed, de-duplicated and landed on its own,
    on a worker thread while the next window's requests wait for the rate limit: the run
    ends about when its last response arrives. Where `meta.total` disagreed with the rows
    paged, `total_mismatches` says so (paging reads to the last page regardless).
    """
    windows = plan_windows(days, tz)
    summary = AvlExtract(windows=len(windows))
    batches = device_batches(devices)

    def process(window_days: list[date], rows: list[Any]) -> None:
        now = datetime.now(UTC)
        typed = rows_to_table(rows, tz, now, window_days[0])
        table = typed.table
        wanted = pa.array(window_days, pa.date32())
        kept = table.filter(pc.is_in(table.column("day"), value_set=wanted))
        by_day: dict[date, list[dict[str, Any]]] = {}
        outside = len(table) - len(kept)
        for day, record in typed.quarantined:
            if day in window_days:
                by_day.setdefault(day, []).append(record)
            else:
                outside += 1
        files, written = land(window_days, kept)
        if quarantine is not None:
            quarantine(window_days, {d: quarantine_table(r, now) for d, r in by_day.items()})
        quarantined = sum(len(r) for r in by_day.values())
        summary.quarantined += quarantined
        for records in by_day.values():
            room = 5 - len(summary.quarantine_examples)
            summary.quarantine_examples.extend(r["reason"] for r in records[:room])
        summary.null_trip_start += typed.null_trip_start
        summary.duplicates_dropped += typed.duplicates
        summary.outside_range += outside
        summary.rows_loaded += len(kept)
        summary.in_progress += kept.column("trip_end").null_count
        summary.files += files
        summary.bytes += written

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="avl-land") as pool:
        pending = []
        for n, window in enumerate(windows, 1):
            rows: list[Any] = []
            for b, batch in enumerate(batches, 1):
                series: list[Any] = []
                claims: set[int] = set()
                for page in client.iter_trip_pages(
                    window, devices=batch, idle_min=idle_min, duration_min=duration_min
                ):
                    series.extend(page.rows)
                    summary.untrusted_totals += page.total_untrusted
                    if page.total is not None:
                        claims.add(page.total)
                if claims - {len(series)}:
                    mismatch: dict[str, Any] = {
                        "window": f"{window.first_day}..{window.last_day}",
                        "claimed": sorted(claims),
                        "read": len(series),
                    }
                    if len(batches) > 1:
                        mismatch["device_batch"] = f"{b}/{len(batches)}"
                    summary.total_mismatches.append(mismatch)
                rows.extend(series)
            summary.rows_received += len(rows)
            if progress:
                progress(
                    f"AVL window {n}/{len(windows)} {window.first_day}..{window.last_day}: "
                    f"{len(rows)} rows in {client.stats.requests} requests so far"
                )
            pending.append(pool.submit(process, window.days, rows))
        for future in pending:
            future.result()  # re-raise a landing failure
    return summary
