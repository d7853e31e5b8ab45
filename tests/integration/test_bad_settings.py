"""One bad setting fails only what uses it, with one line naming the variable, its value and
what is expected; the code location, the other sources and `fleet sql` keep working."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, materialize

from pipelines.cli import failure_lines
from pipelines.definitions import build_defs
from tests.conftest import facts_env

AVL = AssetKey(["raw", "avl", "trips"])
KT1 = [AssetKey(["raw", "kt1", t]) for t in ("telemetry", "trips", "events", "changes")]
METROTEC_VEHICLES = AssetKey(["raw", "metrotec", "vehicles"])
FLEET = str(Path(sys.executable).parent / "fleet")

# (variable, bad value, the assets that must fail, the words the one line must carry)
CASES = [
    ("AVL_RATE_LIMIT", "abc", [AVL], "AVL_RATE_LIMIT='abc' is not N/SECONDS"),
    ("AVL_TIMEZONE", "Mars/Olympus", [AVL], "AVL_TIMEZONE='Mars/Olympus' is not an IANA time zone"),
    ("AVL_IDLE_MIN", "-3", [AVL], "AVL_IDLE_MIN='-3' is not a whole number of minutes"),
    ("FLEET_START_DATE", "yesterday", [AVL], "FLEET_START_DATE='yesterday' is not a date"),
    ("KT1_DRAIN_SECONDS", "abc", KT1, "KT1_DRAIN_SECONDS='abc' is not a number of seconds"),
    (
        "METROTEC_RATE_LIMIT",
        "zzz",
        [METROTEC_VEHICLES],
        "METROTEC_RATE_LIMIT='zzz' is not N/SECONDS",
    ),
    ("METROTEC_WINDOW_DAYS", "90", [METROTEC_VEHICLES], "METROTEC_WINDOW_DAYS='90' is not"),
]


def run(selection: list[AssetKey]):
    defs = build_defs()
    return materialize(
        list(defs.assets), resources=defs.resources, selection=selection, raise_on_error=False
    )


@pytest.mark.parametrize(("variable", "value", "fails", "line"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_setting_fails_only_its_source_with_one_line(
    fleet_env, world, monkeypatch: pytest.MonkeyPatch, variable, value, fails, line
) -> None:
    from pipelines.simulator.serve import start_all
    from tests.conftest import SIM_NOW

    with start_all(world, clock=lambda: SIM_NOW, kt1_long_poll_s=0.5) as sims:
        for key, val in sims.env().items():
            monkeypatch.setenv(key, val)
        monkeypatch.setenv("KT1_DRAIN_SECONDS", "3")
        monkeypatch.setenv(variable, value)

        failed = run(fails)  # the code location loaded: build_defs did not raise
        assert not failed.success
        lines = failure_lines(failed)
        assert len(lines) == 1 or len(set(lines)) == 1, lines
        assert line in lines[0] and "\n" not in lines[0], lines[0]
        assert "(needed by raw/" in lines[0]

        # Another source, which does not use the variable, still runs.
        # (FLEET_START_DATE draws the daily partitions of AVL and Metrotec: both fail.)
        other = KT1 if fails != KT1 else [METROTEC_VEHICLES]
        assert run(other).success


def test_fleet_sql_works_whatever_a_source_setting_says(fleet_env, tmp_path: Path) -> None:
    from pipelines.facts import ALIAS, BUILD_MESSAGE, FactsCatalog, connect

    catalog = FactsCatalog.of(f"sqlite:{fleet_env.catalog_path}", str(fleet_env.facts_data))
    with connect(read_only=False, catalog=catalog) as con:
        # One commit that is its own complete build: readers open the newest build marker.
        con.execute("begin transaction")
        con.execute("create table fleet_daily as select 1 as trips")
        con.execute(f"call {ALIAS}.set_commit_message('tests', ?)", [BUILD_MESSAGE])
        con.execute("commit")
    env = {
        "PATH": "/usr/bin:/bin",
        # DuckDB keeps its extensions (DuckLake's among them) under the home directory.
        "HOME": os.environ["HOME"],
        **facts_env(fleet_env.catalog_path),
        "AVL_RATE_LIMIT": "abc",
        "FLEET_START_DATE": "yesterday",
        "KT1_DRAIN_SECONDS": "abc",
        "AVL_TIMEZONE": "Mars/Olympus",
    }
    out = subprocess.run(
        [FLEET, "sql", "select sum(trips) as n from fleet_daily"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def test_the_code_location_loads_with_every_bad_setting_at_once(fleet_env, tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "FLEET_LAKE_DIR": str(fleet_env.lake_dir),
        **{variable: value for variable, value, *_ in CASES},
    }
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-m",
            "pipelines.definitions",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    # Loading says what is wrong with the one setting it must fall back on, in one line.
    assert "FLEET_START_DATE='yesterday' is not a date" in out.stderr
