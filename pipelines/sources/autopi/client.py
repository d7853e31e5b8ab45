"""AutoPi cloud API client for trip exports: tasks, streamed results, clear, re-run, logbook.

Knows nothing of Dagster. Authenticates with `Authorization: APIToken <token>`; errors come in
Django REST framework's `{"detail", "code"}` shape. Lists may be plain JSON arrays (as the
reference shows) or DRF pages (`{"results", "next"}`); both are followed to the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pipelines.http import ApiClient, VendorAPIError
from pipelines.ratelimit import SlidingWindowLimiter

EXPORT_TASK = "core.tasks.es_trip_export"
SUCCESS = "SUCCESS"
FINISHED_BAD = frozenset({"FAILURE", "REVOKED"})  # Celery states that will never have a result
MAX_PAGES = 10_000  # a guard against a server whose `next` never ends


@dataclass(frozen=True)
class ExportTask:
    """One `core.tasks.es_trip_export` task as `tasks/` lists it."""

    task_id: int
    trip_id: str
    state: str
    created_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.state == SUCCESS

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ExportTask | None:
        """None for tasks that are not trip exports (other Celery tasks share the list)."""
        if body.get("task") != EXPORT_TASK:
            return None
        kwargs = body.get("kwargs") or {}
        trip_id = kwargs.get("trip_id") if isinstance(kwargs, dict) else None
        if not isinstance(trip_id, str) or not trip_id:
            return None
        created = body.get("created_at")
        return cls(
            task_id=int(body["id"]),
            trip_id=trip_id,
            state=str(body.get("state") or "PENDING").upper(),
            created_at=_parse_ts(created) if isinstance(created, str) else None,
        )


def _parse_ts(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class AutoPiClient(ApiClient):
    """The endpoints of AutoPi's automatic-exports reference."""

    vendor = "AutoPi"

    def __init__(
        self, base_url: str, *, token: str, limiter: SlidingWindowLimiter | None = None, **kw: Any
    ) -> None:
        super().__init__(
            base_url,
            limiter=limiter,
            headers={"Authorization": f"APIToken {token}", "Accept": "application/json"},
            **kw,
        )

    # --- listing --------------------------------------------------------------------------
    def _pages(self, path: str, params: dict[str, Any] | None = None) -> Iterator[Any]:
        """Items of a plain JSON array, or of every DRF page following `next`."""
        query = dict(params or {})
        for _ in range(MAX_PAGES):
            body = self.get_json(path, params=query or None)
            if isinstance(body, list):
                yield from body
                return
            if not isinstance(body, dict) or not isinstance(body.get("results"), list):
                raise VendorAPIError(
                    self.vendor, 200, "BAD_RESPONSE", "expected a list", f"GET /{path}"
                )
            yield from body["results"]
            following = body.get("next")
            if not following:
                return
            # Keep our own base URL and path; take only the page parameters from `next`.
            query = dict(parse_qsl(urlsplit(str(following)).query, keep_blank_values=True))
        raise VendorAPIError(self.vendor, 200, "TOO_MANY_PAGES", "paging never ended", path)

    def export_tasks(self) -> list[ExportTask]:
        """Every trip-export task of the account, oldest id first."""
        tasks = (ExportTask.from_json(t) for t in self._pages("tasks/") if isinstance(t, dict))
        return sorted((t for t in tasks if t is not None), key=lambda t: t.task_id)

    def logbook_trips(self, device: str | None = None) -> list[dict[str, Any]]:
        """Logbook trip objects (the same shape as an export's first line)."""
        params = {"device": device} if device else None
        return [t for t in self._pages("logbook/trips/", params) if isinstance(t, dict)]

    # --- results --------------------------------------------------------------------------
    def download_result(self, task_id: int, dest: Path) -> int | None:
        """Stream `TRIP_ID.json.gz` to `dest`; None if the task has no result (404: not
        finished, cleared or expired). Cut downloads are resumed or restarted by the base."""
        try:
            return self.download(f"tasks/{task_id}/result/", dest)
        except VendorAPIError as exc:
            if exc.status == 404:
                return None
            raise

    def clear_result(self, task_id: int) -> str:
        """Remove a downloaded result so AutoPi stops re-broadcasting it.

        `clear_result/` as the reference's step 5 says, falling back to `remove_result/`
        (its endpoint list) where the former does not exist. Returns the endpoint used.
        """
        for endpoint in ("clear_result", "remove_result"):
            path = f"tasks/{task_id}/{endpoint}/"
            response = self.request("GET", path, passthrough=(404, 405))
            response.close()
            if response.status_code < 300:
                return endpoint
        raise VendorAPIError(
            self.vendor, response.status_code, "NOT_CLEARED", "no clear endpoint took it", path
        )

    def rerun_export(self, trip_id: str) -> ExportTask:
        """`POST tasks/` re-running the export of one trip; returns the new (pending) task."""
        body = {"task": EXPORT_TASK, "args": [], "kwargs": {"trip_id": trip_id}}
        response = self.request("POST", "tasks/", json=body)
        try:
            task = ExportTask.from_json(response.json())
        except (ValueError, KeyError, TypeError):
            task = None
        if task is None:
            raise VendorAPIError(
                self.vendor,
                response.status_code,
                "BAD_RESPONSE",
                "no task in answer",
                "POST /tasks/",
            )
        return task
