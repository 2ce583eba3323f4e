"""A local server speaking the Alpaca trading API v2 (the parts the adapter uses).

Market orders fill at once at ``price``; other orders rest until the test calls
``fill(order_id, qty, price)``. A quantity above ``max_qty`` is refused the way Alpaca
refuses an order beyond buying power (403), and a reused ``client_order_id`` the way
Alpaca refuses it (422).
"""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal
from typing import Any

from starlette import applications, requests, responses, routing

KEY, SECRET = "test-key-id", "test-secret-key"


@dataclasses.dataclass
class FakeAlpaca:
    price: Decimal = Decimal("100.00")
    max_qty: Decimal = Decimal(1000)
    orders: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    submissions: int = 0

    def fill(self, order_id: str, qty: Decimal, price: Decimal) -> None:
        o = self.orders[order_id]
        done = Decimal(o["filled_qty"])
        avg = Decimal(o["filled_avg_price"] or 0)
        total = done + qty
        o["filled_avg_price"] = str((avg * done + price * qty) / total)
        o["filled_qty"] = str(total)
        o["status"] = "filled" if total == Decimal(o["qty"]) else "partially_filled"

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
            if body["type"] == "market":
                self.fill(oid, Decimal(body["qty"]), self.price)
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
