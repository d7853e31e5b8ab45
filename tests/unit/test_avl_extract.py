"""AVL rows are validated where they enter, paging ends only on a short page, and a day is
replaced only by an answer at least as complete as what it holds. No HTTP, no Dagster."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.http import VendorAPIError
from pipelines.lake import Lake, quarantine_table
from pipelines.sources.avl.client import AvlClient, Window
from pipelines.sources.avl.guard import DayAnswer, GuardedLanding, read_landed, refusal_reason
from pipelines.sources.avl.rows import TRIPS_SCHEMA, rows_to_table

TALLINN = ZoneInfo("Europe/Tallinn")
DAY = date(2026, 3, 5)
NOW = datetime(2026, 3, 6, tzinfo=UTC)


def trip(**changes: Any) -> dict[str, Any]:
    row = {
        "device_name": "Truck A-101",
        "trip_start": "2026-03-05T07:15:00",
        "trip_start_address": "Av. 18 de Julio 1234",
        "trip_start_lat": -34.9011,
        "trip_start_lon": -56.1645,
        "trip_end": "2026-03-05T09:42:00",
        "trip_end_address": "Ruta 1 km 42",
        "trip_end_lat": -34.3426,
        "trip_end_lon": -56.7135,
        "kms": 38.5,
        "duration_min": 147,
        "idle_min": 12,
        "max_speed": 95,
        "fuel": 4.62,
        "cost": 6.93,
    }
    return {**row, **changes}


# ---- values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "reason", "field", "value"),
    [
        ({"fuel": "12,5"}, "fuel: '12,5' is not a number", "fuel", "12,5"),
        ({"fuel": float("nan")}, "fuel: NaN is not a finite number", "fuel", "NaN"),
        ({"cost": float("-inf")}, "cost: -Infinity is not a finite number", "cost", "-Infinity"),
        ({"kms": "Infinity"}, "kms: 'Infinity' is not a number", "kms", "Infinity"),
        ({"kms": "1_000"}, "kms: '1_000' is not a number", "kms", "1_000"),
        ({"kms": True}, "kms: true is not a number", "kms", "true"),
        ({"kms": 10**400}, "kms: " + "1" + "0" * 400 + " is out of range", "kms", "1" + "0" * 400),
        ({"kms": {"v": 1}}, 'kms: {"v": 1} is not a number', "kms", '{"v": 1}'),
        (
            {"trip_start": "05/03/2026 07:15:00"},
            "trip_start: '05/03/2026 07:15:00' is not an ISO 8601 date-time",
            "trip_start",
            "05/03/2026 07:15:00",
        ),
        (
            {"trip_end": 1741158000},
            "trip_end: 1741158000 is not an ISO 8601 date-time",
            "trip_end",
            "1741158000",
        ),
        (
            {"device_name": None},
            "device_name: null is missing: the row has no vehicle",
            "device_name",
            None,
        ),
        (
            {"device_name": "  "},
            "device_name: '  ' is missing: the row has no vehicle",
            "device_name",
            "  ",
        ),
        ({"device_name": 1001}, "device_name: 1001 is not text", "device_name", "1001"),
        ({"trip_end_address": 7}, "trip_end_address: 7 is not text", "trip_end_address", "7"),
    ],
)
def test_a_bad_value_quarantines_its_row_with_the_reason(
    changes: dict, reason: str, field: str, value: str | None
) -> None:
    typed = rows_to_table(
        [trip(), trip(**{"device_name": "Van B-205", **changes})], TALLINN, NOW, DAY
    )
    assert typed.table.column("device_name").to_pylist() == ["Truck A-101"]
    ((day, record),) = typed.quarantined
    assert (record["table"], record["reason"], record["field"], record["value"]) == (
        "trips",
        reason,
        field,
        value,
    )
    assert day == DAY
    payload = json.loads(record["payload"])
    assert payload["trip_start_address"] == "Av. 18 de Julio 1234"


def test_every_bad_value_of_a_row_is_named_and_the_first_is_the_field() -> None:
    typed = rows_to_table([trip(fuel="12,5", kms=float("nan"))], TALLINN, NOW, DAY)
    ((_, record),) = typed.quarantined
    assert record["reason"] == "kms: NaN is not a finite number; fuel: '12,5' is not a number"
    assert record["field"] == "kms"


def test_a_quarantined_row_goes_to_its_trip_start_day_else_the_fallback_day() -> None:
    late = trip(trip_start="2026-03-07T01:00:00", fuel="x")  # 2026-03-06T23:00Z
    unreadable = trip(trip_start="yesterday")
    typed = rows_to_table([late, unreadable, "not a row"], TALLINN, NOW, DAY)
    assert [d for d, _ in typed.quarantined] == [date(2026, 3, 6), DAY, DAY]
    assert typed.quarantined[2][1]["reason"] == "row is not a JSON object"


def test_good_values_in_every_accepted_form_land() -> None:
    row = trip(
        fuel="12.5", kms=" 3e2 ", cost=None, max_speed="", trip_end=None, trip_end_address=None
    )
    typed = rows_to_table([row], TALLINN, NOW, DAY)
    assert typed.quarantined == []
    (landed,) = typed.table.to_pylist()
    assert (landed["fuel"], landed["kms"], landed["cost"], landed["max_speed"]) == (
        12.5,
        300.0,
        None,
        None,
    )
    assert landed["trip_start"] == datetime(2026, 3, 5, 5, 15, tzinfo=UTC)  # Tallinn is UTC+2
    assert landed["trip_start_local"] == "2026-03-05T07:15:00" and landed["day"] == DAY


def test_a_row_without_trip_start_is_counted_not_quarantined_whatever_else_it_holds() -> None:
    typed = rows_to_table(
        [trip(trip_start=None, fuel="12,5"), trip(trip_start="")], TALLINN, NOW, DAY
    )
    assert typed.null_trip_start == 2 and typed.quarantined == [] and typed.table.num_rows == 0


def test_the_later_duplicate_wins() -> None:
    typed = rows_to_table([trip(kms=1), trip(kms=2)], TALLINN, NOW, DAY)
    assert typed.duplicates == 1 and typed.table.column("kms").to_pylist() == [2.0]


# ---- paging -------------------------------------------------------------------------------


class PagedClient(AvlClient):
    """The client's own paging and parsing over canned bodies instead of HTTP."""

    def __init__(self, rows: list[dict], meta: dict[str, Any] | None = None, cap: int = 100):
        super().__init__("http://avl.invalid", token="t", api_key="k", tenant="x", limiter=None)
        self.rows, self.meta, self.cap, self.offsets = rows, meta or {}, cap, []

    def get_json(self, path: str, **kwargs: Any) -> Any:
        params = kwargs["params"]
        offset, limit = params["offset"], min(params["limit"], self.cap)
        self.offsets.append(offset)
        meta = {"total": len(self.rows), "limit": limit, "offset": offset, **self.meta}
        return {"success": True, "data": self.rows[offset : offset + limit], "meta": meta}


