"""Disk use of the facts builds' dbt target over many builds, and how many parsed the whole
project: the target must stay within a fixed size and only the first build may parse in full.

    .venv/bin/python bench/dbt_target_growth.py [--builds 100]

Each build is a real Dagster run of the dbt asset definition (the `vehicle_map` seed, so the
figures are dbt's own start-up and artefacts, not the models' SQL). Prints the target's files
and bytes after the first build and every tenth, and the ratio last/first.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

FULL_PARSE = "Unable to do partial parsing"


def size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--builds", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dbt-target-growth-"))
    os.environ.update(
        {
            "FLEET_LAKE_DIR": str(work / "lake"),
            "FLEET_FACTS_CATALOG": f"sqlite:{work / 'fleet_catalog.sqlite'}",
            "FLEET_FACTS_DATA_PATH": str(work / "facts"),
            "FLEET_DBT_TARGET_DIR": str(work / "target"),
        }
    )
    from dagster import AssetKey, DagsterInstance, materialize

    from pipelines.definitions import build_defs

    defs = build_defs()
    target = work / "target"
    log = work / "dbt-output.log"
    first = None
    full_parses = 0
    with DagsterInstance.ephemeral() as instance:
        for n in range(1, args.builds + 1):
            # dbt's own output (where it says it parses in full) goes to a file, not the screen.
            saved = os.dup(1)
            with log.open("w") as fh:
                os.dup2(fh.fileno(), 1)
                try:
                    result = materialize(
                        list(defs.assets),
                        resources=defs.resources,
                        selection=[AssetKey(["vehicle_map"])],
                        instance=instance,
                    )
                finally:
                    sys.stdout.flush()
                    os.dup2(saved, 1)
                    os.close(saved)
            assert result.success
            full_parses += FULL_PARSE in log.read_text()
            files, nbytes = size(target)
            first = first or (files, nbytes)
            if n == 1 or n % 10 == 0:
                print(f"build {n:4d}: {files} files, {nbytes / 1e6:.2f} MB in the target")
    files, nbytes = size(target)
    print(
        f"{args.builds} builds: target {first[1] / 1e6:.2f} MB after the first, "
        f"{nbytes / 1e6:.2f} MB after the last (ratio {nbytes / first[1]:.2f}); "
        f"builds that parsed the whole project: {full_parses}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
