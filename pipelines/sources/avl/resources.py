"""The AVL resource: configuration in, a ready `AvlClient` out."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from pipelines.resources import SourceResource, make_limiter, secret
from pipelines.settings import (
    FleetSettings,
    Parsed,
    first_error,
    rate_limit,
    require,
    time_zone,
    whole_number,
)
from pipelines.sources.avl.client import AvlClient


class AvlResource(SourceResource):
    """AVL Trips Report settings; secrets arrive through `EnvVar`."""

    base_url: str | None = None
    token: str | None = None
    api_key: str | None = None
    tenant: str | None = None
    devices: str = ""
    timezone: str = "UTC"
    idle_min: int = 0
    duration_min: int = 0
    rate_limit: str = "10/60"
    state_url: str | None = None  # FLEET_STATE_URL (an EnvVar: it may hold a password)

    @classmethod
    def from_settings(cls, settings: FleetSettings) -> AvlResource:
        """Parse the AVL variables; a bad one (or a bad FLEET_START_DATE, which the daily
        partitions need) is carried to the asset's runs instead of failing the code location."""
        timezone = Parsed.of(
            "AVL_TIMEZONE",
            settings.avl_timezone,
            time_zone,
            "an IANA time zone (e.g. UTC, Europe/Tallinn)",
            "UTC",
        )
        minutes = "a whole number of minutes >= 0"
        idle_min = Parsed.of("AVL_IDLE_MIN", settings.avl_idle_min, whole_number, minutes, 0)
        duration_min = Parsed.of(
            "AVL_DURATION_MIN", settings.avl_duration_min, whole_number, minutes, 0
        )
        rate = Parsed.of(
            "AVL_RATE_LIMIT", settings.avl_rate_limit, rate_limit, "N/SECONDS (e.g. 10/60)", "10/60"
        )
        http, http_parsed = cls.http_settings(settings)
        return cls(
            **http,
            base_url=settings.avl_base_url,
            token=secret("AVL_TOKEN"),
            api_key=secret("AVL_API_KEY"),
            tenant=settings.avl_tenant,
            devices=settings.avl_devices,
            timezone=timezone.value,
            idle_min=idle_min.value,
            duration_min=duration_min.value,
            rate_limit=rate.value,
            state_url=secret("FLEET_STATE_URL"),
            setting_error=first_error(
                settings.start_date, timezone, idle_min, duration_min, rate, *http_parsed
            ),
        )

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
        # One ledger key per API account: every process using it shares the 10/min window.
        limiter = make_limiter(
            f"avl|{base_url.rstrip('/')}|{tenant}", self.rate_limit, self.state_url
        )
        return AvlClient(
            base_url,
            token=token,
            api_key=api_key,
            tenant=tenant,
            limiter=limiter,
            retry=self.retry_policy(),
            timeout=self.http_read_timeout_s,
        )
