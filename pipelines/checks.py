"""Every raw-lake check of every source, as Dagster asset checks.

Each source declares its checks in pipelines/sources/<source>/checks.py: the anomaly checks
(WARN: overlapping trips, odometers going back, unexplained fuel rises; pipelines/anomalies.py
runs them) and, for each raw table, the `lake_days_present` check (ERROR: a landed day whose
files are gone; pipelines/lake_days.py).
"""

from dagster import AssetChecksDefinition, DagsterInstance

from pipelines.anomalies import RawCheck, build_check
from pipelines.lake import Lake
from pipelines.lake_days import LakeDays, RawTable, build_lake_days_check, lake_days
from pipelines.sources.autopi import checks as autopi
from pipelines.sources.avl import checks as avl
from pipelines.sources.kt1 import checks as kt1
from pipelines.sources.metrotec import checks as metrotec

RAW_CHECKS: tuple[RawCheck, ...] = (*avl.CHECKS, *autopi.CHECKS, *kt1.CHECKS, *metrotec.CHECKS)
RAW_TABLES: tuple[RawTable, ...] = (*avl.TABLES, *metrotec.TABLES, *kt1.TABLES, *autopi.TABLES)


def build_raw_checks() -> list[AssetChecksDefinition]:
    """Every anomaly check and every table's lake-days check, for Definitions(asset_checks=...)."""
    return [
        *(build_check(check) for check in RAW_CHECKS),
        *(build_lake_days_check(table) for table in RAW_TABLES),
    ]


def missing_lake_days(instance: DagsterInstance, lake: Lake) -> list[LakeDays]:
    """`lake_days` of every raw table that misses a day (what the facts build warns about)."""
    found = (lake_days(instance, lake, table) for table in RAW_TABLES)
    return [days for days in found if days.missing]
