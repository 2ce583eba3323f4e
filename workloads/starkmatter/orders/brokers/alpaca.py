"""The Alpaca trading API (v2) as a broker: submit, cancel and poll orders over HTTPS.

Idempotent submission: our order id is Alpaca's ``client_order_id``. When a retry after a
crash meets ``422 client_order_id must be unique``, the adapter fetches the order it made
the first time instead of making a second one. Fills are derived from the cumulative
``filled_qty`` and ``filled_avg_price`` the API reports; each delta becomes one execution
whose id (``{alpaca id}:{cumulative qty}``) makes a replayed poll harmless. Alpaca reports
the average as a rounded decimal, so a delta's derived price can land a hair beyond the limit
that was sent; as no exchange fills beyond its limit, such a price is moved onto the limit.

Price protection: a market order goes out as a marketable ``limit`` and a stop as a
``stop_limit``, their limit the ``price_cap`` the reservation was made at (rounded onto
Alpaca's price grid toward the inside), so Alpaca can never fill one beyond what it
reserved. Sent as they are, a gap or a thin book filled them at any price, and the ledger
had to refuse a fill the broker had booked.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import httpx

from starkmatter.core import logs
from starkmatter.orders import fills, storage
from starkmatter.orders.brokers import base
from starkmatter.orders.config import OrdersConfig
from starkmatter.orders.model import OrderId, OrderSide, OrderType, TimeInForce

_log = logs.get_logger("starkmatter.orders.alpaca")
_ENDED = {
    "canceled": fills.CancelReason.BROKER,
    "expired": fills.CancelReason.EXPIRED,
    "done_for_day": fills.CancelReason.EXPIRED,
}
_IMMEDIATE = {
    TimeInForce.IOC: fills.CancelReason.IOC_REMAINDER,
    TimeInForce.FOK: fills.CancelReason.FOK_UNFILLABLE,
}
_PROTECTED = {OrderType.MARKET: OrderType.LIMIT, OrderType.STOP: OrderType.STOP_LIMIT}
"""what an order type without a limit goes out as, with ``price_cap`` as its limit"""
_PENNY = Decimal("0.01")
_SUB_PENNY = Decimal("0.0001")
_RELATIVE_SLACK = Decimal("0.0001")
"""0.01%: a derived fill price this far beyond its limit is still taken as rounding"""


class AlpacaError(Exception):
    pass


class AlpacaBroker:
    name = "alpaca"

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    @classmethod
    def from_config(cls, config: OrdersConfig) -> AlpacaBroker:
        if config.alpaca_key_id is None or config.alpaca_secret_key is None:
            raise AlpacaError(
                "STARKMATTER_ORDERS_ALPACA_KEY_ID and _SECRET_KEY are required for alpaca"
            )
        client = httpx.AsyncClient(
            base_url=config.alpaca_base_url,
            timeout=10,
            headers={
                "APCA-API-KEY-ID": config.alpaca_key_id.get_secret_value(),
                "APCA-API-SECRET-KEY": config.alpaca_secret_key.get_secret_value(),
            },
        )
        return cls(client)

    async def aclose(self) -> None:
        await self._client.aclose()

    @staticmethod
    def _body(order: storage.OrderRecord) -> dict[str, Any]:
        r = order.request
        kind, limit = _PROTECTED.get(r.type, r.type), sent_limit(order)
        # Time in force goes as asked: Alpaca takes day, gtc, ioc and fok on limit orders,
        # and validation lets stops have day or gtc only, which stop_limit takes too.
        body: dict[str, Any] = {
            "symbol": r.symbol,
            "qty": str(r.quantity),
            "side": r.side.value,
            "type": kind.value,
            "time_in_force": r.time_in_force.value,
            "client_order_id": str(order.id),
        }
        if limit is not None:
            body["limit_price"] = str(limit)
        if r.stop_price is not None:
            body["stop_price"] = str(r.stop_price)
        return body

    async def submit(self, order: storage.OrderRecord) -> base.Accepted | base.Refused:
        response = await self._client.post("/v2/orders", json=self._body(order))
        if response.status_code == 200:
            return base.Accepted(response.json()["id"])
        message = _message(response)
        if response.status_code == 422 and "client_order_id" in message:
            existing = await self._client.get(
                "/v2/orders:by_client_order_id", params={"client_order_id": str(order.id)}
            )
            if existing.status_code == 200:
                return base.Accepted(existing.json()["id"])
        if response.status_code in (403, 422):
            return base.Refused(message)
        raise AlpacaError(f"submit failed: HTTP {response.status_code}: {message}")

    async def cancel(self, order: storage.OrderRecord) -> bool:
        """Ask for the cancel; the next poll reports it once Alpaca has done it."""
        if order.broker_order_id is None:
            return False
        response = await self._client.delete(f"/v2/orders/{order.broker_order_id}")
        if response.status_code not in (200, 204, 422):
            raise AlpacaError(f"cancel failed: HTTP {response.status_code}: {_message(response)}")
        return False

    async def poll(
        self, orders: Sequence[storage.OrderRecord], now: dt.datetime
    ) -> dict[OrderId, base.Update]:
        updates: dict[OrderId, base.Update] = {}
        for order in orders:
            if order.broker_order_id is None:
                continue
            response = await self._client.get(f"/v2/orders/{order.broker_order_id}")
            if response.status_code != 200:
                _log.warning("alpaca.poll_failed", status=response.status_code)
                continue
            update = _update(order, response.json(), now)
            if update is not None:
                updates[order.id] = update
        return updates


def sent_limit(order: storage.OrderRecord) -> Decimal | None:
    """The limit Alpaca got for this order: the protective one for a market or stop order,
    the user's own for a limit or stop_limit."""
    r = order.request
    if r.type in _PROTECTED:
        assert order.price_cap is not None, "only accepted orders go to a broker"
        return protective_limit(r.side, order.price_cap)
    return r.limit_price


