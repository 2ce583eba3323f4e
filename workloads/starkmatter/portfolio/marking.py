"""Mark-to-market: the scheduled P&L recalculation (seed flow 5 without a trade).

Positions are valued at the live quotes, and each holder's account goes through the same
ledger path as a fill (marks stored on the positions, a snapshot, the day's close), then
the cached portfolio is dropped and ``portfolio:{userId}`` told. Users are taken in
batches under their account row locks, so a recalculation never races an order worker.
A valuation is not a portfolio change: it writes snapshots, not audit rows.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from starkmatter.portfolio import ledger, valuation

BATCH_USERS = 200
"""Accounts locked per transaction: small enough not to hold up order workers."""
MAX_ATTEMPTS = 5
"""times a batch is valued again when fills change its accounts while it is being marked"""


async def revalue(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    now: dt.datetime,
    user: uuid.UUID | None = None,
) -> dict[uuid.UUID, dict[str, Any]]:
    """Value every holder (or ``user``) at the live quotes; returns the new snapshots."""
    holders = await pool.fetch(
        """SELECT DISTINCT user_id, symbol FROM trading_positions
           WHERE quantity <> 0 AND ($1::uuid IS NULL OR user_id = $1)""",
        user,
    )
    symbols = sorted({r["symbol"] for r in holders})
    if not symbols:
        return {}
    quotes = await redis.mget([f"quote:{s}" for s in symbols])
    marks = ledger.marks_from_quotes(dict(zip(symbols, quotes, strict=True)))
    users = sorted({r["user_id"] for r in holders})
    snapshots: dict[uuid.UUID, dict[str, Any]] = {}
    for start in range(0, len(users), BATCH_USERS):
        batch = users[start : start + BATCH_USERS]
        for attempt in range(MAX_ATTEMPTS):
            try:
                async with pool.acquire() as conn, conn.transaction():
                    book = await ledger.load(conn, batch)
                    for account in book.accounts.values():
                        account.changed = True
                    marked = await ledger.record(conn, book, marks, now)
                    await ledger.write(conn, book, now)
            except ledger.LedgerConflict:
                # An order's fill changed one of these accounts meanwhile: value them again.
                if attempt == MAX_ATTEMPTS - 1:
                    raise
                continue
            snapshots.update(marked)
            break
    async with redis.pipeline(transaction=False) as pipe:
        for uid, snap in snapshots.items():
            view = valuation.shown_snapshot(snap)
            pipe.delete(f"cache:portfolio:{uid}")
            pipe.publish(
                f"portfolio:{uid}",
                json.dumps({"event": "portfolio", "reason": "marked", "snapshot": view}),
            )
        await pipe.execute()
    return snapshots
