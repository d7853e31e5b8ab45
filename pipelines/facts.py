"""The facts' DuckLake catalog: where it is, the extensions it needs, and the one way to open it.

The marts live in a DuckLake catalog (a SQLite file on one machine, a Postgres database beyond
it) whose rows sit in Parquet files under a data path (a folder or an object-store URL). DuckLake
gives every reader a snapshot, so analysts' connections never block a build and a build never
blocks them. A dbt build commits model by model, though; so that a reader never sees a build
half done, every complete build ends with a marker commit (`BUILD_MESSAGE`, written by the dbt
project's on-run-end hook) and `connect(read_only=True)` opens the catalog as of the newest
marker. A build that failed or was killed leaves no marker: readers keep the previous build.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from pipelines.locks import exclusive

if TYPE_CHECKING:
    from pipelines.settings import FleetSettings

ALIAS = "facts"
"""The name the catalog is attached under, in dbt's profile and in `connect()`."""

BUILD_MESSAGE = "fleet facts build"
"""Commit message of the snapshot that ends a complete build (macros/facts_build.sql)."""

BUILD_LOCK = ".fleet_facts_build.lock"
SQLITE_BUSY_TIMEOUT_MS = 60_000

_REMOTE = re.compile(r"^(s3|s3a|gcs|gs|r2|https?|az|abfss)://", re.IGNORECASE)


class FactsError(RuntimeError):
    """The facts cannot be opened; the message is one line: which catalog, why, what to do."""


@dataclass(frozen=True)
class FactsCatalog:
    """FLEET_FACTS_CATALOG and FLEET_FACTS_DATA_PATH, made absolute: dbt runs in its project
    folder and a Dagster run in another working directory, and all must name the same files."""

    catalog: str
    data_path: str

    @classmethod
    def from_settings(cls, settings: FleetSettings | None = None) -> FactsCatalog:
        if settings is None:
            from pipelines.settings import get_settings

            settings = get_settings()
        return cls.of(settings.fleet_facts_catalog, settings.fleet_facts_data_path)

    @classmethod
    def of(cls, catalog: str, data_path: str) -> FactsCatalog:
        catalog = catalog.strip()
        if catalog.startswith("ducklake:"):
            catalog = catalog[len("ducklake:") :]
        kind, sep, rest = catalog.partition(":")
        if not sep or kind not in {"sqlite", "postgres", "duckdb"}:
            # A bare path is a SQLite catalog file, DuckLake's most common embedded form.
            kind, rest = "sqlite", catalog
        if kind in {"sqlite", "duckdb"}:
            rest = str(Path(rest).expanduser().resolve())
        data_path = data_path.strip()
        if not _REMOTE.match(data_path):
            data_path = str(Path(data_path).expanduser().resolve())
        return cls(f"{kind}:{rest}", data_path.rstrip("/") + "/")

    @property
    def kind(self) -> str:
        """`sqlite`, `postgres` or `duckdb`: the database that holds the catalog."""
        return self.catalog.partition(":")[0]

    @property
    def path(self) -> Path | None:
        """The catalog file, for a file catalog."""
        return Path(self.catalog.partition(":")[2]) if self.kind != "postgres" else None

    @property
    def remote_data(self) -> bool:
        return bool(_REMOTE.match(self.data_path))

    def describe(self) -> str:
        """The catalog as a user would name it, without a Postgres password."""
        return redact(self.catalog)

    def extensions(self) -> list[str]:
        """What DuckDB needs loaded to attach this catalog and read its data."""
        needed = ["ducklake", {"sqlite": "sqlite", "postgres": "postgres"}.get(self.kind, "")]
        if self.remote_data:
            needed.append("httpfs")
        return [name for name in needed if name]

    def attach_sql(self, read_only: bool = False, snapshot: int | None = None) -> str:
        options = [f"DATA_PATH '{_quote(self.data_path)}'"]
        if self.kind == "sqlite":
            # WAL lets readers read while the one writer commits; a writer waits its turn.
            options += ["META_JOURNAL_MODE 'WAL'", f"META_BUSY_TIMEOUT {SQLITE_BUSY_TIMEOUT_MS}"]
        if read_only:
            options.append("READ_ONLY")
        if snapshot is not None:
            options.append(f"SNAPSHOT_VERSION {int(snapshot)}")
        return (
            f"ATTACH IF NOT EXISTS 'ducklake:{_quote(self.catalog)}' AS {ALIAS} "
            f"({', '.join(options)})"
        )

    def one_line_attach(self) -> str:
        """The statement a user pastes into the duckdb CLI or any DuckDB-based tool."""
        return self.attach_sql(read_only=True) + f"; USE {ALIAS};"

    @contextlib.contextmanager
    def build_lock(self, wait_s: float) -> Iterator[float]:
        """One writer at a time on a file catalog: SQLite takes one writer, and two builds
        interleaving their models would each mark the other's half as complete. The kernel
        drops the lock of a killed build. A Postgres catalog takes concurrent writers; builds
        there are kept apart by the `fleet_facts` pool of the shared Dagster instance."""
        if self.path is None:
            yield 0.0
            return
        what = f"facts build on {self.path.name}"
        with exclusive(self.path.parent, BUILD_LOCK, what, wait_s) as waited:
            yield waited