WINDOW = Window(DAY, DAY, datetime(2026, 3, 5), datetime(2026, 3, 5, 23, 59, 59))


@pytest.mark.parametrize(("rows", "offsets"), [(0, [0]), (99, [0]), (150, [0, 100])])
def test_a_short_page_ends_paging(rows: int, offsets: list[int]) -> None:
    client = PagedClient([trip(kms=i) for i in range(rows)])
    assert sum(len(p.rows) for p in client.iter_trip_pages(WINDOW)) == rows
    assert client.offsets == offsets


def test_a_full_last_page_costs_one_empty_page_even_when_meta_total_is_reached() -> None:
    client = PagedClient([trip(kms=i) for i in range(200)])
    assert sum(len(p.rows) for p in client.iter_trip_pages(WINDOW)) == 200
    assert client.offsets == [0, 100, 200]


def test_a_total_smaller_than_the_rows_does_not_end_paging() -> None:
    client = PagedClient([trip(kms=i) for i in range(250)], meta={"total": 100})
    pages = list(client.iter_trip_pages(WINDOW))
    assert sum(len(p.rows) for p in pages) == 250 and {p.total for p in pages} == {100}


@pytest.mark.parametrize("total", ["many", "150", None, True, 1.5])
def test_a_total_that_is_not_an_integer_is_not_trusted(total: object) -> None:
    client = PagedClient([trip(kms=i) for i in range(150)], meta={"total": total})
    pages = list(client.iter_trip_pages(WINDOW))
    assert sum(len(p.rows) for p in pages) == 150
    assert all(p.total is None and p.total_untrusted == (total is not None) for p in pages)


