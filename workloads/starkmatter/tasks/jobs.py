"""The tasks: scheduled batch jobs and the seed's event triggers. Every task is idempotent:
it may run twice (late acks redeliver after a crash) and still has its effect once."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import decimal
import hashlib
import io
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import redis.asyncio as aioredis
import redis.exceptions

from starkmatter.alerts import delivering, evaluating
from starkmatter.core import db, redis_client, settings
from starkmatter.news import pipeline, sampleserver, storing
from starkmatter.portfolio import marking
from starkmatter.retention import objectstore
from starkmatter.tasks.app import app

T = TypeVar("T")
TRANSIENT = (OSError, asyncpg.PostgresConnectionError, redis.exceptions.ConnectionError)
RELIABLE: dict[str, Any] = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "max_retries": 5,
    "acks_late": True,
    "reject_on_worker_lost": True,
}
EVENTS = ("OrderPlaced", "MarketDataUpdate", "NewsArticleReceived", "PortfolioChange")


def _run(job: Callable[[asyncpg.Pool, aioredis.Redis], Awaitable[T]]) -> T:
    """Each task runs on its own loop with its own short-lived pool: tasks share nothing."""

    async def main() -> T:
        cfg = settings.get_settings()
        pool = await db.create_pool(cfg.model_copy(update={"db_pool_min": 1, "db_pool_max": 2}))
        redis_conn = redis_client.create_redis(cfg)
        try:
            return await job(pool, redis_conn)
        finally:
            await redis_conn.aclose()
            await pool.close()

    return asyncio.run(main())


async def _once(conn: asyncpg.Pool | asyncpg.Connection[Any], key: str, task: str) -> bool:
    """Claim an event key (inside the caller's transaction, if any); False if it was
    applied before."""
    status: str = await conn.execute(
        "INSERT INTO task_applied_events (event_key, task_name) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING",
        key,
        task,
    )
    return status.endswith(" 1")


async def forget_applied_events(pool: asyncpg.Pool, before: dt.datetime) -> int:
    """Drop event keys applied before ``before`` (only the event triggers': a backfill's
    once-per-file key is kept for good). Returns how many were dropped."""
    status: str = await pool.execute(
        "DELETE FROM task_applied_events WHERE task_name = 'on_event' AND applied_at < $1",
        before,
    )
    return int(status.split()[-1])


# -- batch jobs ------------------------------------------------------------------------

BAR_COLUMNS = ("symbol", "interval", "ts", "open", "high", "low", "close", "volume")


def parse_bars_csv(text: str) -> list[tuple[Any, ...]]:
    """Historical bars from CSV (``symbol,interval,ts,open,high,low,close,volume``, optional
    ``vwap,trades``); prices exact. Pure."""
    rows = []
    for rec in csv.DictReader(io.StringIO(text)):
        ts = dt.datetime.fromisoformat(rec["ts"].replace("Z", "+00:00"))
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=dt.UTC)
        prices = [decimal.Decimal(rec[c]) for c in ("open", "high", "low", "close", "volume")]
        vwap = decimal.Decimal(rec["vwap"]) if rec.get("vwap") else prices[3]
        trades = int(rec["trades"]) if rec.get("trades") else 0
        rows.append((rec["symbol"].upper(), rec["interval"], ts, *prices, vwap, trades))
    return rows


def read_folder(folder: Path) -> list[tuple[str, bytes]]:
    return [(path.name, path.read_bytes()) for path in sorted(folder.glob("*.csv"))]


async def backfill(pool: asyncpg.Pool, files: list[tuple[str, bytes]]) -> dict[str, int]:
    """Load each CSV file once (a file is keyed by name and content hash)."""
    loaded = {}
    for name, data in files:
        key = f"backfill:{name}:{hashlib.sha256(data).hexdigest()[:16]}"
        rows = parse_bars_csv(data.decode())
        async with pool.acquire() as conn, conn.transaction():
            if not await _once(conn, key, "backfill"):
                continue
            status = await conn.execute(
                """INSERT INTO market_bars (symbol, interval, ts, open, high, low, close, volume,
                                            vwap, trades)
                   SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[],
                       $4::numeric[], $5::numeric[], $6::numeric[], $7::numeric[],
                       $8::numeric[], $9::numeric[], $10::int[])
                   ON CONFLICT DO NOTHING""",
                *[list(col) for col in zip(*rows, strict=True)],
            )
            loaded[name] = int(status.split()[-1])
    return loaded


@app.task(name="starkmatter.tasks.jobs.backfill_from_files", **RELIABLE)
def backfill_from_files(folder: str | None = None) -> dict[str, int]:
    target = Path(folder or os.environ.get("STARKMATTER_BACKFILL_DIR", "backfill"))
    if not target.is_dir():
        return {}
    files = read_folder(target)
    return _run(lambda pool, _redis: backfill(pool, files))


async def recalculate(pool: asyncpg.Pool, redis_conn: aioredis.Redis, user: str | None) -> int:
    """Mark every holder (or ``user``) to the live quotes through the portfolio's own ledger:
    marks, snapshot and day close stored, cache dropped, ``portfolio:{userId}`` told.
    Returns the number of users revalued."""
    if not await pool.fetchval("SELECT to_regclass('trading_positions') IS NOT NULL"):
        return 0
    who = uuid.UUID(user) if user else None
    return len(await marking.revalue(pool, redis_conn, dt.datetime.now(dt.UTC), who))


@app.task(name="starkmatter.tasks.jobs.recalculate_pnl", **RELIABLE)
def recalculate_pnl(user_id: str | None = None) -> int:
    return _run(lambda pool, r: recalculate(pool, r, user_id))


async def portfolio_reports(pool: asyncpg.Pool, store: objectstore.ObjectStore, day: str) -> int:
    """One JSON report per user with positions, at ``reports/{day}/{user}.json`` (same key on
    a rerun: idempotent)."""
    if not await pool.fetchval("SELECT to_regclass('trading_positions') IS NOT NULL"):
        return 0
    rows = await pool.fetch(
        """SELECT user_id::text AS user_id, symbol, quantity, avg_cost, realized_pnl, mark_price
           FROM trading_positions ORDER BY user_id, symbol"""
    )
    users: dict[str, list[dict[str, str | None]]] = {}
    for r in rows:
        users.setdefault(r["user_id"], []).append(
            {k: None if r[k] is None else str(r[k]) for k in
             ("symbol", "quantity", "avg_cost", "realized_pnl", "mark_price")}
        )  # fmt: skip
    for uid, positions in users.items():
        report = {"day": day, "user_id": uid, "positions": positions}
        await store.put(f"reports/{day}/{uid}.json", json.dumps(report, indent=1).encode())
    return len(users)


@app.task(name="starkmatter.tasks.jobs.daily_portfolio_reports", **RELIABLE)
def daily_portfolio_reports(day: str | None = None) -> int:
    cfg = settings.get_settings()
    when = day or (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    url = os.environ.get("STARKMATTER_REPORTS_URL") or (cfg.data_dir / "reports").resolve().as_uri()
    store = objectstore.open_store(url)
    return _run(lambda pool, _r: portfolio_reports(pool, store, when))


@app.task(name="starkmatter.tasks.jobs.poll_sample_news", **RELIABLE)
def poll_sample_news(base_url: str | None = None) -> int:
    """Dev mode: poll the bundled sample feeds (served by ``news.worker.run_dev``)."""
    base = base_url or os.environ.get("STARKMATTER_NEWS_SAMPLE_URL", "http://127.0.0.1:8090")

    async def job(pool: asyncpg.Pool, redis_conn: aioredis.Redis) -> int:
        import httpx

        universe = await pipeline.load_universe(pool)
        stored = 0
        async with httpx.AsyncClient(timeout=30) as client:
            for source in sampleserver.sources(base):
                stats = await pipeline.run_once(pool, redis_conn, client, source, universe)
                stored += stats.stored
        return stored

    return _run(job)


# -- event triggers (the durable path) -------------------------------------------------


async def handle_event(
    pool: asyncpg.Pool, redis_conn: aioredis.Redis, event: str, payload: dict[str, Any], key: str
) -> str:
    """Apply one event's triggers once; returns what was done (``duplicate`` on a replay)."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    if event in ("MarketDataUpdate", "PortfolioChange"):
        return await _recompute(pool, redis_conn, event, payload, f"{event}:{key}")
    async with pool.acquire() as conn, conn.transaction():
        if not await _once(conn, f"{event}:{key}", "on_event"):
            return "duplicate"
        if event == "NewsArticleReceived":
            row = await conn.fetchrow(
                """SELECT id, url, title, summary, published_at, category, sentiment,
                          sentiment_label, symbols FROM news_articles WHERE id = $1""",
                int(payload["article_id"]),
            )
            # In the claim's transaction: a retry after a failure here finds no claim, and
            # one after the commit finds the alerts stored (only their broadcast is lost).
            news_alerts = await storing.watcher_alerts(conn, [dict(row)] if row is not None else [])
        elif event == "OrderPlaced":
            stored = await delivering.store(
                conn,
                [
                    delivering.AlertEvent(
                        rule="order", kind="price", severity="info", state="triggered",
                        fingerprint=f"order:{payload['order_id']}",
                        summary=f"order {payload['order_id']} placed",
                        user_id=str(payload["user_id"]), details=payload,
                    )
                ],
            )  # fmt: skip
    # Broadcasts after commit: what was committed is what gets announced.
    if event == "NewsArticleReceived":
        alerts = await delivering.publish(redis_conn, news_alerts)
        return f"news: {len(alerts)} watcher alerts"
    await delivering.publish(redis_conn, stored)
    return "order notification"


