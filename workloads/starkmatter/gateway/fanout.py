"""Fan-out: Redis pub/sub channels to local clients, reference-counted per topic.

A gateway replica subscribes in Redis only to the topics its own clients hold (the first
local subscriber subscribes, the last one leaving unsubscribes), so replicas scale out
without each carrying every channel. Each message is turned into an ``update`` frame once
per transport kind, whatever the number of clients that receive it.
"""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis

from starkmatter.core import logs
from starkmatter.gateway import connections, metrics, subscribing, topics

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
        self._subscriber = subscribing.Subscriber(redis, self.dispatch)
        # Snapshot reads share the process's Redis pool with everything else: a reconnect
        # storm of clients must queue here, not exhaust the pool.
        self._reads = asyncio.Semaphore(16)
        self.dispatched = 0

    @property
    def ready(self) -> bool:
        return self._subscriber.ready

    async def start(self) -> None:
        await self.redis.ping()
        await self._subscriber.start()

    async def stop(self) -> None:
        await self._subscriber.stop()

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
        self._sync(topic)
        # SUBSCRIBE is written before the snapshot is read on another connection; Redis
        # handles a client's commands in order, so no update can fall between the two
        # except one that the snapshot already contains (harmless: updates are states).
        async with self._reads:
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
        self._sync(topic)

    async def drop(self, client: connections.Client) -> None:
        for topic in list(client.topics):
            await self.unsubscribe(client, topic)

    def _sync(self, topic: str) -> None:
        """Make the Redis subscription match local demand (synchronous: no interleaving)."""
        wanted = bool(self.subscribers.get(topic))
        if wanted and topic not in self._redis_topics:
            self._subscriber.subscribe(topic)
            self._redis_topics.add(topic)
        elif not wanted and topic in self._redis_topics:
            self._subscriber.unsubscribe(topic)
            self._redis_topics.discard(topic)
        metrics.REDIS_TOPICS.set(len(self._redis_topics))

    # ------------------------------------------------------------------ messages

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
        metrics.FRAMES_SENT.inc(len(holders))
        return len(holders)
