"""The simulated AVL API follows its reference, and the client plans requests by its rules."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests

from pipelines.simulator.avl import PATH, AvlServer
from pipelines.sources.avl.client import (
    AvlClient,
    device_batches,
    local_bounds,
    plan_windows,
)

TALLINN = ZoneInfo("Europe/Tallinn")


def _get(server: AvlServer, params: dict, headers: dict | None = None) -> requests.Response:
    default = {
        "Authorization": f"Bearer {server.token}",
        "X-API-Key": server.api_key,
        "tenant": server.tenant,
    }
    return requests.get(
        server.url + PATH, params=params, headers=default if headers is None else headers
    )


MARCH = {"startdate": "2026-03-01T00:00:00", "enddate": "2026-03-15T23:59:59", "limit": 100}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sim-avl-token"}, {"X-API-Key": "k", "tenant": "t"}],
    ids=["none", "token-only", "no-token"],
)
def test_missing_headers_answer_400_bad_request(avl_sim: AvlServer, headers: dict) -> None:
    resp = _get(avl_sim, MARCH, headers)
    assert resp.status_code == 400
    assert resp.json() == {
        "success": False,
        "error": {"code": "BAD_REQUEST", "message": resp.json()["error"]["message"]},
    }


def test_wrong_key_answers_401_unauthorized(avl_sim: AvlServer) -> None:
    resp = _get(
        avl_sim, MARCH, {"Authorization": "Bearer nope", "X-API-Key": "k", "tenant": "sim-tenant"}
    )
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize(
    "params",
    [
        {"enddate": "2026-03-02T00:00:00"},
        {"startdate": "2026-03-01T00:00:00"},
        {"startdate": "2026-01-01T00:00:00", "enddate": "2026-02-01T00:00:01"},
        {"startdate": "01/03/2026", "enddate": "2026-03-02T00:00:00"},
        {**MARCH, "limit": 101},
        {**MARCH, "devices": ",".join(str(i) for i in range(501))},
    ],
    ids=["no-start", "no-end", "range-over-31-days", "malformed-iso", "limit-101", "501-devices"],
)
def test_invalid_parameters_answer_validation_error(avl_sim: AvlServer, params: dict) -> None:
    resp = _get(avl_sim, params)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "VALIDATION_ERROR"


def test_exactly_31_days_is_accepted(avl_sim: AvlServer) -> None:
    resp = _get(avl_sim, {"startdate": "2026-01-01T00:00:00", "enddate": "2026-02-01T00:00:00"})
    assert resp.status_code == 200


def test_eleventh_request_in_the_window_is_rate_limited(avl_sim: AvlServer) -> None:
    statuses = [_get(avl_sim, MARCH).status_code for _ in range(11)]
    assert statuses[:10] == [200] * 10
    last = _get(avl_sim, MARCH)
    assert last.status_code == 429 and last.json()["error"]["code"] == "RATE_LIMITED"


def test_offset_paging_covers_meta_total_with_local_offsetless_times(avl_sim: AvlServer) -> None:
    first = _get(avl_sim, {**MARCH, "offset": 0}).json()
    total = first["meta"]["total"]
    assert total > 100 and first["meta"] == {"total": total, "limit": 100, "offset": 0}
    second = _get(avl_sim, {**MARCH, "offset": 100}).json()
    assert len(first["data"]) == 100 and second["meta"]["offset"] == 100
    starts = [r["trip_start"] for r in first["data"] if r["trip_start"]]
    assert all(len(s) == 19 and "+" not in s and not s.endswith("Z") for s in starts)


def test_report_contains_rows_without_trip_start(avl_sim: AvlServer) -> None:
    rows = avl_sim.expected_rows(datetime(2026, 1, 1), datetime(2026, 1, 31, 23, 59, 59))
    orphans = [r for r in rows if r["trip_start"] is None]
    assert orphans and all(r["trip_end"] and r["kms"] == 0 for r in orphans)


def test_idle_min_joins_trips_split_by_short_stops(avl_sim: AvlServer) -> None:
    window = (datetime(2026, 3, 2), datetime(2026, 3, 8, 23, 59, 59))
    plain = [r for r in avl_sim.expected_rows(*window) if r["trip_start"]]
    joined = [r for r in avl_sim.expected_rows(*window, idle_min=60) if r["trip_start"]]
    assert len(joined) < len(plain)
    assert sum(r["kms"] for r in joined) == pytest.approx(sum(r["kms"] for r in plain), abs=1.0)
    assert sum(r["idle_min"] for r in joined) > sum(r["idle_min"] for r in plain)


def test_duration_min_drops_short_trips(avl_sim: AvlServer) -> None:
    window = (datetime(2026, 3, 2), datetime(2026, 3, 8, 23, 59, 59))
    kept = [r for r in avl_sim.expected_rows(*window, duration_min=20) if r["trip_start"]]
    assert kept and all(r["duration_min"] >= 20 for r in kept)
    assert len(kept) < len([r for r in avl_sim.expected_rows(*window) if r["trip_start"]])


def test_windows_are_at_most_31_days_and_cover_each_day_once() -> None:
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(365)]
    windows = plan_windows(days, ZoneInfo("UTC"))
    assert [d for w in windows for d in w.days] == days
    assert all(len(w.days) <= 31 for w in windows) and len(windows) == 12


def test_windows_map_local_bounds_onto_exact_utc_days() -> None:
    start, end = local_bounds(date(2026, 7, 1), date(2026, 7, 31), TALLINN)
    assert start == datetime(2026, 7, 1, 3, 0, 0)  # UTC midnight is 03:00 in Tallinn summer
    assert end == datetime(2026, 8, 1, 2, 59, 59)


def test_a_window_across_spring_dst_is_shortened_to_stay_within_31_local_days() -> None:
    days = [date(2026, 3, 1) + timedelta(days=i) for i in range(62)]
    windows = plan_windows(days, TALLINN)
    assert all(w.enddate - w.startdate <= timedelta(days=31) for w in windows)
    assert len(windows[0].days) == 30  # 31 UTC days would be 31 days + 1 h of local wall time
    assert [d for w in windows for d in w.days] == days


def test_device_ids_are_batched_by_500() -> None:
    batches = device_batches([str(i) for i in range(1201)])
    assert [len(b) for b in batches] == [500, 500, 201]
    assert device_batches([]) == [None]


def _client(server: AvlServer) -> AvlClient:
    """A client of the simulator with no rate limiter: these tests count requests only."""
    return AvlClient(
        server.url, token=server.token, api_key=server.api_key, tenant=server.tenant, limiter=None
    )


def test_client_reads_every_page_with_the_minimum_requests(avl_sim: AvlServer) -> None:
    client = _client(avl_sim)
    window = plan_windows([date(2026, 3, 1) + timedelta(days=i) for i in range(10)], TALLINN)[0]
    rows = [r for page in client.iter_trip_pages(window) for r in page.rows]
    expected = avl_sim.expected_rows(window.startdate, window.enddate)
    assert rows == expected
    # Paging ends on a short page: rows // 100 + 1 requests (= ceil(rows/100) unless a multiple).
    assert len(expected) % 100 and client.stats.requests == len(expected) // 100 + 1


def test_a_stale_meta_total_on_the_first_page_does_not_end_paging(avl_sim: AvlServer) -> None:
    window = plan_windows([date(2026, 3, 1) + timedelta(days=i) for i in range(10)], TALLINN)[0]
    expected = avl_sim.expected_rows(window.startdate, window.enddate)
    assert len(expected) > 200
    avl_sim.report_faults.stale_first_total = 100  # cached before the later trips arrived
    client = _client(avl_sim)
    pages = list(client.iter_trip_pages(window))
    assert [r for p in pages for r in p.rows] == expected
    assert pages[0].total == 100 and pages[-1].total == len(expected)
    assert client.stats.requests == len(expected) // 100 + 1


def test_a_meta_total_that_is_not_a_number_is_ignored_not_fatal(avl_sim: AvlServer) -> None:
    window = plan_windows([date(2026, 3, 1) + timedelta(days=i) for i in range(10)], TALLINN)[0]
    avl_sim.report_faults.total_text = "many"
    pages = list(_client(avl_sim).iter_trip_pages(window))
    assert [r for p in pages for r in p.rows] == avl_sim.expected_rows(
        window.startdate, window.enddate
    )
    assert all(p.total is None and p.total_untrusted for p in pages)


def test_bad_values_are_sent_as_configured_including_json_nan(avl_sim: AvlServer) -> None:
    row = avl_sim.expected_rows(datetime(2026, 3, 2), datetime(2026, 3, 2, 23, 59, 59))[0]
    key = (row["device_name"], row["trip_start"])
    avl_sim.report_faults.values[key] = {"fuel": float("nan"), "kms": float("inf")}
    params = {"startdate": "2026-03-02T00:00:00", "enddate": "2026-03-02T23:59:59", "limit": 1}
    text = _get(avl_sim, params).text
    assert '"fuel":NaN' in text and '"kms":Infinity' in text


def test_client_sends_device_batches_as_a_comma_list(avl_sim: AvlServer) -> None:
    client = _client(avl_sim)
    window = plan_windows([date(2026, 3, 2)], TALLINN)[0]
    vehicle = avl_sim.world.vehicles[2]
    rows = [
        r
        for page in client.iter_trip_pages(window, devices=[vehicle.avl_device_id])
        for r in page.rows
    ]
    assert rows and {r["device_name"] for r in rows} == {vehicle.avl_device_name}
