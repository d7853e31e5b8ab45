"""The dbt project as Dagster assets: sources map to `raw/<source>/<table>`, one lineage graph."""

import contextlib
import fcntl
import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, time, timedelta
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    AssetSpec,
    AutomationCondition,
    BackfillPolicy,
    Config,
    Failure,
    FreshnessPolicy,
    MetadataValue,
    Output,
    PartitionsDefinition,
    TableColumn,
    TableSchema,
    TimeWindow,
)
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from pipelines.asset_metadata import OWNERS, raw_key
from pipelines.checks import missing_lake_days
from pipelines.dbt_vars import DBT_PROJECT_DIR
from pipelines.facts import FactsCatalog
from pipelines.facts import connect as facts_connect
from pipelines.facts import dbt_env as facts_dbt_env
from pipelines.lake import Lake
from pipelines.lake_days import LAKE_DAYS_CHECK, describe_days
from pipelines.locks import exclusive

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

FACTS_ASSETS = "fleet_dbt_models"


def daily_models(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Model name -> event_time of the daily models: those with an `event_time` config (the
    column that puts a row in its UTC day; dbt_models/macros/fleet_days.sql)."""
    return {
        node["name"]: node["config"]["event_time"]
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and node["config"].get("event_time")
    }


class FleetDbtTranslator(DagsterDbtTranslator):
    """dbt sources become the raw assets that land them (keyed by `raw_key` alone: the sources'
    YAML names no asset key); models are grouped by layer, the daily ones (`daily`) take the
    daily partitions, and the marts carry a freshness policy. No automation condition: the
    facts sensor (pipelines/facts_build.py) requests the days raw data was written to."""

    def __init__(
        self, daily: Mapping[str, str] | None = None, partitions: PartitionsDefinition | None = None
    ) -> None:
        super().__init__()
        self._daily = daily or {}
        self._partitions = partitions

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] == "source":
            return spec.replace_attributes(key=raw_key(props["source_name"], props["name"]))
        layer = next(
            (part for part in props.get("fqn", []) if part in {"staging", "intermediate", "marts"}),
            "seeds" if props["resource_type"] == "seed" else "dbt",
        )
        spec = spec.replace_attributes(group_name=f"dbt_{layer}")
        if props["name"] in self._daily and self._partitions is not None:
            spec = spec.replace_attributes(partitions_def=self._partitions)
        if layer == "marts":
            spec = spec.replace_attributes(freshness_policy=FACTS_FRESHNESS)
        return spec

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> AutomationCondition | None:
        return None

    def get_owners(self, dbt_resource_props: Mapping[str, Any]) -> Sequence[str] | None:
        return OWNERS

    def get_tags(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, str]:
        layer = next(
            (p for p in dbt_resource_props.get("fqn", []) if p in {"staging", "intermediate"}),
            "marts" if dbt_resource_props.get("resource_type") == "model" else "seeds",
        )
        return {**super().get_tags(dbt_resource_props), "layer": layer}

    def get_asset_check_spec(
        self,
        asset_spec: AssetSpec,
        manifest: Mapping[str, Any],
        unique_id: str,
        project: DbtProject | None,
    ) -> AssetCheckSpec | None:
        """dbt's data tests as checks, each saying in words what it holds (dbt gives none)."""
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None or spec.description:
            return spec
        test = manifest["nodes"][unique_id]
        return spec._replace(description=describe_test(test, asset_spec.key.path[-1]))


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """These variables set while dbt's process starts (it copies the environment), then as
    they were: an in-process run must not change the settings of the runs after it."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def describe_test(test: Mapping[str, Any], model: str) -> str:
    """One sentence for a dbt data test: its kind and arguments as a reader says them."""
    meta = test.get("test_metadata") or {}
    kwargs = meta.get("kwargs") or {}
    column = kwargs.get("column_name")
    kind = meta.get("name")
    if kind == "unique":
        return f"{column} is unique in {model}"
    if kind == "not_null":
        return f"{column} is never null in {model}"
    if kind == "accepted_values":
        values = ", ".join(str(v) for v in kwargs.get("values", []))
        return f"{column} of {model} is one of: {values}"
    if kind == "relationships":
        to = str(kwargs.get("to", "")).removeprefix("ref('").removesuffix("')")
        return f"every {column} of {model} is a {kwargs.get('field')} of {to}"
    if kind:
        shown = ", ".join(
            f"{k}={v}" for k, v in kwargs.items() if k not in {"model", "column_name"}
        )
        return (
            f"{kind} on {model}"
            + (f".{column}" if column else "")
            + (f" ({shown})" if shown else "")
        )
    return f"{test['name']}: a SQL test of {model} (tests/{test['name']}.sql) that returns no rows"


def dbt_env(lake_dir: Path | str, catalog: FactsCatalog) -> dict[str, str]:
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
    """Run config of a facts build: which days is the run's partition range (the UI's or the
    CLI's backfill, the facts sensor's requests), never config."""

    # dbt unit tests check the models' SQL, which only a code change can break: `make test`
    # and CI run them, and dbt advises against them in production; set this to run them too.
    unit_tests: bool = False


def dbt_build_args(config: FactsBuildConfig, window: TimeWindow | None = None) -> list[str]:
    """`dbt build` arguments: a daily run passes its partitions' time window as dbt's own
    `--event-time-start/--event-time-end` (UTC midnights; see macros/fleet_days.sql)."""
    args = ["build"]
    if not config.unit_tests:
        args += ["--exclude-resource-type", "unit_test"]
    if window is not None:
        for flag, at in (("--event-time-start", window.start), ("--event-time-end", window.end)):
            utc = at.astimezone(UTC)
            if utc.time() != time(0):
                raise ValueError(f"{flag} {utc.isoformat()} is not a UTC midnight")
            args += [flag, utc.strftime("%Y-%m-%dT%H:%M:%S")]
    return args


FACTS_POOL = "fleet_facts"
"""One facts build at a time per Dagster instance, on any machine; a file catalog's OS lock
(`FactsCatalog.build_lock`) also keeps out builds started outside Dagster."""


def build_target(catalog: FactsCatalog) -> Path:
    """Every build's dbt target: one folder per catalog, so disk use stays flat (dagster-dbt's
    default is a new folder of ~5 MB per run, never deleted) and dbt's partial parse carries
    over from build to build. FLEET_DBT_TARGET_DIR, else `dbt_target` beside a file catalog
    (whose build lock keeps builds on it one at a time), else dbt_models/target/builds."""
    configured = os.environ.get("FLEET_DBT_TARGET_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    if catalog.path is not None:
        return catalog.path.parent / "dbt_target"
    return DBT_PROJECT_DIR / "target" / "builds"


def build_turn(catalog: FactsCatalog, target: Path) -> contextlib.AbstractContextManager[float]:
    """One build at a time on the catalog and its dbt target: a file catalog's build lock, else
    an OS lock on the target (a Postgres catalog's builds are kept apart by the `fleet_facts`
    pool; this keeps two on one machine out of one target). Yields the seconds waited."""
    if catalog.path is not None and not os.environ.get("FLEET_DBT_TARGET_DIR"):
        return catalog.build_lock(BUILD_LOCK_WAIT_S)
    return exclusive(target, ".lock", "facts build in this dbt target", BUILD_LOCK_WAIT_S)


BUILD_LOCK_WAIT_S = 3600.0
"""How long a build waits for another build (or maintenance) on the same catalog file."""


def build_dbt_assets(
    lake_dir: Path | str, catalog: FactsCatalog, partitions: PartitionsDefinition
) -> list[AssetsDefinition]:
    """The dbt project as one asset definition: the daily models partitioned like the raw daily
    assets (so a raw day maps to the same fact day), the models without a day (seeds,
    identities, dim_vehicles, snapshot views) unpartitioned. One op, so a run is one step and
    one `dbt build` over its partition range: one commit of the catalog's marker, one start-up."""
    manifest_path = ensure_manifest()
    daily = daily_models(json.loads(manifest_path.read_text()))

    @dbt_assets(
        manifest=manifest_path,
        dagster_dbt_translator=FleetDbtTranslator(daily, partitions),
        name=FACTS_ASSETS,
        backfill_policy=BackfillPolicy.single_run(),
        pool=FACTS_POOL,
    )
    def fleet_dbt_models(
        context: AssetExecutionContext, dbt: DbtCliResource, config: FactsBuildConfig
    ) -> Iterator[Any]:
        if not context.has_partition_key_range and any(
            context.assets_def.specs_by_key[key].partitions_def is not None
            for key in context.selected_asset_keys
        ):
            raise Failure(
                description=(
                    "the daily fact assets need a partition range: run them with "
                    "`fleet facts build`, `--partition-range FIRST...LAST`, or a backfill"
                ),
                allow_retries=False,
            )
        window = context.partition_time_window if context.has_partition_key_range else None
        missing = warn_missing_lake_days(context, Lake(lake_dir))
        target = build_target(catalog)
        with build_turn(catalog, target) as waited:
            if waited >= 1:
                context.log.info(f"waited {waited:.0f}s for another build of the facts")
            args = dbt_build_args(config, window)
            with environment(dbt_env(lake_dir, catalog)):  # dbt's process, not this one's
                invocation = dbt.cli(args, context=context, target_path=target)
            events = invocation.stream()
            events = with_table_metadata(context, events, catalog, daily, window)
            yield from with_missing_lake_days(context, events, missing)

    return [fleet_dbt_models]


