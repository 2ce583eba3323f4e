"""Register, log in and log out through the dashboard."""

from __future__ import annotations

from playwright import async_api

from tests.browser import conftest, flows


async def test_a_new_trader_registers_logs_in_and_logs_out(page: conftest.PageWatch) -> None:
    email = await flows.register_and_log_in(page.page)
    await async_api.expect(page.page.locator("#conn")).to_have_attribute("data-state", "open")
    await page.page.get_by_role("button", name="Log out").click()
    await async_api.expect(page.page.get_by_role("button", name="Log in")).to_be_visible()
    await async_api.expect(page.page.locator("#dashboard")).to_be_hidden()
    assert email.endswith("@example.com")
