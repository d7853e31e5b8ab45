"""Facts builds keep their dbt artefacts in one folder: disk use stays flat over many builds,
and dbt parses the project once, not on every build."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from pipelines.definitions import build_defs
from tests.conftest import FleetEnv

BUILDS = 3
FULL_PARSE = "Unable to do partial parsing"


def _size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def test_builds_share_one_target_and_parse_the_project_once(
    fleet_env: FleetEnv,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    target = tmp_path / "dbt-target"
    monkeypatch.setenv("FLEET_DBT_TARGET_DIR", str(target))
    defs = build_defs()
    seed = AssetKey(["vehicle_map"])
    sizes, parses, started = [], [], []
    environment = dict(os.environ)
    with DagsterInstance.ephemeral() as instance:
        for _ in range(BUILDS):
            result = materialize(
                list(defs.assets), resources=defs.resources, selection=[seed], instance=instance
            )
            assert result.success
            sizes.append(_size(target))
            out = capfd.readouterr().out
            started.append(out.count("Running with dbt="))
            parses.append(out.count(FULL_PARSE))
    assert started == [1] * BUILDS, "dbt's own output was not seen"
    # Everything dbt wrote is in the one folder, and it does not grow from build to build.
    assert sizes[0][0] > 0
    assert len({count for count, _ in sizes}) == 1, sizes
    assert max(size for _, size in sizes) <= 1.1 * sizes[0][1], sizes
    # The first build may parse the whole project (a new profile); the others reuse its parse.
    assert parses[1:] == [0] * (BUILDS - 1), parses
    # dbt got its settings in its own process; the runs after these see the environment as it was.
    assert dict(os.environ) == environment