def with_table_metadata(
    context: AssetExecutionContext,
    events: Iterable[Any],
    catalog: FactsCatalog,
    daily: Mapping[str, str],
    window: TimeWindow | None,
) -> Iterator[Any]:
    """dbt's events, each model's output carrying what the catalog now holds: its columns with
    their types (`dagster/column_schema`), its rows (`dagster/row_count`, tables only: counting
    a view would run it) and, for a daily table in a partitioned run, each day's own rows on
    that day's materialization (`rows`, `dagster/partition_row_count`; 0 for a day without
    any), with `rows_by_day` for the run as a whole."""
    days: list[date] = []
    if window is not None:
        first = window.start.astimezone(UTC).date()
        days = [first + timedelta(days=i) for i in range((window.end - window.start).days)]
    con = None
    try:
        for event in events:
            if isinstance(event, Output):
                key = context.asset_key_for_output(event.output_name)
                if con is None:
                    con = facts_connect(read_only=True, catalog=catalog, latest=True)
                extra = describe_relation(con, key.path[-1])
                name = key.path[-1]
                if extra and name in daily and days and "dagster/row_count" in extra:
                    counts = count_rows_by_day(con, name, daily[name], days)
                    for day, n in counts.items():
                        context.add_asset_metadata(
                            {"rows": n, "dagster/partition_row_count": n},
                            asset_key=key,
                            partition_key=day,
                        )
                    extra["rows"] = MetadataValue.int(sum(counts.values()))
                    extra["rows_by_day"] = MetadataValue.json(counts)
                if extra:
                    event = event.with_metadata({**event.metadata, **extra})
            yield event
    finally:
        if con is not None:
            con.close()


