"""Resources shared by every source: the lake, the base of the vendor resources (built from
the environment by one mechanism, opening clients one way), and the shared rate-limit ledger."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, TypeVar

from dagster import ConfigurableResource, EnvVar, Failure
from pydantic import Field

from pipelines.lake import Lake
from pipelines.object_store import is_object_store
from pipelines.ratelimit import SlidingWindowLimiter
from pipelines.retry import RetryPolicy
from pipelines.settings import (
    Parsed,
    RateLimitSpec,
    SettingError,
    check,
    environment,
    first_error,
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


@dataclass(frozen=True)
class Var:
    """The environment variable of one resource field; the field's default is its default.

    `parse` (with `expected`, the words of the error line) turns the text into the field's
    value; without it the text is used as given. A `secret` only ever reaches the resource as
    an `EnvVar`, so Dagster never shows or stores its value.
    """

    name: str
    parse: Callable[[str], Any] | None = None
    expected: str = ""
    secret: bool = False


@dataclass(frozen=True)
class VarGroup:
    """Variables `<prefix><NAME>` for each of `names`: the field gets {name: text} of those set
    (a source's endpoint paths, whose defaults live with its client)."""

    prefix: str
    names: tuple[str, ...]

    def read(self, env: Mapping[str, str]) -> dict[str, str]:
        return {n: env[key] for n in self.names if (key := self.prefix + n.upper()) in env}


class Closeable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closeable, covariant=True)


class OpensClients(Protocol[C]):
    def client(self, asset: str) -> C: ...


class SourceResource(ConfigurableResource):
    """Base of the vendor resources: a bad setting found when the code loaded is carried here,
    so it fails this source's runs (with its one line) and nothing else."""

    ENV: ClassVar[Mapping[str, Var | VarGroup]] = {}
    """The source's own variables, by resource field: `from_env` reads them."""
    DAILY_PARTITIONS: ClassVar[bool] = False
    """Its assets are daily partitions from FLEET_START_DATE: a bad one fails its runs."""

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

    @classmethod
    def from_env(cls) -> Self:
        """The resource a deployment runs: the source's `ENV` and the shared FLEET_HTTP_*
        variables parsed, each bad one falling back to its default and carried, in one line, to
        this source's runs instead of failing the code location."""
        settings = get_settings()
        env = environment()
        timeout, attempts, budget = settings.http
        values: dict[str, Any] = {
            "http_read_timeout_s": timeout.value,
            "http_max_attempts": attempts.value,
            "http_retry_budget_s": budget.value,
        }
        parsed: list[Parsed[Any]] = [settings.start_date] if cls.DAILY_PARTITIONS else []
        for field, var in cls.ENV.items():
            if isinstance(var, VarGroup):
                values[field] = var.read(env)
            elif var.secret:
                values[field] = secret(var.name)
            elif var.name not in env:
                continue  # the field's default
            elif var.parse is None:
                values[field] = env[var.name]
            else:
                default = cls.model_fields[field].default
                value = Parsed.of(var.name, env[var.name], var.parse, var.expected, default)
                values[field] = value.value
                parsed.append(value)
        return cls(**values, setting_error=first_error(*parsed, timeout, attempts, budget))

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy.bounded(self.http_max_attempts, self.http_retry_budget_s)

    def check_settings(self, asset: str) -> None:
        """Raises `InvalidSettingError` naming the bad variable(s), their values, what is
        expected, and `asset`."""
        check(self.setting_error, asset)

    @contextmanager
    def open_client(self: OpensClients[C], asset: str) -> Iterator[C]:
        """The client `asset` uses, closed when the block ends. A setting it lacks, or one the
        block reads before its first request (a time zone, the devices), fails the run with
        its one line (`credential_failure`)."""
        try:
            client = self.client(asset)
            try:
                yield client
            finally:
                client.close()
        except SettingError as exc:
            raise credential_failure(exc) from None


class RateLimitedResource(SourceResource):
    """A source whose API account has a request limit, kept in the shared state so every
    process using the account shares its window."""

    ENV: ClassVar[Mapping[str, Var | VarGroup]] = {
        "state_url": Var("FLEET_STATE_URL", secret=True)  # it may hold a password
    }

    rate_limit: str
    state_url: str | None = None

    def limiter(self, account: str) -> SlidingWindowLimiter:
        """The limiter of one API account (its ledger key), in the shared state
        (`FLEET_STATE_URL`, else its default): every process on every machine using that state
        shares the account's window."""
        spec = RateLimitSpec.parse(self.rate_limit)
        url = self.state_url or get_settings().fleet_state_url
        return SlidingWindowLimiter(account, spec.max_requests, spec.window_s, shared_state(url))


def credential_failure(exc: SettingError) -> Failure:
    """One line for the run's failure: which variable (and what is wrong with it), for which
    asset."""
    return Failure(description=str(exc), allow_retries=False)
