"""The AutoPi resource: configuration in, a ready `AutoPiClient` out."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from pipelines.settings import require
from pipelines.sources.autopi.client import AutoPiClient


class AutoPiResource(ConfigurableResource):
    """AutoPi cloud API settings (DESIGN §3); the token arrives through `EnvVar`."""

    base_url: str | None = None
    token: str | None = None
    reprobe_hours: float = Field(
        default=2.0,
        description=(
            "Re-check trips landed this recently for a re-export that slipped between two "
            "polls (a reopened trip is exported again under the same task id)."
        ),
    )

    def client(self, asset: str) -> AutoPiClient:
        """Raises `MissingCredentialError` naming the first unset variable."""
        base_url = require(self.base_url, "AUTOPI_BASE_URL", asset)
        token = require(self.token, "AUTOPI_TOKEN", asset)
        return AutoPiClient(base_url, token=token)
