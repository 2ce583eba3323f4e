"""POST /ai/analyze end to end: live API, real PostgreSQL and Redis, the real SDK over HTTP
to a loopback Messages API server."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import json
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
import websockets

from starkmatter.ai import config, offline
from tests.integration.ai import anthropic_server
from tests.support import LiveServer, SignedIn, sign_up

pytestmark = pytest.mark.timeout(60)


async def _wait_done(live: LiveServer, user: SignedIn, analysis_id: str) -> dict[str, Any]:
    for _ in range(500):
        got = await live.client.get(f"/ai/analyses/{analysis_id}", headers=user.headers)
        assert got.status_code == 200, got.text
        body: dict[str, Any] = got.json()
        if body["status"] != "pending":
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"analysis {analysis_id} never completed")


async def _analyze(live: LiveServer, user: SignedIn, **body: Any) -> dict[str, Any]:
    body.setdefault("symbols", ["AAPL"])
    resp = await live.client.post("/ai/analyze", json=body, headers=user.headers)
    assert resp.status_code == 202, resp.text
    result: dict[str, Any] = resp.json()
    return result


async def _insert_bar(db: asyncpg.Connection[Any], symbol: str, minute: int, **ind: str) -> None:
    ts = dt.datetime(2026, 11, 25, 14, minute, tzinfo=dt.UTC)
    price = decimal.Decimal("190.50") + minute
    await db.execute(
        """INSERT INTO market_bars (symbol, interval, ts, open, high, low, close, volume, vwap,
                                    trades, indicators)
           VALUES ($1, '1m', $2, $3, $3, $3, $3, 1000, $3, 10, $4)""",
        symbol,
        ts,
        price,
        ind,
    )


async def test_analysis_streams_on_its_channel_and_is_fetchable_by_id(
    api: LiveServer, redis: aioredis.Redis, anthropic: anthropic_server.FakeAnthropic
) -> None:
    user = await sign_up(api.client)
    pubsub = redis.pubsub()
    await pubsub.psubscribe("ai:analysis:*")
    accepted = await _analyze(api, user, symbols=["aapl", "MSFT"], kind="technical")
    assert accepted["status"] == "pending"
    assert accepted["channel"] == f"ai:analysis:{accepted['id']}"
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] != "result":
        message = await pubsub.get_message(timeout=10)
        assert message is not None, "stream ended without a result"
        if message["type"] != "pmessage":
            continue
        assert message["channel"].decode() == accepted["channel"]
        events.append(json.loads(message["data"]))
    await pubsub.aclose()
    deltas = [e for e in events if e["type"] == "delta"]
    assert len(deltas) > 1
    streamed = json.loads("".join(e["partial_json"] for e in deltas))
    assert events[-1]["result"]["summary"] == streamed["summary"]
    done = await _wait_done(api, user, accepted["id"])
    assert done["status"] == "done" and done["source"] == "anthropic" and done["label"] is None
    assert done["result"]["symbols"] == ["AAPL", "MSFT"]
    assert done["checks"]["passed"] is True
    assert done["model"] == config.DEFAULT_MODEL


async def test_request_uses_cached_system_prompt_and_forced_tool(
    api: LiveServer, anthropic: anthropic_server.FakeAnthropic
) -> None:
    user = await sign_up(api.client)
    accepted = await _analyze(api, user)
    await _wait_done(api, user, accepted["id"])
    (call,) = anthropic.calls
    assert call["stream"] is True
    assert call["model"] == config.DEFAULT_MODEL
    assert call["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert call["tool_choice"] == {"type": "tool", "name": "submit_analysis"}
    sent = anthropic.headers[0]
    assert "test-anthropic-key" in (sent.get("x-api-key", ""), sent.get("authorization", "")[7:])


async def test_identical_request_is_served_from_cache_without_upstream_call(
    api: LiveServer, anthropic: anthropic_server.FakeAnthropic
) -> None:
    user = await sign_up(api.client)
    first = await _analyze(api, user, symbols=["AAPL"], question="Where is AAPL heading?")
    first_done = await _wait_done(api, user, first["id"])
    # Same request written differently: case, order, spacing, punctuation.
    second = await _analyze(api, user, symbols=["aapl"], question="where is  AAPL heading")
    assert second["status"] == "done" and second["cached"] is True
    assert second["result"] == first_done["result"]
    assert len(anthropic.calls) == 1


async def test_new_bar_changes_the_data_version_so_the_cache_misses(
    api: LiveServer, db: asyncpg.Connection[Any], anthropic: anthropic_server.FakeAnthropic
) -> None:
    user = await sign_up(api.client)
    await _insert_bar(db, "AAPL", 1)
    await _wait_done(api, user, (await _analyze(api, user))["id"])
    await _insert_bar(db, "AAPL", 2)
    again = await _analyze(api, user)
    assert again["cached"] is False
    await _wait_done(api, user, again["id"])
    assert len(anthropic.calls) == 2


async def test_concurrent_identical_requests_share_one_upstream_call(
    api: LiveServer, anthropic: anthropic_server.FakeAnthropic
) -> None:
    user = await sign_up(api.client)
    anthropic.gate = asyncio.Event()
    accepted = await asyncio.gather(*(_analyze(api, user, symbols=["NVDA"]) for _ in range(6)))
    await asyncio.wait_for(anthropic.arrived.wait(), 10)
    anthropic.gate.set()
    done = [await _wait_done(api, user, a["id"]) for a in accepted]
    assert len({d["id"] for d in done}) == 6
    assert all(d["source"] == "anthropic" for d in done)
    assert len({json.dumps(d["result"], sort_keys=True) for d in done}) == 1
    assert len(anthropic.calls) == 1


@pytest.mark.parametrize(
    "failure", [anthropic_server.rate_limited("0"), anthropic_server.overloaded()]
)
async def test_rate_limited_or_overloaded_call_is_retried_then_answered(
    api: LiveServer,
    anthropic: anthropic_server.FakeAnthropic,
    failure: anthropic_server.Reply,
) -> None:
    user = await sign_up(api.client)
    anthropic.script = [failure]
    done = await _wait_done(api, user, (await _analyze(api, user))["id"])
    assert done["source"] == "anthropic"
    assert len(anthropic.calls) == 2


async def test_retry_after_longer_than_the_backoff_cap_falls_back_at_once(
    api: LiveServer, anthropic: anthropic_server.FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARKMATTER_AI_BACKOFF_MAX_S", "5")
    user = await sign_up(api.client)
    anthropic.script = [anthropic_server.rate_limited("3600")]
    done = await _wait_done(api, user, (await _analyze(api, user))["id"])
    assert done["source"] == "offline" and done["fallback_reason"] == "rate_limited"
    assert len(anthropic.calls) == 1


@pytest.mark.parametrize("kind", ["malformed", "broken_json"])
async def test_malformed_output_falls_back_to_the_labelled_offline_analyst(
    api: LiveServer, anthropic: anthropic_server.FakeAnthropic, kind: str
) -> None:
    user = await sign_up(api.client)
    anthropic.script = [anthropic_server.Reply(kind)]
    done = await _wait_done(api, user, (await _analyze(api, user))["id"])
    assert done["source"] == "offline" and done["label"] == offline.LABEL
    assert done["fallback_reason"] == "checks_failed:format"
    assert done["result"]["summary"].startswith(offline.LABEL)


async def test_answer_promising_returns_is_filtered_out(
    api: LiveServer, anthropic: anthropic_server.FakeAnthropic
) -> None:
    user = await sign_up(api.client)
    bad = anthropic_server.good_analysis(["AAPL"])
    bad["summary"] = "AAPL is a guaranteed profit this week, buy everything you can."
    anthropic.script = [anthropic_server.Reply("ok", analysis=bad)]
    done = await _wait_done(api, user, (await _analyze(api, user))["id"])
    assert done["source"] == "offline"
    assert done["fallback_reason"] == "checks_failed:guaranteed_returns"


async def test_circuit_opens_after_repeated_failures_and_the_offline_analyst_answers(
    api: LiveServer, anthropic: anthropic_server.FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARKMATTER_AI_BREAKER_FAILURES", "2")
    monkeypatch.setenv("STARKMATTER_AI_MAX_ATTEMPTS", "1")
    user = await sign_up(api.client)
    anthropic.script = [anthropic_server.overloaded() for _ in range(5)]
    reasons = []
    for symbol in ("AAA", "BBB", "CCC"):
        done = await _wait_done(api, user, (await _analyze(api, user, symbols=[symbol]))["id"])
        assert done["source"] == "offline"
        reasons.append(done["fallback_reason"])
    assert reasons == ["overloaded", "overloaded", "circuit_open"]
    assert len(anthropic.calls) == 2


async def test_without_an_api_key_the_offline_analyst_answers_from_indicators_and_news(
    api: LiveServer, db: asyncpg.Connection[Any]
) -> None:
    user = await sign_up(api.client)
    await _insert_bar(
        db, "TSLA", 5, rsi_14="78.5", macd_histogram="-0.4", sma_20="250", bb_upper="260"
    )
    await db.execute(
        """INSERT INTO news_articles (source, url, content_hash, title, summary, published_at,
               category, sentiment, sentiment_label, symbols)
           VALUES ('t', 'https://n/1', '\\x01', 'Tesla misses delivery estimates', '',
                   now(), 'earnings', -0.6, 'negative', '{TSLA}')"""
    )
    done = await _wait_done(api, user, (await _analyze(api, user, symbols=["TSLA"]))["id"])
    assert done["source"] == "offline" and done["fallback_reason"] == "no_api_key"
    assert done["label"] == offline.LABEL
    points = " ".join(done["result"]["key_points"])
    assert "RSI(14) 78.5 is overbought" in points
    assert "news sentiment averages -0.60" in points
    assert done["result"]["outlook"] == "bearish"


async def test_portfolio_risk_context_includes_the_users_positions(
    api: LiveServer, db: asyncpg.Connection[Any], anthropic: anthropic_server.FakeAnthropic
) -> None:
    user = await sign_up(api.client)
    await db.execute(
        """INSERT INTO trading_positions (user_id, symbol, quantity, avg_cost, mark_price)
           VALUES ($1::uuid, 'AMD', 40, 120.5, 118.25), ($1::uuid, 'INTC', 10, 30, 31)""",
        user.user_id,
    )
    done = await _wait_done(
        api, user, (await _analyze(api, user, symbols=["AMD"], kind="portfolio_risk"))["id"]
    )
    assert done["status"] == "done"
    prompt = anthropic.calls[0]["messages"][0]["content"]
    assert "# positions" in prompt
    assert "AMD: qty=40" in prompt and "INTC: qty=10" in prompt


async def test_a_shared_market_analysis_never_carries_the_askers_positions(
    api: LiveServer, db: asyncpg.Connection[Any], anthropic: anthropic_server.FakeAnthropic
) -> None:
    # A technical analysis is cached for everyone who asks the same: built with the first
    # asker's positions, it once served them to every later user.
    holder, other = await sign_up(api.client), await sign_up(api.client)
    await db.execute(
        """INSERT INTO trading_positions (user_id, symbol, quantity, avg_cost, mark_price)
           VALUES ($1::uuid, 'AMD', 500, 123.45, 118.25)""",
        holder.user_id,
    )
    first = await _wait_done(
        api, holder, (await _analyze(api, holder, symbols=["AMD"], kind="technical"))["id"]
    )
    assert first["status"] == "done"
    prompt = anthropic.calls[0]["messages"][0]["content"]
    assert "# positions" not in prompt and "123.45" not in prompt
    again = await _wait_done(
        api, other, (await _analyze(api, other, symbols=["AMD"], kind="technical"))["id"]
    )
    assert again["status"] == "done" and len(anthropic.calls) == 1  # shared, as before


async def test_quota_refuses_requests_over_the_hourly_limit(
    api: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARKMATTER_AI_QUOTA_PER_HOUR", "2")
    user = await sign_up(api.client)
    for symbol in ("A", "B"):
        await _analyze(api, user, symbols=[symbol])
    refused = await api.client.post("/ai/analyze", json={"symbols": ["C"]}, headers=user.headers)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "ai_quota_exceeded"
    assert int(refused.headers["retry-after"]) > 0


async def test_another_users_analysis_is_not_found(api: LiveServer) -> None:
    owner = await sign_up(api.client)
    other = await sign_up(api.client)
    accepted = await _analyze(api, owner)
    got = await api.client.get(f"/ai/analyses/{accepted['id']}", headers=other.headers)
    assert got.status_code == 404
    assert got.json()["error"]["code"] == "analysis_not_found"


async def test_history_lists_only_the_users_own_analyses_newest_first(api: LiveServer) -> None:
    user = await sign_up(api.client)
    other = await sign_up(api.client)
    ids = [(await _analyze(api, user, symbols=[s]))["id"] for s in ("X", "Y", "Z")]
    await _analyze(api, other, symbols=["Q"])
    page = await api.client.get("/ai/analyses?limit=2", headers=user.headers)
    assert page.status_code == 200
    assert [item["id"] for item in page.json()["items"]] == [ids[2], ids[1]]
    rest = await api.client.get("/ai/analyses?limit=2&offset=2", headers=user.headers)
    assert [item["id"] for item in rest.json()["items"]] == [ids[0]]


async def test_invalid_request_is_refused_with_field_paths(api: LiveServer) -> None:
    user = await sign_up(api.client)
    resp = await api.client.post(
        "/ai/analyze", json={"symbols": [], "kind": "astrology"}, headers=user.headers
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "validation_error"


async def test_only_the_requester_may_subscribe_to_the_analysis_stream_on_the_gateway(
    api: LiveServer, config: Any, anthropic: anthropic_server.FakeAnthropic
) -> None:
    from starkmatter.core import embedded
    from starkmatter.gateway import server as gateway_server

    owner, other = await sign_up(api.client), await sign_up(api.client)
    accepted = await _analyze(api, owner, symbols=["AAPL"], kind="technical")
    port = embedded.free_port()
    started = asyncio.Event()
    gateway = asyncio.create_task(gateway_server.run(config, port=port, started=started))
    await started.wait()
    try:
        replies = {}
        for who in (owner, other):
            uri = f"ws://127.0.0.1:{port}/ws?token={who.access_token}"
            async with websockets.connect(uri) as ws:
                await ws.send(json.dumps({"op": "subscribe", "topics": [accepted["channel"]]}))
                replies[who.user_id] = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert replies[owner.user_id]["type"] != "error", replies[owner.user_id]
        assert replies[other.user_id]["type"] == "error"
        assert replies[other.user_id]["code"] == "forbidden"
    finally:
        gateway.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gateway


async def test_a_revoked_session_is_refused_even_for_a_cached_answer(
    api: LiveServer, db: asyncpg.Connection[Any], redis: aioredis.Redis
) -> None:
    user = await sign_up(api.client)
    first = await _analyze(api, user, symbols=["IBM"])
    await _wait_done(api, user, first["id"])
    assert (await _analyze(api, user, symbols=["IBM"]))["cached"] is True
    logout = await api.client.post("/auth/logout", headers=user.headers)
    assert logout.status_code == 204
    refused = await api.client.post("/ai/analyze", json={"symbols": ["IBM"]}, headers=user.headers)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "session_revoked"
    assert await db.fetchval("SELECT count(*) FROM ai_analyses") == 2
    assert len([k async for k in redis.scan_iter("ai:owner:*")]) == 2


@pytest.mark.parametrize("commit", ["durable", "async"])
async def test_a_cache_hit_is_recorded_in_the_users_history(
    api: LiveServer,
    anthropic: anthropic_server.FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    commit: str,
) -> None:
    monkeypatch.setenv("STARKMATTER_AI_HIT_HISTORY_COMMIT", commit)
    user = await sign_up(api.client)
    first = await _analyze(api, user, symbols=["ORCL"])
    await _wait_done(api, user, first["id"])
    hit = await _analyze(api, user, symbols=["ORCL"])
    assert hit["cached"] is True
    stored = await api.client.get(f"/ai/analyses/{hit['id']}", headers=user.headers)
    assert stored.status_code == 200
    assert stored.json() == hit
    page = await api.client.get("/ai/analyses", headers=user.headers)
    assert [item["id"] for item in page.json()["items"]] == [hit["id"], first["id"]]
    assert len(anthropic.calls) == 1


async def test_rate_limit_retry_waits_as_long_as_the_server_asks(
    api: LiveServer, redis: aioredis.Redis, anthropic: anthropic_server.FakeAnthropic
) -> None:
    user = await sign_up(api.client)
    anthropic.script = [anthropic_server.rate_limited("1")]
    pubsub = redis.pubsub()
    await pubsub.psubscribe("ai:analysis:*")
    accepted = await _analyze(api, user, symbols=["AAPL"])
    done = await _wait_done(api, user, accepted["id"])
    events = []
    while (message := await pubsub.get_message(timeout=1)) is not None:
        if message["type"] == "pmessage":
            events.append(json.loads(message["data"]))
    await pubsub.aclose()
    assert done["source"] == "anthropic"
    assert len(anthropic.calls) == 2
    # The second call came no sooner than the server's retry-after said.
    assert anthropic.call_times[1] - anthropic.call_times[0] >= 1.0
    retries = [e for e in events if e["type"] == "retry"]
    assert retries == [{"type": "retry", "attempt": 2, "wait_s": 1.0, "seq": 1}]


async def test_answer_about_other_symbols_is_rejected_as_irrelevant(
    api: LiveServer, anthropic: anthropic_server.FakeAnthropic
) -> None:
    user = await sign_up(api.client)
    elsewhere = {
        "summary": "XOM named a new chief financial officer at its annual meeting this week.",
        "outlook": "neutral",
        "confidence": 0.5,
        "symbols": ["XOM"],
        "key_points": ["XOM board changes"],
        "risks": [],
    }
    anthropic.script = [anthropic_server.Reply("ok", analysis=elsewhere)]
    done = await _wait_done(
        api, user, (await _analyze(api, user, symbols=["AAPL"], kind="technical"))["id"]
    )
    assert done["source"] == "offline" and done["label"] == offline.LABEL
    assert done["fallback_reason"] == "checks_failed:irrelevant"
    assert done["result"]["symbols"] == ["AAPL"]
