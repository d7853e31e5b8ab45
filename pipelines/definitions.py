"""Definitions: each source's assets, schedules and resource, the dbt models, and the shared
resources (the lake, dbt)."""

import logging

from dagster import DailyPartitionsDefinition, Definitions

from pipelines.checks import build_raw_checks
from pipelines.dbt import build_dbt_assets, dbt_resource
from pipelines.executors import run_executor
from pipelines.facts import FactsCatalog
from pipelines.facts_build import build_facts_sensor
from pipelines.facts_maintenance import facts_maintenance, facts_maintenance_schedule
from pipelines.report.assets import build_report_defs
from pipelines.resources import LakeResource
from pipelines.runs import check_instance
from pipelines.settings import FleetSettings, get_settings, load_env_file
from pipelines.sources.autopi.assets import build_autopi_defs
from pipelines.sources.avl.assets import build_avl_defs
from pipelines.sources.kt1.assets import build_kt1_defs
from pipelines.sources.metrotec.assets import build_metrotec_defs

log = logging.getLogger(__name__)


def daily_partitions(settings: FleetSettings) -> DailyPartitionsDefinition:
    """From FLEET_START_DATE; a bad value falls back to the default here and fails the
    partitioned sources' runs with one line (their resources carry it)."""
    start = settings.start_date
    if start.error:
        log.warning("%s: daily partitions start at %s until it is fixed", start.error, start.value)
    return DailyPartitionsDefinition(start_date=start.value.isoformat(), timezone="UTC")


def build_defs(settings: FleetSettings | None = None) -> Definitions:
    settings = settings or get_settings()
    partitions = daily_partitions(settings)
    for warning in settings.retired_warnings():
        log.warning(warning)
    dbt_models = build_dbt_assets(
        settings.lake_dir, FactsCatalog.from_settings(settings), partitions
    )
    return Definitions.merge(
        build_avl_defs(partitions),
        build_autopi_defs(),
        build_kt1_defs(),
        build_metrotec_defs(partitions),
        build_report_defs(),
        Definitions(
            assets=dbt_models,
            asset_checks=build_raw_checks(),
            sensors=[build_facts_sensor(dbt_models, partitions)],
            jobs=[facts_maintenance],
            schedules=[facts_maintenance_schedule],
            # Each source binds its own resource (built from its variables) in its defs.
            resources={
                "lake": LakeResource(lake_dir=str(settings.lake_dir)),
                "dbt": dbt_resource(),
            },
            executor=run_executor(),  # FLEET_EXECUTOR: beside the run, or Celery workers
        ),
    )


load_env_file()
check_instance()
defs = build_defs()