def test_pages_capped_below_our_limit_by_the_server_are_still_full_pages() -> None:
    client = PagedClient([trip(kms=i) for i in range(120)], cap=50)
    assert sum(len(p.rows) for p in client.iter_trip_pages(WINDOW)) == 120
    assert client.offsets == [0, 50, 100]


def test_an_api_that_ignores_offset_fails_instead_of_paging_forever() -> None:
    class Stuck(PagedClient):
        def get_json(self, path: str, **kwargs: Any) -> Any:
            kwargs["params"] = {**kwargs["params"], "offset": 0}
            return super().get_json(path, **kwargs)

    with pytest.raises(VendorAPIError, match="BAD_PAGING"):
        list(Stuck([trip(kms=i) for i in range(300)]).iter_trip_pages(WINDOW))


# ---- the refusal rule ---------------------------------------------------------------------

ALL = None
NAMES4 = frozenset({"A", "B", "C", "D"})


def answer(devices: frozenset[str] | None, names: set[str], rows: int, known: bool = True):
    return DayAnswer(devices, frozenset(names), rows, known)


@pytest.mark.parametrize(
    ("held", "new", "reason"),
    [
        (None, answer(ALL, set(), 0), None),
        (answer(ALL, set(), 0), answer(frozenset({"1001"}), set(), 0), None),
        (answer(ALL, NAMES4, 19), answer(ALL, NAMES4, 21), None),  # trips added
        (answer(ALL, NAMES4, 19), answer(ALL, NAMES4, 17), None),  # trips merged or dropped
        (answer(ALL, NAMES4, 19), answer(ALL, {"A", "B", "C", "E"}, 19), None),  # a rename
        (answer(frozenset({"1"}), {"A"}, 5), answer(frozenset({"1", "2"}), {"A", "B"}, 9), None),
        (answer(frozenset({"1"}), {"A"}, 5), answer(ALL, NAMES4, 19), None),
        (
            answer(ALL, NAMES4, 19),
            answer(frozenset({"1001"}), {"A"}, 5),
            "AVL_DEVICES=1001 asks for fewer devices than the landing it would replace (all)",
        ),
        (
            answer(frozenset({"1", "2"}), {"A", "B"}, 9),
            answer(frozenset({"1", "3"}), {"A", "C"}, 9),
            "AVL_DEVICES=1,3 asks for fewer devices than the landing it would replace (1,2)",
        ),
        (answer(ALL, NAMES4, 16), answer(ALL, set(), 0), "the API answered no rows"),
        (
            answer(ALL, NAMES4, 16),
            answer(ALL, {"A", "B"}, 16),
            "the answer has fewer vehicles than the day holds",
        ),
        # Files landed before the filter was recorded: the device names still protect them.
        (
            answer(ALL, NAMES4, 19, known=False),
            answer(frozenset({"1001"}), {"A"}, 5),
            "the answer has fewer vehicles than the day holds",
        ),
        (answer(ALL, {"A"}, 5, known=False), answer(frozenset({"1001"}), {"A"}, 5), None),
    ],
)
def test_the_refusal_rule(held: DayAnswer | None, new: DayAnswer, reason: str | None) -> None:
    assert refusal_reason(held, new) == reason