def describe_relation(con: Any, model: str) -> dict[str, Any]:
    """A model's relation in the catalog: its columns and types, and its rows if a table; {}
    when it is not there (an ephemeral model)."""
    kind = con.execute(
        "select table_type from information_schema.tables "
        "where table_catalog = 'facts' and table_schema = 'main' and table_name = ?",
        [model],
    ).fetchone()
    if kind is None:
        return {}
    columns = con.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_catalog = 'facts' and table_schema = 'main' and table_name = ? "
        "order by ordinal_position",
        [model],
    ).fetchall()
    metadata: dict[str, Any] = {
        "dagster/column_schema": MetadataValue.table_schema(
            TableSchema(columns=[TableColumn(name=n, type=t) for n, t in columns])
        ),
        "dagster/table_name": MetadataValue.text(f"facts.main.{model}"),
    }
    if kind[0] == "BASE TABLE":
        (rows,) = con.execute(f'select count(*) from facts.main."{model}"').fetchone()
        metadata["dagster/row_count"] = MetadataValue.int(rows)
    return metadata


def count_rows_by_day(con: Any, model: str, event_time: str, days: list[date]) -> dict[str, int]:
    """Rows per UTC day of `days` in a daily table."""
    day = event_time if event_time == "day" else f"cast({event_time} at time zone 'UTC' as date)"
    rows = con.execute(
        f"select {day}, count(*) from facts.main.{model} "
        f"where {day} >= ? and {day} <= ? group by 1",
        [days[0], days[-1]],
    ).fetchall()
    found = {d.isoformat(): n for d, n in rows}
    return {d.isoformat(): found.get(d.isoformat(), 0) for d in days}


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
