"""The raw Metrotec tables: each one's vendor fields and their kinds, what places a row and
what identifies it, and the quarantine's columns. Data only: rows.py types rows by them."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from pipelines.lake import QUARANTINE_SCHEMA
from pipelines.sources.metrotec.values import TS, TYPES

SOURCE = "metrotec"
TABLES = ("routelog", "stops", "refuels", "fuel_levels")


@dataclass(frozen=True)
class TableSpec:
    """One raw table: its vendor fields, typed; what places a row; what identifies it."""

    name: str
    fields: tuple[tuple[str, str], ...]  # (vendor key, kind in TYPES)
    required: tuple[str, ...]  # keys without which a row is quarantined
    time_key: str | None  # its UTC date is the row's partition day (None: snapshot table)
    id_key: str | None  # rows sharing (objectID, id) are one record: the last one wins
    derived: tuple[pa.Field, ...] = ()
    # Fields whose unreadable value is stored NULL (kept verbatim in extra_fields, counted as
    # unparsed_values) instead of quarantining the row: nothing is built from them.
    optional: tuple[str, ...] = ()

    @property
    def schema(self) -> pa.Schema:
        columns = [pa.field(key, TYPES[kind][0]) for key, kind in self.fields]
        columns += [
            *self.derived,
            pa.field("extra_fields", pa.string()),
            pa.field("extracted_at", TS, nullable=False),
        ]
        if self.time_key is not None:
            columns.append(pa.field("day", pa.date32(), nullable=False))
        return pa.schema(columns)


_FUEL_CODE = pa.field("fuel_is_code", pa.bool_())


def _activity(
    name: str,
    fields: tuple[tuple[str, str], ...],
    *,
    derived: tuple[pa.Field, ...] = (),
    optional: tuple[str, ...] = (),
) -> TableSpec:
    """A vehicle's activity records (route log, stops, refuels): each has the vendor's `ID`,
    its vehicle and a `startTime`, which place and identify it; `fields` follow those."""
    return TableSpec(
        name,
        fields=(("ID", "int"), ("objectID", "str"), ("startTime", "time"), *fields),
        required=("ID", "startTime"),
        time_key="startTime",
        id_key="ID",
        derived=derived,
        optional=optional,
    )


ROUTELOG = _activity(
    "routelog",
    (
        ("previousStopTime", "time"),
        ("stopTime", "time"),
        ("stopEnd", "time"),
        ("routeLengthKM", "float"),
        ("drivingTimeSeconds", "int"),
        ("pauseTimeSeconds", "int"),
        ("averageSpeed", "float"),
        ("maxSpeed", "float"),
        ("AddressAtStartingPoint", "str"),
        ("AddressAtEndPoint", "str"),
        ("status", "str"),
    ),
)
STOPS = _activity(
    "stops",
    (
        ("stopTime", "time"),
        ("stopEnd", "time"),
        ("runningTime", "str"),
        ("input", "int"),
        ("status", "int"),
        ("distance", "float"),
        ("fuel", "float"),
        ("required", "str"),
    ),
    derived=(pa.field("running_time_s", pa.int64()), _FUEL_CODE),
    optional=("status",),
)
REFUELS = _activity(
    "refuels",
    (
        ("stopTime", "time"),
        ("maxTime", "time"),
        ("fuelBeforeL", "float"),
        ("fuelAfterL", "float"),
        ("routeLengthKM", "float"),
        ("fuelAddress", "str"),
        ("required", "str"),
    ),
    derived=(_FUEL_CODE,),
)
FUEL_LEVELS = TableSpec(
    "fuel_levels",
    fields=(
        ("objectID", "str"),  # not in the payload: the vehicle the readings were asked for
        ("GMTime", "time"),
        ("fuel", "float"),
        ("lat", "float"),
        ("lon", "float"),
        ("input", "int"),
        ("t1", "float"),
        ("t2", "float"),
        ("t3", "float"),
        ("t4", "float"),
        ("location", "str"),
        ("required", "str"),
    ),
    required=("GMTime",),
    time_key="GMTime",
    id_key=None,
    derived=(_FUEL_CODE,),
    optional=("t1", "t2", "t3", "t4"),  # spare sensor inputs
)
_VEHICLE_FIELDS: tuple[tuple[str, str], ...] = (
    ("id", "str"),
    ("alias", "str"),
    ("categoryID", "int"),
    ("categoryName", "str"),
    ("tank_vol", "float"),
    ("isPercent", "int"),
    ("is_fuel_as_pressure", "int"),
    ("odometer", "float"),
    ("odometer_day", "time"),
    ("gps_refresh_interval", "int"),
    ("isOwn", "int"),
    ("isDDD", "int"),
    ("account_type", "int"),
    ("Manufacture", "int"),
    ("extraDevices", "int"),
    ("naviseade", "str"),
    ("calcByM", "int"),
    ("T1min", "float"),
    ("T1max", "float"),
    ("T2min", "float"),
    ("T2max", "float"),
    ("barrel_type", "str"),
    ("next_maintenance_km", "str"),
    ("mode", "str"),
    ("fuel_card_nr", "str"),
    ("btime", "int"),
)
VEHICLES = TableSpec(
    "vehicles",
    fields=_VEHICLE_FIELDS,
    required=("id",),
    time_key=None,
    id_key="id",
    # A vehicle row is configuration, and the vehicle list decides whose activity is pulled:
    # quarantining a vehicle for an unreadable setting would stop its trips being pulled at all.
    optional=tuple(key for key, _ in _VEHICLE_FIELDS if key != "id"),
)
SPECS = {s.name: s for s in (ROUTELOG, STOPS, REFUELS, FUEL_LEVELS, VEHICLES)}

QUARANTINE_FIELDS = (*QUARANTINE_SCHEMA, pa.field("vehicle_id", pa.string()))
"""The lake's quarantine columns, then the vehicle the rows were asked for."""
