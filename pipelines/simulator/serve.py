"""Start the four simulated vendor APIs over one world and say how to reach them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from pipelines.simulator import autopi, avl, kt1, metrotec
from pipelines.simulator.httpd import SimServer
from pipelines.simulator.world import World

DEFAULT_PORTS = {"avl": 8701, "autopi": 8702, "kt1": 8703, "metrotec": 8704}
# The real AVL limit is 10 per 60 s; the demo scales the window so it finishes quickly.
DEMO_AVL_RATE = (10, 3.0)


@dataclass
class Simulators:
    """The running servers; `env()` is what the pipeline needs to reach them."""

    world: World
    servers: dict[str, SimServer] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        out.update(avl.env(self.servers["avl"]))  # type: ignore[arg-type]
        out.update(autopi.env(self.servers["autopi"]))  # type: ignore[arg-type]
        out.update(kt1.env(self.servers["kt1"]))  # type: ignore[arg-type]
        out.update(metrotec.env(self.servers["metrotec"]))  # type: ignore[arg-type]
        return out

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()

    def __enter__(self) -> Simulators:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_all(
    world: World,
    *,
    avl_rate: tuple[int, float] = DEMO_AVL_RATE,
    ports: dict[str, int] | None = None,
    clock: Callable[[], datetime] | None = None,
    kt1_long_poll_s: float = 45.0,
) -> Simulators:
    """All four APIs on 127.0.0.1 (port 0 = any free port)."""
    ports = ports or {}
    sims = Simulators(world)
    try:
        sims.servers["avl"] = avl.AvlServer(
            world, rate_limit=avl_rate, clock=clock, port=ports.get("avl", 0)
        ).start()
        sims.servers["autopi"] = autopi.AutoPiServer(
            world, clock=clock, port=ports.get("autopi", 0)
        ).start()
        sims.servers["kt1"] = kt1.Kt1Server(
            world, clock=clock, long_poll_s=kt1_long_poll_s, port=ports.get("kt1", 0)
        ).start()
        sims.servers["metrotec"] = metrotec.MetrotecServer(
            world, clock=clock, port=ports.get("metrotec", 0)
        ).start()
    except BaseException:
        sims.stop()
        raise
    return sims
