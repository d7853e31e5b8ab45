"""Environment (and `.env`) to one typed settings object: the only place config is read."""

from __future__ import annotations

import os
from datetime import date
from functools import cached_property
from pathlib import Path

from dotenv import load_dotenv
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines import __version__


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
        if max_requests < 1 or window_s <= 0:
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


def load_env_file(path: str | Path = ".env") -> None:
    """Make `.env` visible to `EnvVar` too; the shell environment wins, as in pydantic-settings."""
    load_dotenv(path, override=False)


class FleetSettings(BaseSettings):
    """Every variable of DESIGN §3, typed, with its default."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    fleet_lake_dir: Path = Path("./data/lake")
    fleet_duckdb_path: Path = Path("./data/fleet.duckdb")
    fleet_start_date: date = date(2024, 1, 1)
    # Where the machine-wide rate-limit ledger lives (one SQLite file shared by every process).
    fleet_ratelimit_db: Path = Field(
        default_factory=lambda: (
            Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")))
            / "fleet-pipelines"
            / "ratelimits.sqlite3"
        )
    )

    avl_base_url: str | None = None
    avl_token: SecretStr | None = None
    avl_api_key: SecretStr | None = None
    avl_tenant: str | None = None
    avl_devices: str = ""
    avl_timezone: str = "UTC"
    avl_idle_min: int = 0
    avl_duration_min: int = 0
    avl_rate_limit: str = "10/60"

    autopi_base_url: str | None = None
    autopi_token: SecretStr | None = None
    autopi_webhook_secret: SecretStr | None = None

    kt1_base_url: str | None = None
    kt1_token: SecretStr | None = None
    kt1_drain_seconds: float = 240

    metrotec_base_url: str | None = None
    metrotec_username: str | None = None
    metrotec_password: SecretStr | None = None
    metrotec_api_version: str = "1.1.0"
    metrotec_user_agent: str = f"fleet-pipelines/{__version__}"
    # Metrotec states no limit; be polite. Paths are relative to METROTEC_BASE_URL (DESIGN §2).
    metrotec_rate_limit: str = "5/1"
    metrotec_window_days: int = 31
    metrotec_token_refresh_margin_s: float = 60.0
    metrotec_path_login: str = "login"
    metrotec_path_vehicles: str = "vehicles"
    metrotec_path_routelog: str = "routelog"
    metrotec_path_stops: str = "routelog/stops"
    metrotec_path_refuels: str = "fuel/refuels"
    metrotec_path_fuel_levels: str = "fuel/levels"

    @field_validator("avl_rate_limit")
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        RateLimitSpec.parse(value)
        return value

    @cached_property
    def avl_rate(self) -> RateLimitSpec:
        return RateLimitSpec.parse(self.avl_rate_limit)

    @property
    def avl_device_ids(self) -> list[str]:
        return [d.strip() for d in self.avl_devices.split(",") if d.strip()]

    @property
    def lake_dir(self) -> Path:
        return self.fleet_lake_dir.expanduser().resolve()

    @property
    def duckdb_path(self) -> Path:
        return self.fleet_duckdb_path.expanduser().resolve()


def get_settings() -> FleetSettings:
    """Fresh settings each call: tests and the demo change the environment between runs."""
    return FleetSettings()


def require(value: str | SecretStr | None, variable: str, asset: str) -> str:
    """Return a configured value or fail with the one line a user needs to fix it."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None or not str(value).strip():
        raise MissingCredentialError(f"{variable} is not set (needed by {asset})")
    return str(value)
