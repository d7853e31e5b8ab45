"""The kt1 resource: configuration in, a ready `Kt1Client` and drain settings out."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from pipelines.resources import SourceResource, Var
from pipelines.settings import positive_seconds, require
from pipelines.sources.kt1.client import REDELIVERY_S, SERVER_LONG_POLL_S, Kt1Client
from pipelines.sources.kt1.drain import DEFAULT_GROUP_MAX_BATCHES


class Kt1Resource(SourceResource):
    """HTTP Export Task settings; the token arrives through `EnvVar`.

    `long_poll_s` and `redelivery_s` are the server's documented 45 s and 2 min; change them
    only for a server that behaves differently (the simulator in tests).
    """

    ENV: ClassVar = {
        "base_url": Var("KT1_BASE_URL"),
        "token": Var("KT1_TOKEN", secret=True),
        "drain_seconds": Var("KT1_DRAIN_SECONDS", positive_seconds, "a number of seconds > 0"),
    }

    base_url: str | None = None
    token: str | None = None
    drain_seconds: float = Field(default=240.0, gt=0)
    long_poll_s: float = Field(default=SERVER_LONG_POLL_S, gt=0)
    redelivery_s: float = Field(default=REDELIVERY_S, gt=0)
    group_max_batches: int = Field(default=DEFAULT_GROUP_MAX_BATCHES, ge=1)

    @property
    def group_max_age_s(self) -> float:
        """Hold a group at most a sixth of the redelivery window: even after one more long
        poll and a slow write, its batches are acknowledged long before they come back.
        """
        return self.redelivery_s / 6

    def client(self, asset: str) -> Kt1Client:
        """Raises `SettingError` naming the first unset or invalid variable."""
        self.check_settings(asset)
        base_url = require(self.base_url, "KT1_BASE_URL", asset)
        token = require(self.token, "KT1_TOKEN", asset)
        # The read timeout is the client's own: it must outlast the server's long poll.
        return Kt1Client(
            base_url, token=token, long_poll_s=self.long_poll_s, retry=self.retry_policy()
        )
