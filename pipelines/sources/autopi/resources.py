"""The AutoPi resource: configuration in, a ready `AutoPiClient` out."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from pipelines.resources import SourceResource, Var
from pipelines.settings import require
from pipelines.sources.autopi.client import AutoPiClient


class AutoPiResource(SourceResource):
    """AutoPi cloud API settings; the token arrives through `EnvVar`."""

    ENV: ClassVar = {
        "base_url": Var("AUTOPI_BASE_URL"),
        "token": Var("AUTOPI_TOKEN", secret=True),
    }

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
        """Raises `SettingError` naming the first unset or invalid variable."""
        self.check_settings(asset)
        base_url = require(self.base_url, "AUTOPI_BASE_URL", asset)
        token = require(self.token, "AUTOPI_TOKEN", asset)
        return AutoPiClient(
            base_url, token=token, retry=self.retry_policy(), timeout=self.http_read_timeout_s
        )
