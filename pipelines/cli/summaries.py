"""The one-line summaries `fleet demo` and `fleet autopi reexport` print of a finished run, one
per source, from the run's materialization metadata."""

from __future__ import annotations

import json
from typing import Any

from dagster import AssetKey

from pipelines.sources.autopi.assets import DATAPOINTS_KEY, TRIPS_KEY
from pipelines.sources.kt1.assets import ASSET_KEYS as KT1_KEYS
from pipelines.sources.metrotec.assets import TABLE_KEYS as METROTEC_KEYS
from pipelines.sources.metrotec.assets import VEHICLES_KEY as METROTEC_VEHICLES


def avl_line(result: Any) -> str:
    """AVL's line: rows summed over the run's days; the API figures are the run's (on each)."""
    events = [e.materialization.metadata for e in result.get_asset_materialization_events()]
    metas = [{k: v.value for k, v in m.items()} for m in events]
    metas = [m for m in metas if "api_requests" in m]
    if not metas:
        return ""
    meta = metas[0]
    line = (
        f"rows={sum(m['rows'] for m in metas)} requests={meta['api_requests']} "
        f"429s={meta['http_429s']} limit-wait={meta['rate_limit_wait_s']:.1f}s"
    )
    if meta.get("null_trip_start_rows"):
        line += f"  ({meta['null_trip_start_rows']} rows without trip_start not loaded)"
    return line


def metrotec_line(result: Any) -> str:
    """One line for `fleet demo`: rows per Metrotec table and the run's API traffic."""
    latest: dict[str, dict[str, Any]] = {}
    rows_by_table: dict[str, int] = {}
    for event in result.get_asset_materialization_events():
        if event.asset_key == METROTEC_VEHICLES or event.asset_key in METROTEC_KEYS.values():
            metadata = {k: v.value for k, v in event.materialization.metadata.items()}
            name = event.asset_key.path[-1]
            latest[name] = metadata  # the run's API figures are on each day's event
            rows_by_table[name] = rows_by_table.get(name, 0) + metadata["rows"]
    if not latest:
        return ""
    rows = " ".join(f"{name}={n}" for name, n in rows_by_table.items())
    requests = sum(meta["api_requests"] for meta in latest.values())
    http_429s = sum(meta["http_429s"] for meta in latest.values())
    waited = sum(meta["rate_limit_wait_s"] for meta in latest.values())
    relogins = max((meta.get("reauthentications", 0) for meta in latest.values()), default=0)
    return (
        f"{rows} requests={requests} 429s={http_429s} limit-wait={waited:.1f}s relogins={relogins}"
    )


def kt1_line(result: Any) -> str:
    """One line on a finished drain run, for `fleet demo` and other command-line callers."""
    for event in result.get_asset_materialization_events():
        if event.asset_key == KT1_KEYS["telemetry"]:
            meta = {k: v.value for k, v in event.materialization.metadata.items()}
            rows = meta["rows_by_table"]
            return (
                f"items={meta['items_landed']} (telemetry {rows['telemetry']}, trips "
                f"{rows['trips']}, events {rows['events']}, changes {rows['changes']}, "
                f"quarantined {meta['quarantined_items']}) batches={meta['batches']} "
                f"requests={meta['api_requests']} acks={meta['acks']} ({meta['stop_reason']})"
            )
    return "no drain materialized"


def autopi_line(result: Any) -> str:
    """One line for `fleet demo` / `fleet autopi reexport`: what the drain landed."""
    found: dict[AssetKey, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        found[event.asset_key] = {k: v.value for k, v in event.materialization.metadata.items()}
    trips, points = found.get(TRIPS_KEY), found.get(DATAPOINTS_KEY)
    if trips is None or points is None:
        return "AutoPi: nothing landed"
    quarantined = int(points["quarantined_rows"]) + int(trips["quarantined_rows"])
    line = (
        f"{trips['exports_landed']} trip export(s) landed and cleared "
        f"({points['rows']:,} datapoints, {quarantined} row(s) quarantined), "
        f"{trips['exports_pending']} pending, requests={trips['api_requests']}"
    )
    if trips["exports_failed"]:
        line += f", {trips['exports_failed']} failed (left on AutoPi)"
    keys = json.loads(str(points["undeclared_keys"]))
    if keys:
        line += f", undeclared keys kept in `extra`: {', '.join(sorted(keys))}"
    return line
