"""The Metrotec resource: configuration in, a ready `MetrotecClient` out."""

from __future__ import annotations

from dataclasses import fields
from typing import ClassVar

from pydantic import Field

from pipelines import __version__
from pipelines.resources import RateLimitedResource, Var, VarGroup
from pipelines.settings import (
    InvalidSettingError,
    positive_int,
    positive_seconds,
    rate_limit,
    require,
)
from pipelines.sources.metrotec.client import (
    DEFAULT_REFRESH_MARGIN_S,
    MAX_WINDOW_DAYS,
    MetrotecClient,
    MetrotecPaths,
)


def _window_days(text: str) -> int:
    days = positive_int(text)
    if days > MAX_WINDOW_DAYS:
        raise ValueError(text)
    return days


class MetrotecResource(RateLimitedResource):
    """Metrotec settings (the contract's plus METROTEC_RATE_LIMIT, _WINDOW_DAYS and _PATH_*).

    The password arrives through `EnvVar`; the username is not a secret but is only ever sent
    in the login body.
    """

    DAILY_PARTITIONS = True
    ENV: ClassVar = {
        **RateLimitedResource.ENV,
        "base_url": Var("METROTEC_BASE_URL"),
        "username": Var("METROTEC_USERNAME"),
        "password": Var("METROTEC_PASSWORD", secret=True),
        "api_version": Var("METROTEC_API_VERSION"),
        "user_agent": Var("METROTEC_USER_AGENT"),
        "rate_limit": Var("METROTEC_RATE_LIMIT", rate_limit, "N/SECONDS (e.g. 5/1)"),
        "window_days": Var(
            "METROTEC_WINDOW_DAYS", _window_days, f"a whole number of days 1..{MAX_WINDOW_DAYS}"
        ),
        "token_refresh_margin_s": Var(
            "METROTEC_TOKEN_REFRESH_MARGIN_S", positive_seconds, "a number of seconds > 0"
        ),
        "paths": VarGroup("METROTEC_PATH_", tuple(f.name for f in fields(MetrotecPaths))),
    }

    base_url: str | None = None
    username: str | None = None
    password: str | None = None
    api_version: str = "1.1.0"
    user_agent: str = f"fleet-pipelines/{__version__}"
    # Metrotec states no limit; be polite.
    rate_limit: str = "5/1"
    window_days: int = MAX_WINDOW_DAYS
    token_refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S
    paths: dict[str, str] = Field(
        default_factory=dict,
        description="Endpoint paths (relative to METROTEC_BASE_URL) other than MetrotecPaths'.",
    )

    def checked_window_days(self) -> int:
        if not 1 <= self.window_days <= MAX_WINDOW_DAYS:
            raise InvalidSettingError(
                f"METROTEC_WINDOW_DAYS={self.window_days} is not a whole number of days "
                f"1..{MAX_WINDOW_DAYS}"
            )
        return self.window_days

    def client(self, asset: str) -> MetrotecClient:
        """Raises `SettingError` naming the first unset or invalid variable (a value the client
        refuses, such as a rate limit set by hand, too)."""
        self.check_settings(asset)
        base_url = require(self.base_url, "METROTEC_BASE_URL", asset)
        username = require(self.username, "METROTEC_USERNAME", asset)
        password = require(self.password, "METROTEC_PASSWORD", asset)
        api_version = require(self.api_version, "METROTEC_API_VERSION", asset)
        user_agent = require(self.user_agent, "METROTEC_USER_AGENT", asset)
        if not (user_agent.isascii() and user_agent.isprintable()):
            raise InvalidSettingError(
                f"METROTEC_USER_AGENT is not printable ASCII, as the API asks (needed by {asset})"
            )
        try:
            return MetrotecClient(
                base_url,
                username=username,
                password=password,
                api_version=api_version,
                user_agent=user_agent,
                paths=MetrotecPaths(**self.paths),
                # One ledger key per account: every process pulling it shares the rate limit.
                limiter=self.limiter(f"metrotec|{base_url.rstrip('/')}|{username}"),
                refresh_margin_s=self.token_refresh_margin_s,
                retry=self.retry_policy(),
                timeout=self.http_read_timeout_s,
            )
        except ValueError as exc:
            raise InvalidSettingError(str(exc)) from None
