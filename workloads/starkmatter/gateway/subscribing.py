"""A lean Redis pub/sub subscriber: one dedicated connection, RESP parsed in bulk.

redis-py's ``PubSub.get_message`` costs tens of microseconds of Python per message, which
caps a gateway's message rate and adds queueing latency long before the sockets are busy.
This reader parses the push stream itself (arrays of bulk strings) and hands the
``message`` pushes of each read, in order, to one callback call, synchronously, as two
parallel lists (channels, payloads). On a lost
connection it reconnects with backoff (exponential, with jitter), re-subscribes to every
channel it held, and once Redis has confirmed them all calls ``on_resubscribed`` (whatever
was published in between is lost).
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Callable
from typing import Any, cast

import redis.asyncio as aioredis

from starkmatter.core import logs, loops

log = logs.get_logger(__name__)


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class ProtocolError(Exception):
    pass


def parse_pushes(buffer: bytes | bytearray, start: int = 0) -> tuple[list[list[Any]], int]:
    """Complete RESP arrays (of bulk strings and integers) in ``buffer``; and where to resume."""
    out: list[list[Any]] = []
    position = start
    while True:
        items, position = _parse_one(buffer, position)
        if items is None:
            return out, position
        out.append(items)


_MESSAGE = b"*3\r\n$7\r\nmessage\r\n$"


def parse_messages(
    buffer: bytes | bytearray, start: int = 0
) -> tuple[list[str], list[bytes], list[list[Any]], int]:
    """Like :func:`parse_pushes`, with ``message`` pushes split out as two parallel lists,
    (channels, payloads), and the other pushes in the third; and where to resume.

    This is the fan-out's input: the parallel lists make no object per message that the
    garbage collector tracks (a burst of thousands of lists and tuples, all alive until
    the burst is dispatched, used to set off full collections of the whole heap).
    """
    channels: list[str] = []
    payloads: list[bytes] = []
    others: list[list[Any]] = []
    position = start
    size = len(buffer)
    while position < size:
        if buffer.startswith(_MESSAGE, position):
            cursor = position + len(_MESSAGE)
            end = buffer.find(b"\r\n", cursor)
            if end < 0:
                break
            channel_start = end + 2
            channel_end = channel_start + int(buffer[cursor:end])
            end = buffer.find(b"\r\n", channel_end + 2)
            if end < 0:
                break
            if buffer[channel_end + 2] != 36:  # "$"
                raise ProtocolError("unexpected item in a push message")
            data_start = end + 2
            data_end = data_start + int(buffer[channel_end + 3 : end])
            if data_end + 2 > size:
                break
            channels.append(buffer[channel_start:channel_end].decode())
            payloads.append(bytes(buffer[data_start:data_end]))
            position = data_end + 2
            continue
        items, position = _parse_one(buffer, position)
        if items is None:
            break
        if len(items) == 3 and items[0] == b"message":  # after an error line, say
            channels.append(items[1].decode())
            payloads.append(items[2])
        else:
            others.append(items)
    return channels, payloads, others, position


def _parse_one(buffer: bytes | bytearray, position: int) -> tuple[list[Any] | None, int]:
    """The complete push at ``position`` (Redis error lines skipped) and where it ends; or
    None and ``position`` when the buffer does not hold a complete one yet."""
    size = len(buffer)
    while position < size and buffer[position] != 42:  # "*"
        end = buffer.find(b"\r\n", position)
        if end < 0:
            return None, position
        line = bytes(buffer[position:end])
        if not line.startswith(b"-"):
            raise ProtocolError(f"unexpected reply {line[:40]!r}")
        log.warning("gateway.redis_error", error=line.decode("utf-8", "replace"))
        position = end + 2
    end = buffer.find(b"\r\n", position)
    if end < 0:
        return None, position
    count = int(buffer[position + 1 : end])
    cursor = end + 2
    items: list[Any] = []
    for _ in range(count):
        end = buffer.find(b"\r\n", cursor)
        if end < 0:
            return None, position
        kind = buffer[cursor]
        if kind == 36:  # "$"
            length = int(buffer[cursor + 1 : end])
            data_start = end + 2
            if data_start + length + 2 > size:
                return None, position
            items.append(bytes(buffer[data_start : data_start + length]))
            cursor = data_start + length + 2
        elif kind == 58:  # ":"
            items.append(int(buffer[cursor + 1 : end]))
            cursor = end + 2
        else:
            raise ProtocolError("unexpected item in a push message")
    return items, cursor


class Subscriber:
    def __init__(
        self,
        redis: aioredis.Redis,
        on_messages: Callable[[list[str], list[bytes]], Any],
        on_resubscribed: Callable[[], Any] | None = None,
    ) -> None:
        self._kwargs: dict[str, Any] = dict(redis.connection_pool.connection_kwargs)
        self._ssl = "ssl" in str(redis.connection_pool.connection_class).lower()
        self.on_messages = on_messages
        self.on_resubscribed = on_resubscribed
        self.reconnects = 0
        """Connections re-established after a loss."""
        self._unconfirmed: set[bytes] = set()
        """Channels re-subscribed after a reconnect that Redis has not confirmed yet."""
        self.channels: set[str] = set()
        self.live: set[bytes] = set()
        """Channels Redis has confirmed on the current connection: every message published
        on them from now on reaches this subscriber."""
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.ready = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-redis-subscriber")
        async with asyncio.timeout(10):
            await self._connected.wait()

    async def stop(self) -> None:
        if self._task is not None:
            await loops.stopped(self._task)
        if self._transport is not None:
            self._transport.close()

    def subscribe(self, channel: str) -> None:
        self.channels.add(channel)
        self._send(_command(b"SUBSCRIBE", channel.encode()))

    def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        self._send(_command(b"UNSUBSCRIBE", channel.encode()))

    async def subscribed(self, channel: str) -> None:
        """Return once Redis has confirmed the subscription to ``channel`` (subscribe first):
        whatever is published on it afterwards will be received."""
        key = channel.encode()
        if key in self.live:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(waiter)
        try:
            async with asyncio.timeout(10):
                await waiter
        finally:
            waiters = self._waiters.get(key, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(key, None)

    def _confirm(self, channel: bytes) -> None:
        self.live.add(channel)
        for waiter in self._waiters.pop(channel, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
        # Otherwise the reconnect re-subscribes from ``channels``.

    async def _open(self) -> _Connection:
        kw = self._kwargs
        handshake = []
        if kw.get("password"):
            auth = [b"AUTH"]
            if kw.get("username"):
                auth.append(str(kw["username"]).encode())
            auth.append(str(kw["password"]).encode())
            handshake.append(_command(*auth))
        handshake.append(_command(b"CLIENT", b"SETNAME", b"starkmatter-gateway-subscriber"))
        loop = asyncio.get_running_loop()
        connection = _Connection(self, b"".join(handshake), len(handshake))
        if "path" in kw:
            await loop.create_unix_connection(lambda: connection, kw["path"])
        else:
            await loop.create_connection(
                lambda: connection,
                kw.get("host", "localhost"),
                kw.get("port", 6379),
                ssl=ssl.create_default_context() if self._ssl else None,
            )
        try:
            async with asyncio.timeout(10):
                await connection.greeted
        except BaseException:
            connection.close()
            raise
        return connection

    async def _run(self) -> None:
        attempt = 0
        connected_before = False
        while True:
            try:
                connection = await self._open()
            except (OSError, ConnectionError) as exc:
                self.ready = False
                attempt += 1
                delay = min(5.0, 0.1 * 2**attempt) * (0.5 + random.random() / 2)  # noqa: S311
                log.warning("gateway.redis_connect_failed", error=str(exc), retry_s=delay)
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self._transport = connection.transport
            if connected_before:
                self.reconnects += 1
                log.info("gateway.redis_reconnected", channels=len(self.channels))
                self._unconfirmed = {c.encode() for c in self.channels}
                if not self._unconfirmed:
                    self._confirmed()
            connected_before = True
            if self.channels:
                self._send(_command(b"SUBSCRIBE", *(c.encode() for c in sorted(self.channels))))
            self.ready = True
            self._connected.set()
            try:
                await connection.lost
            except (OSError, ConnectionError, ProtocolError) as exc:
                log.warning("gateway.redis_lost", error=str(exc))
            finally:
                self.ready = False
                self.live.clear()
                connection.close()
                self._transport = None

    def _feed(self, buffer: bytearray) -> None:
        """Handle the complete pushes in ``buffer`` (consumed), synchronously."""
        channels, payloads, others, used = parse_messages(buffer)
        del buffer[:used]
        for push in others:
            if push[0] == b"subscribe":
                self._confirm(push[1])
                if self._unconfirmed:
                    self._unconfirmed.discard(push[1])
                    if not self._unconfirmed:
                        self._confirmed()
            elif push[0] == b"unsubscribe":
                self.live.discard(push[1])
        if channels:
            self.on_messages(channels, payloads)

    def _confirmed(self) -> None:
        if self.on_resubscribed is not None:
            self.on_resubscribed()


class _Connection(asyncio.Protocol):
    """The subscriber's socket as a protocol: uvloop hands each read straight to
    :meth:`Subscriber._feed` (no stream reader, no task woken per read)."""

    def __init__(self, subscriber: Subscriber, handshake: bytes, replies: int) -> None:
        self.subscriber = subscriber
        self.handshake = handshake
        self.replies = replies
        """Handshake replies (``+OK``) still to come before pushes."""
        self.buffer = bytearray()
        loop = asyncio.get_running_loop()
        self.greeted: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        """Fails with the reason once the connection is gone."""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport implements asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.handshake)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.replies:
            while self.replies:
                end = self.buffer.find(b"\r\n")
                if end < 0:
                    return
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                if not line.startswith(b"+"):
                    # The reply whole: the log line it reaches is masked, then cut.
                    self._fail(ConnectionError(f"redis refused the subscriber: {line!r}"))
                    return
                self.replies -= 1
            self.greeted.set_result(None)
        try:
            self.subscriber._feed(self.buffer)
        except ProtocolError as exc:
            self._fail(exc)
        except Exception as exc:  # noqa: BLE001 - reconnect and resnapshot, never go deaf
            log.error("gateway.dispatch_failed", error=repr(exc))
            self._fail(ConnectionError(f"dispatch failed: {exc!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("redis closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        for future in (self.greeted, self.lost):
            if not future.done():
                future.set_exception(exc)
                # Whoever waits still gets it; nobody waiting (stopped) is no error.
                future.exception()
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
