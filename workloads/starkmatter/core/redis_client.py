"""Redis access: one asyncio client per process (connection pool inside)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_exceptions

from starkmatter.core import settings


class _SendsUnderTimeout:
    """Sends a command under ``asyncio.timeout``, not redis-py's ``asyncio.wait_for``.

    On Python 3.11 ``wait_for`` drops a cancel that lands as the send completes, so a
    service loop stopped by a cancel (SIGTERM, a feed's stop) went on running; it also ran
    every send as a task of its own. The write's bound (``socket_timeout``) is the same.
    """

    socket_timeout: float | None

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        timeout = self.socket_timeout
        parent: Any = super()
        if not timeout:
            await parent.send_packed_command(command, check_health)
            return
        if not parent.is_connected:
            await parent.connect_check_health(check_health=False)
        if check_health:
            await parent.check_health()  # its PING read keeps the read timeout
        # Cleared for the write alone: the send is then a plain write + drain, bounded here.
        # A connection carries one command at a time: no read runs meanwhile.
        self.socket_timeout = None
        try:
            async with asyncio.timeout(timeout):
                await parent.send_packed_command(command, check_health=False)
        except TimeoutError:
            raise redis_exceptions.TimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout


class _Connection(_SendsUnderTimeout, aioredis.Connection):
    pass


class _SSLConnection(_SendsUnderTimeout, aioredis.SSLConnection):
    pass


class _UnixConnection(_SendsUnderTimeout, aioredis.UnixDomainSocketConnection):
    pass


_OURS: dict[type[Any], type[Any]] = {
    aioredis.Connection: _Connection,
    aioredis.SSLConnection: _SSLConnection,
    aioredis.UnixDomainSocketConnection: _UnixConnection,
}


def create_redis(config: settings.Settings, *, url: str | None = None) -> aioredis.Redis:
    dsn = url or config.redis_url
    if dsn is None:
        raise settings.SettingsError("STARKMATTER_REDIS_URL is not set")
    pool = aioredis.ConnectionPool.from_url(
        dsn,
        decode_responses=False,
        health_check_interval=30,
        socket_connect_timeout=5,
        client_name=f"starkmatter-{config.service_name}",
    )
    # The URL picks the transport (redis://, rediss://, unix://); the send is ours.
    pool.connection_class = _OURS[pool.connection_class]
    return aioredis.Redis.from_pool(pool)
