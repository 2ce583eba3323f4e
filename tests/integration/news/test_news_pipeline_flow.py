"""The news pipeline against the sample feeds over HTTP, real PostgreSQL and Redis."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from starkmatter.core import events, replaying
from starkmatter.news import config, pipeline, sampleserver, storing
from starkmatter.tasks import jobs, relaying
from tests.support import LiveServer, sign_up

pytestmark = pytest.mark.timeout(60)


def _numbered(data: bytes) -> Any:
    """The payload of a message published for replay (numbered by Redis)."""
    number, payload = replaying.split(data)
    assert number is not None, "published through replaying, so SSE clients can resume"
    return json.loads(payload)


def _source(feeds: str, name: str) -> config.NewsSource:
    return next(s for s in sampleserver.sources(feeds) if s.name == name)


async def _poll(
    pool: asyncpg.Pool, redis: aioredis.Redis, feeds: str, name: str
) -> pipeline.PollStats:
    universe = await pipeline.load_universe(pool)
    async with httpx.AsyncClient() as client:
        return await pipeline.run_once(pool, redis, client, _source(feeds, name), universe)


async def _by_url(pool: asyncpg.Pool, url: str) -> dict[str, Any]:
    row = await pool.fetchrow("SELECT * FROM news_articles WHERE url = $1", url)
    assert row is not None, url
    return dict(row)


async def test_rss_poll_stores_classified_articles_with_tickers_and_sentiment(
    pool: asyncpg.Pool, redis: aioredis.Redis, feeds: str
) -> None:
    stats = await _poll(pool, redis, feeds, "sample-rss")
    assert (stats.parsed, stats.stored, stats.duplicates) == (11, 10, 1)
    apple = await _by_url(pool, "http://localhost/news/apple-q4-earnings")
    assert apple["category"] == "earnings" and apple["symbols"] == ["AAPL"]
    assert apple["sentiment_label"] == "positive" and apple["companies"] == ["Apple Inc."]
    msft = await _by_url(pool, "http://localhost/news/msft-acquisition")
    assert msft["category"] == "mna" and msft["symbols"] == ["MSFT"]
    assert "track()" not in msft["summary"] and "<p>" not in msft["summary"]
    tsla = await _by_url(pool, "http://localhost/news/tsla-downgrade")
    assert tsla["category"] == "analyst_action" and tsla["symbols"] == ["GS", "TSLA"]
    assert tsla["sentiment_label"] == "negative"
    assert (await _by_url(pool, "http://localhost/news/fed-holds"))["category"] == "macro"
    assert (await _by_url(pool, "http://localhost/news/amzn-ftc"))["category"] == "regulatory"
    drift = await _by_url(pool, "http://localhost/news/markets-drift")
    assert drift["category"] == "other" and drift["symbols"] == []


async def test_second_poll_is_a_conditional_get_answered_not_modified(
    pool: asyncpg.Pool, redis: aioredis.Redis, feeds: str
) -> None:
    await _poll(pool, redis, feeds, "sample-rss")
    again = await _poll(pool, redis, feeds, "sample-rss")
    assert again.not_modified and again.stored == 0
    state = await pool.fetchrow("SELECT etag, last_status FROM news_fetch_state")
    assert state is not None and state["etag"].startswith('"') and state["last_status"] == 304


async def test_changed_feed_stores_only_the_new_articles(
    pool: asyncpg.Pool, redis: aioredis.Redis, feeds: str, feed_bodies: dict[str, bytes]
) -> None:
    await _poll(pool, redis, feeds, "sample-rss")
    original = (sampleserver.SAMPLES / "markets.rss").read_text()
    extra = """<item><title>Netflix raises prices as subscriber growth accelerates</title>
      <link>http://localhost/news/nflx-prices</link>
      <pubDate>Tue, 24 Nov 2026 22:00:00 GMT</pubDate>
      <description>Netflix reported strong subscriber growth.</description></item>"""
    feed_bodies["markets.rss"] = original.replace("</channel>", extra + "</channel>").encode()
    stats = await _poll(pool, redis, feeds, "sample-rss")
    assert not stats.not_modified
    assert (stats.stored, stats.duplicates) == (1, 11)
    assert (await _by_url(pool, "http://localhost/news/nflx-prices"))["symbols"] == ["NFLX"]


async def test_edgar_filings_are_matched_to_filers_and_classified_by_form(
    pool: asyncpg.Pool, redis: aioredis.Redis, feeds: str
) -> None:
    stats = await _poll(pool, redis, feeds, "sample-edgar")
    assert stats.stored == 3
    rows = await pool.fetch("SELECT title, symbols, category FROM news_articles ORDER BY title")
    got = {r["title"].split(" - ")[0]: (r["symbols"], r["category"]) for r in rows}
    assert got == {
        "10-Q": (["MSFT"], "earnings"),
        "8-K": (["AAPL"], "earnings"),
        "SC 13D": (["TSLA"], "mna"),
    }


async def test_json_api_is_read_through_its_field_map(
    pool: asyncpg.Pool, redis: aioredis.Redis, feeds: str
) -> None:
    assert (await _poll(pool, redis, feeds, "sample-wire")).stored == 3
    jpm = await _by_url(pool, "http://localhost/wire/jpm-upgrade")
    assert jpm["category"] == "analyst_action" and jpm["symbols"] == ["JPM"]
    xom = await _by_url(pool, "http://localhost/wire/xom-loss")
    assert xom["published_at"].timestamp() == 1764007200 and xom["symbols"] == ["XOM"]
    assert xom["sentiment_label"] == "negative"
    assert (await _by_url(pool, "http://localhost/wire/gdp"))["category"] == "macro"


async def test_items_no_reader_foresaw_are_skipped_and_the_rest_of_the_feed_is_stored(
    pool: asyncpg.Pool, redis: aioredis.Redis, feeds: str, feed_bodies: dict[str, bytes]
) -> None:
    # Each of these once stopped the news worker (and so it stayed, as every restart met the
    # same feed again): an overflowing or impossible date, a NUL in the byline or the link
    # (PostgreSQL refuses it, and with it the whole batch), a lone surrogate in a title.
    def story(n: int, **fields: object) -> dict[str, object]:
        return {"link": f"http://localhost/wire/odd-{n}", "headline": f"Odd story {n} on JPM",
                "teaser": "Markets moved.", "time": "2026-11-24T13:30:00Z", **fields}  # fmt: skip

    stories = [
        story(1, time=1e400),
        story(2, time=float("nan")),
        story(3, time=1e20),
        story(4, time="9999-12-31T23:59:59-12:00"),
        story(5, byline="bob\u0000"),
        story(6, link="http://localhost/wire/odd-6\u0000x"),
        story(7, headline="broken \ud800 surrogate on JPM"),
        story(8),
    ]
    body = json.dumps({"data": {"stories": stories}}, allow_nan=True)
    feed_bodies["wire.json"] = body.encode()
    stats = await _poll(pool, redis, feeds, "sample-wire")
    assert stats.stored == 8
    rows = await pool.fetch("SELECT url, author, title FROM news_articles ORDER BY url")
    assert "bob" in [r["author"] for r in rows]
    assert all("\x00" not in r["url"] + (r["author"] or "") + r["title"] for r in rows)


async def test_new_articles_are_broadcast_on_news_all_and_their_category(
    pool: asyncpg.Pool, redis: aioredis.Redis, feeds: str
) -> None:
    pubsub = redis.pubsub()
    await pubsub.psubscribe("news:*")
    await _poll(pool, redis, feeds, "sample-wire")
    seen: list[tuple[str, str]] = []
    while len(seen) < 9:
        message = await pubsub.get_message(timeout=5)
        assert message is not None
        if message["type"] == "pmessage":
            seen.append((message["channel"].decode(), _numbered(message["data"])["title"]))
    await pubsub.aclose()
    channels = [c for c, _ in seen]
    assert channels.count("news:all") == 3 and channels.count("news:general") == 3
    assert ("news:macro", "GDP growth beats forecasts, unemployment steady") in seen


async def test_users_watching_a_mentioned_symbol_get_one_stored_alert_through_the_outbox(
    api: LiveServer, pool: asyncpg.Pool, redis: aioredis.Redis, feeds: str
) -> None:
    watcher = await sign_up(api.client)
    bystander = await sign_up(api.client)
    put = await api.client.put("/news/watchlist/aapl", headers=watcher.headers)
    assert put.status_code == 200 and put.json()["symbols"] == ["AAPL"]
    await api.client.put("/news/watchlist/KO", headers=bystander.headers)
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"alerts:{watcher.user_id}")
    await _poll(pool, redis, feeds, "sample-rss")
    await _poll(pool, redis, feeds, "sample-edgar")
    # Polling only queued the trigger, in the storing transaction; the relay applies it,
    # and a second delivery of the same events changes nothing.
    assert await pool.fetchval("SELECT count(*) FROM alert_events WHERE kind = 'news'") == 0
    queued = await pool.fetch("SELECT event, event_key, payload FROM event_outbox ORDER BY id")
    assert queued and {r["event"] for r in queued} == {"NewsArticleReceived"}
    deliver = relaying.in_process(pool, redis)
    assert await events.relay_once(pool, deliver) == len(queued)
    assert await events.pending(pool) == 0
    for row in queued:
        await deliver(events.Event(row["event"], row["event_key"], row["payload"]))
    messages: list[dict[str, Any]] = []
    while len(messages) < 2:
        message = await pubsub.get_message(timeout=5)
        assert message is not None
        if message["type"] == "message":
            messages.append(_numbered(message["data"]))
    await pubsub.aclose()
    assert {m["kind"] for m in messages} == {"news"}
    assert all(m["details"]["symbols"] == ["AAPL"] for m in messages)
    stored = await pool.fetch("SELECT user_id FROM alert_events WHERE kind = 'news'")
    assert [str(r["user_id"]) for r in stored] == [watcher.user_id] * 2


async def test_a_trigger_that_fails_midway_is_applied_in_full_by_its_retry(
    api: LiveServer,
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    feeds: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The trigger's once-only claim used to commit before the watchers' alerts were
    # written: a failure in between, and the retry saw "duplicate" and wrote nothing.
    watcher = await sign_up(api.client)
    await api.client.put("/news/watchlist/AAPL", headers=watcher.headers)
    await _poll(pool, redis, feeds, "sample-rss")
    row = await pool.fetchrow(
        """SELECT o.event, o.event_key, o.payload FROM event_outbox o
           JOIN news_articles a ON a.id = (o.payload->>'article_id')::bigint
           WHERE 'AAPL' = ANY(a.symbols) ORDER BY o.id LIMIT 1"""
    )
    assert row is not None
    real = storing.watchers
    calls = 0

    async def flaky(*args: Any) -> dict[str, set[str]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("the database went away")
        return await real(*args)

    monkeypatch.setattr(storing, "watchers", flaky)
    payload = json.loads(row["payload"]) if isinstance(row["payload"], str) else row["payload"]
    with pytest.raises(ConnectionError):
        await jobs.handle_event(pool, redis, row["event"], payload, row["event_key"])
    done = await jobs.handle_event(pool, redis, row["event"], payload, row["event_key"])
    assert done.startswith("news:")
    again = await jobs.handle_event(pool, redis, row["event"], payload, row["event_key"])
    assert again == "duplicate"
    stored = await pool.fetchval(
        "SELECT count(*) FROM alert_events WHERE kind = 'news' AND user_id = $1::uuid",
        watcher.user_id,
    )
    assert stored == int(done.split()[1]) == 1


async def test_news_search_ranks_filters_and_paginates(
    api: LiveServer, pool: asyncpg.Pool, redis: aioredis.Redis, feeds: str
) -> None:
    for name in ("sample-rss", "sample-edgar", "sample-wire"):
        await _poll(pool, redis, feeds, name)
    user = await sign_up(api.client)

    async def get(query: str) -> dict[str, Any]:
        resp = await api.client.get(f"/news?{query}", headers=user.headers)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    found = await get("q=acquisition deal")
    assert found["items"][0]["url"] == "http://localhost/news/msft-acquisition"
    assert found["items"][0]["rank"] > 0
    apple = await get("symbol=aapl")
    assert apple["total"] == 2 and all("AAPL" in a["symbols"] for a in apple["items"])
    macro = await get("category=macro")
    assert {a["url"] for a in macro["items"]} == {
        "http://localhost/news/fed-holds",
        "http://localhost/wire/gdp",
    }
    first, second = await get("limit=5"), await get("limit=5&offset=5")
    assert first["total"] == 16 and len(first["items"]) == 5
    assert not {a["id"] for a in first["items"]} & {a["id"] for a in second["items"]}
    dates = [a["published_at"] for a in first["items"] + second["items"]]
    assert dates == sorted(dates, reverse=True)
    missing = await api.client.get("/news/999999", headers=user.headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "article_not_found"
    # Both were a 500 from the database: a NUL in the query, an id past bigint.
    for path in ("/news?q=a%00b", "/news/99999999999999999999"):
        refused = await api.client.get(path, headers=user.headers)
        assert refused.status_code == 422, (path, refused.text)
        assert refused.json()["error"]["code"] == "validation_error"


async def test_news_requires_a_signed_in_user(api: LiveServer) -> None:
    assert (await api.client.get("/news")).status_code == 401
