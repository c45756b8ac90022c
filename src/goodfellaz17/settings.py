"""Service configuration, read once from the environment at the entry point.

Every variable is `GOODFELLAZ17_*` except `DATABASE_URL`. A bad value stops
start-up with one line that names the variable (`ConfigError`); nothing here
ever reads the environment at import time.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from goodfellaz17.domain.destinations import AllowList, DestinationPolicy
from goodfellaz17.domain.queue import RUN_LENGTH

ENV_PREFIX = "GOODFELLAZ17_"


class Role(StrEnum):
    """What an API key may do. `operator` may do everything."""

    READ = "read"
    ORDERS = "orders"
    OPERATOR = "operator"


class ConfigError(Exception):
    """A configuration value is unusable; the message names the variable."""


class ApiKey:
    """A configured key and its role. The secret never appears in repr()."""

    __slots__ = ("role", "secret")

    def __init__(self, secret: str, role: Role) -> None:
        self.secret = secret
        self.role = role

    def __repr__(self) -> str:
        return f"ApiKey(role={self.role.value!r}, secret='**********')"


def parse_api_keys(raw: str) -> list[ApiKey]:
    """Parse `key:role,key:role`. Raises ValueError with a readable reason,
    also when one key is listed twice (which role would it have?)."""
    keys: list[ApiKey] = []
    seen: dict[str, int] = {}
    for position, item in enumerate(part.strip() for part in raw.split(",")):
        if not item:
            continue
        secret, sep, role = item.rpartition(":")
        if not sep or not secret:
            raise ValueError(f"entry {position + 1} must look like key:role")
        if secret in seen:
            raise ValueError(
                f"entries {seen[secret]} and {position + 1} are the same key: "
                "list each key once, with one role"
            )
        seen[secret] = position + 1
        try:
            keys.append(ApiKey(secret, Role(role.strip().lower())))
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise ValueError(
                f"entry {position + 1} has unknown role {role!r} (allowed: {allowed})"
            ) from None
    return keys


# The placeholders of deploy/k8s/secret.example.yaml and their usual
# spellings: a secret that contains one was copied, not generated.
_PLACEHOLDERS = ("change-me", "changeme", "change_me")
MIN_PRODUCTION_KEY_LENGTH = 16
MIN_SESSION_SECRET_LENGTH = 32


def is_placeholder(secret: str) -> bool:
    lowered = secret.lower()
    return any(p in lowered for p in _PLACEHOLDERS)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("goodfellaz17", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")
    # A direct (or session-pooled) connection for what needs session state:
    # the worker's LISTEN and the migration lock. Set it when DATABASE_URL
    # points at a transaction-mode pooler such as PgBouncer.
    direct_database_url: SecretStr | None = None
    data_dir: Path = Field(default_factory=default_data_dir)
    env: Literal["development", "production"] = "development"

    worker_enabled: bool = True
    # Defaults to the queue's run length: see domain/queue.py.
    worker_batch_size: int = Field(default=RUN_LENGTH, ge=1, le=1000)
    worker_poll_interval_seconds: float = Field(default=10.0, gt=0, le=3600)
    worker_concurrency: int = Field(default=32, ge=1, le=1000)
    worker_claimers: int = Field(default=2, ge=1, le=16)
    worker_grace_period_seconds: float = Field(default=25.0, ge=0, le=3600)
    worker_heartbeat_seconds: float = Field(default=5.0, gt=0, le=600)
    worker_rescue_interval_seconds: float = Field(default=15.0, gt=0, le=3600)
    worker_stale_after_seconds: float = Field(default=30.0, gt=0, le=86400)
    max_attempts: int = Field(default=5, ge=1, le=100)
    # A worker crash is not a delivery failure: orphanings have their own,
    # larger budget; past it the task is dead-lettered as a likely poison pill.
    max_orphanings: int = Field(default=20, ge=1, le=1000)
    task_lease_seconds: float = Field(default=300.0, gt=0, le=86400)
    task_size: int = Field(default=400, ge=1, le=1_000_000)
    max_order_quantity: int = Field(default=1_000_000, ge=1, le=2_000_000_000)
    backoff_base_seconds: float = Field(default=2.0, ge=0, le=3600)
    backoff_max_seconds: float = Field(default=300.0, ge=0, le=86400)
    circuit_failure_threshold: int = Field(default=5, ge=1, le=1000)
    circuit_cooldown_seconds: float = Field(default=30.0, ge=0, le=86400)

    api_keys: Annotated[list[ApiKey], NoDecode] = Field(default_factory=list)
    # Signs the console's cookies. Required in production; in development it
    # is generated once and kept in the data folder (api/console/secret.py).
    session_secret: SecretStr | None = None
    console_session_idle_seconds: float = Field(default=1800.0, ge=1, le=86400)
    console_session_max_seconds: float = Field(default=28800.0, ge=1, le=7 * 86400)
    # Failed authentication per client address (API and console login): this
    # many at once, then one more every refill interval; past it, 429.
    auth_failure_burst: int = Field(default=10, ge=1, le=1_000_000)
    auth_failure_refill_seconds: float = Field(default=6.0, gt=0, le=3600)
    # /docs, /redoc, /openapi.json: "public", "key" (a read key) or "off".
    # Unset: public in development, key in production.
    api_docs: Literal["public", "key", "off"] | None = None
    chaos_allowed: bool = True
    chaos_default_ttl_seconds: int = Field(default=900, ge=1, le=86400)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    invariant_check_interval_seconds: float = Field(default=60.0, ge=0, le=86400)  # 0 = off
    # A global check asked for over the API by a non-operator key reuses the
    # latest one this young (at least 1 s: a read key cannot make the API
    # scan every order, and log it, on every request).
    invariant_reuse_seconds: float = Field(default=10.0, ge=1, le=3600)

    # Storage: finished orders and their tasks are kept this long, then their
    # day partitions are dropped (services/storage.py). The maintenance
    # leader runs every interval (0 = never in this process) and keeps the
    # partitions of the next days ready; with require_archive a day is only
    # dropped once `goodfellaz17 archive` has exported it.
    retention_days: int = Field(default=30, ge=1, le=36500)
    maintenance_interval_seconds: float = Field(default=600.0, ge=0, le=86400)
    partition_days_ahead: int = Field(default=3, ge=1, le=366)
    retention_require_archive: bool = False
    max_body_bytes: int = Field(default=65536, ge=1024, le=10_000_000)

    db_pool_min_size: int = Field(default=1, ge=0, le=1000)
    db_pool_max_size: int = Field(default=10, ge=1, le=1000)
    db_prepare_threshold: int | None = Field(default=5, ge=0)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=600)
    db_statement_timeout_ms: int = Field(default=30000, ge=0)

    sim_latency_ms: float = Field(default=20.0, ge=0, le=600000)
    sim_failure_rate: float = Field(default=0.0, ge=0, le=1)
    sim_permanent_failure_rate: float = Field(default=0.0, ge=0, le=1)
    sim_seed: int | None = None
    sim_instant: bool = False
    sim_use_node_rate: bool = True
    sim_ledger_path: Path | None = None
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    webhook_deadline_seconds: float = Field(default=30.0, gt=0, le=3600)
    webhook_verify_tls: bool = True
    webhook_allowed_destinations: Annotated[AllowList, NoDecode] = Field(default_factory=AllowList)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_api_keys(value)
        return value

    @field_validator("webhook_allowed_destinations", mode="before")
    @classmethod
    def _parse_allowed_destinations(cls, value: Any) -> Any:
        if isinstance(value, str):
            return AllowList.parse(value)
        return value

    @field_validator("database_url", "direct_database_url", mode="before")
    @classmethod
    def _blank_url_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("db_prepare_threshold", mode="before")
    @classmethod
    def _blank_threshold_is_off(cls, value: Any) -> Any:
        # Empty (or "none"/"off") turns server-side prepared statements off,
        # as a transaction-mode pooler without prepared-statement support needs.
        if isinstance(value, str) and value.strip().lower() in ("", "none", "off"):
            return None
        return value

    @field_validator("database_url", "direct_database_url")
    @classmethod
    def _check_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("must be a postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.backoff_max_seconds < self.backoff_base_seconds:
            raise ValueError(
                "GOODFELLAZ17_BACKOFF_MAX_SECONDS must be >= GOODFELLAZ17_BACKOFF_BASE_SECONDS"
            )
        if self.worker_heartbeat_seconds * 2 >= self.task_lease_seconds:
            raise ValueError(
                "GOODFELLAZ17_WORKER_HEARTBEAT_SECONDS must be less than half of "
                "GOODFELLAZ17_TASK_LEASE_SECONDS, or leases expire between heartbeats"
            )
        if self.direct_database_url is not None and self.database_url is None:
            raise ValueError(
                "GOODFELLAZ17_DIRECT_DATABASE_URL needs DATABASE_URL "
                "(the embedded PostgreSQL is always direct)"
            )
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError(
                "GOODFELLAZ17_DB_POOL_MIN_SIZE must be <= GOODFELLAZ17_DB_POOL_MAX_SIZE"
            )
        if self.env == "production":
            self._check_production()
        return self

    def _check_production(self) -> None:
        """What development tolerates and production must not: each refusal
        names its variable and never echoes a secret."""
        for key in self.api_keys:
            if len(key.secret) < MIN_PRODUCTION_KEY_LENGTH:
                raise ValueError(
                    f"GOODFELLAZ17_API_KEYS: keys must be at least {MIN_PRODUCTION_KEY_LENGTH} "
                    "characters in production"
                )
            if is_placeholder(key.secret):
                raise ValueError(
                    "GOODFELLAZ17_API_KEYS: a key is a placeholder (CHANGE-ME): generate real "
                    "keys, e.g. with `openssl rand -hex 24`"
                )
        if self.session_secret is None:
            raise ValueError(
                "GOODFELLAZ17_SESSION_SECRET: required in production (at least "
                f"{MIN_SESSION_SECRET_LENGTH} random characters, e.g. `openssl rand -hex 32`)"
            )
        secret = self.session_secret.get_secret_value()
        if len(secret) < MIN_SESSION_SECRET_LENGTH or is_placeholder(secret):
            raise ValueError(
                f"GOODFELLAZ17_SESSION_SECRET: must be at least {MIN_SESSION_SECRET_LENGTH} "
                "random characters in production, not a placeholder"
            )
        if not self.webhook_verify_tls:
            raise ValueError(
                "GOODFELLAZ17_WEBHOOK_VERIFY_TLS: must stay true in production "
                "(without it anyone on the path can read and answer deliveries)"
            )

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def webhook_destinations(self) -> DestinationPolicy:
        """Where webhooks may point: public hosts, loopback in development,
        and what GOODFELLAZ17_WEBHOOK_ALLOWED_DESTINATIONS names."""
        return DestinationPolicy.for_environment(
            production=self.is_production, allowed=self.webhook_allowed_destinations
        )

    @property
    def api_docs_access(self) -> Literal["public", "key", "off"]:
        if self.api_docs is not None:
            return self.api_docs
        return "key" if self.is_production else "public"


def _variable_name(loc: tuple[int | str, ...]) -> str:
    if not loc:
        return ENV_PREFIX + "*"
    field = str(loc[0])
    if field.lower() == "database_url":
        return "DATABASE_URL"
    return ENV_PREFIX + field.upper()


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (plus overrides), or raise ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        if message.startswith(ENV_PREFIX):
            raise ConfigError(message) from None
        name = _variable_name(tuple(error["loc"]))
        raw = os.environ.get(name)
        secret = any(word in name for word in ("KEY", "URL", "SECRET"))
        shown = "" if raw is None or secret else f" (got {raw!r})"
        raise ConfigError(f"{name}: {message}{shown}") from None
