"""The dbt project as Dagster assets: sources map to `raw/<source>/<table>`, one lineage graph."""

import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetKey, AssetSpec
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_models"
dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def dbt_executable() -> str:
    """The dbt installed beside this Python, so an un-activated venv still finds it."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable())


def ensure_manifest(project: DbtProject = dbt_project) -> Path:
    """Parse the project when its manifest is missing or older than any project file.

    `dagster dev` does this through `prepare_if_dev`; tests, the demo and CI come here.
    """
    manifest = project.manifest_path
    sources = [
        p
        for p in DBT_PROJECT_DIR.rglob("*")
        if p.suffix in {".sql", ".yml", ".csv"} and "target" not in p.parts
    ]
    newest = max((p.stat().st_mtime for p in sources), default=0.0)
    if not manifest.exists() or manifest.stat().st_mtime < newest:
        dbt_resource().cli(["parse", "--quiet"], target_path=project.target_path).wait()
    return manifest


class FleetDbtTranslator(DagsterDbtTranslator):
    """dbt sources become the raw assets that land them; models are grouped by layer."""

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] == "source":
            return spec.replace_attributes(
                key=AssetKey(["raw", props["source_name"], props["name"]])
            )
        layer = next(
            (part for part in props.get("fqn", []) if part in {"staging", "intermediate", "marts"}),
            "seeds" if props["resource_type"] == "seed" else "dbt",
        )
        return spec.replace_attributes(group_name=f"dbt_{layer}")


def dbt_env(lake_dir: Path, duckdb_path: Path) -> dict[str, str]:
    """dbt runs in its project dir: hand it absolute paths so relative settings still work."""
    duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    return {"FLEET_LAKE_DIR": str(lake_dir), "FLEET_DUCKDB_PATH": str(duckdb_path)}


def build_dbt_assets(lake_dir: Path, duckdb_path: Path) -> Any:
    ensure_manifest()

    @dbt_assets(
        manifest=dbt_project.manifest_path,
        project=dbt_project,
        dagster_dbt_translator=FleetDbtTranslator(),
        name="fleet_dbt_models",
    )
    def fleet_dbt_models(context: AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
        os.environ.update(dbt_env(lake_dir, duckdb_path))
        yield from dbt.cli(["build"], context=context).stream()

    return fleet_dbt_models
