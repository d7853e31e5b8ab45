"""The AutoPi resource: configuration in, a ready `AutoPiClient` out."""

from __future__ import annotations

from pydantic import Field

from pipelines.resources import SourceResource, secret
from pipelines.settings import FleetSettings, first_error, require
from pipelines.sources.autopi.client import AutoPiClient


class AutoPiResource(SourceResource):
    """AutoPi cloud API settings; the token arrives through `EnvVar`."""

    base_url: str | None = None
    token: str | None = None
    reprobe_hours: float = Field(
        default=2.0,
        description=(
            "Re-check trips landed this recently for a re-export that slipped between two "
            "polls (a reopened trip is exported again under the same task id)."
        ),
    )

    @classmethod
    def from_settings(cls, settings: FleetSettings) -> AutoPiResource:
        http, http_parsed = cls.http_settings(settings)
        return cls(
            **http,
            base_url=settings.autopi_base_url,
            token=secret("AUTOPI_TOKEN"),
            setting_error=first_error(*http_parsed),
        )

    def client(self, asset: str) -> AutoPiClient:
        """Raises `SettingError` naming the first unset or invalid variable."""
        self.check_settings(asset)
        base_url = require(self.base_url, "AUTOPI_BASE_URL", asset)
        token = require(self.token, "AUTOPI_TOKEN", asset)
        return AutoPiClient(
            base_url, token=token, retry=self.retry_policy(), timeout=self.http_read_timeout_s
        )
