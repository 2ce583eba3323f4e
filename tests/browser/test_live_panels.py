"""News, the AI analyst, and recovery from a dropped live connection."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re

from playwright import async_api

from tests.browser import conftest, flows

expect = async_api.expect

RECORD_BANNERS = """() => {
  const banner = document.getElementById("banner");
  window.bannerHistory = [];
  new MutationObserver(() => window.bannerHistory.push(banner.textContent))
    .observe(banner, { childList: true, characterData: true, subtree: true });
}"""


async def test_a_published_news_item_appears_with_its_sentiment_and_category(
    page: conftest.PageWatch, platform: conftest.Platform
) -> None:
    await flows.register_and_log_in(page.page)
    await expect(page.page.locator("#conn")).to_have_attribute("data-state", "open")
    title = "Contoso beats earnings estimates on cloud growth"
    row = await platform.pool.fetchrow(
        "INSERT INTO news_articles (source, url, content_hash, title, summary, published_at,"
        " category, sentiment, sentiment_label, symbols)"
        " VALUES ('wire', 'https://news.example.com/1', $1, $2, 'Quarterly results.', $3,"
        " 'earnings', 0.72, 'positive', ARRAY['MSFT'])"
        " RETURNING id, source, url, title, summary, published_at, category, sentiment,"
        " sentiment_label, symbols",
        hashlib.sha256(title.encode()).digest(),
        title,
        dt.datetime.now(dt.UTC),
    )
    assert row is not None
    item = {**dict(row), "id": str(row["id"]), "published_at": row["published_at"].isoformat()}
    await platform.redis.publish("news:all", json.dumps({**item, "sentiment": "0.72"}))

    news = page.page.locator("#news li").filter(has_text=title)
    await expect(news).to_be_visible()
    await expect(news.locator(".sent")).to_have_text(re.compile("positive"))
    await expect(news.locator(".cat")).to_have_text("earnings")

    await page.page.get_by_label("Search news").fill("nothing-like-this")
    await page.page.get_by_label("Search news").press("Enter")
    await expect(page.page.locator("#news-empty")).to_contain_text("No news matching")
    await page.page.get_by_label("Search news").fill("contoso earnings")
    await page.page.get_by_label("Search news").press("Enter")
    await expect(news).to_be_visible()


async def test_the_offline_analyst_answers_and_says_it_is_offline(
    page: conftest.PageWatch, platform: conftest.Platform
) -> None:
    await flows.register_and_log_in(page.page)
    await page.page.get_by_label("Question for the analyst").fill("What is the trend for AAPL?")
    await page.page.get_by_role("button", name="Ask").click()
    answer = page.page.locator("#ai-answer")
    await expect(answer).to_have_attribute("data-state", "done")
    await expect(page.page.locator("#ai-label")).to_contain_text("Offline analyst")
    await expect(answer.locator(".ai-summary")).to_contain_text("AAPL")
    await expect(page.page.locator("#ai-error")).to_be_hidden()


async def test_a_dropped_connection_reconnects_resubscribes_and_says_so(
    page: conftest.PageWatch, platform: conftest.Platform
) -> None:
    await flows.register_and_log_in(page.page)
    conn = page.page.locator("#conn")
    await expect(conn).to_have_attribute("data-state", "open")
    last = page.page.locator("#watchlist tr[data-symbol='AAPL'] td").nth(3)
    await expect(last).to_have_text(re.compile(r"\d"))

    await page.page.evaluate(RECORD_BANNERS)

    # Cut every client's TCP connection at the gateway, as a network failure would; the
    # page must then reload its REST snapshots.
    async with page.page.expect_request(lambda r: "/portfolio/positions" in r.url):
        for client in list(platform.gateway.clients):
            client.transport.abort()

    await expect(page.page.locator("#banner")).to_contain_text("Reconnected")
    await expect(conn).to_have_attribute("data-state", "open")
    await page.page.wait_for_function("window.starkmatter.stream.reconnects === 1")
    banners = await page.page.evaluate("window.bannerHistory")
    assert any(text.startswith("Connection lost — reconnecting") for text in banners), banners
    # Quotes flow again over the new connection's subscriptions.
    seen = await last.text_content()
    await expect(last).not_to_have_text(seen or "")


async def test_a_price_alert_is_created_from_the_form_and_deleted(
    page: conftest.PageWatch, platform: conftest.Platform
) -> None:
    await flows.register_and_log_in(page.page)
    await page.page.get_by_label("Alert symbol").fill("AAPL")
    await page.page.get_by_label("Condition").select_option("above")
    await page.page.get_by_label("Alert price").fill("400")
    await page.page.get_by_label("Alert price").press("Enter")
    rule = page.page.locator("#alerts tbody tr").filter(has_text="AAPL")
    await expect(rule).to_contain_text("above")
    await expect(rule).to_contain_text("400.00")
    await rule.get_by_role("button").click()
    await expect(page.page.locator("#alerts tbody tr")).to_have_count(0)


async def test_the_live_connection_sends_its_token_in_a_message_not_in_its_url(
    page: conftest.PageWatch,
) -> None:
    sockets: list[async_api.WebSocket] = []
    sent: list[str] = []

    def opened(ws: async_api.WebSocket) -> None:
        sockets.append(ws)
        ws.on("framesent", lambda frame: sent.append(str(frame)))

    page.page.on("websocket", opened)

    await flows.register_and_log_in(page.page)
    await expect(page.page.locator("#conn")).to_have_attribute("data-state", "open")

    assert sockets
    assert all("token" not in ws.url for ws in sockets), [ws.url for ws in sockets]
    assert json.loads(sent[0])["op"] == "auth"
