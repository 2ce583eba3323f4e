"""Pipelined Redis writes for the hot path, on a dedicated connection.

redis-py builds and parses every command in Python, tens of microseconds each; one PUBLISH
per tick makes that the ingest bottleneck. This writer encodes RESP itself (a few bytes
around pre-encoded payloads), writes whole batches without waiting, and a reader task
counts the replies as they come back. Only commands with one-line replies are sent here
(PUBLISH, MSET, SADD), so counting lines is counting replies; an error reply is logged and
counted. Pub/sub is lossy by design: publishes written while Redis is unreachable are
lost, and the snapshot keys are rewritten by the next update.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

import redis.asyncio as aioredis

from starkmatter.core import logs, loops

log = logs.get_logger(__name__)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def encode(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args)


def encode_publish(channel: bytes, payload: bytes) -> bytes:
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(channel), channel, len(payload), payload,
    )  # fmt: skip


class RedisWriter:
    def __init__(self, redis: aioredis.Redis, *, max_outstanding: int = 200_000) -> None:
        self._kwargs: dict[str, Any] = dict(redis.connection_pool.connection_kwargs)
        self._ssl = (
            "ssl_cert_reqs" in self._kwargs
            or "ssl" in str(redis.connection_pool.connection_class).lower()
        )
        self.max_outstanding = max_outstanding
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._replies: asyncio.Task[None] | None = None
        self.outstanding = 0
        self.errors = 0
        self._settled = asyncio.Event()
        self._settled.set()
        self._lock = asyncio.Lock()

    async def _connect(self) -> None:
        kw = self._kwargs
        if "path" in kw:
            reader, writer = await asyncio.open_unix_connection(kw["path"])
        else:
            context = ssl.create_default_context() if self._ssl else None
            reader, writer = await asyncio.open_connection(
                kw.get("host", "localhost"), kw.get("port", 6379), ssl=context
            )
        handshake = []
        if kw.get("password"):
            args = [b"AUTH"]
            if kw.get("username"):
                args.append(str(kw["username"]).encode())
            args.append(str(kw["password"]).encode())
            handshake.append(encode(*args))
        if kw.get("db"):
            handshake.append(encode(b"SELECT", str(kw["db"]).encode()))
        handshake.append(encode(b"CLIENT", b"SETNAME", b"starkmatter-ingest-publisher"))
        try:
            writer.write(b"".join(handshake))
            for _ in handshake:
                line = await reader.readline()
                if line.startswith(b"-"):
                    raise ConnectionError(f"redis refused the publisher: {line.decode().strip()}")
        except BaseException:
            # Refused, failed or cancelled (a stopping pipeline): nothing else holds it yet.
            writer.close()
            raise
        self._reader, self._writer = reader, writer
        self._replies = asyncio.create_task(self._count_replies(reader), name="redis-replies")

    async def _count_replies(self, reader: asyncio.StreamReader) -> None:
        tail = b""
        while True:
            data = await reader.read(65_536)
            if not data:
                break
            data = tail + data
            cut = data.rfind(b"\n") + 1
            complete, tail = data[:cut], data[cut:]
            replies = complete.count(b"\n")
            if complete.startswith(b"-") or b"\n-" in complete:
                bad = [line for line in complete.split(b"\r\n") if line.startswith(b"-")]
                self.errors += len(bad)
                # Whole: the log processor masks, then cuts (Redis echoes a bad command's args).
                log.warning("ingest.redis_error", error=bad[0].decode("utf-8", "replace"))
            self.outstanding -= replies
            if self.outstanding <= 0:
                self.outstanding = 0
                self._settled.set()
        self._writer = None

    async def write(self, commands: list[bytes]) -> None:
        """Send pre-encoded commands; waits only when too many replies are outstanding."""
        if not commands:
            return
        async with self._lock:
            if self._writer is None or self._writer.is_closing():
                await self._reconnect()
            assert self._writer is not None
            self.outstanding += len(commands)
            self._settled.clear()
            self._writer.write(b"".join(commands))
            await self._writer.drain()
        if self.outstanding > self.max_outstanding:
            await self.settle()

    async def _reconnect(self) -> None:
        await self.close()
        self.outstanding = 0
        self._settled.set()
        await self._connect()

    async def settle(self) -> None:
        """Wait until Redis has answered every command written so far."""
        if self._settled.is_set() or self._replies is None or self._replies.done():
            return
        waiter = asyncio.ensure_future(self._settled.wait())
        try:
            await asyncio.wait([waiter, self._replies], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.wait_closed()
        if self._replies is not None:
            await loops.stopped(self._replies)
        self._writer = None
