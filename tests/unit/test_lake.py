"""The lake writer: partitions replace atomically, survive crashes, and never cross writers."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.atomic_files import STALE_TEMP_SECONDS, WriteResult
from pipelines.lake import Lake

DAY = date(2024, 3, 1)
TRIP_SCHEMA = pa.schema(
    [
        ("trip_id", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("distance_km", pa.float64()),
    ]
)


def trips(n: int, *, prefix: str = "t", day: date = DAY) -> pa.Table:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return pa.table(
        {
            "trip_id": [f"{prefix}{i}" for i in range(n)],
            "started_at": [start + timedelta(seconds=i) for i in range(n)],
            "distance_km": [float(i) for i in range(n)],
        },
        schema=TRIP_SCHEMA,
    )


def temp_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.tmp"))


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


# ---- layout and replacing ------------------------------------------------------------------


def test_partition_dir_follows_the_hive_layout_contract(lake: Lake, tmp_path: Path) -> None:
    assert lake.partition_dir("avl", "trips", DAY) == tmp_path / "lake/avl/trips/day=2024-03-01"


def test_replace_partition_reports_path_rows_and_bytes(lake: Lake) -> None:
    result = lake.replace_partition("avl", "trips", DAY, trips(3))

    assert result == WriteResult(
        path=lake.partition_dir("avl", "trips", DAY) / "data.parquet",
        rows=3,
        bytes=result.path.stat().st_size,
    )
    assert result.bytes > 0
    assert pq.read_table(result.path).num_rows == 3


def test_rewriting_a_partition_replaces_its_rows_without_duplicates(lake: Lake) -> None:
    lake.replace_partition("avl", "trips", DAY, trips(5, prefix="old"))
    lake.replace_partition("avl", "trips", DAY, trips(3, prefix="new"))

    content = lake.read("avl", "trips")
    assert content["trip_id"].to_pylist() == ["new0", "new1", "new2"]
    assert lake.files("avl", "trips") == [lake.partition_dir("avl", "trips", DAY) / "data.parquet"]


def test_rewriting_a_partition_removes_orphans_of_other_names_only_in_that_partition(
    lake: Lake,
) -> None:
    other_day = DAY + timedelta(days=1)
    lake.write_file("avl", "trips", DAY, "old-layout-part-0", trips(4, prefix="orphan"))
    lake.write_file("avl", "trips", other_day, "old-layout-part-0", trips(2, prefix="neighbour"))
    notes = lake.partition_dir("avl", "trips", DAY) / "README.txt"
    notes.write_text("not parquet, not ours to delete")

    lake.replace_partition("avl", "trips", DAY, trips(1, prefix="new"))

    assert [p.name for p in lake.partition_dir("avl", "trips", DAY).glob("*.parquet")] == [
        "data.parquet"
    ]
    assert notes.exists()
    content = lake.read("avl", "trips")
    by_day = {
        d: sorted(
            t
            for t, dd in zip(
                content["trip_id"].to_pylist(), content["day"].to_pylist(), strict=True
            )
            if dd == d
        )
        for d in (DAY, other_day)
    }
    assert by_day == {DAY: ["new0"], other_day: ["neighbour0", "neighbour1"]}


def test_an_empty_table_writes_an_empty_partition_that_replaces_old_rows(lake: Lake) -> None:
    lake.replace_partition("avl", "trips", DAY, trips(5))

    result = lake.replace_partition("avl", "trips", DAY, TRIP_SCHEMA.empty_table())

    assert result.rows == 0
    assert result.path.exists()
    on_disk = pq.read_table(result.path)
    assert on_disk.num_rows == 0
    assert on_disk.schema.equals(TRIP_SCHEMA)
    assert lake.read("avl", "trips").num_rows == 0


def test_schema_is_kept_exactly_including_utc_timestamps(lake: Lake) -> None:
    schema = pa.schema(
        [
            ("date", pa.timestamp("ns", tz="UTC")),
            ("odometer", pa.int64()),
            ("io", pa.map_(pa.string(), pa.string())),
            ("flags", pa.list_(pa.bool_())),
        ]
    )
    table = pa.table(
        {
            "date": [datetime(2024, 3, 1, 12, tzinfo=UTC)],
            "odometer": [None],
            "io": [[("din1", "1")]],
            "flags": [[True, False]],
        },
        schema=schema,
    )

    result = lake.replace_partition("kt1", "telemetry", DAY, table)

    on_disk = pq.read_table(result.path)
    assert on_disk.schema.equals(schema)
    assert on_disk.equals(table)


# ---- crashes -------------------------------------------------------------------------------


def test_an_exception_mid_write_keeps_the_previous_file_and_leaves_no_temp(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake.replace_partition("avl", "trips", DAY, trips(10, prefix="before"))
    directory = lake.partition_dir("avl", "trips", DAY)
    real_write_table = pq.ParquetWriter.write_table
    seen_temp: list[Path] = []

    def write_half_then_fail(self: pq.ParquetWriter, table: pa.Table, **kwargs: object) -> None:
        real_write_table(self, table.slice(0, table.num_rows // 2), **kwargs)
        seen_temp.extend(temp_files(directory))
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", write_half_then_fail)

    with pytest.raises(OSError, match="disk full"):
        lake.replace_partition("avl", "trips", DAY, trips(1000, prefix="after"))

    assert len(seen_temp) == 1, "the failed write should have been writing a temp file"
    assert temp_files(directory) == []
    assert lake.read("avl", "trips")["trip_id"].to_pylist() == [f"before{i}" for i in range(10)]


_KILLED_WRITER = """
import sys, time
from datetime import date
from pathlib import Path
import pyarrow as pa
import pyarrow.parquet as pq
from pipelines.lake import Lake

