"""Compare two facts catalogs model by model (EXCEPT ALL both ways): the proof that a build by
days ends where a full build of the same lake does."""

from __future__ import annotations

from pathlib import Path

import duckdb

from pipelines.facts import FactsCatalog, load_extensions, open_object_store


def _attach(con: duckdb.DuckDBPyConnection, where: Path | FactsCatalog, alias: str) -> None:
    """Attach a catalog: a SQLite catalog file (its data beside it) or any `FactsCatalog`."""
    catalog = (
        where
        if isinstance(where, FactsCatalog)
        else FactsCatalog.of(catalog=f"sqlite:{where}", data_path=str(where.parent / "facts"))
    )
    load_extensions(con, catalog.extensions())
    open_object_store(con, catalog.data_path)  # data files on S3: httpfs and the AWS_* secret
    attach = catalog.attach_sql(read_only=True).replace(" AS facts ", f" AS {alias} ")
    con.execute(attach.replace("ATTACH IF NOT EXISTS", "ATTACH"))


def differences(
    left: Path | FactsCatalog,
    right: Path | FactsCatalog,
    models: list[str] | None = None,
    ignore: frozenset[str] = frozenset(),
) -> dict[str, tuple]:
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
                if r[0] not in ignore
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


def row_counts(where: Path | FactsCatalog, models: list[str]) -> dict[str, int]:
    """Rows of each model of one catalog."""
    con = duckdb.connect()
    try:
        _attach(con, where, "a")
        return {m: con.execute(f"select count(*) from a.main.{m}").fetchone()[0] for m in models}
    finally:
        con.close()
