"""Runs that die are noticed: a heartbeat from every run, and the launcher that reads it.

A run killed outright (SIGKILL, an OOM kill, a reboot) writes no failure event: Dagster keeps it
`STARTED`, and with pools that run holds its source's slot for good. Dagster's run monitoring
asks the run launcher whether a run's worker is alive, but the default launcher cannot tell.
So every run of this code location beats a heart (the run tag `fleet/heartbeat`, rewritten
every `HEARTBEAT_S` by the executor), and `HeartbeatRunLauncher` answers run monitoring from
it: a run whose heartbeat is older than `STALE_AFTER_S` is dead and is marked failed, which
releases its pool. The heartbeat lives in Dagster's run storage, so it works for runs of any
process on any machine that shares that storage (CLI runs included).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from dagster import DefaultRunLauncher, Executor, executor, multi_or_in_process_executor
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

log = logging.getLogger(__name__)

HEARTBEAT_TAG = "fleet/heartbeat"
HEARTBEAT_S = float(os.environ.get("FLEET_RUN_HEARTBEAT_S", "15"))
"""How often a live run rewrites its heartbeat."""
STALE_AFTER_S = float(os.environ.get("FLEET_RUN_STALE_AFTER_S", str(max(6 * HEARTBEAT_S, 5.0))))
"""A run whose heartbeat is older than this is dead (six missed beats: a busy run still beats,
its thread needs the GIL for microseconds)."""


# --- the heartbeat ---------------------------------------------------------------------------


class _Heart:
    """A daemon thread that stamps the run's heartbeat tag until stopped."""

    def __init__(self, instance: Any, run_id: str) -> None:
        self._instance = instance
        self._run_id = run_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="fleet-heartbeat", daemon=True)

    def __enter__(self) -> _Heart:
        self._stamp()  # at once: a run killed in its first seconds is judged by it too
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _stamp(self) -> None:
        try:
            self._instance.add_run_tags(
                self._run_id, {HEARTBEAT_TAG: datetime.now(UTC).isoformat(timespec="seconds")}
            )
        except Exception:  # a busy storage must never fail the run; the next beat retries
            log.warning("run %s: heartbeat not written", self._run_id, exc_info=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._stamp()


class HeartbeatExecutor(Executor):
    """Dagster's own executor (multiprocess, or in-process when configured), plus the heartbeat
    of the run it executes."""

    def __init__(self, inner: Executor) -> None:
        self._inner = inner

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[Any]:
        with _Heart(plan_context.instance, plan_context.run_id):
            yield from self._inner.execute(plan_context, execution_plan)

    @property
    def retries(self) -> Any:
        return self._inner.retries

    @property
    def step_dependency_config(self) -> Any:
        return self._inner.step_dependency_config


@executor(
    name="fleet_executor",
    config_schema=multi_or_in_process_executor.config_schema,
    requirements=multi_or_in_process_executor.get_requirements,
)
def fleet_executor(init_context: Any) -> Executor:
    """The default executor, configured the same way (`multiprocess` / `in_process`), with a
    heartbeat so that run monitoring can tell a dead run from a long one."""
    return HeartbeatExecutor(multi_or_in_process_executor.executor_creation_fn(init_context))


def heartbeat_age_s(tags: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds since the run's last heartbeat; None for a run that never beat (an older run,
    or one executed outside this code location's executor)."""
    stamp = tags.get(HEARTBEAT_TAG)
    if not stamp:
        return None
    try:
        beat = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return ((now or datetime.now(UTC)) - beat).total_seconds()


# --- run monitoring ---------------------------------------------------------------------------


class HeartbeatRunLauncher(DefaultRunLauncher):
    """Dagster's default launcher, able to answer run monitoring's "is this run alive?"."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: Any) -> CheckRunHealthResult:
        age = heartbeat_age_s(run.tags)
        if age is None:  # cannot tell: leave it to max_runtime_seconds
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no heartbeat recorded")
        if age > STALE_AFTER_S:
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"no heartbeat for {age:.0f}s (a live run beats every {HEARTBEAT_S:g}s): its "
                "process died (killed, out of memory, or its machine restarted)",
            )
        return CheckRunHealthResult(WorkerStatus.RUNNING)


INSTANCE_SETTINGS: dict[str, Any] = {
    "run_launcher": {"module": __name__, "class": HeartbeatRunLauncher.__name__},
    "run_monitoring": {
        "enabled": True,
        "poll_interval_seconds": 30,
        "max_resume_run_attempts": 0,
        "free_slots_after_run_end_seconds": 30,
    },
    "concurrency": {
        # Runs wait for a pool in Dagster's queue (costing nothing) instead of inside a started
        # run; a run started outside the queue (the CLI) is not held by pools at all, and the
        # sources' own locks keep what must be one at a time so.
        "pools": {"default_limit": 1, "granularity": "run"},
        "runs": {
            "tag_concurrency_limits": [{"key": "fleet/queue", "value": "kt1", "limit": 1}],
        },
    },
}
"""What every Dagster instance running this project needs in its `dagster.yaml`."""


MONITORED_LAUNCHERS = frozenset(
    {HeartbeatRunLauncher.__name__, "K8sRunLauncher", "CeleryK8sRunLauncher", "EcsRunLauncher"}
)
"""Launchers that answer run monitoring themselves (ours; Kubernetes' and ECS' ask their
cluster whether a run's pod or task is alive)."""


def instance_problems(config: Mapping[str, Any] | None) -> list[str]:
    """What a `dagster.yaml` lacks of `INSTANCE_SETTINGS`, one line each (empty: all set)."""
    config = config or {}
    problems = []
    launcher = config.get("run_launcher") or {}
    if launcher.get("class") not in MONITORED_LAUNCHERS:
        problems.append(
            f"run_launcher is not {__name__}.{HeartbeatRunLauncher.__name__}: "
            "a killed run is never noticed"
        )
    monitoring = config.get("run_monitoring") or {}
    if not monitoring.get("enabled"):
        problems.append("run_monitoring is not enabled: a killed run keeps its pool for good")
    elif not monitoring.get("free_slots_after_run_end_seconds"):
        problems.append(
            "run_monitoring.free_slots_after_run_end_seconds is not set: "
            "a failed run's pool slots may stay claimed"
        )
    return problems


def check_instance(dagster_home: str | None = None) -> list[str]:
    """Report, at load time, a Dagster instance that cannot notice dead runs (one warning line
    per missing setting, naming the file and the fix). Returns the problems found."""
    home = dagster_home or os.environ.get("DAGSTER_HOME")
    if not home:
        problems = ["DAGSTER_HOME is not set, so runs are kept in a temporary instance"]
        where = "no dagster.yaml"
    else:
        path = Path(home) / "dagster.yaml"
        where = str(path)
        try:
            problems = instance_problems(yaml.safe_load(path.read_text()) if path.exists() else {})
        except (OSError, yaml.YAMLError) as exc:
            problems = [f"cannot be read ({type(exc).__name__})"]
    for problem in problems:
        log.warning(
            "Dagster instance (%s): %s. Fix: add what `fleet dagster-yaml` prints (see "
            "docs/operations.md, 'Runs that die').",
            where,
            problem,
        )
    return problems


def instance_yaml() -> str:
    """`INSTANCE_SETTINGS` as the `dagster.yaml` text the project writes and documents."""
    return (
        "# Written by fleet-pipelines: run monitoring notices runs that die (their heartbeat\n"
        "# stops) and frees their pools; runs wait for a pool in the queue, not in a process.\n"
        + yaml.safe_dump(INSTANCE_SETTINGS, sort_keys=False)
    )
