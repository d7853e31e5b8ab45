"""dbt-duckdb plugin that attaches the facts' DuckLake catalog on dbt's connection.

dbt-duckdb runs plugins before the profile's `attach:` list, so the catalog is attached here,
with the options its kind needs (SQLite: WAL and a busy timeout; Postgres: none) and the
extensions loaded the way `pipelines.facts` loads them for every other reader. The profile's
own `attach:` entry for the same alias is then a no-op that tells dbt-duckdb the database is
DuckLake.
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from pipelines.facts import FactsCatalog, attach


class Plugin(BasePlugin):
    def initialize(self, config: dict[str, Any]) -> None:
        self.catalog = FactsCatalog.from_settings()

    def configure_connection(self, conn: Any) -> None:
        attach(conn, self.catalog, read_only=False)  # and USE facts.main
