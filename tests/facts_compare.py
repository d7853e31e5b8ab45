"""Compare two facts catalogs model by model (EXCEPT ALL both ways): the proof that a build by
days ends where a full build of the same lake does."""

from __future__ import annotations

from pathlib import Path

import duckdb

from pipelines.facts import FactsCatalog, load_extensions


def _attach(con: duckdb.DuckDBPyConnection, catalog_path: Path, alias: str) -> None:
    catalog = FactsCatalog.of(
        catalog=f"sqlite:{catalog_path}", data_path=str(catalog_path.parent / "facts")
    )
    load_extensions(con, catalog.extensions())
    attach = catalog.attach_sql(read_only=True).replace(" AS facts ", f" AS {alias} ")
    con.execute(attach.replace("ATTACH IF NOT EXISTS", "ATTACH"))


def differences(left: Path, right: Path, models: list[str] | None = None) -> dict[str, tuple]:
    """Per model of `left` (or of `models`): (rows only in left, rows only in right), for the
    models whose rows differ (compared by column name, as multisets)."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        _attach(con, left, "a")
        _attach(con, right, "b")
        names = models or [
            row[0]
            for row in con.execute(
                "select table_name from information_schema.tables "
                "where table_catalog = 'a' and table_schema = 'main' order by 1"
            ).fetchall()
        ]
        found = {}
        for name in names:
            columns = [
                r[0]
                for r in con.execute(
                    "select column_name from information_schema.columns where table_catalog"
                    " = 'a' and table_schema = 'main' and table_name = ? order by 1",
                    [name],
                ).fetchall()
            ]
            cols = ", ".join(f'"{c}"' for c in columns)
            only_left = con.execute(
                f"select count(*) from (select {cols} from a.main.{name} "
                f"except all select {cols} from b.main.{name})"
            ).fetchone()[0]
            only_right = con.execute(
                f"select count(*) from (select {cols} from b.main.{name} "
                f"except all select {cols} from a.main.{name})"
            ).fetchone()[0]
            if only_left or only_right:
                found[name] = (only_left, only_right)
        return found
    finally:
        con.close()
