"""One settings object for every entry point, read from ``STARKMATTER_*`` variables.

Settings are built on first use by :func:`get_settings` (cached), never at import time, so
tests can construct their own :class:`Settings` and pass it explicitly.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

import pydantic
import pydantic_settings

ENV_PREFIX = "STARKMATTER_"


class SettingsError(Exception):
    """Configuration that the platform refuses to start with; names the bad variable."""


class Settings(pydantic_settings.BaseSettings):
    model_config = pydantic_settings.SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, validate_default=True
    )

    env: Literal["dev", "prod"] = "prod"
    """``dev`` generates missing secrets and starts embedded servers; ``prod`` requires them."""

    service_name: str = "api"
    """Recorded in audit rows and logs as *where* a change came from."""

    database_url: str | None = None
    """``postgresql://`` URL; unset in dev means embedded PostgreSQL."""

    redis_url: str | None = None
    """``redis://`` URL; unset in dev means embedded Redis."""

    data_dir: Path = Path(".starkmatter")
    """Dev-mode state (embedded database files, generated keys); kept across runs."""

    api_host: str = "127.0.0.1"
    """address every server of the process binds (API, gateway, probes); loopback by default
    for one machine, 0.0.0.0 in pods (the chart and the operator set it)"""
    api_port: int = pydantic.Field(default=8000, ge=0, le=65535)
    gateway_port: int = pydantic.Field(default=8001, ge=0, le=65535)
    metrics_port: int = pydantic.Field(default=9100, ge=0, le=65535)
    """where ``/metrics`` (and ``/healthz``, ``/readyz``) are served, apart from any public
    port: Prometheus and the alert evaluator scrape it; the Ingress never routes to it"""

    api_docs: bool = False
    """Serve ``/docs`` and ``/openapi.json`` on the API's public port. Off unless set (on in
    ``starkmatter dev``): the schema maps every route for whoever reaches the port."""

    db_pool_min: int = pydantic.Field(default=2, ge=1)
    db_pool_max: int = pydantic.Field(default=10, ge=1)

    jwt_private_key: pydantic.SecretStr | None = None
    """PEM RSA private key that signs access tokens; only the API needs it."""
    jwt_private_key_file: Path | None = None
    jwt_public_key: str | None = None
    """PEM public key that verifies access tokens; every service needs it."""
    jwt_public_key_file: Path | None = None
    jwt_issuer: str = "starkmatter"
    jwt_audience: str = "starkmatter-api"
    access_token_ttl_s: int = pydantic.Field(default=900, ge=30, le=86_400)
    """Short-lived: revocation is immediate anyway, through the Redis session."""
    refresh_token_ttl_s: int = pydantic.Field(default=7 * 86_400, ge=300)
    jwt_leeway_s: int = pydantic.Field(default=5, ge=0, le=60)
    """Tolerated clock difference between services when checking exp/nbf/iat."""
    session_cache_s: float = pydantic.Field(default=1.0, ge=0, le=10)
    """How long an API process trusts a session it found open without asking Redis again;
    a logout reaches every process at once over pub/sub, this bounds what a lost message
    or an expired key can leave behind. 0 asks Redis on every request."""

    registration_enabled: bool = True
    login_max_failures: int = pydantic.Field(default=5, ge=1)
    """Failed logins for one account before it is locked for ``login_lockout_s``."""
    login_lockout_s: int = pydantic.Field(default=900, ge=1)
    login_rate_per_minute: int = pydantic.Field(default=30, ge=1)
    """Login attempts per client address per minute, whatever the account."""

    log_level: str = "INFO"
    log_json: bool = True

    @pydantic.field_validator("database_url")
    @classmethod
    def _postgres_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @pydantic.field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @pydantic.model_validator(mode="after")
    def _prod_needs_servers(self) -> Settings:
        if self.env == "prod":
            missing = [
                name
                for name, value in (
                    ("DATABASE_URL", self.database_url),
                    ("REDIS_URL", self.redis_url),
                )
                if value is None
            ]
            if missing:
                raise ValueError(
                    "required outside dev mode: " + ", ".join(ENV_PREFIX + m for m in missing)
                )
        return self

    def private_key_pem(self) -> str | None:
        if self.jwt_private_key is not None:
            return self.jwt_private_key.get_secret_value()
        if self.jwt_private_key_file is not None:
            return self.jwt_private_key_file.read_text()
        return None

    def public_key_pem(self) -> str | None:
        if self.jwt_public_key is not None:
            return self.jwt_public_key
        if self.jwt_public_key_file is not None:
            return self.jwt_public_key_file.read_text()
        return None


def load(**overrides: object) -> Settings:
    """Build settings from the environment, turning validation errors into one clear message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"])
            name = ENV_PREFIX + field.upper() if field else "configuration"
            problems.append(f"{name}: {err['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None


def for_command(command: str) -> Settings:
    """Settings for one entry point: ``dev`` runs in dev mode with the API docs on (unless
    STARKMATTER_API_DOCS says otherwise), and each command names its PostgreSQL and Redis
    clients after itself unless STARKMATTER_SERVICE_NAME is set."""
    overrides: dict[str, object] = {"env": "dev"} if command == "dev" else {}
    if command == "dev" and ENV_PREFIX + "API_DOCS" not in os.environ:
        overrides["api_docs"] = True
    if ENV_PREFIX + "SERVICE_NAME" not in os.environ:
        overrides["service_name"] = command
    return load(**overrides)


@functools.cache
def get_settings() -> Settings:
    return load()
