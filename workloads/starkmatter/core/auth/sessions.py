"""Live sessions in Redis: a token is honoured only while its session key exists.

Deleting ``session:{sid}`` revokes every access token of that login at once, on every
service, without waiting for the tokens to expire. :func:`close` also announces the
revocation on :data:`REVOKED_CHANNEL`, so a process that remembers recently checked
sessions (:class:`OpenSessions`) forgets them at once instead of asking Redis on every
request.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis

from starkmatter.core import errors, logs
from starkmatter.core.auth import tokens

REVOKED_CHANNEL = "sessions:revoked"
"""pub/sub channel of revoked session ids (one message per revocation, ids space-separated)"""
_log = logs.get_logger("starkmatter.auth")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def key(session_id: str) -> str:
    return f"session:{session_id}"


async def open_session(redis: aioredis.Redis, session_id: str, user_id: str, ttl_s: int) -> None:
    await redis.hset(key(session_id), mapping={"user_id": user_id})
    await redis.expire(key(session_id), ttl_s)


async def extend(redis: aioredis.Redis, session_id: str, ttl_s: int) -> None:
    await redis.expire(key(session_id), ttl_s)


class OpenSessions:
    """Sessions this process found open in Redis, remembered for at most ``ttl_s``.

    Checking the session key is a Redis round trip on every request (about a tenth of an
    order's API time). A remembered session is trusted only while :meth:`follow` listens
    on :data:`REVOKED_CHANNEL`: a revocation is forgotten as soon as it arrives, and
    whatever a lost message or an expired key leaves behind is asked again after
    ``ttl_s`` at the latest. ``ttl_s`` = 0 asks Redis every time.
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._open: dict[str, tuple[str, float]] = {}
        self._generation = 0
        self._following = False

    def owner(self, session_id: str) -> str | None:
        """The user of a session remembered open, or None (then ask Redis)."""
        known = self._open.get(session_id) if self._following else None
        if known is None:
            return None
        user_id, until = known
        if time.monotonic() >= until:
            del self._open[session_id]
            return None
        return user_id

    def generation(self) -> int:
        """Taken before asking Redis; :meth:`remember` ignores answers older than a revocation."""
        return self._generation

    def remember(self, session_id: str, user_id: str, generation: int) -> None:
        if not self._following or generation != self._generation or self.ttl_s <= 0:
            return
        if len(self._open) >= 65_536:
            self._open.clear()
        self._open[session_id] = (user_id, time.monotonic() + self.ttl_s)

    def forget(self, *session_ids: str) -> None:
        self._generation += 1
        for sid in session_ids:
            self._open.pop(sid, None)

    def _stop_trusting(self) -> None:
        self._following = False
        self._generation += 1
        self._open.clear()

    def on_message(self, message: dict[str, Any]) -> None:
        """One message of the revocations subscription."""
        kind = message["type"]
        if kind == "message":
            self.forget(*_text(message["data"]).split())
        elif kind == "subscribe":
            # Confirmed: at first, or again after the client reconnected on its own, when
            # revocations may have been missed meanwhile.
            self._stop_trusting()
            self._following = True
        elif kind == "unsubscribe":
            self._stop_trusting()
        # Anything else (the health check's pong) says nothing about sessions.

    async def follow(self, redis: aioredis.Redis, *, retry_s: float = 1.0) -> None:
        """Listen for revocations until cancelled; remembered sessions are trusted only
        while subscribed."""
        while True:
            try:
                async with redis.pubsub() as pubsub:
                    await pubsub.subscribe(REVOKED_CHANNEL)
                    async for message in pubsub.listen():
                        self.on_message(message)
            except (aioredis.RedisError, OSError) as exc:
                _log.warning("auth.revocations_unfollowed", error=repr(exc))
            finally:
                self._stop_trusting()
            await asyncio.sleep(retry_s)


async def close(
    redis: aioredis.Redis, *session_ids: str, remembered: OpenSessions | None = None
) -> None:
    """Revoke sessions: delete their keys and announce it to every process."""
    if not session_ids:
        return
    if remembered is not None:
        remembered.forget(*session_ids)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.delete(*(key(sid) for sid in session_ids))
        pipe.publish(REVOKED_CHANNEL, " ".join(session_ids))
        await pipe.execute()


async def authenticate(
    redis: aioredis.Redis,
    token: str,
    public_pem: str,
    config: tokens.TokenConfig,
    remembered: OpenSessions | None = None,
) -> tokens.Principal:
    """Verify a bearer token and that its session is still open."""
    principal = tokens.decode(token, public_pem, config)
    sid = principal.session_id
    if remembered is not None and remembered.owner(sid) == principal.user_id:
        return principal
    generation = remembered.generation() if remembered is not None else 0
    owner = await redis.hget(key(sid), "user_id")
    if owner is None or _text(owner) != principal.user_id:
        raise errors.Unauthenticated("session has ended", code="session_revoked")
    if remembered is not None:
        remembered.remember(sid, principal.user_id, generation)
    return principal
