"""Celery tasks through a real worker thread and the embedded Redis broker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from celery.contrib.testing import worker as testing_worker

from starkmatter.core import events, settings
from starkmatter.tasks import app as tasks_app
from starkmatter.tasks import jobs, relaying

pytestmark = pytest.mark.timeout(90)

CSV = """symbol,interval,ts,open,high,low,close,volume
AAPL,1m,2024-01-02T14:30:00Z,185.10,185.50,185.00,185.25,1200
AAPL,1m,2024-01-02T14:31:00Z,185.25,185.60,185.20,185.55,900
"""


@pytest.fixture
def env(
    database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    monkeypatch.setenv("STARKMATTER_ENV", "dev")
    monkeypatch.setenv("STARKMATTER_DATABASE_URL", database_url)
    monkeypatch.setenv("STARKMATTER_REDIS_URL", redis_url)
    monkeypatch.setenv("STARKMATTER_DATA_DIR", str(tmp_path))
    settings.get_settings.cache_clear()
    tasks_app.app.conf.broker_url = redis_url
    yield
    settings.get_settings.cache_clear()


@pytest.fixture
def worker(env: None) -> Iterator[None]:
    with testing_worker.start_worker(
        tasks_app.app, pool="solo", perform_ping_check=False, shutdown_timeout=10
    ):
        yield


@tasks_app.app.task(
    name="tests.always_unreachable", autoretry_for=(OSError,), max_retries=2,
    retry_backoff=False, default_retry_delay=0, acks_late=True,
)  # fmt: skip
def always_unreachable(marker: str) -> None:
    raise OSError(f"upstream unreachable ({marker})")


async def _eventually(conn: asyncpg.Connection[Any], sql: str, expected: Any) -> None:
    for _ in range(300):
        if await conn.fetchval(sql) == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{sql} never returned {expected!r}")


def test_reliable_settings_are_on() -> None:
    conf = tasks_app.app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert jobs.on_event.max_retries == 5 and jobs.on_event.retry_backoff


def test_schedule_has_the_seeds_frequencies_and_news_polling_only_in_dev() -> None:
    dev = tasks_app.beat_schedule(dev=True)
    assert dev["pnl-recalculation"]["schedule"] == 60
    assert dev["historical-backfill"]["schedule"] == 3600
    assert dev["news-polling"]["schedule"] == 300
    assert "news-polling" not in tasks_app.beat_schedule(dev=False)


async def test_backfill_loads_each_file_once_even_when_delivered_twice(
    worker: None, db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "backfill"
    folder.mkdir()
    (folder / "aapl.csv").write_text(CSV)
    jobs.backfill_from_files.delay(str(folder))
    jobs.backfill_from_files.delay(str(folder))
    await _eventually(db, "SELECT count(*) FROM task_applied_events", 1)
    await _eventually(db, "SELECT count(*) FROM market_bars WHERE symbol = 'AAPL'", 2)
    close = await db.fetchval("SELECT close FROM market_bars ORDER BY ts DESC LIMIT 1")
    assert str(close) == "185.55000000"


async def test_news_event_through_the_durable_path_alerts_a_watcher_once(
    worker: None, db: asyncpg.Connection[Any]
) -> None:
    user = await db.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ('w@example.com', 'x') RETURNING id"
    )
    await db.execute("INSERT INTO user_watchlist (user_id, symbol) VALUES ($1, 'NVDA')", user)
    article = await db.fetchval(
        """INSERT INTO news_articles (source, url, content_hash, title, published_at, category,
               sentiment, sentiment_label, symbols)
           VALUES ('t', 'http://x/1', '\\x01', 'Nvidia beats', now(), 'earnings', 0.6,
                   'positive', '{NVDA}') RETURNING id"""
    )
    for _ in range(2):
        jobs.emit("NewsArticleReceived", {"article_id": article}, key=f"article-{article}")
    await _eventually(db, "SELECT count(*) FROM task_applied_events", 1)
    await _eventually(db, "SELECT count(*) FROM alert_events WHERE kind = 'news'", 1)
    row = await db.fetchrow("SELECT user_id, details FROM alert_events")
    assert row is not None and row["user_id"] == user
    assert row["details"]["symbols"] == ["NVDA"]


async def test_outbox_event_reaches_the_worker_through_the_beat_relay(
    worker: None, db: asyncpg.Connection[Any], database_url: str
) -> None:
    """The production path: a producer's outbox row, the relay beat runs, Celery, the
    trigger; the row is gone once handed over."""
    user = await db.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ('r@example.com', 'x') RETURNING id"
    )
    await db.execute("INSERT INTO user_watchlist (user_id, symbol) VALUES ($1, 'AMD')", user)
    async with db.transaction():
        article = await db.fetchval(
            """INSERT INTO news_articles (source, url, content_hash, title, published_at,
                   category, sentiment, sentiment_label, symbols)
               VALUES ('t', 'http://x/2', '\\x02', 'AMD wins contract', now(), 'other', 0.2,
                       'neutral', '{AMD}') RETURNING id"""
        )
        await events.append(db, "NewsArticleReceived", {"article_id": article}, f"a-{article}")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    stop = asyncio.Event()
    relay = asyncio.create_task(relaying.run(pool, relaying.to_celery, stop))
    try:
        await _eventually(db, "SELECT count(*) FROM alert_events WHERE kind = 'news'", 1)
        await _eventually(db, "SELECT count(*) FROM event_outbox", 0)
    finally:
        stop.set()
        await relay
        await pool.close()
    assert await db.fetchval("SELECT user_id FROM alert_events") == user


async def test_task_failing_after_its_retries_lands_in_the_dead_letter_table(
    worker: None, db: asyncpg.Connection[Any]
) -> None:
    always_unreachable.delay("dlq-test")
    await _eventually(db, "SELECT count(*) FROM task_dead_letters", 1)
    row = await db.fetchrow("SELECT task_name, args, retries, error FROM task_dead_letters")
    assert row is not None and row["task_name"] == "tests.always_unreachable"
    assert row["args"] == ["dlq-test"] and row["retries"] == 2
    assert "upstream unreachable" in row["error"]


def test_unknown_events_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown event"):
        jobs.emit("SomethingHappened", {}, key="k")
