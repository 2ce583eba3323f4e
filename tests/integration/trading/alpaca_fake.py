"""A local server speaking the Alpaca trading API v2 (the parts the adapter uses).

It keeps a one-price market at ``price``, the last trade. An order fills on arrival, in
full at ``price``, when it can: a market order always, a limit order when ``price`` is at
or inside its limit; a stop first waits for ``trade()`` to reach its stop price. What
cannot fill rests (an ``ioc`` or ``fok`` order is cancelled instead) until ``trade()``
moves the market or the test calls ``fill(order_id, qty, price)``. As at an exchange, no
fill is beyond an order's limit: ``fill()`` refuses one unless told to play a broker error.
``filled_avg_price`` is exact unless ``avg_places`` rounds it, as Alpaca's decimal string may
be, to that many places.

It refuses what Alpaca refuses: a quantity above ``max_qty`` as beyond buying power (403),
a reused ``client_order_id`` (422), a missing price and a sub-penny price (prices from $1
in cents, below $1 in hundredths of a cent, 422).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from starlette import applications, requests, responses, routing

from starkmatter.core import embedded, serving

KEY, SECRET = "test-key-id", "test-secret-key"
_WORKING = ("accepted", "partially_filled")


@dataclasses.dataclass
class FakeAlpaca:
    price: Decimal = Decimal("100.00")
    max_qty: Decimal = Decimal(1000)
    orders: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    submissions: int = 0
    triggered: set[str] = dataclasses.field(default_factory=set)
    """ids of stop orders the market reached"""
    avg_places: int | None = None
    """decimal places ``filled_avg_price`` is reported to (half up); None: exact"""
    notional: dict[str, Decimal] = dataclasses.field(default_factory=dict)
    """what each order's fills cost in all, exactly, whatever the reported average says"""

    def fill(
        self, order_id: str, qty: Decimal, price: Decimal, *, beyond_limit: bool = False
    ) -> None:
        """Fill ``qty`` at ``price``; ``beyond_limit`` lets it break the order's limit, a
        broker error no real order should meet."""
        o = self.orders[order_id]
        if not beyond_limit and not _within_limit(o, price):
            raise ValueError(f"{price} is beyond the limit {o['limit_price']} of this {o['side']}")
        total = Decimal(o["filled_qty"]) + qty
        self.notional[order_id] = self.notional.get(order_id, Decimal(0)) + price * qty
        avg = self.notional[order_id] / total
        if self.avg_places is not None:
            avg = avg.quantize(Decimal(1).scaleb(-self.avg_places), rounding=ROUND_HALF_UP)
        o["filled_avg_price"] = str(avg)
        o["filled_qty"] = str(total)
        o["status"] = "filled" if total == Decimal(o["qty"]) else "partially_filled"

    def trade(self, price: Decimal) -> None:
        """The market trades at ``price``: stops it reaches trigger, and every working
        order that can fill at it fills in full."""
        self.price = price
        for oid, o in self.orders.items():
            if o["status"] in _WORKING:
                self._match(oid)

    def _match(self, oid: str) -> None:
        o = self.orders[oid]
        if o.get("stop_price") is not None and oid not in self.triggered:
            stop = Decimal(o["stop_price"])
            if (self.price >= stop) if o["side"] == "buy" else (self.price <= stop):
                self.triggered.add(oid)
            else:
                return
        if _within_limit(o, self.price):
            self.fill(oid, Decimal(o["qty"]) - Decimal(o["filled_qty"]), self.price)

    def app(self) -> applications.Starlette:
        def authorised(request: requests.Request) -> bool:
            h = request.headers
            return h.get("APCA-API-KEY-ID") == KEY and h.get("APCA-API-SECRET-KEY") == SECRET

        def error(status: int, message: str) -> responses.JSONResponse:
            return responses.JSONResponse(
                {"code": 40000000 + status, "message": message}, status_code=status
            )

        async def create(request: requests.Request) -> responses.Response:
            if not authorised(request):
                return error(401, "unauthorized")
            body = await request.json()
            self.submissions += 1
            if any(o["client_order_id"] == body["client_order_id"] for o in self.orders.values()):
                return error(422, "client_order_id must be unique")
            invalid = _invalid_prices(body)
            if invalid is not None:
                return error(422, invalid)
            if Decimal(body["qty"]) > self.max_qty:
                return error(403, "insufficient buying power")
            oid = str(uuid.uuid4())
            order = {
                **body,
                "id": oid,
                "status": "accepted",
                "filled_qty": "0",
                "filled_avg_price": None,
            }
            self.orders[oid] = order
            self._match(oid)
            if order["time_in_force"] in ("ioc", "fok") and order["status"] != "filled":
                order["status"] = "canceled"
            return responses.JSONResponse(order)

        async def by_client_id(request: requests.Request) -> responses.Response:
            cid = request.query_params.get("client_order_id")
            for o in self.orders.values():
                if o["client_order_id"] == cid:
                    return responses.JSONResponse(o)
            return error(404, "order not found")

        async def one(request: requests.Request) -> responses.Response:
            if not authorised(request):
                return error(401, "unauthorized")
            o = self.orders.get(request.path_params["oid"])
            if o is None:
                return error(404, "order not found")
            if request.method == "DELETE":
                if o["status"] in ("filled", "canceled", "expired", "rejected"):
                    return error(422, "order is not cancelable")
                o["status"] = "canceled"
                return responses.Response(status_code=204)
            return responses.JSONResponse(o)

        return applications.Starlette(
            routes=[
                routing.Route("/v2/orders", create, methods=["POST"]),
                routing.Route("/v2/orders:by_client_order_id", by_client_id, methods=["GET"]),
                routing.Route("/v2/orders/{oid}", one, methods=["GET", "DELETE"]),
            ]
        )


def _within_limit(order: dict[str, Any], price: Decimal) -> bool:
    if order.get("limit_price") is None:
        return True
    limit = Decimal(order["limit_price"])
    return price <= limit if order["side"] == "buy" else price >= limit


def _invalid_prices(body: dict[str, Any]) -> str | None:
    kind = body["type"]
    needs = {"limit_price": ("limit", "stop_limit"), "stop_price": ("stop", "stop_limit")}
    for name, kinds in needs.items():
        needed = kind in kinds
        if needed and body.get(name) is None:
            return f"{name} is required for {kind} orders"
        if body.get(name) is None:
            continue
        price = Decimal(body[name])
        if price <= 0:
            return f"{name} must be positive"
        if price % (Decimal("0.01") if price >= 1 else Decimal("0.0001")) != 0:
            return (
                f"invalid {name} {price}."
                " sub-penny increment does not fulfill minimum pricing criteria"
            )
    return None


@contextlib.asynccontextmanager
async def running(state: FakeAlpaca) -> AsyncIterator[str]:
    """Serve ``state`` on a loopback port; yields its base URL."""
    port = embedded.free_port()
    server = serving.server(state.app(), "127.0.0.1", port)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no started event
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
