"""Login throttling with Redis counters: per client address, and lockout per account."""

from __future__ import annotations

import hashlib
import time

import redis.asyncio as aioredis

from starkmatter.core import errors


def _account_key(email: str) -> str:
    # Hashed so that account names never appear in Redis keys (they are personal data).
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


async def check_address(
    redis: aioredis.Redis, address: str, per_minute: int, action: str = "login"
) -> None:
    """Fixed one-minute window per client address and action; raises 429 with Retry-After
    when over."""
    window = int(time.time() // 60)
    key = f"ratelimit:{action}:{address}:{window}"
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, 120)
        count, _ = await pipe.execute()
    if count > per_minute:
        raise errors.TooManyRequests(
            f"too many {action} attempts from this address",
            retry_after_s=60 - int(time.time() % 60),
        )


async def check_not_locked(redis: aioredis.Redis, email: str) -> None:
    ttl = await redis.ttl(f"lockout:until:{_account_key(email)}")
    if ttl > 0:
        raise errors.TooManyRequests(
            "account temporarily locked after repeated failed logins",
            code="account_locked",
            retry_after_s=ttl,
        )


async def record_failure(
    redis: aioredis.Redis, email: str, max_failures: int, lockout_s: int
) -> bool:
    """Count a failed login; returns True when this failure locked the account."""
    account = _account_key(email)
    failures_key = f"lockout:failures:{account}"
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(failures_key)
        pipe.expire(failures_key, lockout_s)
        failures, _ = await pipe.execute()
    if failures >= max_failures:
        await redis.set(f"lockout:until:{account}", "1", ex=lockout_s)
        await redis.delete(failures_key)
        return True
    return False


async def clear_failures(redis: aioredis.Redis, email: str) -> None:
    await redis.delete(f"lockout:failures:{_account_key(email)}")
