"""Trading through the page: live quotes, a fill with live P&L, a cancel, a rejection."""

from __future__ import annotations

import json
import re
from decimal import Decimal

from playwright import async_api

from tests.browser import conftest, flows

expect = async_api.expect


async def live_quote(platform: conftest.Platform, symbol: str) -> dict[str, str]:
    raw = await platform.redis.get(f"quote:{symbol}")
    assert raw is not None, f"no quote for {symbol} yet"
    quote: dict[str, str] = json.loads(raw)
    return quote


async def open_symbol(page: async_api.Page, symbol: str) -> None:
    """Add ``symbol`` to the watchlist (which selects it) and wait for its first quote."""
    await page.get_by_label("Add symbol").fill(symbol)
    await page.get_by_label("Add symbol").press("Enter")
    row = page.locator(f"#watchlist tr[data-symbol='{symbol}']")
    await expect(row).to_be_visible()
    await expect(row.locator("td").nth(3)).to_have_text(re.compile(r"\d"))
    await expect(page.locator("#chart-symbol")).to_have_text(symbol)


async def place_limit(page: async_api.Page, side: str, quantity: str, limit: Decimal) -> None:
    """Fill the ticket with the keyboard only and send it with Enter."""
    await page.keyboard.press("Alt+B" if side == "buy" else "Alt+S")
    await expect(page.locator("#t-qty")).to_be_focused()
    await page.keyboard.type(quantity)
    await page.get_by_label("Type").select_option("limit")
    await page.get_by_label("Limit price").fill(str(limit))
    await page.get_by_label("Limit price").press("Enter")


async def test_a_quote_changes_live_in_the_watchlist(
    page: conftest.PageWatch, platform: conftest.Platform
) -> None:
    await flows.register_and_log_in(page.page)
    await open_symbol(page.page, "AAPL")
    last = page.page.locator("#watchlist tr[data-symbol='AAPL'] td").nth(3)
    first = await last.text_content()
    await expect(last).not_to_have_text(first or "")
    await expect(page.page.locator("#depth tbody tr").first).to_be_visible()


async def test_a_limit_order_fills_and_the_position_shows_live_pnl(
    page: conftest.PageWatch, platform: conftest.Platform
) -> None:
    await flows.register_and_log_in(page.page)
    await open_symbol(page.page, "MSFT")
    ask = Decimal((await live_quote(platform, "MSFT"))["ask"])
    await place_limit(page.page, "buy", "25", (ask * Decimal("1.03")).quantize(Decimal("0.01")))

    order = page.page.locator("#orders tbody tr").first
    await expect(order.locator("td").nth(1)).to_have_text("MSFT")
    await expect(order).to_have_attribute("data-status", "Filled")
    await expect(order.locator("td").nth(5)).to_have_text("25")

    position = page.page.locator("#positions tr[data-symbol='MSFT']")
    await expect(position.locator("td").nth(1)).to_have_text("25")
    pnl = position.locator("td.pnl")
    await expect(pnl).to_have_text(re.compile(r"^[+-]?-?\$"))
    before = await pnl.text_content()
    await expect(pnl).not_to_have_text(before or "")
    await expect(page.page.locator("#m-equity")).to_have_text(re.compile(r"^\$\d"))
    await expect(page.page.locator("#t-status")).to_contain_text("Filled")
    await expect(order.locator("td").nth(7)).to_have_text(re.compile(r"\d"))

    await page.page.get_by_role("button", name="1s").click()
    await expect(page.page.get_by_role("button", name="1s")).to_have_attribute(
        "aria-pressed", "true"
    )
    await expect(page.page.locator("#chart-state")).to_be_hidden()

    conftest.ARTIFACTS.mkdir(exist_ok=True)
    await page.page.screenshot(path=str(conftest.ARTIFACTS / "dashboard.png"))


async def test_a_resting_order_is_cancelled_from_the_blotter(
    page: conftest.PageWatch, platform: conftest.Platform
) -> None:
    await flows.register_and_log_in(page.page)
    await open_symbol(page.page, "NVDA")
    bid = Decimal((await live_quote(platform, "NVDA"))["bid"])
    await place_limit(page.page, "buy", "5", (bid * Decimal("0.95")).quantize(Decimal("0.01")))

    order = page.page.locator("#orders tbody tr").first
    await expect(order).to_have_attribute("data-status", "Pending")
    await order.get_by_role("button", name="Cancel buy NVDA").click()
    await expect(order).to_have_attribute("data-status", "Cancelled")
    await expect(order.get_by_role("button")).to_have_count(0)


async def test_an_order_the_server_rejects_shows_its_reason(
    page: conftest.PageWatch, platform: conftest.Platform
) -> None:
    await flows.register_and_log_in(page.page)
    await open_symbol(page.page, "TSLA")
    bid = Decimal((await live_quote(platform, "TSLA"))["bid"])
    page.allow_http_error(422)
    # Half the market price is far outside the price collar: the server rejects it.
    await place_limit(page.page, "buy", "1", (bid / 2).quantize(Decimal("0.01")))

    order = page.page.locator("#orders tbody tr").first
    await expect(order).to_have_attribute("data-status", "Rejected")
    await expect(order).to_contain_text("price_collar")
    await expect(page.page.locator("#t-error")).to_contain_text("price_collar")


async def test_the_ticket_refuses_an_invalid_order_before_sending(
    page: conftest.PageWatch, platform: conftest.Platform
) -> None:
    await flows.register_and_log_in(page.page)
    await open_symbol(page.page, "AAPL")
    await page.page.get_by_label("Quantity").fill("-3")
    await page.page.get_by_label("Type").select_option("limit")
    await page.page.get_by_label("Limit price").fill("")
    await page.page.get_by_label("Limit price").press("Enter")
    await expect(page.page.locator("#t-error")).to_have_text(
        "Quantity must be a positive number · Limit price must be a positive number"
    )
    await expect(page.page.get_by_label("Quantity")).to_be_focused()
    await expect(page.page.locator("#orders tbody tr")).to_have_count(0)
