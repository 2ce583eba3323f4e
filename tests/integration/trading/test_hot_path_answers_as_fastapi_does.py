"""POST /orders served by its direct resolver (api.hotpath) answers every request exactly as
the FastAPI route does: the same status and the same body, ids and times aside."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import fastapi
import httpx
import pytest
import redis.asyncio as aioredis

from starkmatter.core import settings
from starkmatter.orders import routes as order_routes
from tests.integration.trading.conftest import publish_market
from tests.support import LiveServer, serve_api, sign_up

pytestmark = pytest.mark.timeout(90)

VARYING = {"id", "client_order_id", "order_id", "request_id", "created_at", "updated_at"}
"""values that differ between two equal requests (each server gets its own order)"""
JSON = {"content-type": "application/json"}
_ids = itertools.count(1)


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<varies>" if k in VARYING else shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return value


def answer(r: httpx.Response) -> tuple[int, Any]:
    return r.status_code, shape(r.json())


def order(**fields: Any) -> dict[str, Any]:
    body = {"client_order_id": f"hot-{next(_ids)}", "symbol": "AAPL", "side": "buy"}
    return {**body, "quantity": "10", **fields}


class Counted:
    """The direct resolver, counting the requests it served."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, request: fastapi.Request) -> fastapi.Response:
        self.calls += 1
        return await order_routes.place_order_direct(request)


@pytest.fixture
async def servers(
    config: settings.Settings, redis: aioredis.Redis
) -> AsyncIterator[tuple[LiveServer, LiveServer, Counted]]:
    direct = Counted()
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    async with (
        serve_api(config, hot_routes={("POST", "/orders"): direct}) as hot,
        serve_api(config, hot_routes={}) as plain,
    ):
        yield hot, plain, direct


async def both(
    hot: LiveServer, plain: LiveServer, headers: dict[str, str], content: bytes
) -> tuple[Any, Any]:
    answers = [
        await live.client.post("/orders", headers=headers, content=content) for live in (hot, plain)
    ]
    return answer(answers[0]), answer(answers[1])


@pytest.mark.parametrize(
    ("case", "content", "signed_in"),
    [
        ("accepted", order(), True),
        ("rejected for buying power", order(quantity="100000000"), True),
        ("rejected in validation", order(type="limit"), True),
        ("fields invalid and unknown", order(side="sideways", colour="red"), True),
        ("quantity not positive", order(quantity="-1"), True),
        ("malformed JSON", b'{"symbol": ', True),
        ("empty body", b"", True),
        ("JSON null", b"null", True),
        ("JSON list", b"[1, 2]", True),
        ("bytes that are not UTF-8", b'{"symbol": "\xff\xfe"}', True),
        ("nesting too deep", b"[" * 100_000, True),
        ("a number too long to read", b'{"quantity": ' + b"1" * 5000 + b"}", True),
        ("not signed in", order(), False),
        ("not signed in, malformed JSON", b"{", False),
        ("not signed in, fields invalid", order(side="sideways"), False),
    ],
)
async def test_hot_path_answers_each_request_as_the_fastapi_route_does(
    servers: tuple[LiveServer, LiveServer, Counted], case: str, content: Any, signed_in: bool
) -> None:
    hot, plain, direct = servers
    user = await sign_up(hot.client)
    headers = {**JSON, **(user.headers if signed_in else {})}
    if isinstance(content, dict):
        # Each server gets its own client order id (the same one would be a replay).
        answers = []
        for live in (hot, plain):
            fresh = {**content, "client_order_id": f"hot-{next(_ids)}"}
            r = await live.client.post("/orders", headers=headers, json=fresh)
            answers.append(answer(r))
        on_hot, on_plain = answers
    else:
        on_hot, on_plain = await both(hot, plain, headers, content)
    assert on_hot == on_plain, case
    assert direct.calls == 1, "the hot server must have served it directly"


async def test_a_bad_token_and_a_replay_answer_the_same_both_ways(
    servers: tuple[LiveServer, LiveServer, Counted],
) -> None:
    hot, plain, direct = servers
    forged = {**JSON, "Authorization": "Bearer not.a.token"}
    on_hot, on_plain = await both(hot, plain, forged, b"{}")
    assert on_hot == on_plain
    assert on_hot[0] == 401
    user = await sign_up(hot.client)
    body = order()
    first = await hot.client.post("/orders", headers=user.headers, json=body)
    replay_hot = await hot.client.post("/orders", headers=user.headers, json=body)
    replay_plain = await plain.client.post("/orders", headers=user.headers, json=body)
    assert first.status_code == 201, first.text
    assert replay_hot.status_code == replay_plain.status_code == 200
    assert replay_hot.json() == replay_plain.json()
    assert replay_hot.json()["id"] == first.json()["id"]
    assert direct.calls == 3


async def test_a_body_that_is_not_json_is_left_to_fastapi(
    servers: tuple[LiveServer, LiveServer, Counted],
) -> None:
    hot, plain, direct = servers
    user = await sign_up(hot.client)
    headers = {**user.headers, "content-type": "text/plain"}
    on_hot, on_plain = await both(hot, plain, headers, b'{"symbol": "AAPL"}')
    assert on_hot == on_plain
    assert on_hot[0] == 422
    assert direct.calls == 0
