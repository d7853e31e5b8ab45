"""The dbt project as Dagster assets: sources map to `raw/<source>/<table>`, one lineage graph."""

import fcntl
import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    AssetSelection,
    AssetSpec,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    Config,
    DefaultSensorStatus,
    FreshnessPolicy,
    MetadataValue,
    Output,
)
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from pipelines.checks import LAKE_DAYS_CHECK, describe_days, missing_lake_days
from pipelines.facts import FactsCatalog
from pipelines.facts import dbt_env as facts_dbt_env
from pipelines.lake import Lake
from pipelines.sources.kt1.assets import ASSET_KEYS as KT1_KEYS

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

    `dagster dev` does this through `prepare_if_dev`; tests, the demo and CI come here. An OS
    lock makes processes starting together (test workers, the demo) parse once and never read
    a manifest another is still writing.
    """
    manifest = project.manifest_path
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with (manifest.parent / ".parse.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sources = [
            p
            for p in DBT_PROJECT_DIR.rglob("*")
            if p.suffix in {".sql", ".yml", ".csv"} and "target" not in p.parts
        ]
        newest = max((p.stat().st_mtime for p in sources), default=0.0)
        if not manifest.exists() or manifest.stat().st_mtime < newest:
            # The profile's settings are part of dbt's partial-parse key: parse with the
            # memory limit builds will use, or every build would parse the project again.
            os.environ.setdefault("FLEET_DUCKDB_MEMORY_LIMIT", default_memory_limit())
            dbt_resource().cli(["parse", "--quiet"], target_path=project.target_path).wait()
    return manifest


FACTS_FRESHNESS = FreshnessPolicy.time_window(
    fail_window=timedelta(hours=30), warn_window=timedelta(hours=26)
)
"""Marts are rebuilt at least daily (AVL 03:15, Metrotec 03:45 UTC, kt1 and AutoPi as they
land): 26 h without a build means a daily load was missed, 30 h that it is not coming."""

BUILD_MARKER = AssetKey(["fleet_daily"])
"""Part of every automated dbt build (this automation's, kt1_dbt_after_drain's; a build of
Metrotec stops alone aside): a build in progress holds the catalog's one writer slot, so the
automation starts no second one beside it."""

AUTOMATION_SENSOR = "fleet_facts_automation"


def facts_automation_condition() -> AutomationCondition:
    """Build a dbt model when a parent was updated (or its SQL changed), like `eager()`, but
    fit for this graph:

    * raw parents never count as missing: daily-partitioned raw assets have days nobody pulled
      (eager would then wait forever), and staging reads an empty lake table as no rows;
      missing dbt parents still hold a model back, so it never builds over a half-built file;
    * kt1 drains are ignored: `kt1_dbt_after_drain` builds after the drains that landed items
      (every 5-minute drain materializes, most land nothing); counting them here as well
      would build twice;
    * nothing starts while any parent, the model, or another dbt build is in progress.
    """
    return (
        (
            AutomationCondition.any_deps_updated().ignore(AssetSelection.assets(*KT1_KEYS.values()))
            | AutomationCondition.code_version_changed()
        ).since_last_handled()
        & ~AutomationCondition.any_deps_missing().ignore(AssetSelection.key_prefixes("raw"))
        & ~AutomationCondition.any_deps_in_progress()
        & ~AutomationCondition.in_progress()
        & ~AutomationCondition.asset_matches(BUILD_MARKER, AutomationCondition.in_progress())
    ).with_label("facts_after_raw_lands")


class FleetDbtTranslator(DagsterDbtTranslator):
    """dbt sources become the raw assets that land them; models are grouped by layer, built
    when their raw data lands, and the marts carry a freshness policy."""

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
        spec = spec.replace_attributes(group_name=f"dbt_{layer}")
        if layer == "marts":
            spec = spec.replace_attributes(freshness_policy=FACTS_FRESHNESS)
        return spec

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> AutomationCondition | None:
        if dbt_resource_props["resource_type"] == "source":
            return None  # sources are the raw assets; their own schedules and sensors land them
        return facts_automation_condition()


def dbt_env(lake_dir: Path, catalog: FactsCatalog) -> dict[str, str]:
    """dbt runs in its project dir: hand it absolute paths so relative settings still work,
    DuckDB a memory limit (FLEET_DUCKDB_MEMORY_LIMIT, else half the machine's RAM), and dbt's
    own log file warnings and errors only (DBT_LOG_LEVEL_FILE, else `warn`): its default debug
    file log cost ~2 s of every build, and Dagster keeps the info-level events anyway."""
    return {
        "FLEET_LAKE_DIR": str(lake_dir),
        **facts_dbt_env(catalog),
        "FLEET_DUCKDB_MEMORY_LIMIT": os.environ.get("FLEET_DUCKDB_MEMORY_LIMIT")
        or default_memory_limit(),
        "DBT_LOG_LEVEL_FILE": os.environ.get("DBT_LOG_LEVEL_FILE") or "warn",
    }


def default_memory_limit() -> str:
    """Half the RAM, in DuckDB's units: room for dbt, Dagster and the OS beside DuckDB."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{max(1, total // 2 // 2**30)}GiB"


class FactsBuildConfig(Config):
    """Run config of a facts build. By default a build rebuilds what new raw data touched (the
    AutoPi datapoint models are incremental per trip); these rebuild more, e.g. after a dbt
    var such as `autopi_idle_min_s` changed."""

    from_day: str | None = None  # YYYY-MM-DD: rebuild trips of UTC days from here ...
    to_day: str | None = None  # ... to here (default: from_day)
    full_refresh: bool = False  # rebuild every incremental model from scratch
    # dbt unit tests check the models' SQL, which only a code change can break: `make test`
    # and CI run them, and dbt advises against them in production; set this to run them too.
    unit_tests: bool = False


def dbt_build_args(config: FactsBuildConfig) -> list[str]:
    """`dbt build` arguments for a run config; raises ValueError on a malformed day."""
    args = ["build"]
    if not config.unit_tests:
        args += ["--exclude-resource-type", "unit_test"]
    if config.full_refresh:
        args.append("--full-refresh")
    if config.from_day or config.to_day:
        first = date.fromisoformat(config.from_day or config.to_day or "")
        last = date.fromisoformat(config.to_day or config.from_day or "")
        if last < first:
            raise ValueError(f"to_day {last} is before from_day {first}")
        window = {"fleet_from_day": first.isoformat(), "fleet_to_day": last.isoformat()}
        args += ["--vars", json.dumps(window)]
    return args


FACTS_POOL = "fleet_facts"
"""One facts build at a time per Dagster instance, on any machine; a file catalog's OS lock
(`FactsCatalog.build_lock`) also keeps out builds started outside Dagster."""

BUILD_LOCK_WAIT_S = 3600.0
"""How long a build waits for another build (or maintenance) on the same catalog file."""


def build_dbt_assets(lake_dir: Path, catalog: FactsCatalog) -> Any:
    ensure_manifest()

    @dbt_assets(
        manifest=dbt_project.manifest_path,
        project=dbt_project,
        dagster_dbt_translator=FleetDbtTranslator(),
        name="fleet_dbt_models",
        pool=FACTS_POOL,
    )
    def fleet_dbt_models(
        context: AssetExecutionContext, dbt: DbtCliResource, config: FactsBuildConfig
    ) -> Iterator[Any]:
        os.environ.update(dbt_env(lake_dir, catalog))
        missing = warn_missing_lake_days(context, Lake(lake_dir))
        with catalog.build_lock(BUILD_LOCK_WAIT_S) as waited:
            if waited >= 1:
                context.log.info(f"waited {waited:.0f}s for another build of the facts")
            events = dbt.cli(dbt_build_args(config), context=context).stream()
            yield from with_missing_lake_days(context, events, missing)

    return fleet_dbt_models


def warn_missing_lake_days(context: AssetExecutionContext, lake: Lake) -> dict[AssetKey, str]:
    """Raw tables with landed days whose files are gone, each logged as one WARNING line.

    Without this a deleted `day=` folder makes the facts shrink silently. The build goes on: the
    days may have been deleted on purpose, and the tables' `lake_days_present` checks fail
    until they are landed again. A failure to look is itself only a warning.
    """
    try:
        found = missing_lake_days(context.instance, lake)
    except Exception as exc:
        context.log.warning(f"could not compare the lake's days with what was landed: {exc!r}")
        return {}
    for days in found:
        context.log.warning(
            f"{days.table.name}: {len(days.missing)} landed day(s) have no Parquet files, so "
            f"this build leaves their rows out of the facts: {describe_days(days.missing)} "
            f"(its {LAKE_DAYS_CHECK} check says how to land them again)"
        )
    return {days.table.key: describe_days(days.missing) for days in found}


def with_missing_lake_days(
    context: AssetExecutionContext, events: Iterable[Any], missing: Mapping[AssetKey, str]
) -> Iterator[Any]:
    """dbt's events, each model built from a raw table with missing days carrying them as
    `missing_lake_days` metadata, so the gap shows on the facts' own materializations."""
    if not missing:
        yield from events
        return
    deps = {spec.key: {dep.asset_key for dep in spec.deps} for spec in context.assets_def.specs}
    raw: dict[AssetKey, set[AssetKey]] = {}

    def raw_ancestors(key: AssetKey) -> set[AssetKey]:
        if key not in raw:
            parents = deps.get(key, set())
            raw[key] = (parents & missing.keys()).union(*map(raw_ancestors, parents))
        return raw[key]

    for event in events:
        if isinstance(event, Output):
            key = context.asset_key_for_output(event.output_name)
        elif isinstance(event, AssetMaterialization):
            key = event.asset_key
        else:
            yield event
            continue
        affected = sorted(raw_ancestors(key), key=lambda k: k.to_user_string())
        if affected:
            gaps = {k.to_user_string(): missing[k] for k in affected}
            event = event.with_metadata(
                {**event.metadata, "missing_lake_days": MetadataValue.json(gaps)}
            )
        yield event


def build_facts_automation_sensor(
    dbt_models: AssetsDefinition,
) -> AutomationConditionSensorDefinition:
    """The sensor that evaluates the dbt models' conditions (on by default: it only acts on
    new raw data, and the demo and tests run in process without it)."""
    return AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=AssetSelection.assets(dbt_models),
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Builds the dbt models after raw AVL, AutoPi or Metrotec data lands (kt1: the "
            "kt1_dbt_after_drain sensor), one build at a time."
        ),
    )
