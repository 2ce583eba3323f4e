"""Hypothesis stateful test over HTTP, on real PostgreSQL, Redis, API server and worker.

Random orders (with reused client order ids), cancels and market moves for one trader;
after every step the stored state must satisfy the invariants, whatever the worker has
done so far:
- no order is filled beyond its quantity, and every stored transition is a graph edge,
  each starting where the previous one ended;
- resubmitting a client order id returns the same order and creates nothing;
- once the worker is idle, cash and the position reconcile with the executions, realized
  plus unrealized P&L with the value, and reservations with the working orders.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from collections.abc import Coroutine, Iterator
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from starkmatter.core import settings as core_settings
from starkmatter.orders import lifecycle
from starkmatter.orders.config import OrdersConfig
from tests.integration.trading.conftest import running_worker
from tests.support import serve_api

pytestmark = pytest.mark.timeout(600)
T = TypeVar("T")
START = Decimal(100_000)


class Stack:
    """API server and worker on their own event loop thread, so Hypothesis stays sync."""

    def __init__(self, config: core_settings.Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.config = config
        self.stop = asyncio.Event()
        self.ready: asyncio.Future[str] = self.loop.create_future()
        self.task = asyncio.run_coroutine_threadsafe(self._serve(), self.loop)
        self.base_url = asyncio.run_coroutine_threadsafe(self._ready(), self.loop).result(60)
        self.db: asyncpg.Connection = self.run(asyncpg.connect(str(config.database_url)))

    async def _ready(self) -> str:
        return await self.ready

    async def _serve(self) -> None:
        orders = OrdersConfig(poll_interval_ms=20, outbox_poll_ms=2)
        async with serve_api(self.config) as live, running_worker(self.config, orders):
            self.ready.set_result(live.base_url)
            await self.stop.wait()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.run(self.db.close())
        self.loop.call_soon_threadsafe(self.stop.set)
        self.task.result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def stack(config: core_settings.Settings) -> Iterator[Stack]:
    s = Stack(config)
    yield s
    s.close()


def publish(r: redis.Redis, mid: Decimal, size: int) -> None:
    ts = dt.datetime.now(dt.UTC).isoformat()
    bid, ask = mid - Decimal("0.01"), mid + Decimal("0.01")
    step = Decimal("0.01")
    asks = [[str(ask + step * i), str(size)] for i in range(3)]
    bids = [[str(bid - step * i), str(size)] for i in range(3)]
    r.mset(
        {
            "quote:X": json.dumps(
                {
                    "symbol": "X",
                    "bid": str(bid),
                    "ask": str(ask),
                    "bid_size": str(size),
                    "ask_size": str(size),
                    "last": str(mid),
                    "last_size": "1",
                    "ts": ts,
                }
            ),
            "depth:X": json.dumps({"symbol": "X", "bids": bids, "asks": asks, "ts": ts}),
        }
    )


def test_orders_keep_their_invariants_under_random_traffic(stack: Stack) -> None:
    r = redis.Redis.from_url(str(stack.config.redis_url))
    users = iter(range(10**6))

    class Trading(RuleBasedStateMachine):
        @initialize()
        def sign_up(self) -> None:
            self.http = httpx.Client(base_url=stack.base_url, timeout=30)
            email, password = f"st{next(users)}-{id(self)}@example.com", "stateful password 1"
            created = self.http.post("/auth/register", json={"email": email, "password": password})
            self.user = created.json()["id"]
            token = self.http.post("/auth/login", json={"email": email, "password": password})
            self.headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            self.mid = Decimal(100)
            publish(r, self.mid, 50)
            self.known: dict[str, str] = {}
            # Every trader opens with a market buy that fills and a sell beyond the position
            # that is refused, so each run has fills, a position for sells to work on and a
            # rejection; random traffic alone sometimes had none of them.
            opened = self.http.post(
                "/orders",
                headers=self.headers,
                json={"client_order_id": "open", "symbol": "X", "side": "buy", "quantity": "10"},
            )
            assert opened.status_code == 201, opened.text
            oversold = self.http.post(
                "/orders",
                headers=self.headers,
                json={"client_order_id": "over", "symbol": "X", "side": "sell", "quantity": "1000"},
            )
            assert oversold.status_code == 422, oversold.text

        def teardown(self) -> None:
            self.http.close()

        @rule(move=st.integers(-200, 200), size=st.integers(1, 100))
        def market_moves(self, move: int, size: int) -> None:
            self.mid = max(Decimal(5), self.mid + Decimal(move) / 100)
            publish(r, self.mid, size)

        @rule(
            coid=st.integers(0, 12),
            side=st.sampled_from(["buy", "sell"]),
            kind=st.sampled_from(["market", "limit", "stop", "stop_limit"]),
            tif=st.sampled_from(["day", "gtc", "ioc", "fok"]),
            qty=st.integers(1, 120),
            offset=st.integers(-300, 300),
        )
        def submit(self, coid: int, side: str, kind: str, tif: str, qty: int, offset: int) -> None:
            price = str(self.mid + Decimal(offset) / 100)
            body: dict[str, Any] = {
                "client_order_id": f"c{coid}",
                "symbol": "X",
                "side": side,
                "type": kind,
                "time_in_force": tif,
                "quantity": str(qty),
            }
            if kind in ("limit", "stop_limit"):
                body["limit_price"] = price
            if kind in ("stop", "stop_limit"):
                body["stop_price"] = price
            before = stack.run(
                stack.db.fetchval(
                    "SELECT count(*) FROM trading_orders WHERE user_id = $1::uuid", self.user
                )
            )
            response = self.http.post("/orders", headers=self.headers, json=body)
            assert response.status_code in (200, 201, 422), response.text
            data = response.json()
            oid = (
                data["error"]["details"][0]["order_id"]
                if response.status_code == 422
                else data["id"]
            )
            if body["client_order_id"] in self.known:  # a resubmission: the same order
                assert oid == self.known[body["client_order_id"]]
                assert response.status_code in (200, 422)
                after = stack.run(
                    stack.db.fetchval(
                        "SELECT count(*) FROM trading_orders WHERE user_id = $1::uuid", self.user
                    )
                )
                assert after == before
            self.known[body["client_order_id"]] = oid

        @rule(coid=st.integers(0, 12))
        def cancel(self, coid: int) -> None:
            oid = self.known.get(f"c{coid}")
            if oid is not None:
                response = self.http.delete(f"/orders/{oid}", headers=self.headers)
                assert response.status_code in (200, 202, 409)

        @rule()
        def worker_catches_up(self) -> None:
            for _ in range(3000):
                busy = stack.run(
                    stack.db.fetchval(
                        "SELECT (SELECT count(*) FROM trading_outbox) + (SELECT count(*) FROM"
                        " trading_orders WHERE status IN ('RiskChecked', 'Submitted'))"
                    )
                )
                if busy == 0:
                    break
                stack.run(asyncio.sleep(0.01))
            else:
                raise AssertionError("worker never caught up")
            self.reconcile()

        def reconcile(self) -> None:
            db = stack.db
            acct = stack.run(
                db.fetchrow(
                    "SELECT cash, reserved_cash FROM trading_accounts WHERE user_id = $1::uuid",
                    self.user,
                )
            )
            if acct is None:
                return
            ex = stack.run(
                db.fetchrow(
                    "SELECT coalesce(sum(CASE side WHEN 'buy' THEN quantity ELSE -quantity END), 0)"
                    " AS qty, coalesce(sum(CASE side WHEN 'buy' THEN quantity * price"
                    " ELSE -quantity * price END), 0) AS spent FROM trading_executions"
                    " WHERE user_id = $1::uuid",
                    self.user,
                )
            )
            pos = stack.run(
                db.fetchrow(
                    "SELECT quantity, avg_cost, realized_pnl, reserved_quantity FROM"
                    " trading_positions WHERE user_id = $1::uuid",
                    self.user,
                )
            )
            qty = pos["quantity"] if pos else Decimal(0)
            assert acct["cash"] == START - ex["spent"]
            assert qty == ex["qty"]
            if pos:
                value = acct["cash"] + qty * self.mid
                pnl = pos["realized_pnl"] + qty * (self.mid - pos["avg_cost"])
                assert abs(value - (START + pnl)) < Decimal("1e-9")
            live = stack.run(
                db.fetchrow(
                    "SELECT coalesce(sum(reserved_cash), 0) AS c,"
                    " coalesce(sum(reserved_quantity), 0) AS q FROM trading_orders"
                    " WHERE user_id = $1::uuid AND status IN ('Pending', 'PartiallyFilled')",
                    self.user,
                )
            )
            assert acct["reserved_cash"] == live["c"]
            assert (pos["reserved_quantity"] if pos else 0) == live["q"]

        @invariant()
        def stored_state_obeys_the_graph_and_quantities(self) -> None:
            if not hasattr(self, "user"):
                return
            rows = stack.run(
                stack.db.fetch(
                    "SELECT o.id, o.quantity, o.filled_quantity, o.status,"
                    " array_agg(e.source ORDER BY e.id) AS sources,"
                    " array_agg(e.target ORDER BY e.id) AS targets"
                    " FROM trading_orders o JOIN trading_order_events e ON e.order_id = o.id"
                    " WHERE o.user_id = $1::uuid GROUP BY o.id",
                    self.user,
                )
            )
            for row in rows:
                assert 0 <= row["filled_quantity"] <= max(row["quantity"], 0)
                sources, targets = row["sources"], row["targets"]
                assert sources[0] is None and targets[0] == lifecycle.INITIAL.value
                for i in range(1, len(targets)):
                    assert sources[i] == targets[i - 1]
                    assert (sources[i], targets[i]) in {
                        (a.value, b.value) for a, b in lifecycle.EDGES
                    }
                assert targets[-1] == row["status"]

    Trading.TestCase.settings = settings(
        max_examples=8,
        stateful_step_count=18,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    try:
        Trading.TestCase().runTest()
    finally:
        r.close()
    # the traffic was not vacuous: orders did fill, and some were refused
    assert stack.run(stack.db.fetchval("SELECT count(*) FROM trading_executions")) > 0
    assert (
        stack.run(
            stack.db.fetchval("SELECT count(*) FROM trading_orders WHERE status = 'Rejected'")
        )
        > 0
    )
