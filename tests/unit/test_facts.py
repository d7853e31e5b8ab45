"""Opening the facts: settings made absolute, and every failure to open is one line naming the
catalog and the fix, never a traceback or a password."""

from __future__ import annotations

import socket
from pathlib import Path

import duckdb
import pytest

from pipelines.facts import FactsCatalog, FactsError, connect, load_extensions


def test_settings_become_absolute_and_keep_duckLakes_own_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    default = FactsCatalog.of("sqlite:./data/fleet_catalog.sqlite", "./data/facts/")
    assert default.catalog == f"sqlite:{tmp_path}/data/fleet_catalog.sqlite"
    assert default.data_path == f"{tmp_path}/data/facts/"
    assert FactsCatalog.of("ducklake:sqlite:x.sqlite", "d").catalog == f"sqlite:{tmp_path}/x.sqlite"
    assert FactsCatalog.of("x.sqlite", "d").kind == "sqlite"
    remote = FactsCatalog.of("postgres:dbname=f host=db password=s3cret", "s3://bucket/facts")
    assert remote.kind == "postgres" and remote.path is None
    assert remote.data_path == "s3://bucket/facts/" and remote.remote_data
    assert remote.extensions() == ["ducklake", "postgres", "httpfs"]
    assert "s3cret" not in remote.describe()


def test_a_catalog_not_built_yet_is_one_line_saying_how_to_build_it(tmp_path: Path) -> None:
    catalog = FactsCatalog.of(f"sqlite:{tmp_path / 'none.sqlite'}", str(tmp_path / "facts"))
    with pytest.raises(FactsError) as error:
        connect(catalog=catalog)
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert str(tmp_path / "none.sqlite") in message and "materialize the dbt assets" in message
    assert not (tmp_path / "none.sqlite").exists()  # a reader never creates a catalog


def test_a_catalog_without_a_complete_build_is_one_line_and_latest_still_reads_it(
    tmp_path: Path,
) -> None:
    """A first build in progress (or one that failed) is never shown as the facts."""
    catalog = FactsCatalog.of(f"sqlite:{tmp_path / 'cat.sqlite'}", str(tmp_path / "facts"))
    con = connect(read_only=False, catalog=catalog)
    con.execute("CREATE TABLE fct_trips AS SELECT 1 AS trip_id")  # half a first build
    con.close()
    with pytest.raises(FactsError) as error:
        connect(catalog=catalog)
    assert len(str(error.value).splitlines()) == 1
    assert "holds no complete build yet" in str(error.value)
    with connect(catalog=catalog, latest=True) as con:
        assert con.execute("SELECT count(*) FROM fct_trips").fetchone() == (1,)


def test_an_unreachable_postgres_catalog_is_one_line_without_the_password(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    catalog = FactsCatalog.of(
        f"postgres:dbname=facts host=127.0.0.1 port={port} user=fleet password=hunter2 "
        "connect_timeout=2",
        str(tmp_path / "facts"),
    )
    with pytest.raises(FactsError) as error:
        connect(catalog=catalog)
    message = str(error.value)
    assert len(message.splitlines()) == 1 and "could not be opened" in message
    assert "hunter2" not in message and "password=***" in message


def test_a_missing_extension_is_one_line_naming_the_package_to_install() -> None:
    con = duckdb.connect()
    with pytest.raises(FactsError) as error:
        load_extensions(con, ["no_such_extension"])
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert f"duckdb-extension-no_such_extension=={duckdb.__version__}" in message


def test_the_project_s_extensions_load_without_internet() -> None:
    """CI reaches only the package registry: the packaged builds must load."""
    con = duckdb.connect()
    load_extensions(con, ["ducklake", "sqlite", "postgres", "httpfs"])
    loaded = {
        name
        for (name,) in con.execute(
            "SELECT extension_name FROM duckdb_extensions() WHERE loaded"
        ).fetchall()
    }
    assert {"ducklake", "sqlite_scanner", "postgres_scanner", "httpfs"} <= loaded
