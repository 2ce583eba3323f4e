"""Steps shared by the browser tests: sign up and sign in through the page."""

from __future__ import annotations

import itertools

from playwright import async_api

PASSWORD = "correct horse battery staple"
_numbers = itertools.count(1)


def new_email() -> str:
    return f"browser{next(_numbers)}@example.com"


async def register_and_log_in(page: async_api.Page, email: str | None = None) -> str:
    """Register through the page's form, then log in with the same form; returns the e-mail."""
    email = email or new_email()
    await page.goto("/")
    await page.get_by_role("tab", name="Register").click()
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await async_api.expect(page.locator("#auth-info")).to_have_text(
        "Account created. Log in to continue."
    )
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await async_api.expect(page.locator("#user-email")).to_have_text(email)
    await async_api.expect(page.locator("body")).to_have_attribute("data-ready", "true")
    return email
