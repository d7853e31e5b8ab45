"""AVL's raw checks: overlapping trips in each landed partition, and its lake days."""

from pipelines.anomalies import LakeTable, RawCheck, TripShape, overlap_check
from pipelines.lake_days import RawTable

TRIPS = LakeTable.of(
    "avl",
    "trips",
    "device_name varchar, trip_start timestamptz, trip_end timestamptz, extracted_at timestamptz",
)
_TRIP_ID = "device_name || '|' || strftime(trip_start, '%Y-%m-%dT%H:%M:%S')"
"""AVL trips have no id of their own: the device and the start time name one."""

CHECKS: tuple[RawCheck, ...] = (
    overlap_check(
        TRIPS,
        TripShape("device_name", _TRIP_ID, "trip_start", "trip_end", "extracted_at desc"),
        follows_run_partitions=True,
    ),
)

TABLES: tuple[RawTable, ...] = (RawTable("avl", "trips", partitioned=True),)
