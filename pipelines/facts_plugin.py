"""dbt-duckdb plugin that attaches the facts' DuckLake catalog on dbt's connection.

dbt-duckdb runs plugins before the profile's `attach:` list, so the catalog is attached here,
with the options its kind needs (SQLite: WAL and a busy timeout; Postgres: none) and the
extensions loaded the way `pipelines.facts` loads them for every other reader. The profile's
own `attach:` entry for the same alias is then a no-op that tells dbt-duckdb the database is
DuckLake. An object-store lake (FLEET_LAKE_DIR=s3://...) gets httpfs and its S3 secret here too.
"""

from __future__ import annotations

import os
from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from pipelines.facts import FactsCatalog, attach, open_object_store


class Plugin(BasePlugin):
    def initialize(self, config: dict[str, Any]) -> None:
        self.catalog = FactsCatalog.from_settings()
        # The lake dbt's sources read (the pipeline hands dbt FLEET_LAKE_DIR).
        self.lake = os.environ.get("FLEET_LAKE_DIR", "")

    def configure_connection(self, conn: Any) -> None:
        # An object-store lake is read through httpfs with the AWS_* credentials as a secret
        # made here, in Python: never in a source's SQL, which dbt logs.
        open_object_store(conn, self.lake)
        attach(conn, self.catalog, read_only=False)  # and USE facts.main
