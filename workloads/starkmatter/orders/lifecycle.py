"""The order state graph: one table that the code, the database and the tests all read.

The seed's edges are kept exactly. The seed gives no way into ``Rejected`` except from
``Pending`` and no way to cancel a partially filled order, so five edges are added and
marked ``seed=False``:

* ``OrderCreated -> Rejected``: validation failed (size, price, tick, symbol, kill switch).
  Passing through ``Validated`` first would record a check that did not pass.
* ``Validated -> Rejected``: a risk check failed (buying power, limits, rate).
* ``Submitted -> Rejected``: the broker refused the order.
* ``PartiallyFilled -> PartiallyFilled``: a further partial fill (an execution, no new state).
* ``PartiallyFilled -> Cancelled``: the unfilled rest is cancelled (by the user, by IOC, or
  by expiry of a day order); the filled part stays filled.

Migration ``0200_trading.sql`` loads the same rows into ``trading_order_transitions``,
whose trigger refuses any other status change; a test checks that both tables agree.
"""

from __future__ import annotations

import dataclasses

from starkmatter.orders.model import OrderStatus

S = OrderStatus


@dataclasses.dataclass(frozen=True)
class Transition:
    source: OrderStatus
    target: OrderStatus
    seed: bool
    """True for an edge drawn in the seed's state diagram."""
    why: str


TRANSITIONS: tuple[Transition, ...] = (
    Transition(S.CREATED, S.VALIDATED, True, "order passed validation"),
    Transition(S.VALIDATED, S.RISK_CHECKED, True, "order passed the risk checks"),
    Transition(S.RISK_CHECKED, S.SUBMITTED, True, "order sent to the broker"),
    Transition(S.SUBMITTED, S.PENDING, True, "broker accepted the order"),
    Transition(S.PENDING, S.FILLED, True, "order filled completely"),
    Transition(S.PENDING, S.PARTIALLY_FILLED, True, "order filled in part"),
    Transition(S.PARTIALLY_FILLED, S.FILLED, True, "rest of the order filled"),
    Transition(S.PENDING, S.CANCELLED, True, "cancelled, expired or IOC/FOK unfilled"),
    Transition(S.PENDING, S.REJECTED, True, "broker rejected a working order"),
    Transition(S.CREATED, S.REJECTED, False, "validation failed"),
    Transition(S.VALIDATED, S.REJECTED, False, "risk check failed"),
    Transition(S.SUBMITTED, S.REJECTED, False, "broker refused the order"),
    Transition(S.PARTIALLY_FILLED, S.PARTIALLY_FILLED, False, "another partial fill"),
    Transition(S.PARTIALLY_FILLED, S.CANCELLED, False, "unfilled rest cancelled"),
)

INITIAL = S.CREATED
EDGES: frozenset[tuple[OrderStatus, OrderStatus]] = frozenset(
    (t.source, t.target) for t in TRANSITIONS
)
TERMINAL: frozenset[OrderStatus] = frozenset(
    s for s in OrderStatus if not any(t.source is s for t in TRANSITIONS)
)
OPEN: frozenset[OrderStatus] = frozenset({S.PENDING, S.PARTIALLY_FILLED})
"""Working at the broker: can fill, can be cancelled, holds a reservation."""
IN_FLIGHT: frozenset[OrderStatus] = frozenset({S.RISK_CHECKED, S.SUBMITTED})
"""Accepted by us, not yet working at the broker; also holds a reservation."""


class InvalidTransition(Exception):
    def __init__(self, source: OrderStatus, target: OrderStatus) -> None:
        allowed = sorted(t.target.value for t in TRANSITIONS if t.source is source)
        super().__init__(
            f"order cannot go from {source.value} to {target.value};"
            f" from {source.value} it can go to: {', '.join(allowed) or 'nothing (terminal)'}"
        )
        self.source = source
        self.target = target


def can_transition(source: OrderStatus, target: OrderStatus) -> bool:
    return (source, target) in EDGES


def check_transition(source: OrderStatus, target: OrderStatus) -> None:
    if (source, target) not in EDGES:
        raise InvalidTransition(source, target)


def path(source: OrderStatus, target: OrderStatus) -> tuple[OrderStatus, ...]:
    """Shortest chain of states after ``source`` that reaches ``target``; empty if none."""
    frontier: list[tuple[OrderStatus, ...]] = [(source,)]
    seen = {source}
    while frontier:
        nxt: list[tuple[OrderStatus, ...]] = []
        for chain in frontier:
            for t in TRANSITIONS:
                if t.source is chain[-1] and t.target not in seen:
                    if t.target is target:
                        return (*chain[1:], target)
                    seen.add(t.target)
                    nxt.append((*chain, t.target))
        frontier = nxt
    return ()
