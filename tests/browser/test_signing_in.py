"""Register, log in and log out through the dashboard."""

from __future__ import annotations

import asyncio
import base64
import json

from playwright import async_api

from tests.browser import conftest, flows


async def test_a_new_trader_registers_logs_in_and_logs_out(page: conftest.PageWatch) -> None:
    email = await flows.register_and_log_in(page.page)
    await async_api.expect(page.page.locator("#conn")).to_have_attribute("data-state", "open")
    await page.page.get_by_role("button", name="Log out").click()
    await async_api.expect(page.page.get_by_role("button", name="Log in")).to_be_visible()
    await async_api.expect(page.page.locator("#dashboard")).to_be_hidden()
    assert email.endswith("@example.com")


async def test_a_reload_due_while_logging_out_is_not_sent_with_the_revoked_token(
    page: conftest.PageWatch, platform: conftest.Platform
) -> None:
    await flows.register_and_log_in(page.page)
    await async_api.expect(page.page.locator("#conn")).to_have_attribute("data-state", "open")
    stored = await page.page.evaluate("sessionStorage.getItem('starkmatter.tokens')")
    claims = json.loads(stored)["access_token"].split(".")[1]
    user_id = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["sub"]

    async def answer_late(route: async_api.Route) -> None:
        # The server has revoked the session; the page hears so only later.
        response = await route.fetch()
        await asyncio.sleep(0.6)
        await route.fulfill(response=response)

    await page.page.route("**/auth/logout", answer_late)
    # A portfolio update: the panel reloads 150 ms later, while the logout is under way.
    await platform.redis.publish(f"portfolio:{user_id}", json.dumps({"event": "portfolio"}))
    await page.page.wait_for_timeout(50)
    await page.page.get_by_role("button", name="Log out").click()

    await async_api.expect(page.page.get_by_role("button", name="Log in")).to_be_visible()
    # The page fixture fails the test on any console error, such as a 401 from that reload.
