"""Resources shared by every source: the lake and the shared rate-limit ledger."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource, EnvVar, Failure
from pydantic import Field

from pipelines.http import RetryPolicy, SlidingWindowLimiter
from pipelines.lake import Lake, is_object_store
from pipelines.settings import (
    FleetSettings,
    Parsed,
    RateLimitSpec,
    SettingError,
    check,
    get_settings,
)
from pipelines.state import shared as shared_state


class LakeResource(ConfigurableResource):
    """The Parquet lake root (`FLEET_LAKE_DIR`): a local folder or an object-store URL."""

    lake_dir: str

    def lake(self) -> Lake:
        if is_object_store(self.lake_dir):
            return Lake(self.lake_dir)
        return Lake(Path(self.lake_dir).expanduser().resolve())


def secret(name: str) -> EnvVar | None:
    """Secrets reach Dagster only through `EnvVar`; an unset one stays None so the asset that
    needs it can name it in one line."""
    return EnvVar(name) if os.environ.get(name) else None


class SourceResource(ConfigurableResource):
    """Base of the vendor resources: a bad setting found when the code loaded is carried here,
    so it fails this source's runs (with its one line) and nothing else."""

    setting_error: str | None = Field(
        default=None,
        description="What is wrong with this source's settings; its runs fail with this line.",
    )

    http_read_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds to wait for a vendor's answer to one request."
    )
    http_max_attempts: int = Field(default=6, ge=1, description="Tries of one request.")
    http_retry_budget_s: float = Field(
        default=150.0,
        gt=0,
        description="Seconds one request may take over all its tries before the run fails.",
    )

    @staticmethod
    def http_settings(settings: FleetSettings) -> tuple[dict[str, float | int], list[Parsed]]:
        """The FLEET_HTTP_* fields for `from_settings`, and their parses (for the error)."""
        timeout, attempts, budget = settings.http
        fields = {
            "http_read_timeout_s": timeout.value,
            "http_max_attempts": attempts.value,
            "http_retry_budget_s": budget.value,
        }
        return fields, [timeout, attempts, budget]

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy.bounded(self.http_max_attempts, self.http_retry_budget_s)

    def check_settings(self, asset: str) -> None:
        """Raises `InvalidSettingError` naming the bad variable(s), their values, what is
        expected, and `asset`."""
        check(self.setting_error, asset)


def make_limiter(key: str, rate_limit: str, state_url: str | None) -> SlidingWindowLimiter:
    """The limiter of one API account, in the shared state (`FLEET_STATE_URL`, else its
    default): every process on every machine using that state shares the account's window."""
    spec = RateLimitSpec.parse(rate_limit)
    url = state_url or get_settings().fleet_state_url
    return SlidingWindowLimiter(key, spec.max_requests, spec.window_s, shared_state(url))


def credential_failure(exc: SettingError) -> Failure:
    """One line for the run's failure: which variable (and what is wrong with it), for which
    asset."""
    return Failure(description=str(exc), allow_retries=False)
