"""The provider adapter interface, reconnect with backoff, and sequence tracking.

A provider turns a vendor's wire format into batches of :class:`Incoming` (canonical keys,
raw values; see :mod:`starkmatter.market.normalizing`) and hands each batch to a sink.
:class:`Provider.run` owns the session loop: connect, authenticate, (re)subscribe, read
with a heartbeat deadline, and on any failure reconnect after an exponential backoff with
jitter. A session that delivered data resets the backoff.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import websockets
from websockets.asyncio import client as ws_client

from starkmatter.core import logs
from starkmatter.ingest import metrics

log = logs.get_logger(__name__)


@dataclasses.dataclass(slots=True)
class Incoming:
    """One provider message: canonical fields, or ``None`` when it could not be decoded."""

    fields: dict[str, Any] | None
    raw: str | None = None
    """The wire text when the message was not decoded on its own (kept for dead letters)."""
    error: str = ""
    received_ns: int = 0
    origin: str | None = None
    """Where a replayable source can find this message again (dead letters dedupe on it)."""

    def raw_text(self) -> str:
        if self.raw is not None:
            return self.raw
        return json.dumps(self.fields, default=str, separators=(",", ":"))


Sink = Callable[[list[Incoming]], Awaitable[None]]


class ProviderError(Exception):
    """A session failed in a way a reconnect may cure (refused auth is not one of them)."""


class FatalProviderError(Exception):
    """A failure a reconnect cannot cure (bad credentials, bad configuration)."""


@dataclasses.dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.25
    """First retry delay (before jitter)."""
    maximum_s: float = 30.0
    """Cap: a long outage is retried this often."""
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Equal jitter: half the exponential delay, plus a random half (never zero)."""
        ceiling = min(self.maximum_s, self.initial_s * self.factor**attempt)
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


class SequenceTracker:
    """Last sequence number per stream key (symbol); counts gaps and replays."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.gaps = 0
        self.missing = 0
        self.replayed = 0

    def observe(self, key: str, seq: int) -> int:
        """Messages missing before ``seq`` (0 if none); a replayed one counts separately."""
        last = self.last.get(key)
        if last is None:
            self.last[key] = seq
            return 0
        if seq <= last:
            self.replayed += 1
            return 0
        self.last[key] = seq
        missing = seq - last - 1
        if missing:
            self.gaps += 1
            self.missing += missing
        return missing


class Provider(abc.ABC):
    """Base of every provider: the reconnecting session loop around :meth:`session`."""

    finite = False
    """True for sources that end (file replay): :meth:`run` returns when one session ends."""

    def __init__(
        self,
        feed: str,
        *,
        backoff: Backoff | None = None,
        heartbeat_timeout_s: float = 10.0,
        seed: int | None = None,
    ) -> None:
        self.feed = feed
        self.backoff = backoff or Backoff()
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.rng = random.Random(seed)  # noqa: S311 - jitter, not secrecy
        self.delivered = 0
        self.sessions = 0
        self.sequences = SequenceTracker()
        self.connected = asyncio.Event()
        self.gaps: list[tuple[int, int]] = []
        """Stream outages as (disconnected, resubscribed) nanosecond times, most recent last
        (bounded): the only gap a stream without sequence numbers can show."""
        self._gap_from: int | None = None

    @abc.abstractmethod
    async def session(self, sink: Sink) -> None:
        """Connect, authenticate, subscribe and stream into ``sink`` until failure or end."""

    async def run(self, sink: Sink) -> None:
        attempt = 0
        while True:
            before = self.delivered
            self.sessions += 1
            cause = "ended"
            try:
                await self.session(sink)
                if self.finite:
                    return
            except FatalProviderError:
                raise
            except (OSError, TimeoutError, websockets.WebSocketException, ProviderError) as exc:
                # A cancel that lands while the socket closes can surface as ConnectionClosed
                # (or a timeout) instead of CancelledError: a stopping feed must not reconnect.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise asyncio.CancelledError from exc
                cause = type(exc).__name__
                log.warning(
                    "ingest.provider_disconnected", feed=self.feed, cause=cause, error=str(exc)
                )
            finally:
                self.connected.clear()
                metrics.CONNECTED.labels(feed=self.feed).set(0)
            if self.delivered > before and self._gap_from is None:
                self._gap_from = now_ns()
            attempt = 0 if self.delivered > before else attempt + 1
            metrics.RECONNECTS.labels(feed=self.feed, cause=cause).inc()
            await asyncio.sleep(self.backoff.delay(attempt, self.rng))

    async def receive(self, ws: ws_client.ClientConnection) -> str | bytes:
        """The next frame; TimeoutError after ``heartbeat_timeout_s`` without one."""
        # Not asyncio.wait_for: on Python 3.11 it returns a frame that arrives as the task is
        # cancelled and drops the cancel, so a stopping feed would read on (and its owner,
        # waiting for it, wait for ever).
        async with asyncio.timeout(self.heartbeat_timeout_s):
            return await ws.recv()

    def mark_connected(self) -> None:
        self.connected.set()
        metrics.CONNECTED.labels(feed=self.feed).set(1)
        if self._gap_from is not None:
            gap = (self._gap_from, now_ns())
            self._gap_from = None
            self.gaps = [*self.gaps[-99:], gap]
            metrics.STREAM_GAP_SECONDS.labels(feed=self.feed).observe((gap[1] - gap[0]) / 1e9)
            log.warning("ingest.stream_gap", feed=self.feed, seconds=(gap[1] - gap[0]) / 1e9,
                        gap_from_ns=gap[0], gap_to_ns=gap[1])  # fmt: skip

    def track(self, symbol: Any, seq: Any) -> None:
        if type(seq) is int and type(symbol) is str:
            missing = self.sequences.observe(symbol, seq)
            if missing:
                metrics.SEQUENCE_GAPS.labels(feed=self.feed).inc(missing)
                log.warning("ingest.sequence_gap", feed=self.feed, symbol=symbol, missing=missing)


def now_ns() -> int:
    return time.time_ns()
