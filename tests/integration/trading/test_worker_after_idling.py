"""An order worker that has been idle (it backs off and only looks, one statement at a
time) still takes the next order at once, fills it and announces it."""

from __future__ import annotations

import asyncio
import json

import pytest

from starkmatter.orders.processing import Worker
from tests.integration.trading.conftest import publish_market, wait_for_order
from tests.support import LiveServer, sign_up

pytestmark = pytest.mark.timeout(60)


async def test_an_order_after_a_quiet_spell_is_filled_and_announced(
    api: LiveServer, worker: Worker
) -> None:
    user = await sign_up(api.client)
    await publish_market(worker.redis, "IDLE", bid="49.99", ask="50.01")
    announcements = worker.redis.pubsub()
    await announcements.subscribe(f"orders:{user.user_id}")
    await asyncio.sleep(1.0)  # many empty looks in a row: the worker is at its longest wait

    for n in range(2):  # the first wakes the worker; the second follows a busy batch
        placed = await api.client.post(
            "/orders",
            headers=user.headers,
            json={"client_order_id": f"after-idle-{n}", "symbol": "IDLE", "side": "buy",
                  "quantity": "3"},
        )  # fmt: skip
        assert placed.status_code == 201, placed.text
        filled = await wait_for_order(api.client, user.headers, placed.json()["id"], "Filled")
        assert filled["filled_quantity"] == "3"

    seen: list[str] = []
    async with asyncio.timeout(15):
        while seen.count("Filled") < 2:
            message = await announcements.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                seen.append(json.loads(message["data"])["order"]["status"])
    await announcements.aclose()
    assert seen.count("Filled") == 2
