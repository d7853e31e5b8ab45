"""Shared helpers of the kt1 tests: simulator set-ups, Dagster drain runs, lake reads."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import AssetKey, ExecuteInProcessResult, materialize

from pipelines.lake import Lake
from pipelines.simulator.kt1 import Kt1Server
from pipelines.simulator.world import World
from pipelines.sources.kt1.resources import Kt1Resource
from pipelines.sources.kt1.schemas import QUARANTINE, TABLES

TOKEN = "kt1-test-token-5f1e"
LONG_POLL_S = 0.3
REDELIVERY_S = 1.5
KT1_KEYS = [AssetKey(["raw", "kt1", t]) for t in TABLES]
BEFORE_ANY_DATA = datetime(2000, 1, 1, tzinfo=UTC)


def small_world(seed: int = 5, days: int = 2) -> World:
    """Six vehicles, two of them with a kt1 tracker."""
    return World(seed=seed, vehicles=6, days=days, end_day=date(2024, 5, 15))


def start_server(
    world: World,
    *,
    now: datetime = datetime(2024, 5, 16, tzinfo=UTC),
    batch_size: int = 40,
    long_poll_s: float = LONG_POLL_S,
    redelivery_s: float = REDELIVERY_S,
    server_class: type[Kt1Server] = Kt1Server,
    **kwargs: Any,
) -> Kt1Server:
    server = server_class(
        world,
        token=TOKEN,
        clock=lambda: now,
        long_poll_s=long_poll_s,
        redelivery_s=redelivery_s,
        batch_size=batch_size,
        **kwargs,
    )
    return server.start()  # type: ignore[return-value]


def kt1_resource(server: Kt1Server, **overrides: Any) -> Kt1Resource:
    """The resource a deployment would build, pointed at a simulator with short timings."""
    config: dict[str, Any] = {
        "base_url": server.url,
        "token": server.token,
        "drain_seconds": 60.0,
        "long_poll_s": server.long_poll_s,
        "redelivery_s": server.redelivery_s,
        "group_max_batches": 4,
    }
    config.update(overrides)
    return Kt1Resource(**config)


def run_drain(
    server: Kt1Server | None = None, *, instance: Any = None, **overrides: Any
) -> ExecuteInProcessResult:
    """One real Dagster run of the drain asset, resources from `build_defs()`."""
    from pipelines.definitions import build_defs

    defs = build_defs()
    resources = dict(defs.resources)
    if server is not None:
        resources["kt1"] = kt1_resource(server, **overrides)
    return materialize(
        list(defs.assets),
        resources=resources,
        selection=KT1_KEYS,
        instance=instance,
        raise_on_error=False,
    )


def metadata(result: ExecuteInProcessResult, table: str = "telemetry") -> dict[str, Any]:
    key = AssetKey(["raw", "kt1", table])
    for event in result.get_asset_materialization_events():
        if event.asset_key == key:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise AssertionError(f"no materialization of {key}")


def lake_rows(lake_dir: Path, tables: Iterable[str] = (*TABLES, QUARANTINE)) -> dict[str, list]:
    lake = Lake(lake_dir)
    out: dict[str, list] = {}
    for table in tables:
        parts = [pq.read_table(p) for p in lake.files("kt1", table)]
        out[table] = pa.concat_tables(parts).to_pylist() if parts else []
    return out


def _instant(value: Any) -> datetime:
    if not isinstance(value, str) or not value:
        raise ValueError("not a timestamp")
    parsed = datetime.fromisoformat(value)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _ident(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
        raise ValueError("not an id")
    return str(value)


def identity(item: Any) -> tuple | None:
    """The test's own oracle of an item's identity (None: the pipeline must quarantine it).

    telemetry (origin.id, date), trip and event id, change (doc.id, doc.type, operation, date);
    computed in plain Python, independently of the pipeline's SQL.
    """
    if not isinstance(item, dict):
        return None
    kind = item.get("type")
    try:
        if kind == "telemetry":
            _ident(item["asset"]["id"])
            return (kind, _ident(item["origin"]["id"]), _instant(item["date"]))
        if kind == "trip":
            _ident(item["asset"]["id"])
            _instant(item["dateStart"])
            return (kind, _ident(item["id"]))
        if kind == "event":
            _instant(item["eventDate"])
            return (kind, _ident(item["id"]))
        if kind == "changenotification":
            operation = item["operation"]
            if not isinstance(operation, str) or not operation:
                return None
            doc = item["doc"]
            return (kind, _ident(doc["id"]), doc.get("type"), operation, _instant(item["date"]))
    except (KeyError, TypeError, ValueError):
        return None
    return None


def identities(items: Iterable[Any]) -> list[tuple | None]:
    return [identity(item) for item in items]


# Values the pipeline validates when given, by item type, as paths in the item: timestamps, and
# numbers (typed, or read by the models from item_json).
CHECKED_NUMBERS = {
    "telemetry": (
        "location.lat", "location.lon", "location.speed", "location.altitude",
        "location.heading", "location.accuracy", "counters.odometer", "counters.odo_counter",
        "counters.engine_hours", "telemetry.fuel_level",
    ),
    "trip": (
        "start.lat", "start.lon", "end.lat", "end.lon", "stats.driveTime", "stats.idleTime",
        "stats.distance", "records", "maxes.speed",
    ),
    "event": (
        "details.location.lat", "details.location.lon", "details.volume", "details.levelBefore",
        "details.levelAfter",
    ),
}  # fmt: skip
CHECKED_TIMES = {
    "telemetry": ("date", "received"),
    "trip": ("dateStart", "dateEnd"),
    "event": ("eventDate", "details.dateStart", "details.dateEnd"),
    "changenotification": ("date",),
}


def _at(item: dict, path: str) -> Any:
    value: Any = item
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value if isinstance(value, str) else json.dumps(value)


def bad_value(item: Any) -> tuple[str, str] | None:
    """The test's own oracle of a value the pipeline must refuse: (field, value as text) of the
    given timestamp that is not ISO-8601 or number that is not a finite number; None when there
    is none (a missing id or date is `identity`'s business). Plain Python, independently of the
    pipeline's SQL."""
    if not isinstance(item, dict):
        return None
    kind = item.get("type")
    for path in CHECKED_TIMES.get(kind, ()):
        value = _at(item, path)
        if value not in (None, ""):
            try:
                _instant(value)
            except ValueError:
                return path, _as_text(value)
    for path in CHECKED_NUMBERS.get(kind, ()):
        value = _at(item, path)
        if value in (None, ""):
            continue
        try:
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise ValueError
        except (TypeError, ValueError):
            return path, _as_text(value)
    return None


def lands(item: Any) -> bool:
    """Whether the item belongs in its raw table (else in the quarantine)."""
    return identity(item) is not None and bad_value(item) is None


def item_of(row: dict[str, Any]) -> Any:
    """The item a lake row was made from: a table row's item_json, a quarantine row's payload."""
    return json.loads(row["item_json"] if "item_json" in row else row["payload"])