real_write_table = pq.ParquetWriter.write_table

def write_in_row_groups(self, table, row_group_size=None):
    for start in range(0, table.num_rows, 1000):
        real_write_table(self, table.slice(start, 1000))
        if start == 0:
            print("started", flush=True)
            time.sleep(60)  # the parent SIGKILLs us here, mid-file

pq.ParquetWriter.write_table = write_in_row_groups
rows = 50_000
table = pa.table({"trip_id": [f"killed{i}" for i in range(rows)], "distance_km": [1.0] * rows})
Lake(Path(sys.argv[1])).replace_partition("avl", "trips", date.fromisoformat(sys.argv[2]), table)
print("finished", flush=True)
"""


def _wait_for_line(proc: subprocess.Popen[str], expected: str, timeout_s: float = 30.0) -> None:
    """Block until the child prints `expected`; fail (not hang) if it dies or stalls."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if selector.select(timeout=deadline - time.monotonic()):
                line = proc.stdout.readline()
                if line.strip() == expected:
                    return
                if line == "":
                    pytest.fail(f"child exited before {expected!r}: {proc.wait()}")
    proc.kill()
    pytest.fail(f"child did not print {expected!r} within {timeout_s}s")


def test_a_kill_mid_write_keeps_the_previous_file_and_later_writes_sweep_the_temp(
    lake: Lake,
) -> None:
    lake.replace_partition("avl", "trips", DAY, trips(10, prefix="before"))
    directory = lake.partition_dir("avl", "trips", DAY)

    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(lake.root), DAY.isoformat()],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_line(child, "started")
        left_behind = temp_files(directory)
        assert [p.name.split(".")[3] for p in left_behind] == [str(child.pid)]
        assert left_behind[0].stat().st_size > 0
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    # Previous contents are intact and readers never see the temp file.
    assert lake.files("avl", "trips") == [directory / "data.parquet"]
    assert lake.read("avl", "trips")["trip_id"].to_pylist() == [f"before{i}" for i in range(10)]

    # A fresh temp file might still belong to a writer: the next write leaves it alone.
    lake.replace_partition("avl", "trips", DAY, trips(2, prefix="next"))
    assert temp_files(directory) == left_behind

    # Once it is old and its writer is gone, the next write removes it.
    long_ago = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(left_behind[0], (long_ago, long_ago))
    lake.replace_partition("avl", "trips", DAY, trips(3, prefix="later"))
    assert temp_files(directory) == []
    assert lake.read("avl", "trips")["trip_id"].to_pylist() == ["later0", "later1", "later2"]


