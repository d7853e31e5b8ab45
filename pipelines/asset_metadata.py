"""Dagster's standard metadata for the lake's raw tables, the same way for every source.

On the definition: the columns (`dagster/column_schema`: the asset page's Columns section),
the table's name (`dagster/table_name`, `lake.<source>.<table>`), owners and tags. On each
materialization: where the files are (`dagster/uri`), the whole table's rows after the run
(`dagster/row_count`) and, for a daily partition, that day's own `rows`, `files`, `bytes` and
`dagster/partition_row_count`, so a single-run backfill of many days shows each day's figures
(0 for a day without data) instead of the run's total on every day.
"""

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetKey,
    MetadataValue,
    TableColumn,
    TableSchema,
)

from pipelines.atomic_files import WriteResult
from pipelines.lake import PARTITION_KEY, Lake

OWNERS = ["team:fleet-data"]
"""Who answers for the pipelines' assets (Dagster's owners field: a team or an e-mail)."""


def raw_key(source: str, table: str) -> AssetKey:
    """The one spelling of a raw table's asset key, `raw/<source>/<table>`: the source's
    assets, its checks and dbt's sources all name the table through it."""
    return AssetKey(["raw", source, table])


def raw_tags(source: str) -> dict[str, str]:
    """Tags a user filters the asset catalog by: the vendor and the layer."""
    return {"source": source, "layer": "raw"}


def table_name(source: str, table: str) -> str:
    return f"lake.{source}.{table}"


def column_schema(schema: pa.Schema) -> TableSchema:
    """The Parquet files' columns and Arrow types; the `day` key lives in the folder names."""
    return TableSchema(
        columns=[
            TableColumn(name=f.name, type=str(f.type)) for f in schema if f.name != PARTITION_KEY
        ]
    )


def raw_definition_metadata(source: str, table: str, schema: pa.Schema) -> dict[str, Any]:
    """Definition metadata of the raw table `source/table` whose files have `schema`."""
    return {
        "dagster/column_schema": MetadataValue.table_schema(column_schema(schema)),
        "dagster/table_name": MetadataValue.text(table_name(source, table)),
        "dagster/storage_kind": MetadataValue.text("parquet"),
    }


def raw_asset_args(source: str, table: str, schema: pa.Schema) -> dict[str, Any]:
    """The arguments every raw table's asset or spec shares (group, kinds, owners, tags and
    definition metadata), so the four sources present their tables alike in the catalog."""
    return {
        "group_name": source,
        "kinds": {"python", "parquet"},
        "owners": OWNERS,
        "tags": raw_tags(source),
        "metadata": raw_definition_metadata(source, table, schema),
    }


ROW_COUNT_MAX_FILES = 10_000
"""Past this many files (AutoPi keeps one per trip: ~150k in a year of 200 vehicles) reading
every footer after each run costs more than the run: such tables leave `dagster/row_count`
out (their `rows` still say what the run landed)."""

ROW_COUNT_MAX_OBJECTS = 1_000
"""The same limit on an object store, where each footer is a request over the network."""


def table_rows(lake: Lake, source: str, table: str) -> int | None:
    """Rows of every landed file of the table, from the Parquet footers (no data is read);
    None when the table has more than ROW_COUNT_MAX_FILES files."""
    files = lake.files(source, table)
    if len(files) > (ROW_COUNT_MAX_OBJECTS if lake.remote else ROW_COUNT_MAX_FILES):
        return None
    return sum(lake.read_metadata(file).num_rows for file in files)


def landed_metadata(lake: Lake, source: str, table: str) -> dict[str, Any]:
    """A materialization's place and size: the table's folder and all its rows now."""
    metadata: dict[str, Any] = {
        "dagster/uri": MetadataValue.path(lake.table_location(source, table))
    }
    rows = table_rows(lake, source, table)
    if rows is not None:
        metadata["dagster/row_count"] = MetadataValue.int(rows)
    return metadata


def day_figures(written: WriteResult | None) -> dict[str, Any]:
    """One day's own figures: what its partition holds after this run."""
    rows = written.rows if written else 0
    return {
        "rows": MetadataValue.int(rows),
        "files": MetadataValue.int(1 if written else 0),
        "bytes": MetadataValue.int(written.bytes if written else 0),
        "size": MetadataValue.text(human_bytes(written.bytes if written else 0)),
        "dagster/partition_row_count": MetadataValue.int(rows),
    }


def add_day_figures(
    context: AssetExecutionContext,
    key: AssetKey,
    days: Iterable[date],
    written: Mapping[date, WriteResult],
) -> None:
    """Give each day of the run its own figures, on its own materialization (partition-scoped
    metadata overrides the run's)."""
    for day in days:
        context.add_asset_metadata(
            day_figures(written.get(day)), asset_key=key, partition_key=day.isoformat()
        )


def human_bytes(n: float) -> str:
    """1,234,567 → '1.2 MB': what a person reads in the UI beside the raw `bytes`."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