def redact(text: str) -> str:
    """`text` with any libpq `password=...` hidden: DuckDB's errors quote the whole catalog."""
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+?)(?=[\s\"]|$)", r"\1***", text)


def _quote(text: str) -> str:
    return text.replace("'", "''")


def load_extensions(con: duckdb.DuckDBPyConnection, names: list[str]) -> None:
    """Load each extension: already installed, else from DuckDB's repository, else from the
    registry's packaged build (`duckdb-extension-<name>`) of exactly this DuckDB version.
    Raises FactsError with one line when none of the three works."""
    if not os.environ.get("HOME"):
        # cron, systemd, `env -i`: DuckDB keeps installed extensions under a home folder.
        con.execute(f"SET home_directory = '{_quote(tempfile.gettempdir())}'")
    for name in names:
        if _run(con, f"LOAD {name}") is None:
            continue
        errors = []
        failed = _run(con, f"INSTALL {name}", f"LOAD {name}")
        if failed is None:
            continue
        errors.append(f"DuckDB's repository: {failed}")
        packaged = _packaged_extension(name)
        if packaged is None:
            errors.append(f"no package duckdb-extension-{name}=={duckdb.__version__} is installed")
        else:
            failed = _run(con, f"INSTALL '{_quote(str(packaged))}'", f"LOAD {name}")
            if failed is None:
                continue
            errors.append(f"{packaged}: {failed}")
        raise FactsError(
            f"DuckDB extension {name!r} could not be loaded ({'; '.join(errors)}); install "
            f"`duckdb-extension-{name}=={duckdb.__version__}` or allow downloads from "
            "extensions.duckdb.org"
        )


def _run(con: duckdb.DuckDBPyConnection, *statements: str) -> str | None:
    """Run the statements; None when all succeeded, else the first line of the error."""
    try:
        for statement in statements:
            con.execute(statement)
    except duckdb.Error as exc:
        return _first_line(exc)
    return None


def _packaged_extension(name: str) -> Path | None:
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        return None
    # The sqlite extension's file is sqlite_scanner; the package is named after the extension.
    folder = Path(next(iter(spec.submodule_search_locations))) / "extensions"
    folder = folder / f"v{duckdb.__version__}"
    found = sorted(folder.glob("*.duckdb_extension"))
    return found[0] if found else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def attach(
    con: duckdb.DuckDBPyConnection,
    catalog: FactsCatalog,
    *,
    read_only: bool,
    snapshot: int | None = None,
) -> None:
    """Attach the catalog as `facts` and make its `main` schema the default."""
    load_extensions(con, catalog.extensions())
    if catalog.remote_data:
        open_object_store(con, catalog.data_path)
    if read_only and catalog.path is not None and not catalog.path.exists():
        raise FactsError(
            f"facts catalog {catalog.describe()} does not exist yet: build the facts first "
            "(materialize the dbt assets, or `make demo`)"
        )
    try:
        con.execute(catalog.attach_sql(read_only=read_only, snapshot=snapshot))
    except duckdb.Error as exc:
        raise FactsError(
            f"facts catalog {catalog.describe()} could not be opened: " + redact(_first_line(exc))
        ) from None
    con.execute(f"USE {ALIAS}.main")


def open_object_store(con: duckdb.DuckDBPyConnection, *locations: str) -> None:
    """Let `con` read and write object-store URLs among `locations` (the lake, the facts' data
    path): httpfs loaded as every other extension is, and an S3 secret from the AWS_*
    variables. The secret is executed here, from Python, so it never appears in SQL that dbt
    or a log shows, and it lives only in this connection's memory (a temporary secret)."""
    if not any(_REMOTE.match(location) for location in locations):
        return
    load_extensions(con, ["httpfs"])
    con.execute(s3_secret_sql())


def s3_secret_sql() -> str:
    """A DuckDB secret from the standard AWS_* variables (AWS_ENDPOINT_URL for an
    S3-compatible server), so object-store data needs no settings of its own."""
    from urllib.parse import urlparse

    options = ["TYPE s3"]
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    for option, value in (
        ("KEY_ID", os.environ.get("AWS_ACCESS_KEY_ID")),
        ("SECRET", os.environ.get("AWS_SECRET_ACCESS_KEY")),
        ("SESSION_TOKEN", os.environ.get("AWS_SESSION_TOKEN")),
        ("REGION", region),
    ):
        if value:
            options.append(f"{option} '{_quote(value)}'")
    # As botocore (the lake writer) reads them: the S3-specific endpoint wins.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options += [
            f"ENDPOINT '{_quote(parsed.netloc)}'",
            "URL_STYLE 'path'",
            f"USE_SSL {'true' if parsed.scheme == 'https' else 'false'}",
        ]
    return f"CREATE OR REPLACE SECRET fleet_facts_s3 ({', '.join(options)})"


