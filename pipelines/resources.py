"""Resources shared by every source: the lake and the machine-wide rate-limit ledger."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource, Failure

from pipelines.http import SlidingWindowLimiter
from pipelines.lake import Lake
from pipelines.settings import MissingCredentialError, RateLimitSpec


class LakeResource(ConfigurableResource):
    """The Parquet lake root (`FLEET_LAKE_DIR`)."""

    lake_dir: str

    def lake(self) -> Lake:
        return Lake(Path(self.lake_dir).expanduser().resolve())


def make_limiter(key: str, rate_limit: str, ledger: str) -> SlidingWindowLimiter:
    spec = RateLimitSpec.parse(rate_limit)
    return SlidingWindowLimiter(key, spec.max_requests, spec.window_s, Path(ledger).expanduser())


def credential_failure(exc: MissingCredentialError) -> Failure:
    """One line for the run's failure: which variable, for which asset."""
    return Failure(description=str(exc), allow_retries=False)