def test_an_old_temp_file_of_a_live_writer_is_never_swept(lake: Lake) -> None:
    directory = lake.partition_dir("autopi", "trips", DAY)
    directory.mkdir(parents=True)
    live = directory / f".trip-7.parquet.{os.getppid()}.0123abcd.tmp"
    live.write_bytes(b"PAR1 half a file")
    long_ago = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(live, (long_ago, long_ago))

    lake.write_file("autopi", "trips", DAY, "trip-8", trips(1))

    assert live.exists()


# ---- concurrency ---------------------------------------------------------------------------

_CONCURRENT_WRITER = """
import sys, time
from datetime import date
from pathlib import Path
import pyarrow as pa
from pipelines.lake import Lake

root, writer, day, shared_day, go, rounds = sys.argv[1:7]
lake = Lake(Path(root))
while not Path(go).exists():
    time.sleep(0.005)
for r in range(int(rounds)):
    rows = 200 + r
    table = pa.table({"writer": [writer] * rows, "round": [r] * rows, "seq": list(range(rows))})
    lake.replace_partition("kt1", "trips", date.fromisoformat(day), table, name=f"trips-{writer}")
    lake.write_file("kt1", "events", date.fromisoformat(shared_day), f"batch-{writer}", table)
print("done", flush=True)
"""


def test_two_processes_writing_different_partitions_each_end_with_their_own_data(
    lake: Lake, tmp_path: Path
) -> None:
    rounds = 40
    go = tmp_path / "go"
    days = {"a": DAY, "b": DAY + timedelta(days=1)}
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _CONCURRENT_WRITER,
                str(lake.root),
                name,
                day.isoformat(),
                DAY.isoformat(),
                str(go),
                str(rounds),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, day in days.items()
    ]
    go.touch()  # both start together, so their rounds overlap
    outputs = [w.communicate(timeout=60) for w in writers]

    for writer, (stdout, stderr) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, stderr
        assert stdout.strip() == "done"
    last = rounds - 1
    for name, day in days.items():
        directory = lake.partition_dir("kt1", "trips", day)
        assert [p.name for p in directory.iterdir()] == [f"trips-{name}.parquet"]
        content = pq.read_table(directory / f"trips-{name}.parquet")
        assert set(content["writer"].to_pylist()) == {name}
        assert set(content["round"].to_pylist()) == {last}
        assert content["seq"].to_pylist() == list(range(200 + last))
    shared = lake.partition_dir("kt1", "events", DAY)
    assert sorted(p.name for p in shared.iterdir()) == ["batch-a.parquet", "batch-b.parquet"]
    for name in days:
        content = pq.read_table(shared / f"batch-{name}.parquet")
        assert set(
            zip(content["writer"].to_pylist(), content["round"].to_pylist(), strict=True)
        ) == {(name, last)}
    assert list(lake.root.rglob("*.tmp")) == []


# ---- named files ---------------------------------------------------------------------------


def test_write_file_replaces_one_named_file_and_leaves_its_siblings(lake: Lake) -> None:
    lake.write_file("autopi", "trips", DAY, "trip-1", trips(2, prefix="one-v1-"))
    lake.write_file("autopi", "trips", DAY, "trip-2", trips(3, prefix="two-"))

    lake.write_file("autopi", "trips", DAY, "trip-1", trips(1, prefix="one-v2-"))

    directory = lake.partition_dir("autopi", "trips", DAY)
    assert lake.files("autopi", "trips") == [
        directory / "trip-1.parquet",
        directory / "trip-2.parquet",
    ]
    assert sorted(lake.read("autopi", "trips")["trip_id"].to_pylist()) == [
        "one-v2-0",
        "two-0",
        "two-1",
        "two-2",
    ]


