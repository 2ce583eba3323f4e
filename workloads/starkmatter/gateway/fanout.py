"""Fan-out: Redis pub/sub channels to local clients, reference-counted per topic.

A gateway replica subscribes in Redis only to the topics its own clients hold (the first
local subscriber subscribes, the last one leaving unsubscribes), so replicas scale out
without each carrying every channel. Each message is turned into an ``update`` frame once
per transport kind, whatever the number of clients that receive it.

Every message gets a sequence number, and the event id ``{epoch}-{seq}`` (``epoch`` is
random per gateway process), followed by ``-{clock}`` once the process has received a
message numbered for replay (``core.replaying``). An SSE client that reconnects with
``Last-Event-ID`` gets, per topic, the updates it missed: from this process's memory (the
last ``replay_depth`` updates of each held topic) when this same process held the topic
the whole time and still has them; else from Redis, on any replica, when the topic is
published for replay and the id's clock is within the window; otherwise a fresh snapshot.
After the Redis subscriber reconnects, every client gets a fresh snapshot of each of its
topics (what was published during the outage is lost to pub/sub).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_exceptions

from starkmatter.core import logs, replaying
from starkmatter.gateway import connections, metrics, subscribing, topics

log = logs.get_logger(__name__)


def _every_frame(frame: bytes) -> bool:
    return True


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


def parse_event_id(value: str, epoch: str) -> int | None:
    """The sequence number in ``{epoch}-{seq}[-{clock}]`` if it is ``epoch``'s; else None."""
    head, _, tail = value.strip().partition("-")
    seq = tail.partition("-")[0]
    if head != epoch or not seq.isdigit() or len(seq) > 18:
        return None
    return int(seq)


def parse_clock(value: str) -> int | None:
    """The replay clock in ``{epoch}-{seq}-{clock}`` (any gateway's), or None."""
    parts = value.strip().split("-")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return int(parts[2]) if len(parts[2]) <= 18 else None


def frame_clock(frame: bytes) -> int | None:
    """The clock in an SSE frame's ``id:`` line, if it has one."""
    if not frame.startswith(b"id: "):
        return None
    parts = frame[4 : frame.find(b"\n")].split(b"-")
    return int(parts[2]) if len(parts) == 3 and parts[2].isdigit() else None


