"""Ending the connections whose login has ended: revoked sessions and expired tokens.

A token is verified when a connection opens (or sends ``auth``); the connection may then
stay open for hours. So the gateway keeps its clients indexed by session and:

* follows :data:`CHANNEL` (on the fan-out's subscriber connection), on which the API
  announces every logout and every session revoked for refresh-token reuse, and ends each
  client of a revoked session at once (``session_revoked``);
* asks Redis which of those sessions still exist after the subscriber re-subscribes and
  every ``recheck_s``, since pub/sub loses what is published while its connection is down
  (and a key may simply expire);
* ends each client when its token expires, plus the verification leeway
  (``token_expired``).

How a client is ended (an error frame, close code 1008) is the server's business: it is
the ``end`` callback here. A principal without an expiry was not decoded from a token (a
benchmark's stand-in authentication): it has no session in Redis to follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from starkmatter.core import logs
from starkmatter.core.auth import sessions, tokens
from starkmatter.gateway import connections

log = logs.get_logger(__name__)

End = Callable[[connections.Client, str, str], None]
"""Ends a client: (client, error code, message)."""

CHANNEL = sessions.REVOKED_CHANNEL
"""Revoked session ids, space-separated (published by ``sessions.close``)."""

REMEMBER_REVOKED_S = 60.0
"""How long a revoked session id is remembered: a connection whose token was checked just
before the revocation, but set up just after it was announced, is still ended."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Logins:
    """The open connections by session, ended when their session or token ends."""

    def __init__(
        self, redis: aioredis.Redis, end: End, *, leeway_s: float, recheck_s: float
    ) -> None:
        self.redis = redis
        self.end = end
        self.leeway_s = leeway_s
        self.recheck_s = recheck_s
        self.by_session: dict[str, set[connections.Client]] = {}
        self._session_of: dict[connections.Client, str] = {}
        self._expiries: dict[connections.Client, asyncio.TimerHandle] = {}
        self._revoked: dict[str, float] = {}
        """Session id -> when its revocation was seen (monotonic), for REMEMBER_REVOKED_S."""
        self._missed = asyncio.Event()
        """Revocations may have been lost: check every session now, not at the next round."""

    # ------------------------------------------------------------------ clients

    def add(self, client: connections.Client) -> bool:
        """Index an authenticated client and schedule its token's expiry; False if its
        session is already known revoked (the client has been ended)."""
        principal = client.principal
        assert principal is not None
        self.discard(client)  # a new token (re-auth) replaces the old one's session and expiry
        if principal.expires_at is None:
            return True
        sid = principal.session_id
        if sid in self._revoked:
            self.end(client, "session_revoked", "session has ended")
            return False
        self.by_session.setdefault(sid, set()).add(client)
        self._session_of[client] = sid
        delay = (principal.expires_at - datetime.datetime.now(datetime.UTC)).total_seconds()
        self._expiries[client] = asyncio.get_running_loop().call_later(
            max(delay + self.leeway_s, 0.0), self._expire, client
        )
        return True

    def discard(self, client: connections.Client) -> None:
        handle = self._expiries.pop(client, None)
        if handle is not None:
            handle.cancel()
        sid = self._session_of.pop(client, None)
        if sid is None:
            return
        holders = self.by_session.get(sid)
        if holders is not None:
            holders.discard(client)
            if not holders:
                del self.by_session[sid]

    def _expire(self, client: connections.Client) -> None:
        self._expiries.pop(client, None)
        self.end(client, "token_expired", "access token expired: reconnect with a fresh one")

    # ------------------------------------------------------------------ sessions

    def revoke(self, *session_ids: str) -> None:
        """End every client of these sessions, and remember them for a while."""
        now = time.monotonic()
        for sid, seen in list(self._revoked.items()):
            if now - seen > REMEMBER_REVOKED_S:
                del self._revoked[sid]
        for sid in session_ids:
            self._revoked[sid] = now
            for client in list(self.by_session.get(sid, ())):
                self.end(client, "session_revoked", "session has ended")

    async def still_open(self, principal: tokens.Principal) -> bool:
        """Ask Redis whether the principal's session exists now; if not, end its clients."""
        if principal.expires_at is None:
            return True
        sid = principal.session_id
        if sid not in self._revoked and await self.redis.exists(sessions.key(sid)):
            return True
        self.revoke(sid)
        return False

    async def recheck(self) -> None:
        """End the clients of every indexed session whose key is gone from Redis."""
        known = list(self.by_session)
        if not known:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in known:
                pipe.exists(sessions.key(sid))
            found = await pipe.execute()
        gone = [sid for sid, exists in zip(known, found, strict=True) if not exists]
        if gone:
            log.info("gateway.sessions_gone", sessions=len(gone))
            self.revoke(*gone)

    def revoked(self, payload: bytes) -> None:
        """One message of :data:`CHANNEL` (synchronous: called by the fan-out)."""
        self.revoke(*_text(payload).split())

    def missed(self) -> None:
        """The subscriber lost its connection: announcements may have been lost with it."""
        self._missed.set()

    async def recheck_periodically(self) -> None:
        """Check every session each ``recheck_s``, and at once after :meth:`missed`."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.recheck_s):
                    await self._missed.wait()
            self._missed.clear()
            try:
                await self.recheck()
            except (aioredis.RedisError, OSError) as exc:
                log.warning("gateway.sessions_recheck_failed", error=repr(exc))
