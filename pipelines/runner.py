"""Running this code location's assets from Python: the one runner the `fleet` commands, the
demo and the analytics renderer share."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

DEFINITIONS_MODULE = "pipelines.definitions"
CODE_LOCATION = "fleet_pipelines"  # workspace.yaml and pyproject name it so


def run_quietly(defs, selection, tags: dict[str, str] | None, instance, log: Path) -> Any:  # noqa: ANN001
    """Run quietly: Dagster's console log and dbt's output go to `log`, the screen stays calm.
    The raw assets' anomaly checks run with them, as in a scheduled run."""
    from dagster import materialize

    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh, contextlib.redirect_stdout(fh):
        return materialize(
            [*defs.assets, *(defs.asset_checks or [])],
            resources=defs.resources,
            selection=selection,
            tags=tags,
            instance=instance,
            run_config=quiet,
            raise_on_error=False,
        )


def run_in_location(
    selection: Any,
    tags: dict[str, str] | None,
    instance: Any,
    log: Path,
    run_config: dict[str, Any] | None = None,
) -> Any:
    """Run like the UI does: the implicit asset job of this code location, recorded with the
    location's origin (`fleet_pipelines` in workspace.yaml), so the UI lists the run under the
    location, on its timeline, and can re-execute it (a `materialize()` run is an ephemeral job
    the UI cannot). In this process, quietly: Dagster's console log and dbt's output go to
    `log`. The selected assets' checks run with them, as in a schedule's run."""
    from dagster import AssetSelection
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.execution.api import execute_run
    from dagster._core.remote_origin import (
        ManagedGrpcPythonEnvCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    repo = ReconstructableRepository.for_module(DEFINITIONS_MODULE, "defs", working_directory=None)
    repo_def = repo.get_definition()
    keys = AssetSelection.from_coercible(selection).resolve(repo_def.asset_graph)
    job_def = repo_def.get_implicit_job_def_for_assets(keys)
    if job_def is None:  # a selection whose partitions cannot share one job: a bug in the demo
        raise RuntimeError(f"no job of {DEFINITIONS_MODULE} holds all of {sorted(keys)}")
    job = repo.get_reconstructable_job(job_def.name)
    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name=DEFINITIONS_MODULE,
            working_directory=str(Path.cwd()),
        ),
        location_name=CODE_LOCATION,
    )
    run_config = {
        **(run_config or {}),
        "execution": {"config": {"in_process": {}}},
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
    }
    run = instance.create_run_for_job(
        job_def=job_def,
        run_config=run_config,
        tags=tags,
        asset_selection=frozenset(keys),
        job_code_origin=job.get_python_origin(),
        remote_job_origin=RemoteJobOrigin(
            RemoteRepositoryOrigin(location, repo_def.name), job_def.name
        ),
    )
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh, contextlib.redirect_stdout(fh):
        return execute_run(job, run, instance, raise_on_error=False)


def failure_lines(result: Any) -> list[str]:
    """One line per failed step of an in-process run: the user-facing reason, not a trace."""
    lines = []
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if data.user_failure_data and data.user_failure_data.description:
            lines.append(data.user_failure_data.description)
        elif data.error:
            lines.append(data.error.message.strip().splitlines()[0])
    return lines or ["run failed (see the Dagster UI for its logs)"]