async def _recompute(
    pool: asyncpg.Pool,
    redis_conn: aioredis.Redis,
    event: str,
    payload: dict[str, Any],
    claim: str,
) -> str:
    """Price alerts and a revaluation write in transactions of their own, which the claim
    cannot join. So they claim after their work, never before: a retry after a failure (or
    a crash) anywhere up to the claim finds none and does the work again. Both are
    idempotent: a fired price alert is switched off and stored once by its fingerprint; a
    revaluation marks to the live quotes again (one more snapshot, as every minute's does)."""
    if await pool.fetchval(
        "SELECT EXISTS (SELECT FROM task_applied_events WHERE event_key = $1)", claim
    ):
        return "duplicate"
    if event == "MarketDataUpdate":
        evaluator = evaluating.Evaluator(pool, redis_conn, rules_dir=None)
        try:
            fired = await evaluator.evaluate_price_alerts(
                dt.datetime.now(dt.UTC), payload.get("symbols")
            )
        finally:
            await evaluator.aclose()
        outcome = f"{len(fired)} price alerts"
    else:
        users = await recalculate(pool, redis_conn, str(payload["user_id"]))
        outcome = f"pnl for {users} users"
    await _once(pool, claim, "on_event")
    return outcome


@app.task(name="starkmatter.tasks.jobs.on_event", **RELIABLE)
def on_event(event: str, payload: dict[str, Any], key: str) -> str:
    return _run(lambda pool, r: handle_event(pool, r, event, payload, key))


def emit(event: str, payload: dict[str, Any], key: str) -> None:
    """Producers call this (after their commit, or from their outbox relay)."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    on_event.apply_async(args=(event, payload, key))
