from __future__ import annotations

import gzip

import pytest

from starkmatter.retention import archiving, datasets, policies

NEWS = datasets.DATASETS["news"]
ALERTS = datasets.DATASETS["alert_events"]
TICKS = datasets.DATASETS["ticks"]


def test_default_policy_follows_the_seeds_retention_table() -> None:
    policy = policies.default("file:///tmp/archive")
    days = {r.dataset: r.older_than_days for r in policy.rules}
    assert days["orders"] == days["executions"] == 7 * 365
    assert days["audit"] == 3 * 365
    assert days["ticks"] == days["bars"] == 2 * 365
    assert days["alert_events"] == 90 and days["sessions"] == 30
    actions = {r.dataset: r.action for r in policy.rules}
    assert actions["audit"] == "archive" and actions["orders"] == "archiveThenDelete"


def test_policy_refuses_purging_audit_and_a_missing_archive() -> None:
    with pytest.raises(ValueError, match="append-only"):
        policies.Rule(dataset="audit", older_than_days=10, action="delete")
    with pytest.raises(ValueError, match="archive is required"):
        policies.Policy.model_validate({"rules": [{"dataset": "news", "olderThanDays": 5}]})
    with pytest.raises(ValueError, match="unknown dataset"):
        policies.Rule(dataset="everything", older_than_days=10)


def test_hold_on_the_whole_dataset_excludes_every_row() -> None:
    sql, params = datasets.hold_filter(NEWS, [datasets.Hold(None, None)], 3)
    assert (sql, params) == ("false", [])


def test_user_hold_applies_only_where_rows_have_a_user() -> None:
    holds = [datasets.Hold("u1", None)]
    assert datasets.hold_filter(TICKS, holds, 3) == ("true", [])
    sql, params = datasets.hold_filter(ALERTS, holds, 3)
    # coalesce: a row without a user is no one's on hold, and NOT NULL would keep it forever.
    assert sql == "NOT coalesce(t.user_id::text = ANY($3::text[]), false)" and params == [["u1"]]


def test_a_criterion_a_data_set_has_no_column_for_widens_the_hold_but_never_voids_it() -> None:
    holds = [datasets.Hold("u1", "AAPL")]
    snapshots = datasets.DATASETS["portfolio_snapshots"]
    assert datasets.hold_filter(snapshots, holds, 3)[1] == [["u1"]]  # all the user's rows
    assert datasets.hold_filter(TICKS, holds, 3)[1] == [["AAPL"]]  # all the symbol's rows
    assert datasets.hold_filter(NEWS, holds, 3)[1] == [["AAPL"]]  # stories about it
    assert datasets.hold_filter(datasets.DATASETS["audit"], holds, 3) == ("true", [])


def test_executions_are_held_with_their_order_and_by_holds_on_orders() -> None:
    executions = datasets.DATASETS["executions"]
    assert "orders" in datasets.hold_datasets(executions)
    assert "executions" in datasets.hold_datasets(datasets.DATASETS["orders"])
    sql, params = datasets.hold_filter(executions, [datasets.Hold("u1", None)], 2)
    assert "EXISTS (SELECT 1 FROM trading_orders AS p WHERE p.id = t.order_id" in sql
    assert params == [["u1"], ["u1"]]


def test_resumed_chunk_starts_after_the_last_key_in_key_order() -> None:
    sql, next_param = datasets.chunk_query(TICKS, [], resume=True)
    assert "(symbol, ts, uid) > ($3::text::text, $4::text::timestamptz, $5::text::bigint)" in sql
    assert sql.endswith("ORDER BY symbol, ts, uid LIMIT $2") and next_param == 6


def test_orders_still_working_never_move() -> None:
    sql, _ = datasets.chunk_query(datasets.DATASETS["orders"], [], resume=False)
    assert "status IN ('Filled', 'Cancelled', 'Rejected')" in sql


def test_parts_are_deterministic_so_a_rewritten_part_is_identical() -> None:
    docs = ['{"id": 1}', '{"id": 2}']
    packed, sha, content_sha = archiving.encode_part(docs)
    assert archiving.encode_part(docs) == (packed, sha, content_sha)
    assert gzip.decompress(packed) == b'{"id": 1}\n{"id": 2}\n'


def test_children_are_archived_before_their_parents() -> None:
    assert archiving.ORDER.index("executions") < archiving.ORDER.index("orders")
    assert set(archiving.ORDER) == set(datasets.DATASETS)
