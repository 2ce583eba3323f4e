"""Fan-out: Redis pub/sub channels to local clients, reference-counted per topic.

A gateway replica subscribes in Redis only to the topics its own clients hold (the first
local subscriber subscribes, the last one leaving unsubscribes), so replicas scale out
without each carrying every channel. Each message is turned into an ``update`` frame once
per transport kind, whatever the number of clients that receive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from starkmatter.core import logs
from starkmatter.gateway import connections, metrics, topics

log = logs.get_logger(__name__)


def update_body(topic: str, payload: bytes) -> bytes:
    """``{"type":"update","topic":...,"data":...}`` without re-encoding a JSON payload."""
    if payload[:1] not in (b"{", b"["):
        try:
            json.loads(payload)
        except ValueError:
            payload = json.dumps(payload.decode("utf-8", "replace")).encode()
    return b'{"type":"update","topic":"' + topic.encode() + b'","data":' + payload + b"}"


def snapshot_body(topic: str, payload: bytes | None) -> bytes:
    data = payload if payload is not None and payload[:1] in (b"{", b"[") else b"null"
    return b'{"type":"snapshot","topic":"' + topic.encode() + b'","data":' + data + b"}"


class Hub:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.subscribers: dict[str, set[connections.Client]] = {}
        self._redis_topics: set[str] = set()
        self._lock = asyncio.Lock()
        self._pubsub = redis.pubsub()
        self._reader: asyncio.Task[None] | None = None
        self._has_topics = asyncio.Event()
        self.dispatched = 0
        self.ready = False

    async def start(self) -> None:
        await self.redis.ping()
        self.ready = True
        self._reader = asyncio.create_task(self._read(), name="gateway-pubsub")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    @property
    def redis_topics(self) -> frozenset[str]:
        return frozenset(self._redis_topics)

    # ------------------------------------------------------------------ subscriptions

    async def subscribe(self, client: connections.Client, topic: str) -> None:
        """Register ``client`` on ``topic``, subscribe in Redis if first, send the snapshot."""
        client.topics.add(topic)
        client.warming.add(topic)
        self.subscribers.setdefault(topic, set()).add(client)
        metrics.SUBSCRIPTIONS.inc()
        await self._sync(topic)
        # Subscribed before reading the snapshot: no update can fall between the two.
        raw = await self.redis.get(topics.snapshot_key(topic))
        snapshot = raw.encode() if isinstance(raw, str) else raw
        if topic in client.topics:
            client.send_now(client.encode(snapshot_body(topic, snapshot)))
            client.warmed(topic)

    async def unsubscribe(self, client: connections.Client, topic: str) -> None:
        if topic not in client.topics:
            return
        client.topics.discard(topic)
        client.warming.discard(topic)
        holders = self.subscribers.get(topic)
        if holders is not None:
            holders.discard(client)
            if not holders:
                del self.subscribers[topic]
        metrics.SUBSCRIPTIONS.dec()
        await self._sync(topic)

    async def drop(self, client: connections.Client) -> None:
        for topic in list(client.topics):
            await self.unsubscribe(client, topic)

    async def _sync(self, topic: str) -> None:
        """Make the Redis subscription match local demand (idempotent, serialized)."""
        async with self._lock:
            wanted = bool(self.subscribers.get(topic))
            if wanted and topic not in self._redis_topics:
                await self._pubsub.subscribe(topic)
                self._redis_topics.add(topic)
                self._has_topics.set()
            elif not wanted and topic in self._redis_topics:
                await self._pubsub.unsubscribe(topic)
                self._redis_topics.discard(topic)
            metrics.REDIS_TOPICS.set(len(self._redis_topics))

    # ------------------------------------------------------------------ messages

    async def _read(self) -> None:
        while True:
            if not self._redis_topics:
                self._has_topics.clear()
                await self._has_topics.wait()
            try:
                message: Any = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
            except (redis.exceptions.ConnectionError, OSError) as exc:
                self.ready = False
                log.warning("gateway.redis_lost", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            self.ready = True
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            self.dispatch(
                channel.decode() if isinstance(channel, bytes) else str(channel),
                message["data"]
                if isinstance(message["data"], bytes)
                else str(message["data"]).encode(),
            )

    def dispatch(self, topic: str, payload: bytes) -> int:
        """Deliver one published message to every local subscriber; returns how many."""
        holders = self.subscribers.get(topic)
        if not holders:
            return 0
        body = update_body(topic, payload)
        conflatable = topics.conflatable(topic)
        frames: dict[type, bytes] = {}
        for client in list(holders):
            kind = type(client)
            frame = frames.get(kind)
            if frame is None:
                frame = frames[kind] = client.encode(body)
            client.deliver(topic, frame, conflatable)
        self.dispatched += 1
        return len(holders)