def protective_limit(side: OrderSide, price_cap: Decimal) -> Decimal:
    """``price_cap`` on Alpaca's price grid (cents at or above $1, hundredths of a cent
    below), rounded toward the inside: down for a buy's ceiling, up for a sell's floor,
    so a fill at the limit never costs more (or yields less) than the reservation assumed.
    """
    step = _PENNY if price_cap >= 1 else _SUB_PENNY
    rounding = decimal.ROUND_FLOOR if side is OrderSide.BUY else decimal.ROUND_CEILING
    limit = price_cap.quantize(step, rounding=rounding)
    # A sell's floor just under $1 can round up to 1.0000: from $1 on, prices go in cents.
    return limit.quantize(_PENNY) if limit >= 1 else limit


def _cancel_reason(order: storage.OrderRecord, now: dt.datetime) -> fills.CancelReason:
    """Alpaca says "canceled" whoever ended the order; say which, as the paper broker does.
    A cancel we asked for ends with the reason it was asked for (the user's, cancel-all's or
    the kill switch's). A day order past its session close was cancelled by our worker's
    DELETE, so it expired. An ioc or fok order ends so when its protective limit keeps it
    from filling at once."""
    requested = order.requested_cancel_reason
    if requested is not None:
        return requested
    if order.expires_at is not None and order.expires_at <= now:
        return fills.CancelReason.EXPIRED
    return _IMMEDIATE.get(order.request.time_in_force, fills.CancelReason.BROKER)


def _inside_limit(
    order: storage.OrderRecord, price: Decimal, explained: Decimal, execution_id: str
) -> Decimal:
    """``price`` moved back onto the limit sent when only rounding can have put it beyond.

    ``explained`` is how far the rounding of Alpaca's average can move a derived price (and
    0.01% of the limit covers our own Decimal arithmetic). A price further beyond than that
    is a broker error, not rounding: it is kept as Alpaca booked it and logged, so the
    ledger books what the broker did, or refuses it when the account lacks the cash.
    """
    limit = sent_limit(order)
    if limit is None or (price - limit) * order.request.side.sign <= 0:
        return price
    if abs(price - limit) <= max(explained, limit * _RELATIVE_SLACK):
        return limit
    _log.warning(
        "alpaca.fill_beyond_limit",
        order_id=str(order.id),
        execution_id=execution_id,
        price=str(price),
        limit=str(limit),
    )
    return price


def _half_unit(reported: Decimal) -> Decimal:
    """Half a unit of the last digit ``reported`` was given with ("9.9967": 0.00005)."""
    exponent = reported.adjusted() - len(reported.as_tuple().digits) + 1
    return Decimal(5).scaleb(exponent - 1)


def _message(response: httpx.Response) -> str:
    """Alpaca's ``message``, or the whole body when it has none (any JSON, or none at all)."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return response.text


def _update(
    order: storage.OrderRecord, data: dict[str, Any], now: dt.datetime
) -> base.Update | None:
    total = Decimal(str(data.get("filled_qty") or 0))
    executions: tuple[base.Execution, ...] = ()
    delta = total - order.filled_quantity
    if delta > 0:
        avg = Decimal(str(data["filled_avg_price"]))
        ours = (order.avg_fill_price or Decimal(0)) * order.filled_quantity
        price = (avg * total - ours) / delta
        # Each average reported is off by up to half a unit of its last digit; this one and
        # the one before (what ``ours`` came from) move the delta's price by that times
        # (total + filled before) / delta.
        explained = _half_unit(avg) * (total + order.filled_quantity) / delta
        execution_id = f"{data['id']}:{total}"
        price = _inside_limit(order, price, explained, execution_id)
        executions = (base.Execution(delta, price, execution_id),)
    status = data.get("status", "")
    rejected = (data.get("reject_reason") or "rejected by broker") if status == "rejected" else None
    cancelled = _ENDED.get(status)
    if cancelled is fills.CancelReason.BROKER:
        cancelled = _cancel_reason(order, now)
    if not executions and cancelled is None and rejected is None:
        return None
    return base.Update(executions=executions, cancelled=cancelled, rejected=rejected)