def last_build(con: duckdb.DuckDBPyConnection) -> int | None:
    """The snapshot id of the newest complete build in the attached catalog."""
    row = con.execute(
        f"SELECT max(snapshot_id) FROM {ALIAS}.snapshots() WHERE commit_message = ?",
        [BUILD_MESSAGE],
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def mark_build(con: duckdb.DuckDBPyConnection, by: str, models: int = 0) -> None:
    """Write a marker commit: readers open the catalog as of the newest one. A dbt build writes
    its own (dbt_models/macros/facts_build.sql); maintenance writes one after compacting."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {ALIAS}.fleet_build")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {ALIAS}.fleet_build.builds "
        "(invocation_id VARCHAR, finished_at TIMESTAMPTZ, models INTEGER)"
    )
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            f"CALL {ALIAS}.set_commit_message('fleet-pipelines', ?, extra_info => ?)",
            [BUILD_MESSAGE, json.dumps({"by": by, "models": models})],
        )
        con.execute(f"INSERT INTO {ALIAS}.fleet_build.builds VALUES (?, now(), ?)", [by, models])
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise


def connect(
    read_only: bool = True,
    *,
    catalog: FactsCatalog | None = None,
    latest: bool = False,
    threads: int | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose default database and schema hold the marts.

    Read-only connections see the facts as of the newest complete build when they connect, and
    keep seeing that build (open a new connection for a later one; pass `latest=True` for the
    newest commit, e.g. to watch a build). Raises FactsError, one line, when the
    catalog cannot be opened.
    """
    catalog = catalog or FactsCatalog.from_settings()
    config = {"threads": threads} if threads else {}
    con = duckdb.connect(config=config)
    try:
        con.execute("SET TimeZone = 'UTC'")
        attach(con, catalog, read_only=read_only)
        if read_only and not latest:
            build = last_build(con)
            # Pinned even when the marker is the newest commit: an attach without a snapshot
            # reads the newest commit at every query, so a connection held open through the
            # next build would see its models land one by one.
            if build is None:
                # Whatever is there is a first build in progress, or one that failed.
                raise FactsError(
                    f"facts catalog {catalog.describe()} holds no complete build yet: build the "
                    "facts (materialize the dbt assets), or read the newest commit with --latest"
                )
            con.execute("USE memory")
            con.execute(f"DETACH {ALIAS}")
            attach(con, catalog, read_only=True, snapshot=build)
    except BaseException:
        con.close()
        raise
    return con


def dbt_env(catalog: FactsCatalog) -> dict[str, str]:
    """What the dbt profile reads to attach the catalog (absolute, so dbt's working folder does
    not matter). One dbt thread by default: a SQLite catalog takes one writer, and on a
    Postgres catalog two threads' DuckLake commits failed one build in two ("Failed to get
    path for schema ... not found in metadata catalog", DuckLake 1.5.5)."""
    if catalog.path is not None:
        catalog.path.parent.mkdir(parents=True, exist_ok=True)
    if not catalog.remote_data:
        Path(catalog.data_path).mkdir(parents=True, exist_ok=True)
    threads = os.environ.get("FLEET_FACTS_DBT_THREADS") or "1"
    return {
        "FLEET_FACTS_CATALOG": catalog.catalog,
        "FLEET_FACTS_DATA_PATH": catalog.data_path,
        "FLEET_FACTS_DBT_THREADS": threads,
    }
