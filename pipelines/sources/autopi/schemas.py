"""The lake's columns of an AutoPi export: the declared datapoint keys and their types, the
datapoints and trips tables, and what Arrow's JSON reader is told to expect.

Declaring a key here gives it a typed column in every export landed from then on; an
undeclared key is kept in `extra` and counted as schema drift.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
F64 = pa.float64()
STR = pa.string()

LOC = "track.pos.loc"
LOC_FIELDS = ("lat", "lon")
# Value keys of the common OBD types: `<type>.value` (float64) and `<type>.unit` (string).
OBD_TYPES = (
    "obd.speed",
    "obd.rpm",
    "obd.engine_load",
    "obd.coolant_temp",
    "obd.fuel_level",
    "obd.intake_temp",
    "obd.maf",
    "obd.throttle_pos",
    "obd.ambient_air_temp",
    "obd.fuel_rate",
)
DECLARED: dict[str, pa.DataType] = {
    "@ts": TS,  # when the reading was taken
    "@rec": TS,  # when the cloud received it
    "@t": STR,  # datapoint type
    "@tag": STR,  # event tag, e.g. vehicle/engine/running
    "@vid": pa.int64(),  # AutoPi vehicle id
    "@uid": STR,  # device unit id
    "track.pos.utc": TS,
    f"{LOC}.lat": F64,
    f"{LOC}.lon": F64,
    "track.pos.alt": F64,
    "track.pos.sog": F64,
    "track.pos.cog": F64,
    "track.pos.nsat": F64,
    **{k: t for name in OBD_TYPES for k, t in ((f"{name}.value", F64), (f"{name}.unit", STR))},
    "obd.bat.voltage": F64,
    "obd.bat.level": F64,
    "obd.bat.state": STR,
}
EXTRA = "extra"
DATAPOINTS_SCHEMA = pa.schema(
    [
        pa.field("trip_id", STR, nullable=False),
        pa.field("line_no", pa.int64(), nullable=False),  # line in the export; the trip is 1
        *(pa.field(name, kind) for name, kind in DECLARED.items()),
        pa.field(EXTRA, STR),  # JSON object of every key not declared above
    ]
)
# What Arrow's reader is told: the location is an object in the file.
_READ_FIELDS: list[pa.Field] = []
for _name, _kind in DECLARED.items():
    if _name == f"{LOC}.lat":
        _READ_FIELDS.append(pa.field(LOC, pa.struct([(f, F64) for f in LOC_FIELDS])))
    elif _name != f"{LOC}.lon":
        _READ_FIELDS.append(pa.field(_name, _kind))
READ_SCHEMA = pa.schema(_READ_FIELDS)
READ_NAMES = frozenset(READ_SCHEMA.names)


TRIPS_SCHEMA = pa.schema(
    [
        pa.field("trip_id", STR, nullable=False),
        pa.field("device_id", STR),
        pa.field("vehicle_id", pa.int64()),
        pa.field("started_at", TS),
        pa.field("ended_at", TS),
        pa.field("start_lat", F64),
        pa.field("start_lon", F64),
        pa.field("start_address", STR),
        pa.field("end_lat", F64),
        pa.field("end_lon", F64),
        pa.field("end_address", STR),
        pa.field("duration_s", F64),
        pa.field("distance_km", F64),
        pa.field("tag", STR),
        pa.field("personal", pa.bool_()),
        pa.field("last_recalc_at", TS),
        pa.field("task_id", pa.int64()),
        pa.field("export_sha256", STR),
        pa.field("export_bytes", pa.int64()),
        pa.field("datapoints", pa.int64()),
        pa.field("malformed_lines", pa.int64()),
        pa.field("undeclared_keys", STR),  # JSON {key: values} of keys kept in `extra`
        pa.field("landed_at", TS, nullable=False),
        pa.field("trip_json", STR),  # the trip object exactly as exported
    ]
)
