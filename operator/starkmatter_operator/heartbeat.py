"""Reads what data-plane processes report in Redis (see docs/contracts.md)."""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FeedHeartbeat:
    last_tick_time: str | None
    ticks_per_second: float | None
    rejected_per_second: float | None
    updated: datetime.datetime | None
    # When a finite source (a csv file) was fully stored; the worker then stays up idle.
    replay_finished_time: str | None = None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: Any) -> float | None:
    text = _text(value)
    try:
        return round(float(text), 3) if text is not None else None
    except ValueError:
        return None


def _time(value: Any) -> datetime.datetime | None:
    text = _text(value)
    if not text:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def iso(ts: datetime.datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.astimezone(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse(raw: Mapping[Any, Any]) -> FeedHeartbeat | None:
    """A heartbeat hash as Redis returns it (bytes or text); None when it is empty."""
    if not raw:
        return None
    data = {(_text(k) or ""): v for k, v in raw.items()}
    return FeedHeartbeat(
        last_tick_time=iso(_time(data.get("last_tick_ts"))),
        ticks_per_second=_float(data.get("ticks_per_s")),
        rejected_per_second=_float(data.get("rejected_per_s")),
        updated=_time(data.get("updated_ts")),
        replay_finished_time=iso(_time(data.get("replay_finished_ts"))),
    )


class Reader:
    """Heartbeat reads are best effort: Redis down must never fail a reconcile."""

    def __init__(self, url: str) -> None:
        self._client = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    async def feed(self, feed: str) -> FeedHeartbeat | None:
        try:
            raw = await self._client.hgetall(f"feed:heartbeat:{feed}")
        except (aioredis.RedisError, OSError) as e:
            log.warning("event=heartbeat.unreadable feed=%s error=%s", feed, type(e).__name__)
            return None
        return parse(raw)

    async def close(self) -> None:
        await self._client.aclose()
