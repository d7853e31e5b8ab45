"""Timed `dbt` invocations of the facts bench: wall time, peak memory of the dbt process tree,
and what run_results.json says, per call and per build of several calls."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from pipelines.dbt import dbt_executable


@dataclass
class Invocation:
    """One `dbt build`: wall time, peak memory, and what its run_results.json says."""

    name: str
    wall_s: float
    peak_rss: int  # bytes, of the dbt process tree (DuckDB runs inside it)
    returncode: int
    log: Path
    dbt_s: float | None = None  # run_results elapsed_time: execution after start-up and parse
    node_s: dict[str, float] = field(default_factory=dict)  # summed per node kind
    nodes: dict[str, int] = field(default_factory=dict)  # counted per node kind
    problems: dict[str, int] = field(default_factory=dict)  # non-passing statuses, counted
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.dbt_s is not None and self.returncode == 0 and not self.problems

    @property
    def overhead_s(self) -> float:
        """dbt's start-up, (partial) parse and artifact writing: wall time outside the nodes."""
        return self.wall_s - (self.dbt_s or 0.0)

    def status(self) -> str:
        if self.timed_out:
            return "STOPPED at the time limit"
        if self.dbt_s is None:
            return f"dbt DIED (exit {self.returncode}); see {self.log}"
        if self.ok:
            return "ok"
        return (
            "FAILED: " + ", ".join(f"{n} {s}" for s, n in self.problems.items()) + f" ({self.log})"
        )


@dataclass
class Build:
    """One build: its dbt invocations, run one after another."""

    name: str
    steps: list[Invocation]

    @property
    def wall_s(self) -> float:
        return sum(s.wall_s for s in self.steps)

    @property
    def peak_rss(self) -> int:
        return max((s.peak_rss for s in self.steps), default=0)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    @property
    def overhead_s(self) -> float:
        return sum(s.overhead_s for s in self.steps)

    def node_s(self, kind: str) -> float:
        return sum(s.node_s.get(kind, 0.0) for s in self.steps)

    def nodes(self, kind: str) -> int:
        return sum(s.nodes.get(kind, 0) for s in self.steps)


class Watch(threading.Thread):
    """Samples the dbt process tree's memory; terminates it past `limit_s` (a shared machine)."""

    def __init__(self, pid: int, limit_s: float) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.limit_s = limit_s
        self.peak_rss = 0
        self.timed_out = False
        self.done = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.done.wait(0.2):
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                self.peak_rss = max(self.peak_rss, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                continue  # a process of the tree just ended
            if time.monotonic() - started > self.limit_s:
                self.timed_out = True
                for proc in reversed(tree):
                    with contextlib.suppress(psutil.Error):
                        proc.terminate()
                return


def run_dbt(cli: Any, name: str, args: list[str], log: Path, limit_s: float) -> Invocation:
    """`dbt <args>` through DbtCliResource.cli (a fresh target path seeded with the project's
    partial parse, as the assets invoke it); dbt's log lines go to `log`."""
    started = time.perf_counter()
    with log.open("w") as sink, contextlib.redirect_stdout(sink):
        invocation = cli.cli(args, raise_on_error=False)
        watch = Watch(invocation.process.pid, limit_s)
        watch.start()
        try:
            invocation.wait()
        finally:
            watch.done.set()
            watch.join()
    run = Invocation(
        name,
        time.perf_counter() - started,
        watch.peak_rss,
        invocation.process.returncode,
        log,
        timed_out=watch.timed_out,
    )
    results_path = invocation.target_path / "run_results.json"
    if not results_path.exists():
        return run
    results = json.loads(results_path.read_text())
    for node in results["results"]:
        kind = node["unique_id"].split(".")[0]
        run.node_s[kind] = run.node_s.get(kind, 0.0) + node["execution_time"]
        run.nodes[kind] = run.nodes.get(kind, 0) + 1
        if node["status"] not in ("success", "pass"):
            run.problems[node["status"]] = run.problems.get(node["status"], 0) + 1
    run.dbt_s = results["elapsed_time"]
    return run


def dbt_cli(project_dir: Path) -> Any:
    from dagster_dbt import DbtCliResource, DbtProject

    project = DbtProject(project_dir=project_dir, profiles_dir=project_dir)
    return DbtCliResource(project_dir=project, dbt_executable=dbt_executable())


@contextlib.contextmanager
def environ(values: dict[str, str], drop: tuple[str, ...] = ()) -> Iterator[None]:
    """os.environ with `values` set and `drop` removed, restored afterwards."""
    saved = dict(os.environ)
    for name in drop:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