def test_remove_file_removes_only_that_file_and_says_whether_it_existed(lake: Lake) -> None:
    lake.write_file("autopi", "trips", DAY, "trip-1", trips(1))
    lake.write_file("autopi", "trips", DAY, "trip-2", trips(1))

    assert lake.remove_file("autopi", "trips", DAY, "trip-1") is True
    assert lake.remove_file("autopi", "trips", DAY, "trip-1") is False
    assert lake.remove_file("autopi", "trips", DAY + timedelta(days=9), "trip-1") is False
    assert [p.name for p in lake.files("autopi", "trips")] == ["trip-2.parquet"]


def test_ensure_table_writes_a_schema_only_file_only_while_the_table_has_none(lake: Lake) -> None:
    first = lake.ensure_table("kt1", "events", TRIP_SCHEMA, DAY, name="schema-only")

    assert first == lake.partition_dir("kt1", "events", DAY) / "schema-only.parquet"
    assert pq.read_schema(first) == TRIP_SCHEMA and pq.read_metadata(first).num_rows == 0
    later = DAY + timedelta(days=1)
    assert lake.ensure_table("kt1", "events", TRIP_SCHEMA, later, name="schema-only") is None
    assert lake.files("kt1", "events") == [first]


def test_ensure_table_leaves_a_table_that_has_data_alone(lake: Lake) -> None:
    lake.write_file("autopi", "trips", DAY, "trip-1", trips(1))

    assert lake.ensure_table("autopi", "trips", TRIP_SCHEMA, date(1970, 1, 1), name="_s") is None
    assert [p.name for p in lake.files("autopi", "trips")] == ["trip-1.parquet"]


@pytest.mark.parametrize(
    "name",
    ["", "../escape", "a/b", ".hidden", "data.parquet", "nul\0byte"],
    ids=["empty", "parent", "slash", "dotfile", "suffix", "nul"],
)
def test_names_that_would_leave_or_hide_in_the_partition_are_rejected(
    lake: Lake, name: str
) -> None:
    with pytest.raises(ValueError, match="plain, non-empty name"):
        lake.write_file("autopi", "trips", DAY, name, trips(1))
    with pytest.raises(ValueError, match="plain, non-empty name"):
        lake.replace_partition(name, "trips", DAY, trips(1))
    assert not lake.root.exists()


def test_a_datetime_is_not_accepted_as_a_partition_day(lake: Lake) -> None:
    with pytest.raises(TypeError, match=r"datetime\.date"):
        lake.partition_dir("avl", "trips", datetime(2024, 3, 1, 23, tzinfo=UTC))


def test_a_day_column_inside_a_file_is_rejected_because_the_folder_would_shadow_it(
    lake: Lake,
) -> None:
    table = trips(1).append_column("day", pa.array([DAY], pa.date32()))

    with pytest.raises(ValueError, match="shadowed by the partition folder"):
        lake.replace_partition("avl", "trips", DAY, table)
    assert lake.files("avl", "trips") == []


# ---- many days at once ---------------------------------------------------------------------


def with_days(table: pa.Table, days: list[date], column: str = "day") -> pa.Table:
    return table.append_column(column, pa.array(days, pa.date32()))


def test_replace_partitions_splits_by_day_keeps_order_and_writes_empty_days(lake: Lake) -> None:
    d1, d2, d3 = DAY, DAY + timedelta(days=1), DAY + timedelta(days=2)
    lake.replace_partition("avl", "trips", d2, trips(4, prefix="stale"))
    data = with_days(trips(5), [d3, d1, d3, d1, d3], column="trip_day")

    results = lake.replace_partitions("avl", "trips", [d3, d2, d1], data, day_column="trip_day")

    assert list(results) == [d1, d2, d3]
    assert {d: r.rows for d, r in results.items()} == {d1: 2, d2: 0, d3: 3}
    assert pq.read_table(results[d1].path)["trip_id"].to_pylist() == ["t1", "t3"]
    assert pq.read_table(results[d3].path)["trip_id"].to_pylist() == ["t0", "t2", "t4"]
    empty = pq.read_table(results[d2].path)
    assert empty.num_rows == 0
    assert empty.schema.equals(TRIP_SCHEMA), "the day column lives in the folder, not the file"


