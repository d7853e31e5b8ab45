"""Definitions: each source's assets and schedules, the dbt models, and their resources."""

import os

from dagster import DailyPartitionsDefinition, Definitions, EnvVar

from pipelines.checks import build_raw_checks
from pipelines.dbt import build_dbt_assets, build_facts_automation_sensor, dbt_resource
from pipelines.resources import LakeResource
from pipelines.runs import check_instance, fleet_executor
from pipelines.settings import FleetSettings, get_settings, load_env_file
from pipelines.sources.autopi.assets import build_autopi_defs
from pipelines.sources.autopi.resources import AutoPiResource
from pipelines.sources.avl.assets import build_avl_defs
from pipelines.sources.avl.resources import AvlResource
from pipelines.sources.kt1.assets import build_kt1_defs
from pipelines.sources.kt1.resources import Kt1Resource
from pipelines.sources.metrotec.assets import build_metrotec_defs
from pipelines.sources.metrotec.resources import MetrotecResource


def _secret(name: str) -> EnvVar | None:
    """Secrets only through EnvVar; an unset one stays None so the asset can name it in one line."""
    return EnvVar(name) if os.environ.get(name) else None


def build_resources(settings: FleetSettings) -> dict[str, object]:
    ledger = str(settings.fleet_ratelimit_db)
    return {
        "lake": LakeResource(lake_dir=str(settings.lake_dir)),
        "avl": AvlResource(
            base_url=settings.avl_base_url,
            token=_secret("AVL_TOKEN"),
            api_key=_secret("AVL_API_KEY"),
            tenant=settings.avl_tenant,
            devices=settings.avl_devices,
            timezone=settings.avl_timezone,
            idle_min=settings.avl_idle_min,
            duration_min=settings.avl_duration_min,
            rate_limit=settings.avl_rate_limit,
            ratelimit_db=ledger,
        ),
        "kt1": Kt1Resource(
            base_url=settings.kt1_base_url,
            token=_secret("KT1_TOKEN"),
            drain_seconds=settings.kt1_drain_seconds,
        ),
        "metrotec": MetrotecResource.from_settings(settings, password=_secret("METROTEC_PASSWORD")),
        "autopi": AutoPiResource(base_url=settings.autopi_base_url, token=_secret("AUTOPI_TOKEN")),
        "dbt": dbt_resource(),
    }


def daily_partitions(settings: FleetSettings) -> DailyPartitionsDefinition:
    return DailyPartitionsDefinition(
        start_date=settings.fleet_start_date.isoformat(), timezone="UTC"
    )


def build_defs(settings: FleetSettings | None = None) -> Definitions:
    settings = settings or get_settings()
    partitions = daily_partitions(settings)
    dbt_models = build_dbt_assets(settings.lake_dir, settings.duckdb_path)
    return Definitions.merge(
        build_avl_defs(partitions),
        build_autopi_defs(),
        build_kt1_defs(),
        build_metrotec_defs(partitions),
        Definitions(
            assets=[dbt_models],
            asset_checks=build_raw_checks(),
            sensors=[build_facts_automation_sensor(dbt_models)],
            resources=build_resources(settings),
            executor=fleet_executor,
        ),
    )


load_env_file()
check_instance()
defs = build_defs()
