"""Environment (and `.env`) to the project's global settings, and the one reading of both.

Each source's own variables are declared by its resource (`pipelines.resources.Var`) and read
from `environment()` by `SourceResource.from_env`; what every source shares lives here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values, load_dotenv
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingError(RuntimeError):
    """A setting a source needs is missing or invalid; the message is the one line a user needs:
    the variable, its value (never a secret's), what is expected, and which asset needs it."""


class MissingCredentialError(SettingError):
    """A source's credential is not configured; the message names the variable and the asset."""


class InvalidSettingError(SettingError):
    """A setting has a value its source cannot use."""


class RateLimitSpec:
    """`N/SECONDS`: at most N requests in any sliding window of SECONDS."""

    def __init__(self, max_requests: int, window_s: float) -> None:
        if max_requests < 1 or not (0 < window_s < math.inf):
            raise ValueError(
                f"rate limit must be N/SECONDS with N>=1, SECONDS>0: {max_requests}/{window_s}"
            )
        self.max_requests = max_requests
        self.window_s = window_s

    @classmethod
    def parse(cls, text: str) -> RateLimitSpec:
        try:
            n, _, s = text.strip().partition("/")
            return cls(int(n), float(s))
        except ValueError as exc:
            raise ValueError(f"rate limit {text!r} is not N/SECONDS (e.g. 10/60): {exc}") from None

    def __str__(self) -> str:
        return f"{self.max_requests}/{self.window_s:g}"


DEFAULT_START_DATE = date(2024, 1, 1)
DEFAULT_STATE_URL = "sqlite:///data/fleet_state.sqlite3"
"""The shared state's default: a SQLite file under `./data/` (relative, like the lake's)."""
T = TypeVar("T")


@dataclass(frozen=True)
class Parsed(Generic[T]):
    """A setting parsed from its text: the value, or (with the default in its place) the one
    line that says what is wrong with it."""

    value: T
    error: str | None = None

    @classmethod
    def of(
        cls, variable: str, text: str, parse: Callable[[str], T], expected: str, default: T
    ) -> Parsed[T]:
        try:
            return cls(parse(text.strip()))
        except (ValueError, TypeError, ArithmeticError, ZoneInfoNotFoundError):
            shown = text if len(text) <= 60 else text[:57] + "..."
            return cls(default, f"{variable}={shown!r} is not {expected}")


def first_error(*parsed: Parsed[Any]) -> str | None:
    """The problems of several settings as one line (None when all parsed)."""
    errors = [p.error for p in parsed if p.error]
    return "; ".join(errors) if errors else None


def _iso_date(text: str) -> date:
    return date.fromisoformat(text)


def whole_number(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def positive_seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(text)
    return value


def time_zone(text: str) -> str:
    if not text:
        raise ValueError(text)
    ZoneInfo(text)  # raises ZoneInfoNotFoundError (or ValueError for a malformed key)
    return text


def rate_limit(text: str) -> str:
    RateLimitSpec.parse(text)
    return text


def load_env_file(path: str | Path = ".env") -> None:
    """Make `.env` visible to `EnvVar` too; the shell environment wins, as in pydantic-settings."""
    load_dotenv(path, override=False)


def environment(path: str | Path = ".env") -> dict[str, str]:
    """The variables as `FleetSettings` sees them: the shell over `.env`, names upper-cased
    (they are matched case-insensitively)."""
    env = {k.upper(): v for k, v in dotenv_values(path).items() if v is not None}
    env.update({k.upper(): v for k, v in os.environ.items()})
    return env


class FleetSettings(BaseSettings):
    """The variables every source and command shares, as the raw text it was given, with its
    default; each source's own variables are declared on its resource.

    Values that need parsing stay text here and are parsed where they are used (`Parsed`), so
    one bad value fails the runs that need it with one line while every other asset, and
    `fleet sql`, keep working.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # A local folder, or an object-store URL (s3://bucket/prefix) reached with the AWS_* variables.
    fleet_lake_dir: str = "./data/lake"
    # The facts' DuckLake catalog (DuckLake's own form, without `ducklake:`) and data path.
    fleet_facts_catalog: str = "sqlite:./data/fleet_catalog.sqlite"
    fleet_facts_data_path: str = "./data/facts/"
    # Snapshots of the facts kept readable by time travel; maintenance expires older ones.
    fleet_facts_retention_days: str = "7"
    # Where the fleet report (pipelines/report) writes its HTML files and `latest.html`.
    fleet_report_dir: Path = Path("./data/reports")
    # Retired: the facts moved from this DuckDB file into the catalog above.
    fleet_duckdb_path: str | None = None
    fleet_start_date: str = DEFAULT_START_DATE.isoformat()
    # Shared state of every process (rate-limit ledger, AutoPi ledger, drain leases):
    # sqlite:///PATH on one machine, postgresql://... beyond it (see pipelines.state).
    fleet_state_url: str = DEFAULT_STATE_URL
    # Retired: the rate-limit ledger moved into FLEET_STATE_URL.
    fleet_ratelimit_db: str | None = None

    # Every vendor request: read timeout, attempts and total retry budget (see pipelines.http).
    fleet_http_read_timeout_s: str = "30"
    fleet_http_max_attempts: str = "6"
    fleet_http_retry_budget_s: str = "150"

    @property
    def start_date(self) -> Parsed[date]:
        """FLEET_START_DATE; a bad value falls back to the default for loading and fails the
        daily-partitioned assets (which need it) when they run."""
        return Parsed.of(
            "FLEET_START_DATE",
            self.fleet_start_date,
            _iso_date,
            "a date YYYY-MM-DD",
            DEFAULT_START_DATE,
        )

    @property
    def http(self) -> tuple[Parsed[float], Parsed[int], Parsed[float]]:
        """(read timeout, max attempts, retry budget) of every vendor client."""
        seconds = "a number of seconds > 0"
        return (
            Parsed.of(
                "FLEET_HTTP_READ_TIMEOUT_S",
                self.fleet_http_read_timeout_s,
                positive_seconds,
                seconds,
                30.0,
            ),
            Parsed.of(
                "FLEET_HTTP_MAX_ATTEMPTS",
                self.fleet_http_max_attempts,
                positive_int,
                "a whole number >= 1",
                6,
            ),
            Parsed.of(
                "FLEET_HTTP_RETRY_BUDGET_S",
                self.fleet_http_retry_budget_s,
                positive_seconds,
                seconds,
                150.0,
            ),
        )

    @property
    def lake_dir(self) -> Path | str:
        """An absolute local folder, or an object-store URL exactly as given."""
        from pipelines.object_store import is_object_store

        if is_object_store(self.fleet_lake_dir.strip()):
            return self.fleet_lake_dir.strip().rstrip("/")
        return Path(self.fleet_lake_dir).expanduser().resolve()

    @property
    def report_dir(self) -> Path:
        return self.fleet_report_dir.expanduser().resolve()

    @property
    def facts_retention(self) -> Parsed[int]:
        return Parsed.of(
            "FLEET_FACTS_RETENTION_DAYS",
            self.fleet_facts_retention_days,
            whole_number,
            "a whole number of days >= 0",
            7,
        )

    def retired_warnings(self) -> list[str]:
        """One line per retired variable that is still set."""
        lines = []
        if self.fleet_duckdb_path:
            lines.append(
                "FLEET_DUCKDB_PATH is retired and ignored: the facts live in the DuckLake "
                "catalog FLEET_FACTS_CATALOG (data in FLEET_FACTS_DATA_PATH); unset it"
            )
        if self.fleet_ratelimit_db:
            lines.append(
                "FLEET_RATELIMIT_DB is retired and ignored: the rate-limit ledger lives in the "
                "shared state FLEET_STATE_URL; unset it"
            )
        return lines


def get_settings() -> FleetSettings:
    """Fresh settings each call: tests and the demo change the environment between runs."""
    return FleetSettings()


def check(error: str | None, asset: str) -> None:
    """Fail a source's use with the one line naming its bad setting(s), if any."""
    if error:
        raise InvalidSettingError(f"{error} (needed by {asset})")


def require(value: str | None, variable: str, asset: str) -> str:
    """Return a configured value or fail with the one line a user needs to fix it."""
    if value is None or not str(value).strip():
        raise MissingCredentialError(f"{variable} is not set (needed by {asset})")
    return str(value)
