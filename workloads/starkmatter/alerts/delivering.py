"""Deliver alert events: stored once (by fingerprint), then published on ``alerts:{userId}``.

Storing comes first and decides: an event whose fingerprint is already stored is not
published again, so re-evaluations and redeliveries never notify twice.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import asyncpg
import redis.asyncio as aioredis

from starkmatter.core import replaying

Severity = Literal["info", "warning", "critical"]
OPS_CHANNEL = "alerts:ops"
"""Operational alerts have no user: they go to this channel (and to the log)."""


@dataclasses.dataclass(frozen=True)
class AlertEvent:
    rule: str
    kind: Literal["price", "news", "operational"]
    severity: Severity
    state: Literal["firing", "resolved", "triggered"]
    fingerprint: str
    summary: str
    user_id: str | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


def channel(user_id: str | None) -> str:
    return f"alerts:{user_id}" if user_id is not None else OPS_CHANNEL


async def deliver(
    pool: asyncpg.Pool | asyncpg.Connection[Any],
    redis: aioredis.Redis,
    events: Sequence[AlertEvent],
) -> list[dict[str, Any]]:
    """Store what is new and publish it; returns the stored (new) events as published."""
    return await publish(redis, await store(pool, events))


async def store(
    pool: asyncpg.Pool | asyncpg.Connection[Any], events: Sequence[AlertEvent]
) -> list[dict[str, Any]]:
    """Insert the events whose fingerprint is new (in the caller's transaction, if any)."""
    if not events:
        return []
    rows = await pool.fetch(
        """INSERT INTO alert_events (user_id, rule, kind, severity, state, fingerprint, summary,
                                     details)
           SELECT u, r, k, sv, st, f, sm, d::jsonb
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::text[], $8::text[]) AS e(u, r, k, sv, st, f, sm, d)
           ON CONFLICT (fingerprint) DO NOTHING
           RETURNING id, user_id, rule, kind, severity, state, summary, details, created_at""",
        [uuid.UUID(e.user_id) if e.user_id else None for e in events],
        [e.rule for e in events],
        [e.kind for e in events],
        [e.severity for e in events],
        [e.state for e in events],
        [e.fingerprint for e in events],
        [e.summary for e in events],
        [json.dumps(e.details, default=str) for e in events],
    )
    return [dict(r) for r in rows]


async def publish(redis: aioredis.Redis, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Publish stored events on their channels (after commit: only what was stored)."""
    published: list[dict[str, Any]] = []
    if not rows:
        return published
    async with redis.pipeline(transaction=False) as pipe:
        for row in rows:
            user_id = str(row["user_id"]) if row["user_id"] is not None else None
            details = row["details"]
            if isinstance(details, str):
                details = json.loads(details)
            message = {
                "id": row["id"],
                "user_id": user_id,
                "rule": row["rule"],
                "kind": row["kind"],
                "severity": row["severity"],
                "state": row["state"],
                "summary": row["summary"],
                "details": details,
                "ts": row["created_at"].isoformat(),
            }
            # numbered and kept: an SSE client resumes on any gateway replica
            await replaying.queue_publish(pipe, channel(user_id), json.dumps(message, default=str))
            published.append(message)
        await pipe.execute()
    return published
