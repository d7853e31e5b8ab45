"""The AVL resource: configuration in, a ready `AvlClient` out."""

from __future__ import annotations

from typing import ClassVar
from zoneinfo import ZoneInfo

from pipelines.resources import RateLimitedResource, Var
from pipelines.settings import rate_limit, require, time_zone, whole_number
from pipelines.sources.avl.client import AvlClient

MINUTES = "a whole number of minutes >= 0"


class AvlResource(RateLimitedResource):
    """AVL Trips Report settings; secrets arrive through `EnvVar`."""

    DAILY_PARTITIONS = True
    ENV: ClassVar = {
        **RateLimitedResource.ENV,
        "base_url": Var("AVL_BASE_URL"),
        "token": Var("AVL_TOKEN", secret=True),
        "api_key": Var("AVL_API_KEY", secret=True),
        "tenant": Var("AVL_TENANT"),
        "devices": Var("AVL_DEVICES"),
        "timezone": Var("AVL_TIMEZONE", time_zone, "an IANA time zone (e.g. UTC, Europe/Tallinn)"),
        "idle_min": Var("AVL_IDLE_MIN", whole_number, MINUTES),
        "duration_min": Var("AVL_DURATION_MIN", whole_number, MINUTES),
        "rate_limit": Var("AVL_RATE_LIMIT", rate_limit, "N/SECONDS (e.g. 10/60)"),
    }

    base_url: str | None = None
    token: str | None = None
    api_key: str | None = None
    tenant: str | None = None
    devices: str = ""
    timezone: str = "UTC"
    idle_min: int = 0
    duration_min: int = 0
    rate_limit: str = "10/60"

    @property
    def device_ids(self) -> list[str]:
        return [d.strip() for d in self.devices.split(",") if d.strip()]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def client(self, asset: str) -> AvlClient:
        """Raises `SettingError` naming the first unset or invalid variable."""
        self.check_settings(asset)
        base_url = require(self.base_url, "AVL_BASE_URL", asset)
        token = require(self.token, "AVL_TOKEN", asset)
        api_key = require(self.api_key, "AVL_API_KEY", asset)
        tenant = require(self.tenant, "AVL_TENANT", asset)
        return AvlClient(
            base_url,
            token=token,
            api_key=api_key,
            tenant=tenant,
            # One ledger key per API account: every process using it shares the 10/min window.
            limiter=self.limiter(f"avl|{base_url.rstrip('/')}|{tenant}"),
            retry=self.retry_policy(),
            timeout=self.http_read_timeout_s,
        )
