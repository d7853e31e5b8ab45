"""The AVL resource: configuration in, a ready `AvlClient` out."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from dagster import ConfigurableResource

from pipelines.resources import make_limiter
from pipelines.settings import require
from pipelines.sources.avl.client import AvlClient


class AvlResource(ConfigurableResource):
    """AVL Trips Report settings (DESIGN §3); secrets arrive through `EnvVar`."""

    base_url: str | None = None
    token: str | None = None
    api_key: str | None = None
    tenant: str | None = None
    devices: str = ""
    timezone: str = "UTC"
    idle_min: int = 0
    duration_min: int = 0
    rate_limit: str = "10/60"
    ratelimit_db: str

    @property
    def device_ids(self) -> list[str]:
        return [d.strip() for d in self.devices.split(",") if d.strip()]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def client(self, asset: str) -> AvlClient:
        """Raises `MissingCredentialError` naming the first unset variable."""
        base_url = require(self.base_url, "AVL_BASE_URL", asset)
        token = require(self.token, "AVL_TOKEN", asset)
        api_key = require(self.api_key, "AVL_API_KEY", asset)
        tenant = require(self.tenant, "AVL_TENANT", asset)
        # One ledger key per API account: every process using it shares the 10/min window.
        limiter = make_limiter(
            f"avl|{base_url.rstrip('/')}|{tenant}", self.rate_limit, self.ratelimit_db
        )
        return AvlClient(base_url, token=token, api_key=api_key, tenant=tenant, limiter=limiter)
