"""The order state graph: the seed's edges, the documented additions, nothing else."""

from __future__ import annotations

import itertools

import pytest

from starkmatter.orders import lifecycle
from starkmatter.orders.model import OrderStatus as S

pytestmark = pytest.mark.timeout(30)

SEED_EDGES = {
    (S.CREATED, S.VALIDATED),
    (S.VALIDATED, S.RISK_CHECKED),
    (S.RISK_CHECKED, S.SUBMITTED),
    (S.SUBMITTED, S.PENDING),
    (S.PENDING, S.FILLED),
    (S.PENDING, S.PARTIALLY_FILLED),
    (S.PARTIALLY_FILLED, S.FILLED),
    (S.PENDING, S.CANCELLED),
    (S.PENDING, S.REJECTED),
}


def test_every_seed_edge_is_in_the_table_and_marked_as_seed() -> None:
    seed = {(t.source, t.target) for t in lifecycle.TRANSITIONS if t.seed}
    assert seed == SEED_EDGES


def test_additions_are_only_the_documented_rejection_and_partial_cancel_edges() -> None:
    added = {(t.source, t.target) for t in lifecycle.TRANSITIONS if not t.seed}
    assert added == {
        (S.CREATED, S.REJECTED),
        (S.VALIDATED, S.REJECTED),
        (S.SUBMITTED, S.REJECTED),
        (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED),
        (S.PARTIALLY_FILLED, S.CANCELLED),
    }


def test_filled_cancelled_and_rejected_are_the_only_terminal_states() -> None:
    assert lifecycle.TERMINAL == {S.FILLED, S.CANCELLED, S.REJECTED}


def test_any_pair_outside_the_table_is_refused_with_a_message_naming_both_states() -> None:
    for source, target in itertools.product(S, S):
        if (source, target) in lifecycle.EDGES:
            lifecycle.check_transition(source, target)
            continue
        with pytest.raises(lifecycle.InvalidTransition) as caught:
            lifecycle.check_transition(source, target)
        assert source.value in str(caught.value) and target.value in str(caught.value)


def test_path_from_created_to_pending_walks_the_seed_chain() -> None:
    assert lifecycle.path(S.CREATED, S.PENDING) == (
        S.VALIDATED,
        S.RISK_CHECKED,
        S.SUBMITTED,
        S.PENDING,
    )


def test_no_path_leaves_a_terminal_state() -> None:
    for terminal in lifecycle.TERMINAL:
        assert all(lifecycle.path(terminal, s) == () for s in S if s is not terminal)
