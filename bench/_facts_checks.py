"""The facts bench's checks: the changed trip reaches both builds, both builds agree on
fct_trips per day, and two DuckLake catalogs hold the same rows (EXCEPT ALL both ways)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
from _facts_world import Relanded

from pipelines.facts import FactsCatalog, load_extensions


def attach_catalog(con: duckdb.DuckDBPyConnection, catalog: FactsCatalog, alias: str) -> None:
    load_extensions(con, catalog.extensions())
    sql = catalog.attach_sql(read_only=True).replace(" AS facts ", f" AS {alias} ")
    con.execute(sql.replace("ATTACH IF NOT EXISTS", "ATTACH"))


def trips_per_day(con: duckdb.DuckDBPyConnection, db: str) -> dict[date, int]:
    rows = con.execute(
        f"select cast(started_at at time zone 'UTC' as date), count(*) from {db}.main.fct_trips "
        "group by 1"
    ).fetchall()
    return dict(rows)


def changed_kms(con: duckdb.DuckDBPyConnection, db: str, relanded: Relanded) -> float | None:
    row = con.execute(
        f"select distance_km from {db}.main.stg_avl__trips "
        "where device_name = ? and started_at = ?",
        [relanded.device_name, relanded.trip_start],
    ).fetchone()
    return None if row is None else row[0]


def check_against_old(catalog: FactsCatalog, old_db: Path | None, relanded: Relanded) -> list[str]:
    """The changed trip in each build; fct_trips' rows per day, new vs old."""
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    attach_catalog(con, catalog, "new")
    lines = []
    kms = {"new": changed_kms(con, "new", relanded)}
    if old_db is not None:
        con.execute(f"attach '{old_db}' as old (read_only)")
        kms["old"] = changed_kms(con, "old", relanded)
    seen = ", ".join(
        f"{db} {'PASS' if v is not None and abs(v - relanded.kms) < 1e-9 else 'FAIL'} ({v})"
        for db, v in kms.items()
    )
    lines.append(f"changed trip's distance_km = {relanded.kms} in stg_avl__trips: {seen}")
    if old_db is not None:
        new, old = trips_per_day(con, "new"), trips_per_day(con, "old")
        differing = sorted(d for d in new.keys() | old.keys() if new.get(d) != old.get(d))
        verdict = "PASS" if not differing else f"FAIL on {len(differing)} day(s): {differing[:5]}"
        lines.append(
            f"fct_trips rows per day, new vs old ({len(new)} days, {sum(new.values()):,} rows "
            f"new, {sum(old.values()):,} old): {verdict}"
        )
    con.close()
    return lines


def compare_catalogs(left: FactsCatalog, right: FactsCatalog, models: list[str]) -> str:
    """Each model of `left` vs `right`, EXCEPT ALL both ways (by column name)."""
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    attach_catalog(con, left, "a")
    attach_catalog(con, right, "b")
    differing = []
    for name in models:
        columns = con.execute(
            "select column_name from information_schema.columns where table_catalog = 'a' "
            "and table_schema = 'main' and table_name = ? order by 1",
            [name],
        ).fetchall()
        cols = ", ".join(f'"{c}"' for (c,) in columns)
        a, b = f"a.main.{name}", f"b.main.{name}"
        extra, missing = (
            con.execute(
                f"select count(*) from (select {cols} from {x} except all select {cols} from {y})"
            ).fetchone()[0]
            for x, y in ((a, b), (b, a))
        )
        if extra or missing:
            differing.append(f"{name} (+{extra}/-{missing})")
    con.close()
    return "PASS (identical)" if not differing else "FAIL: " + ", ".join(differing)
