"""The seed's event triggers, written through a transactional outbox.

A producer calls :func:`append` inside the transaction that makes the change the event
announces, so the event exists exactly when the change does. A relay (the ``tasks``
component) later claims pending rows with :func:`relay_once`, hands each to the durable
channel, and deletes them in the same transaction. Delivery is at least once; handlers are
idempotent on ``(event, key)``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

NAMES = ("OrderPlaced", "MarketDataUpdate", "NewsArticleReceived", "PortfolioChange")


@dataclasses.dataclass(frozen=True)
class Event:
    name: str
    key: str
    payload: dict[str, Any]


Deliver = Callable[[Event], Awaitable[None]]


def _check(event: str, key: str) -> None:
    if event not in NAMES:
        raise ValueError(f"unknown event {event!r}; known: {', '.join(NAMES)}")
    if not key:
        raise ValueError(f"event {event} needs a non-empty key")


async def append(
    conn: asyncpg.Connection[Any], event: str, payload: dict[str, Any], key: str
) -> bool:
    """Add one event in the caller's transaction; False if ``(event, key)`` is pending already.

    The payload is sent as JSON text so this works whatever codecs the connection has."""
    _check(event, key)
    status: str = await conn.execute(
        """INSERT INTO event_outbox (event, event_key, payload) VALUES ($1, $2, $3::text::jsonb)
           ON CONFLICT (event, event_key) DO NOTHING""",
        event,
        key,
        json.dumps(payload, default=str, sort_keys=True),
    )
    return status.endswith(" 1")


async def append_many(conn: asyncpg.Connection[Any], events: list[Event]) -> int:
    """:func:`append` for a batch, in one round trip; returns how many were new."""
    for e in events:
        _check(e.name, e.key)
    if not events:
        return 0
    status: str = await conn.execute(
        """INSERT INTO event_outbox (event, event_key, payload)
           SELECT e, k, p::jsonb FROM unnest($1::text[], $2::text[], $3::text[]) AS x(e, k, p)
           ON CONFLICT (event, event_key) DO NOTHING""",
        [e.name for e in events],
        [e.key for e in events],
        [json.dumps(e.payload, default=str, sort_keys=True) for e in events],
    )
    return int(status.split()[-1])


async def relay_once(pool: asyncpg.Pool, deliver: Deliver, *, limit: int = 200) -> int:
    """Hand up to ``limit`` pending events to ``deliver``, oldest first; returns how many.

    Rows are claimed with ``SKIP LOCKED`` so several relays share the work, and deleted in
    the claiming transaction: if ``deliver`` raises, nothing is deleted and the rest waits
    for the next pass. A crash after delivery and before commit delivers those events again.
    """
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """SELECT id, event, event_key, payload::text AS payload FROM event_outbox
               ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
            limit,
        )
        for row in rows:
            await deliver(Event(row["event"], row["event_key"], json.loads(row["payload"])))
        if rows:
            await conn.execute(
                "DELETE FROM event_outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows]
            )
    return len(rows)


async def pending(conn: asyncpg.Pool | asyncpg.Connection[Any]) -> int:
    """Events not yet relayed (tests, and a check that the relay keeps up)."""
    count: int = await conn.fetchval("SELECT count(*) FROM event_outbox")
    return count