def test_replace_partitions_rejects_rows_outside_days_before_writing_anything(
    lake: Lake,
) -> None:
    inside, outside = DAY, DAY + timedelta(days=5)
    data = with_days(trips(2), [inside, outside])

    with pytest.raises(ValueError, match="2024-03-06"):
        lake.replace_partitions("avl", "trips", [inside], data)
    assert lake.files("avl", "trips") == []


@pytest.mark.parametrize(
    ("column", "message"),
    [
        (pa.array(["2024-03-01"]), "must be date32"),
        (pa.array([None], pa.date32()), "null"),
    ],
    ids=["string-day", "null-day"],
)
def test_replace_partitions_rejects_a_day_column_it_cannot_trust(
    lake: Lake, column: pa.Array, message: str
) -> None:
    data = trips(1).append_column("day", column)

    with pytest.raises(ValueError, match=message):
        lake.replace_partitions("avl", "trips", [DAY], data)
    with pytest.raises(ValueError, match="missing"):
        lake.replace_partitions("avl", "trips", [DAY], trips(1))


def test_read_returns_every_partition_with_day_as_date32(lake: Lake) -> None:
    d1, d2 = DAY, DAY + timedelta(days=1)
    lake.replace_partitions("avl", "trips", [d1, d2], with_days(trips(3), [d2, d1, d2]))

    content = lake.read("avl", "trips")

    assert content.schema.field("day").type == pa.date32()
    assert content.schema.field("started_at").type == pa.timestamp("us", tz="UTC")
    assert sorted(zip(content["day"].to_pylist(), content["trip_id"].to_pylist(), strict=True)) == [
        (d1, "t1"),
        (d2, "t0"),
        (d2, "t2"),
    ]


def test_read_of_a_table_never_written_is_empty(lake: Lake) -> None:
    content = lake.read("metrotec", "refuels")

    assert content.num_rows == 0
    assert content.schema.field("day").type == pa.date32()


def test_duckdb_reads_day_from_the_folder_and_never_sees_temp_files(lake: Lake) -> None:
    duckdb = pytest.importorskip("duckdb")
    d1, d2 = DAY, DAY + timedelta(days=1)
    lake.replace_partitions("avl", "trips", [d1, d2], with_days(trips(3), [d1, d2, d2]))
    in_flight = lake.partition_dir("avl", "trips", d1) / f".data.parquet.{os.getpid()}.ab12.tmp"
    in_flight.write_bytes(b"half a file")

    glob = str(lake.table_dir("avl", "trips") / "day=*" / "*.parquet")
    rows = duckdb.sql(
        f"select day, count(*) from read_parquet('{glob}', hive_partitioning = true) "
        "group by day order by day"
    ).fetchall()

    assert rows == [(d1, 1), (d2, 2)]


def test_a_write_that_fails_at_its_first_byte_leaves_no_temp_file(tmp_path, monkeypatch) -> None:
    """A full disk fails the Parquet header: the temp file it had created must not stay."""
    import pyarrow.parquet as pq

    from pipelines import atomic_files

    class FullDisk(pq.ParquetWriter):
        def __init__(self, where, *args, **kwargs) -> None:
            Path(where).write_bytes(b"")  # created, as the real writer does, then the disk is full
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_files.pq, "ParquetWriter", FullDisk)
    lake = Lake(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        lake.write_file("avl", "trips", date(2026, 1, 1), "data", pa.table({"x": [1]}))
    left = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert left == []


def test_the_spool_of_a_killed_object_store_writer_is_swept_by_a_later_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object-store write stages its file in TMPDIR; one left by a dead writer goes away."""
    import tempfile

    from pipelines.atomic_files import spool_path

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    left = spool_path()
    orphan = left.with_name(left.name.replace(f".{os.getpid()}.", f".{dead.stdout.strip()}."))
    left.rename(orphan)
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(orphan, (old, old))
    fresh = spool_path()
    assert not orphan.exists(), "a dead writer's spool file was kept"
    assert fresh.exists() and fresh.name.startswith(".")