# ---- the recorded answer and the guarded landing ------------------------------------------


def day_table(names: list[str], day: date = DAY) -> pa.Table:
    rows = [
        {
            "device_name": n,
            "trip_start": datetime(day.year, day.month, day.day, 8, i, tzinfo=UTC),
            "extracted_at": NOW,
            "day": day,
        }
        for i, n in enumerate(names)
    ]
    return pa.Table.from_pylist(rows, schema=TRIPS_SCHEMA)


def test_a_landed_day_records_its_device_filter_names_and_rows(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    landing = GuardedLanding(lake, ["1002", "1001"])
    assert landing.land([DAY], day_table(["A", "B", "A"])) == (1, landing.written[DAY].bytes)
    recorded = pq.read_metadata(lake.partition_dir("avl", "trips", DAY) / "data.parquet").metadata
    assert recorded[b"avl.devices"] == b"1001,1002"
    assert json.loads(recorded[b"avl.device_names"]) == ["A", "B"]
    assert recorded[b"avl.rows"] == b"3"
    assert read_landed(lake, DAY) == answer(frozenset({"1001", "1002"}), {"A", "B"}, 3)


def test_a_file_landed_before_the_record_is_read_from_its_rows(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.replace_partitions("avl", "trips", [DAY], day_table(["A", "B", "C"]))
    assert read_landed(lake, DAY) == answer(ALL, {"A", "B", "C"}, 3, known=False)


def test_an_unreadable_day_file_is_nothing_to_protect(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    directory = lake.partition_dir("avl", "trips", DAY)
    directory.mkdir(parents=True)
    (directory / "data.parquet").write_bytes(b"not parquet")
    assert read_landed(lake, DAY) is None
    assert read_landed(lake, date(2026, 3, 6)) is None


def test_a_refused_day_keeps_its_data_and_quarantine_and_other_days_land(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    other = date(2026, 3, 6)
    bad = quarantine_table([{"table": "trips", "reason": "r", "payload": "{}"}], NOW)
    first = GuardedLanding(lake, [])
    first.land([DAY], day_table(["A", "B"]))
    first.quarantine([DAY], {DAY: bad})
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")}

    narrower = GuardedLanding(lake, ["1001"])
    table = pa.concat_tables([day_table(["A"]), day_table(["A"], other)])
    assert narrower.land([DAY, other], table)[0] == 1
    narrower.quarantine([DAY, other], {})
    assert {p: p.read_bytes() for p in before} == before
    assert list(narrower.refused) == [DAY] and list(narrower.written) == [other]
    (kept,) = narrower.refused_ranges()
    assert (kept.days, kept.held_rows, kept.new_rows) == ("2026-03-05", 2, 1)

    allowed = GuardedLanding(lake, ["1001"], allow_narrower=True)
    allowed.land([DAY], day_table(["A"]))
    allowed.quarantine([DAY], {})
    assert lake.files("avl", "quarantine") == []
    assert read_landed(lake, DAY) == answer(frozenset({"1001"}), {"A"}, 1)


def test_consecutive_days_refused_for_one_reason_are_one_range(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    days = [date(2026, 3, d) for d in (5, 6, 7, 9)]
    full = pa.concat_tables([day_table(["A", "B"], d) for d in days])
    GuardedLanding(lake, []).land(days, full)
    narrower = GuardedLanding(lake, [])
    narrower.land(days, full.slice(0, 0))
    assert [(r.days, r.reason, r.held_rows) for r in narrower.refused_ranges()] == [
        ("2026-03-05..2026-03-07", "the API answered no rows", 6),
        ("2026-03-09", "the API answered no rows", 2),
    ]
