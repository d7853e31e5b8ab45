"""Where a run's steps execute: beside the run (the default) or on Celery workers.

One machine runs each step in a subprocess of its run (`fleet_executor`). Beyond one machine,
`FLEET_EXECUTOR=celery` sends every step to the Celery workers that listen on the Redis broker
`FLEET_CELERY_BROKER` (which is also the result backend): the run only orders the steps, and
any number of workers on any number of machines execute them. A run launched by a schedule, a
sensor or the UI carries no executor config, so the broker comes from the environment; run
config may still name another one (`execution: config: broker: ...`).

The workers are started with `dagster-celery worker start -A dagster_celery.app -y
deploy/celery.yaml`, in the same environment as the code location (this project installed, the
`FLEET_*` and vendor variables, `DAGSTER_HOME` with a `dagster.yaml` whose storage every worker
reaches: Postgres, see `fleet dagster-yaml --postgres`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from dagster import ExecutorDefinition, Field, Noneable, StringSource, executor
from dagster._core.execution.retries import RetryMode
from dagster_celery import celery_executor
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor

from pipelines.runs import HeartbeatExecutor, fleet_executor

log = logging.getLogger(__name__)

EXECUTOR_ENV = "FLEET_EXECUTOR"
BROKER_ENV = "FLEET_CELERY_BROKER"
EXECUTORS = ("multiprocess", "celery")

CONFIG_SCHEMA = {
    **CELERY_CONFIG,
    "broker": Field(
        Noneable(StringSource),
        is_required=False,
        description=f"The Celery broker's URL. Default: the {BROKER_ENV} environment variable.",
    ),
    "backend": Field(
        Noneable(StringSource),
        is_required=False,
        description="The Celery result backend's URL. Default: the broker (Redis).",
    ),
}
"""dagster-celery's config, except the defaults: its result backend (rpc://) needs AMQP."""


class CeleryHeartbeatExecutor(HeartbeatExecutor):
    """The heartbeat around dagster-celery's executor, whose execution loop asks the run's
    executor for the Celery app's settings."""

    def __init__(self, inner: CeleryExecutor) -> None:
        super().__init__(inner)
        self.celery = inner

    def app_args(self) -> dict[str, Any]:
        return self.celery.app_args()


@executor(
    name="fleet_celery_executor",
    config_schema=CONFIG_SCHEMA,
    requirements=celery_executor.get_requirements,
)
def fleet_celery_executor(init_context: Any) -> CeleryHeartbeatExecutor:
    """dagster-celery's executor with its broker (and result backend) from FLEET_CELERY_BROKER
    unless run config names one, and the heartbeat every run of this project beats."""
    config = init_context.executor_config
    broker = config.get("broker") or os.environ.get(BROKER_ENV)
    if not broker:
        raise ValueError(
            f"{EXECUTOR_ENV}=celery needs {BROKER_ENV} (e.g. redis://redis:6379/0), the Redis "
            "broker the Celery workers listen on"
        )
    return CeleryHeartbeatExecutor(
        CeleryExecutor(
            retries=RetryMode.from_config(config["retries"]),
            broker=broker,
            backend=config.get("backend") or broker,
            include=config.get("include"),
            config_source=config.get("config_source"),
        )
    )


def run_executor(choice: str | None = None) -> ExecutorDefinition:
    """The executor FLEET_EXECUTOR names (`multiprocess`, the default, or `celery`). An unknown
    value warns and keeps steps beside the run, which works everywhere the code location does."""
    choice = (choice if choice is not None else os.environ.get(EXECUTOR_ENV, "")).strip().lower()
    if choice == "celery":
        return fleet_celery_executor
    if choice not in ("", "multiprocess"):
        log.warning(
            "%s=%r is not one of %s: steps run beside their run (multiprocess)",
            EXECUTOR_ENV,
            choice,
            ", ".join(EXECUTORS),
        )
    return fleet_executor
