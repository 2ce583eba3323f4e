"""The market REST routes over HTTP, against data the ingest pipeline stored."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import decimal
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn

from starkmatter.api import app as api_app
from starkmatter.core import embedded, settings
from starkmatter.ingest import pipeline
from starkmatter.ingest.providers import base
from starkmatter.market import routes, validation
from tests.support import LiveServer, sign_up, sign_up_admin

pytestmark = pytest.mark.timeout(60)
TS = "2026-11-25T14:30:{:02d}.000001Z"


@contextlib.asynccontextmanager
async def serve_market_api(config: settings.Settings) -> AsyncIterator[LiveServer]:
    app = api_app.create_app(config)
    if not any(getattr(r, "path", "").startswith("/market/") for r in app.routes):
        app.include_router(routes.router)
    port = embedded.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="on"))  # fmt: skip
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes no event
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield LiveServer(f"http://127.0.0.1:{port}", client, config)
    finally:
        server.should_exit = True
        await task


async def _ingest(config: settings.Settings, messages: list[dict[str, Any]]) -> None:
    pool = await asyncpg.create_pool(config.database_url, min_size=1, max_size=2)
    redis = aioredis.Redis.from_url(config.redis_url or "")
    validator = validation.Validator(validation.Rules(max_staleness_s=None, max_skew_s=10**9))
    pipe = pipeline.Pipeline("rest-test", validator, pool, redis)
    task = asyncio.create_task(pipe.run())
    try:
        await pipe.submit([base.Incoming(m, None) for m in messages])
        await pipe.drain(close_bars=True)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await redis.aclose()
        await pool.close()


async def test_quotes_depth_bars_and_ticks_are_served_with_exact_decimals_and_cursors(
    config: settings.Settings,
) -> None:
    trades = [
        {"type": "trade", "symbol": "AAPL", "ts": TS.format(i), "price": f"227.{i:02d}",
         "size": 5, "trade_id": f"t{i}"}
        for i in range(30)
    ]  # fmt: skip
    quote = {"type": "quote", "symbol": "AAPL", "ts": TS.format(31), "bid": "227.10",
             "ask": "227.12", "bid_size": 1, "ask_size": 2}  # fmt: skip
    depth = {"type": "depth", "symbol": "BTC/USD", "ts": TS.format(32),
             "bids": [["67000.5", "0.25"]], "asks": [["67001", "1.5"]]}  # fmt: skip
    await _ingest(config, [*trades, quote, depth])
    async with serve_market_api(config) as live:
        user = await sign_up(live.client)
        h = user.headers
        assert (await live.client.get("/market/symbols")).status_code == 401
        symbols = (await live.client.get("/market/symbols", headers=h)).json()
        assert symbols == {"symbols": ["AAPL", "BTC/USD"]}
        got = (await live.client.get("/market/quotes/aapl", headers=h)).json()
        assert got["bid"] == "227.1" and got["last"] == "227.29" and got["ts"].startswith("2026")
        book = (await live.client.get("/market/depth/BTC/USD", headers=h)).json()
        assert book["bids"] == [["67000.5", "0.25"]]
        missing = await live.client.get("/market/quotes/NOPE", headers=h)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "no_market_data"

        pages: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 12, **({"cursor": cursor} if cursor else {})}
            page = (await live.client.get("/market/ticks/AAPL", headers=h, params=params)).json()
            pages.append(page)
            cursor = page["next_cursor"]
            if cursor is None:
                break
        prices = [decimal.Decimal(t["price"]) for p in pages for t in p["items"]]
        assert len(pages) == 3 and prices == [decimal.Decimal(f"227.{i:02d}") for i in range(30)]

        bars = (await live.client.get("/market/bars/AAPL", headers=h,
                                      params={"interval": "1s", "limit": 100})).json()  # fmt: skip
        assert len(bars["items"]) == 30 and bars["items"][0]["open"] == "227"
        minute = (await live.client.get("/market/bars/AAPL", headers=h)).json()["items"]
        assert len(minute) == 1 and minute[0]["vwap"] == "227.145" and minute[0]["trades"] == 30
        # An empty key and a key nested too deep were once a 500 (IndexError, RecursionError).
        bad_cursors = [
            ("ticks", "zzz"),
            ("bars", _cursor("[]")),
            ("ticks", _cursor("[]")),
            ("bars", _cursor("[" * 5000)),
            ("ticks", _cursor('["x"]')),
        ]
        for path, cursor in bad_cursors:
            bad = await live.client.get(
                f"/market/{path}/AAPL", headers=h, params={"cursor": cursor}
            )
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"


def _cursor(key_text: str) -> str:
    return base64.urlsafe_b64encode(key_text.encode()).decode().rstrip("=")


async def test_rejections_are_listed_for_admins_only_with_counts_per_reason(
    config: settings.Settings,
) -> None:
    await _ingest(config, [
        {"type": "trade", "symbol": "AAPL", "ts": TS.format(1), "price": "-1", "size": 1},
        {"type": "trade", "symbol": "AAPL", "ts": TS.format(2), "price": "x", "size": 1},
        {"type": "quote", "symbol": "AAPL", "ts": TS.format(3), "bid": "1.01", "ask": "1.00",
         "bid_size": 1, "ask_size": 1},
    ])  # fmt: skip
    async with serve_market_api(config) as live:
        trader = await sign_up(live.client)
        admin = await sign_up_admin(live, config.database_url or "")
        refused = await live.client.get("/market/rejections", headers=trader.headers)
        assert refused.status_code == 403
        listed = (await live.client.get("/market/rejections", headers=admin.headers)).json()
        assert listed["counts"] == {"invalid_price": 1, "malformed": 1, "crossed_quote": 1}
        assert [r["reason"] for r in listed["items"]] == [
            "crossed_quote", "malformed", "invalid_price"
        ]  # fmt: skip
        assert '"price":"x"' in listed["items"][1]["raw"]
