"""Live sessions in Redis: a token is honoured only while its session key exists.

Deleting ``session:{sid}`` revokes every access token of that login at once, on every
service, without waiting for the tokens to expire.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from starkmatter.core import errors
from starkmatter.core.auth import tokens


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def key(session_id: str) -> str:
    return f"session:{session_id}"


async def open_session(redis: aioredis.Redis, session_id: str, user_id: str, ttl_s: int) -> None:
    await redis.hset(key(session_id), mapping={"user_id": user_id})
    await redis.expire(key(session_id), ttl_s)


async def extend(redis: aioredis.Redis, session_id: str, ttl_s: int) -> None:
    await redis.expire(key(session_id), ttl_s)


async def close(redis: aioredis.Redis, *session_ids: str) -> None:
    if session_ids:
        await redis.delete(*(key(sid) for sid in session_ids))


async def authenticate(
    redis: aioredis.Redis, token: str, public_pem: str, config: tokens.TokenConfig
) -> tokens.Principal:
    """Verify a bearer token and that its session is still open."""
    principal = tokens.decode(token, public_pem, config)
    owner = await redis.hget(key(principal.session_id), "user_id")
    if owner is None or _text(owner) != principal.user_id:
        raise errors.Unauthenticated("session has ended", code="session_revoked")
    return principal
