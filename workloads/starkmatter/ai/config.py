"""AI settings, read from ``STARKMATTER_AI_*`` and the Anthropic SDK's own variables."""

from __future__ import annotations

from typing import Literal

import pydantic
import pydantic_settings

DEFAULT_MODEL = "claude-sonnet-4-6"
"""A current model; a unit test fails when the SDK lists it as deprecated."""


class AISettings(pydantic_settings.BaseSettings):
    model_config = pydantic_settings.SettingsConfigDict(
        env_prefix="STARKMATTER_AI_", extra="ignore", frozen=True
    )

    api_key: pydantic.SecretStr | None = pydantic.Field(
        default=None, validation_alias=pydantic.AliasChoices("ANTHROPIC_API_KEY", "api_key")
    )
    """Unset means every request is answered by the offline analyst (labelled as such)."""
    base_url: str | None = pydantic.Field(
        default=None, validation_alias=pydantic.AliasChoices("ANTHROPIC_BASE_URL", "base_url")
    )
    model: str = DEFAULT_MODEL
    max_tokens: int = pydantic.Field(default=1024, ge=64, le=8192)
    """Upper bound on the model's answer; the response checks cap lengths further."""
    context_token_budget: int = pydantic.Field(default=3000, ge=200, le=100_000)
    """Tokens (estimated at 4 characters each) the prepared context may use."""
    request_timeout_s: float = pydantic.Field(default=60.0, gt=0)
    max_attempts: int = pydantic.Field(default=3, ge=1, le=10)
    """Upstream calls per analysis, first try included; the SDK's own retries are off."""
    backoff_base_s: float = pydantic.Field(default=0.5, ge=0)
    backoff_max_s: float = pydantic.Field(default=20.0, ge=0)
    """A rate-limit ``retry-after`` longer than this is not waited for: the analyst falls back."""
    breaker_failures: int = pydantic.Field(default=5, ge=1)
    """Consecutive failed calls that open the circuit."""
    breaker_reset_s: float = pydantic.Field(default=30.0, gt=0)
    """How long the circuit stays open before one trial call is let through."""
    cache_ttl_s: int = pydantic.Field(default=900, ge=1)
    quota_per_hour: int = pydantic.Field(default=30, ge=1)
    """Analyses per user per hour that are not served from the cache."""
    min_relevance: float = pydantic.Field(default=0.3, ge=0, le=1)
    """Answers scoring below this (0..1) are rejected and the offline analyst answers."""
    coalesce_wait_s: float = pydantic.Field(default=240.0, gt=0)
    """How long a request waits at most for an identical one in flight in another process
    (longer than the slowest analysis: attempts x timeout + backoff)."""
    coalesce_lock_ttl_s: float = pydantic.Field(default=10.0, gt=0.1, le=600)
    """Lifetime of the cross-process in-flight lock; its holder renews it while it works,
    so this is how soon a crashed holder's request is taken over by a waiting process."""
    coalesce_poll_s: float = pydantic.Field(default=0.05, gt=0, le=5)
    """How often a request waiting on another process's identical request looks for its
    answer (a Redis read each time)."""
    hit_history_commit: Literal["durable", "async"] = "durable"
    """How a cache hit's history row is committed. ``durable`` (default) waits for the WAL
    flush like any commit, so a hit's p99 is at least the disk's fsync p99. ``async`` commits
    it with ``synchronous_commit = off`` for that one transaction: the row survives an API
    crash but a PostgreSQL or machine crash may lose the last ~0.6 s of hit rows (never
    an analysis, which is always committed durably)."""
    snapshot_ttl_s: int = pydantic.Field(default=3600, ge=60)
    """How long an analysis stream's snapshot (``snapshot:ai:analysis:{id}``) is kept for
    late subscribers; the durable record is ``GET /ai/analyses/{id}``."""