class Hub:
    def __init__(self, redis: aioredis.Redis, *, replay_depth: int = 128) -> None:
        self.redis = redis
        self.subscribers: dict[str, set[connections.Client]] = {}
        self._redis_topics: set[str] = set()
        self._subscriber = subscribing.Subscriber(
            redis, self.dispatch_many, on_resubscribed=self._resubscribed
        )
        self.epoch = os.urandom(4).hex()
        self.seq = 0
        """Sequence number of the last message dispatched (any topic)."""
        self.clock = 0
        """Highest replay number (``core.replaying``) received: every numbered update of a
        held topic up to it has been dispatched. Part of each event id once non-zero."""
        self.replay_depth = replay_depth
        self._history: dict[str, collections.deque[tuple[int, bytes]]] = {}
        """Per held topic: the last ``replay_depth`` (seq, update body)."""
        self._floor: dict[str, int] = {}
        """Per held topic: the history holds every message after this seq (none before)."""
        # Snapshot reads share the process's Redis pool with everything else: a reconnect
        # storm of clients must queue here, not exhaust the pool.
        self._reads = asyncio.Semaphore(16)
        self._resnapshots: set[asyncio.Task[None]] = set()
        self.dispatched = 0
        self._controls: dict[str, Callable[[bytes], Any]] = {}
        """Channels no client holds, followed for the gateway itself: channel -> handler."""
        self._on_lost: list[Callable[[], Any]] = []

    @property
    def ready(self) -> bool:
        return self._subscriber.ready

    @property
    def reconnects(self) -> int:
        """Times the Redis subscriber has reconnected after losing its connection."""
        return self._subscriber.reconnects

    async def start(self) -> None:
        await self.redis.ping()
        await self._subscriber.start()

    async def stop(self) -> None:
        for task in list(self._resnapshots):
            task.cancel()
        await asyncio.gather(*self._resnapshots, return_exceptions=True)
        await self._subscriber.stop()

    async def follow(
        self, channel: str, on_message: Callable[[bytes], Any], on_lost: Callable[[], Any]
    ) -> None:
        """Hand each message of ``channel`` (a channel for the gateway itself, never a
        client's topic) to ``on_message``, over the subscriber's one connection; call
        ``on_lost`` whenever the subscriber has re-subscribed after losing its connection
        (what was published meanwhile is lost). Returns once Redis has confirmed it."""
        self._controls[channel] = on_message
        self._on_lost.append(on_lost)
        self._subscriber.subscribe(channel)
        await self._subscriber.subscribed(channel)

    @property
    def redis_topics(self) -> frozenset[str]:
        return frozenset(self._redis_topics)

    def event_id(self, seq: int | None = None, clock: int | None = None) -> str:
        seq = self.seq if seq is None else seq
        clock = self.clock if clock is None else clock
        return f"{self.epoch}-{seq}-{clock}" if clock else f"{self.epoch}-{seq}"

    # ------------------------------------------------------------------ subscriptions

    async def subscribe(
        self,
        client: connections.Client,
        topic: str,
        *,
        replay_after: int | None = None,
        position: tuple[int, int] | None = None,
    ) -> bool:
        """Register ``client`` on ``topic``, subscribe in Redis if first, send the snapshot.

        With ``replay_after`` (a replay clock from any gateway's event id), send instead the
        updates numbered after it, from Redis (``core.replaying``), if they can all be
        given; True if it did. ``position`` (seq, clock) is the id every frame sent here
        carries, for a client whose other topics are not all set up yet (see
        :meth:`server.Gateway.subscribe`).
        """
        if client.closed():
            return False  # its socket closed while it was subscribing: it holds nothing
        client.topics.add(topic)
        client.warming.add(topic)
        self.subscribers.setdefault(topic, set()).add(client)
        metrics.SUBSCRIPTIONS.inc()
        self._sync(topic)
        # Ids of what is sent here name the position before any update held meanwhile:
        # a client cut off before those reach it gets them again on resume, not never.
        seq, clock = (self.seq, self.clock) if position is None else position
        # SUBSCRIBE is written before the snapshot is read on another connection; Redis
        # handles a client's commands in order, so no update can fall between the two
        # except one that the snapshot already contains (harmless: updates are states).
        # A replay cannot lean on that: it waits for Redis to confirm the subscription,
        # so every update after the stream's last entry is sure to arrive live.
        try:
            missed = None
            if replay_after is not None:
                await self._subscriber.subscribed(topic)
                async with self._reads:
                    missed = await replaying.missed(self.redis, topic, replay_after)
            if missed is None:
                snapshot = await self._read_snapshot(topic)
        except BaseException:
            # Not subscribed after all: the client gets an error and may simply retry.
            await self.unsubscribe(client, topic)
            raise
        if client.closed():
            # Closed while the snapshot was read, after the drop of its topics had begun.
            await self.unsubscribe(client, topic)
            return False
        if topic not in client.topics:
            return False
        if missed is None:
            body = snapshot_body(topic, snapshot)
            client.send_now(client.encode(body, self.event_id(seq, clock)))
            client.warmed(topic)
            return False
        last = replay_after or 0
        for number, payload in missed:
            body = update_body(topic, payload)
            tag = self.event_id(seq, number) if position is None else self.event_id(seq, clock)
            client.send_now(client.encode(body, tag))
            last = number
        # Updates that arrived live meanwhile and were in the replay go no further.
        client.discard_held(topic, lambda frame: (frame_clock(frame) or 0) <= last)
        client.warmed(topic)
        return True

    def resume(
        self,
        client: connections.Client,
        topic: str,
        after: int,
        *,
        position: tuple[int, int] | None = None,
    ) -> bool:
        """Register ``client`` on ``topic`` replaying the updates after seq ``after``.

        Only possible while this process has held the topic since before ``after`` and
        still keeps every update since; False (nothing done) otherwise: subscribe instead.
        """
        floor = self._floor.get(topic)
        if floor is None or after < floor or after > self.seq:
            return False
        client.topics.add(topic)
        self.subscribers.setdefault(topic, set()).add(client)
        metrics.SUBSCRIPTIONS.inc()
        conflatable = topics.conflatable(topic)
        for seq, body in self._history.get(topic, ()):
            if seq > after:
                tag = self.event_id(seq) if position is None else self.event_id(*position)
                client.deliver(topic, client.encode(body, tag), conflatable)
        return True

    async def resnapshot(self) -> None:
        """Send every client a fresh snapshot of each of its topics (after lost messages)."""
        for topic, holders in list(self.subscribers.items()):
            for client in holders:
                client.warming.add(topic)
            try:
                snapshot = await self._read_snapshot(topic)
            except BaseException:
                for client in list(holders):
                    client.warmed(topic)
                raise
            body = snapshot_body(topic, snapshot)
            for client in list(self.subscribers.get(topic, ())):
                if topic in client.warming:
                    client.send_now(client.encode(body, self.event_id()))
                    client.warmed(topic)

    async def _read_snapshot(self, topic: str) -> bytes | None:
        # After Redis restarts, the pool's idle connections are dead and the first command
        # on each fails: a couple of quick retries reach a fresh connection.
        for attempt in range(3):
            try:
                async with self._reads:
                    raw = await self.redis.get(topics.snapshot_key(topic))
            except redis_exceptions.ConnectionError:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)
            else:
                return raw.encode() if isinstance(raw, str) else raw
        raise AssertionError("unreachable")

    def _resubscribed(self) -> None:
        """The subscriber reconnected: what was published meanwhile is lost."""
        for topic in self._redis_topics:
            self._floor[topic] = self.seq
            self._history.pop(topic, None)
        metrics.REDIS_RECONNECTS.inc()
        log.info("gateway.redis_resubscribed", topics=len(self._redis_topics))
        for on_lost in self._on_lost:
            on_lost()
        task = asyncio.ensure_future(self.resnapshot())
        self._resnapshots.add(task)
        task.add_done_callback(self._resnapshot_done)

    def _resnapshot_done(self, task: asyncio.Task[None]) -> None:
        self._resnapshots.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("gateway.resnapshot_failed", error=repr(task.exception()))

    async def unsubscribe(self, client: connections.Client, topic: str) -> None:
        if topic not in client.topics:
            return
        client.topics.discard(topic)
        client.warming.discard(topic)
        client.discard_held(topic, _every_frame)  # held for a slow client: not wanted now
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
            self._floor[topic] = self.seq
        elif not wanted and topic in self._redis_topics:
            self._subscriber.unsubscribe(topic)
            self._redis_topics.discard(topic)
            self._floor.pop(topic, None)
            self._history.pop(topic, None)
        metrics.REDIS_TOPICS.set(len(self._redis_topics))

    # ------------------------------------------------------------------ messages

    def dispatch(self, topic: str, payload: bytes) -> int:
        """Deliver one published message to every local subscriber; returns how many."""
        return self._dispatch_one(topic, payload)

    def dispatch_many(self, channels: list[str], payloads: list[bytes]) -> int:
        """Deliver messages (in order) to their local subscribers; returns frames admitted.

        Frames for one client are gathered and written in a single call: when Redis hands
        over a burst (after a stall, say), each socket gets one write instead of one per
        message, so the gateway catches up in far fewer system calls. A read of a single
        message (the usual case below saturation) is written straight out.

        This is the per-frame path: a client that is flowing (open, not congested) and
        not waiting for the topic's snapshot is written to with no call into it; only the
        others go through :meth:`connections.Client.admit` to be queued or conflated. A
        burst makes no object per message or per client that the garbage collector tracks
        (a client's frames are joined into one bytes as they come), so that catching up
        does not itself set off collections.
        """
        if len(channels) == 1:
            return self._dispatch_one(channels[0], payloads[0])
        # A client's first frame is kept as is (shared bytes, no copy); from its second on,
        # its frames go into a bytearray of its own, appended to in place: joining bytes
        # (``pending + frame``) would copy the client's whole batch again for every frame,
        # quadratic in a burst. A bytearray holds no references: the collector ignores it.
        out: dict[connections.Client, bytes | bytearray] = {}
        delivered = 0
        for topic, payload in zip(channels, payloads, strict=True):
            holders = self.subscribers.get(topic)
            if not holders:
                self._control(topic, payload)
                continue
            body, event_id = self._record(topic, payload)
            conflatable = topics.conflatable(topic)
            # One frame per transport kind (dropped at the next message: never piles up).
            frames: dict[type, bytes] = {}
            last_kind: type | None = None
            frame = b""
            for client in holders:
                kind = type(client)
                if kind is not last_kind:
                    last_kind = kind
                    cached = frames.get(kind)
                    frame = frames[kind] = (
                        client.encode(body, event_id) if cached is None else cached
                    )
                if (client.flowing and topic not in client.warming) or client.admit(
                    topic, frame, conflatable
                ):
                    pending = out.get(client)
                    if pending is None:
                        out[client] = frame
                    elif type(pending) is bytearray:
                        pending += frame
                    else:
                        out[client] = bytearray(pending) + frame
                    client.sent += 1
            delivered += len(holders)
        for client, data in out.items():
            client.transport.write(data)
        if delivered:
            metrics.FRAMES_SENT.inc(delivered)
        return delivered

    def _dispatch_one(self, topic: str, payload: bytes) -> int:
        holders = self.subscribers.get(topic)
        if not holders:
            self._control(topic, payload)
            return 0
        body, event_id = self._record(topic, payload)
        last_kind: type | None = None
        frame = b""
        frames: dict[type, bytes] = {}
        for client in holders:
            kind = type(client)
            if kind is not last_kind:
                last_kind = kind
                cached = frames.get(kind)
                frame = frames[kind] = client.encode(body, event_id) if cached is None else cached
            if client.flowing and topic not in client.warming:
                client.transport.write(frame)
                client.sent += 1
            else:
                client.deliver(topic, frame, topics.conflatable(topic))
        metrics.FRAMES_SENT.inc(len(holders))
        return len(holders)

    def _control(self, channel: str, payload: bytes) -> None:
        # Off the per-frame path: looked up only for a message that no client holds.
        handler = self._controls.get(channel)
        if handler is not None:
            handler(payload)

    def _record(self, topic: str, payload: bytes) -> tuple[bytes, str]:
        """Number the message, keep it in the topic's history; its body and event id."""
        self.seq = seq = self.seq + 1
        self.dispatched += 1
        if payload[:1] == replaying.MARK:
            number, payload = replaying.split(payload)
            if number is not None and number > self.clock:
                self.clock = number
        body = update_body(topic, payload)
        history = self._history.get(topic)
        if history is None:
            history = self._history[topic] = collections.deque(maxlen=self.replay_depth)
        if len(history) == self.replay_depth:
            self._floor[topic] = history[0][0]
        history.append((seq, body))
        return body, (f"{self.epoch}-{seq}-{self.clock}" if self.clock else f"{self.epoch}-{seq}")
