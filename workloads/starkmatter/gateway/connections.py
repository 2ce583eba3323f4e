"""Client connections: the lifecycle enum and the bounded, conflating send path.

A frame is written straight to the socket while the socket keeps up. Once the transport's
buffer passes its high-water mark (asyncio calls ``pause_writing``), the client is
*congested*: market data for a topic is then conflated to its latest frame, other frames
queue up to a bound, and when the socket drains (``resume_writing``) the queue is written,
oldest first, then the latest market frames. A client that stays congested longer than
``max_lag_s``, or overflows its queue, is disconnected with the reason ``slow_consumer``.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import dataclasses
import enum
import itertools
import time
from collections.abc import Callable
from typing import Any

from starkmatter.core.auth import tokens
from starkmatter.gateway import metrics


class ConnectionState(enum.Enum):
    HANDSHAKE = "handshake"
    """The HTTP request is being read."""
    UNAUTHENTICATED = "unauthenticated"
    """WebSocket open; the first message must be ``{"op": "auth", "token": ...}``."""
    OPEN = "open"
    """Authenticated: may subscribe, receives frames."""
    CLOSING = "closing"
    """A close was sent (or the server is shutting down); nothing more is delivered."""
    CLOSED = "closed"


_ALLOWED: dict[ConnectionState, frozenset[ConnectionState]] = {
    ConnectionState.HANDSHAKE: frozenset(
        {ConnectionState.UNAUTHENTICATED, ConnectionState.OPEN, ConnectionState.CLOSED}
    ),
    ConnectionState.UNAUTHENTICATED: frozenset(
        {ConnectionState.OPEN, ConnectionState.CLOSING, ConnectionState.CLOSED}
    ),
    ConnectionState.OPEN: frozenset({ConnectionState.CLOSING, ConnectionState.CLOSED}),
    ConnectionState.CLOSING: frozenset({ConnectionState.CLOSED}),
    ConnectionState.CLOSED: frozenset(),
}


_serials = itertools.count()


class InvalidTransition(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class Limits:
    max_subscriptions: int = 200
    """Topics one connection may hold."""
    max_message_bytes: int = 64 * 1024
    """Largest client frame; larger ones close the connection (1009)."""
    high_water_bytes: int = 256 * 1024
    """Socket buffer above which a client counts as congested."""
    low_water_bytes: int = 64 * 1024
    max_backlog: int = 1_000
    """Non-conflatable frames queued for a congested client before it is disconnected."""
    max_lag_s: float = 5.0
    """Longest a client may stay congested before it is disconnected."""
    auth_timeout_s: float = 10.0
    heartbeat_s: float = 15.0
    """Heartbeat frame (and WebSocket ping) interval; also how often the sessions of open
    connections are checked again in Redis (a revocation lost to pub/sub ends there)."""
    token_leeway_s: float = 5.0
    """Seconds past its token's expiry that a connection stays open: the clock skew that
    token verification tolerates (``jwt_leeway_s``)."""


class Client(abc.ABC):
    """Transport-independent subscriber state; :mod:`.server` makes the WS and SSE kinds."""

    transport_name = "base"

    def __init__(self, transport: asyncio.Transport, limits: Limits) -> None:
        self.transport = transport
        self.limits = limits
        self.serial = next(_serials)
        """Spreads per-client periodic work (heartbeats) over time."""
        self.flowing = False
        """OPEN, not congested, not holding: fan-out may write straight to the socket. Kept
        in step with ``state``, ``congested_since`` and ``holding`` so that the hot path
        reads one attribute."""
        self.holding = False
        """Updates wait (as for a congested socket) until :meth:`release`: an SSE stream
        sends no update before every one of its topics has its snapshot or replay."""
        self._state = ConnectionState.HANDSHAKE
        self.principal: tokens.Principal | None = None
        self.ended: str | None = None
        """Why the login behind the connection ended (``session_revoked``,
        ``token_expired``): it is closing, and nothing more may be granted to it."""
        self.topics: set[str] = set()
        self.warming: set[str] = set()
        """Topics whose snapshot is not sent yet: their updates wait in ``_latest``."""
        self.congested_since: float | None = None
        self._latest: dict[str, bytes] = {}
        self._backlog: collections.deque[tuple[str, bytes]] = collections.deque()
        """(topic, frame) waiting for the socket to drain or the topic's snapshot to go out."""
        self.sent = 0
        self.conflated = 0
        transport.set_write_buffer_limits(limits.high_water_bytes, limits.low_water_bytes)

    @property
    def state(self) -> ConnectionState:
        return self._state

    @state.setter
    def state(self, value: ConnectionState) -> None:
        self._state = value
        self._reflow()

    def closed(self) -> bool:
        """The socket has gone (a method, so that it is asked again after every await)."""
        return self._state is ConnectionState.CLOSED

    def login_ended(self) -> bool:
        """Its session or token has ended (a method, asked again after every await)."""
        return self.ended is not None

    def _reflow(self) -> None:
        self.flowing = (
            self._state is ConnectionState.OPEN
            and self.congested_since is None
            and not self.holding
        )

    def transition(self, target: ConnectionState) -> None:
        if target not in _ALLOWED[self.state]:
            raise InvalidTransition(
                f"connection state: expected one of "
                f"{sorted(s.value for s in _ALLOWED[self.state])} before {target.value!r}, "
                f"but the connection is {self.state.value!r}"
            )
        self.state = target

    @abc.abstractmethod
    def encode(self, body: bytes, event_id: str | None = None) -> bytes:
        """Frame a JSON message for this transport; ``event_id`` where it has such a field."""

    @abc.abstractmethod
    def close(self, code: int, reason: str) -> None:
        """Close the connection, telling the client why."""

    # ------------------------------------------------------------------ delivery

    def admit(self, topic: str, frame: bytes, conflatable: bool) -> bool:
        """True if ``frame`` is to be written now (by the caller); else it is queued,
        conflated or dropped here (synchronous, never blocks)."""
        if self.flowing and topic not in self.warming:
            return True
        if self._state is not ConnectionState.OPEN:
            return False
        # Open but warming this topic, or congested: hold the frame.
        if conflatable:
            if topic in self._latest:
                self.conflated += 1
                metrics.FRAMES_CONFLATED.inc()
            self._latest[topic] = frame
            return False
        self._backlog.append((topic, frame))
        if len(self._backlog) > self.limits.max_backlog:
            self.disconnect_slow()
        return False

    def deliver(self, topic: str, frame: bytes, conflatable: bool) -> None:
        """Write or queue one already-encoded frame (synchronous, never blocks)."""
        if self.admit(topic, frame, conflatable):
            self.transport.write(frame)
            self.sent += 1

    def send_now(self, frame: bytes) -> None:
        """Write a control frame (snapshot, error, heartbeat) ahead of any queue."""
        if self.state in (ConnectionState.OPEN, ConnectionState.UNAUTHENTICATED):
            self.transport.write(frame)
            self.sent += 1
            metrics.FRAMES_SENT.inc()

    def warmed(self, topic: str) -> None:
        """The snapshot of ``topic`` is sent: release the updates that waited for it."""
        self.warming.discard(topic)
        if self.congested_since is None and not self.holding and self._backlog:
            # Frames of a topic that is not conflated waited here for its snapshot.
            kept: collections.deque[tuple[str, bytes]] = collections.deque()
            for held, frame in self._backlog:
                if held == topic:
                    self.transport.write(frame)
                    self.sent += 1
                else:
                    kept.append((held, frame))
            self._backlog = kept
        latest = self._latest.pop(topic, None)
        if latest is not None:
            self.deliver(topic, latest, True)

    def discard_held(self, topic: str, dropped: Callable[[bytes], bool]) -> None:
        """Forget frames of ``topic`` waiting for its snapshot (or replay) that ``dropped``
        picks: the replay already carried them."""
        latest = self._latest.get(topic)
        if latest is not None and dropped(latest):
            del self._latest[topic]
        self._backlog = collections.deque(
            (held, frame) for held, frame in self._backlog if held != topic or not dropped(frame)
        )

    def pause_writing(self) -> None:
        if self.congested_since is None:
            self.congested_since = time.monotonic()
        self._reflow()

    def hold(self) -> None:
        """Queue updates (snapshots and replays still go out) until :meth:`release`."""
        self.holding = True
        self._reflow()

    def release(self) -> None:
        self.holding = False
        self._reflow()
        if self.congested_since is None:
            self._flush()

    def resume_writing(self) -> None:
        self.congested_since = None
        self._reflow()
        if not self.holding:
            self._flush()

    def _flush(self) -> None:
        """Write what waited (queue first, then the latest market frames), except for
        topics still waiting for their snapshot."""
        if self.state is not ConnectionState.OPEN:
            return
        backlog: collections.deque[tuple[str, bytes]] = collections.deque()
        written = 0
        for topic, frame in self._backlog:
            if topic in self.warming:
                backlog.append((topic, frame))
            else:
                self.transport.write(frame)
                written += 1
        self._backlog = backlog
        latest = {t: f for t, f in self._latest.items() if t not in self.warming}
        for topic in latest:
            del self._latest[topic]
        for frame in latest.values():
            self.transport.write(frame)
        self.sent += written + len(latest)

    def lagging(self, now: float) -> bool:
        return (
            self.congested_since is not None and now - self.congested_since > self.limits.max_lag_s
        )

    def disconnect_slow(self) -> None:
        dropped = len(self._backlog) + len(self._latest)
        metrics.FRAMES_DROPPED.inc(dropped)
        metrics.DISCONNECTS.labels(reason="slow_consumer").inc()
        self._backlog.clear()
        self._latest.clear()
        self.close(1008, "slow_consumer")

    def info(self) -> dict[str, Any]:
        return {"topics": sorted(self.topics), "sent": self.sent, "conflated": self.conflated}
