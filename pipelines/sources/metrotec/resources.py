"""The Metrotec resource: configuration in, a ready `MetrotecClient` out."""

from __future__ import annotations

from pipelines.resources import SourceResource, make_limiter, secret
from pipelines.settings import (
    FleetSettings,
    InvalidSettingError,
    Parsed,
    first_error,
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

_PATHS = MetrotecPaths()


class MetrotecResource(SourceResource):
    """Metrotec settings (the contract's plus METROTEC_RATE_LIMIT, _WINDOW_DAYS and _PATH_*).

    The password arrives through `EnvVar`; the username is not a secret but is only ever sent
    in the login body.
    """

    base_url: str | None = None
    username: str | None = None
    password: str | None = None
    api_version: str = "1.1.0"
    user_agent: str
    rate_limit: str = "5/1"
    state_url: str | None = None  # FLEET_STATE_URL (an EnvVar: it may hold a password)
    window_days: int = MAX_WINDOW_DAYS
    token_refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S
    path_login: str = _PATHS.login
    path_vehicles: str = _PATHS.vehicles
    path_routelog: str = _PATHS.routelog
    path_stops: str = _PATHS.stops
    path_refuels: str = _PATHS.refuels
    path_fuel_levels: str = _PATHS.fuel_levels

    @classmethod
    def from_settings(cls, settings: FleetSettings) -> MetrotecResource:
        """Parse the Metrotec variables; a bad one (or a bad FLEET_START_DATE, which the daily
        partitions need) is carried to Metrotec's runs instead of failing the code location."""
        rate = Parsed.of(
            "METROTEC_RATE_LIMIT",
            settings.metrotec_rate_limit,
            rate_limit,
            "N/SECONDS (e.g. 5/1)",
            "5/1",
        )
        window = Parsed.of(
            "METROTEC_WINDOW_DAYS",
            settings.metrotec_window_days,
            _window_days,
            f"a whole number of days 1..{MAX_WINDOW_DAYS}",
            MAX_WINDOW_DAYS,
        )
        margin = Parsed.of(
            "METROTEC_TOKEN_REFRESH_MARGIN_S",
            settings.metrotec_token_refresh_margin_s,
            positive_seconds,
            "a number of seconds > 0",
            DEFAULT_REFRESH_MARGIN_S,
        )
        http, http_parsed = cls.http_settings(settings)
        return cls(
            **http,
            base_url=settings.metrotec_base_url,
            username=settings.metrotec_username,
            password=secret("METROTEC_PASSWORD"),
            api_version=settings.metrotec_api_version,
            user_agent=settings.metrotec_user_agent,
            rate_limit=rate.value,
            state_url=secret("FLEET_STATE_URL"),
            window_days=window.value,
            token_refresh_margin_s=margin.value,
            setting_error=first_error(settings.start_date, rate, window, margin, *http_parsed),
            path_login=settings.metrotec_path_login,
            path_vehicles=settings.metrotec_path_vehicles,
            path_routelog=settings.metrotec_path_routelog,
            path_stops=settings.metrotec_path_stops,
            path_refuels=settings.metrotec_path_refuels,
            path_fuel_levels=settings.metrotec_path_fuel_levels,
        )

    @property
    def paths(self) -> MetrotecPaths:
        return MetrotecPaths(
            login=self.path_login,
            vehicles=self.path_vehicles,
            routelog=self.path_routelog,
            stops=self.path_stops,
            refuels=self.path_refuels,
            fuel_levels=self.path_fuel_levels,
        )

    def checked_window_days(self) -> int:
        if not 1 <= self.window_days <= MAX_WINDOW_DAYS:
            raise InvalidSettingError(
                f"METROTEC_WINDOW_DAYS={self.window_days} is not a whole number of days "
                f"1..{MAX_WINDOW_DAYS}"
            )
        return self.window_days

    def client(self, asset: str) -> MetrotecClient:
        """Raises `SettingError` naming the first unset or invalid variable."""
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
        # One ledger key per account: every process pulling it shares METROTEC_RATE_LIMIT.
        limiter = make_limiter(
            f"metrotec|{base_url.rstrip('/')}|{username}", self.rate_limit, self.state_url
        )
        return MetrotecClient(
            base_url,
            username=username,
            password=password,
            api_version=api_version,
            user_agent=user_agent,
            paths=self.paths,
            limiter=limiter,
            refresh_margin_s=self.token_refresh_margin_s,
            retry=self.retry_policy(),
            timeout=self.http_read_timeout_s,
        )


def _window_days(text: str) -> int:
    days = positive_int(text)
    if days > MAX_WINDOW_DAYS:
        raise ValueError(text)
    return days
