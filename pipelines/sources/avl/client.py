"""AVL Trips Report client: windows of at most 31 days, device batches of 500, offset paging.

Knows nothing of Dagster. Every request goes through the shared limiter (see `pipelines.http`),
so the API's 10 requests/minute window is never exceeded by us.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pipelines.http import ApiClient, VendorAPIError
from pipelines.ratelimit import SlidingWindowLimiter
from pipelines.windows import day_runs

TRIPS_PATH = "apidev/v1/reports/avl/trips"
MAX_WINDOW = timedelta(days=31)
MAX_WINDOW_DAYS = 31
MAX_DEVICES_PER_REQUEST = 500
PAGE_LIMIT = 100
LOCAL_FMT = "%Y-%m-%dT%H:%M:%S"


@dataclass(frozen=True)
class Window:
    """A run of whole UTC days, and the API's local-time bounds that cover exactly them."""

    first_day: date
    last_day: date
    startdate: datetime  # local, naive
    enddate: datetime  # local, naive, inclusive (last second of last_day)

    @property
    def days(self) -> list[date]:
        n = (self.last_day - self.first_day).days + 1
        return [self.first_day + timedelta(days=i) for i in range(n)]


def local_bounds(first_day: date, last_day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    start_utc = datetime.combine(first_day, time.min, UTC)
    end_utc = datetime.combine(last_day + timedelta(days=1), time.min, UTC) - timedelta(seconds=1)
    return (
        start_utc.astimezone(tz).replace(tzinfo=None),
        end_utc.astimezone(tz).replace(tzinfo=None),
    )


def plan_windows(
    days: Sequence[date], tz: ZoneInfo, max_days: int = MAX_WINDOW_DAYS
) -> list[Window]:
    """Split consecutive UTC days into the fewest API windows of at most 31 days.

    A window is measured in the API's local wall-clock time, which a DST change can stretch
    by an hour; such a window is shortened by a day rather than rejected by the API.
    """

    def within_31_local_days(first: date, last: date) -> bool:
        start, end = local_bounds(first, last, tz)
        return end - start <= MAX_WINDOW

    return [
        Window(first, last, *local_bounds(first, last, tz))
        for first, last in day_runs(days, max_days, within_31_local_days)
    ]


def device_batches(devices: Sequence[str]) -> list[list[str] | None]:
    """`None` means "all visible devices" (no `devices` parameter), one request series."""
    if not devices:
        return [None]
    unique = list(dict.fromkeys(devices))
    return [
        unique[k : k + MAX_DEVICES_PER_REQUEST]
        for k in range(0, len(unique), MAX_DEVICES_PER_REQUEST)
    ]


@dataclass(frozen=True)
class TripsPage:
    """One page of the report, and what its `meta` claimed."""

    rows: list[Any]
    total: int | None  # `meta.total` when it is an integer; None when absent or not one
    offset: int
    limit: int  # rows a full page holds: what we asked, or less when `meta.limit` says so
    total_untrusted: bool = False  # `meta.total` was sent but is not an integer ("many")


def _integer(value: Any) -> int | None:
    """A JSON integer (or integral number) as int; anything else (text, bool, null) is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


class AvlClient(ApiClient):
    """The Trips Report endpoint, authenticated by its three headers."""

    vendor = "AVL"

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        api_key: str,
        tenant: str,
        limiter: SlidingWindowLimiter | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            base_url,
            limiter=limiter,
            headers={
                "Authorization": f"Bearer {token}",
                "X-API-Key": api_key,
                "tenant": tenant,
                "Accept": "application/json",
            },
            **kwargs,
        )

    def trips_page(
        self,
        *,
        startdate: datetime,
        enddate: datetime,
        devices: Sequence[str] | None = None,
        idle_min: int = 0,
        duration_min: int = 0,
        offset: int = 0,
        limit: int = PAGE_LIMIT,
    ) -> TripsPage:
        params: dict[str, Any] = {
            "startdate": startdate.strftime(LOCAL_FMT),
            "enddate": enddate.strftime(LOCAL_FMT),
            "limit": limit,
            "offset": offset,
        }
        if idle_min:
            params["idle_min"] = idle_min
        if duration_min:
            params["duration_min"] = duration_min
        if devices:
            params["devices"] = ",".join(devices)
        body = self.get_json(TRIPS_PATH, params=params)
        if not isinstance(body, dict) or body.get("success") is False:
            raise VendorAPIError(
                self.vendor, 200, "BAD_RESPONSE", "success is not true", f"GET /{TRIPS_PATH}"
            )
        rows = body.get("data")
        if rows is None:
            rows = []
        if not isinstance(rows, list):
            raise VendorAPIError(
                self.vendor, 200, "BAD_RESPONSE", "data is not a list", f"GET /{TRIPS_PATH}"
            )
        meta = body.get("meta")
        meta = meta if isinstance(meta, dict) else {}
        total = _integer(meta.get("total"))
        echoed = _integer(meta.get("limit"))
        return TripsPage(
            rows=rows,
            total=total,
            offset=offset,
            limit=echoed if echoed is not None and 0 < echoed < limit else limit,
            total_untrusted=meta.get("total") is not None and total is None,
        )

    def iter_trip_pages(
        self,
        window: Window,
        *,
        devices: Sequence[str] | None = None,
        idle_min: int = 0,
        duration_min: int = 0,
    ) -> Iterator[TripsPage]:
        """Page with limit=100 until a page comes back short (fewer rows than a full page) or
        empty, whatever `meta.total` claims.

        `meta.total` does not end paging: a first page served from the API's 5-minute cache can
        claim fewer rows than the later pages hold, and stopping there lands a day incomplete.
        The cost: a window whose rows are an exact multiple of 100 takes one more request, an
        empty page, so the minimum is Σ (rows // 100 + 1) over windows instead of ⌈rows/100⌉.
        A full page that repeats the previous one means the API ignores `offset`: that fails
        rather than paging forever.
        """
        offset = 0
        previous: list[Any] | None = None
        while True:
            page = self.trips_page(
                startdate=window.startdate,
                enddate=window.enddate,
                devices=devices,
                idle_min=idle_min,
                duration_min=duration_min,
                offset=offset,
            )
            if page.rows and page.rows == previous:
                raise VendorAPIError(
                    self.vendor,
                    200,
                    "BAD_PAGING",
                    f"offset {offset} returned the same rows as the previous page",
                    f"GET /{TRIPS_PATH}",
                )
            yield page
            if len(page.rows) < page.limit:
                return
            offset += len(page.rows)
            previous = page.rows
