"""Legal holds against real PostgreSQL and a local archive folder: a hold on a user's orders
or executions keeps the whole trade record (orders and their fills), and a hold naming a
user or symbol that a data set has no column for keeps what it might cover, never another
user's rows, or is refused when it would hold none of the data set's rows."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from starkmatter.retention import archiving, datasets, objectstore, policies
from tests.integration.retention import rows

pytestmark = pytest.mark.timeout(90)
NOW = dt.datetime(2026, 12, 3, 12, tzinfo=dt.UTC)
OLD = NOW - dt.timedelta(days=8 * 365)
TRADES = ("executions", "orders")
FILLED = ("Validated", "RiskChecked", "Submitted", "Pending", "Filled")
CANCELLED = ("Validated", "RiskChecked", "Submitted", "Pending", "Cancelled")


def _policy(url: str, *names: str, part_rows: int = 1000) -> policies.Policy:
    rules = [{"dataset": n, "olderThanDays": 7 * 365, "action": "archiveThenDelete"} for n in names]
    return policies.Policy.model_validate(
        {"name": "test", "rules": rules, "partRows": part_rows, "archive": {"url": url}}
    )


async def _hold(
    db: asyncpg.Connection[Any], dataset: str | None, user: uuid.UUID | None, symbol: str | None
) -> None:
    await db.execute(
        """INSERT INTO retention_legal_holds (dataset, user_id, symbol, reason, created_by)
           VALUES ($1, $2, $3, 'litigation 2026-31', 'legal')""",
        dataset,
        user,
        symbol,
    )


async def _order(
    db: asyncpg.Connection[Any], user: uuid.UUID, path: tuple[str, ...], symbol: str = "AAPL"
) -> uuid.UUID:
    """An old order walked through ``path``, with one old fill if it ends Filled."""
    order = uuid.uuid4()
    await db.execute(
        """INSERT INTO trading_orders (id, user_id, client_order_id, symbol, side, type,
               time_in_force, quantity, status, created_at, updated_at)
           VALUES ($1, $2, $3, $4, 'buy', 'market', 'day', 10, 'OrderCreated', $5, $5)""",
        order, user, str(order), symbol, OLD,
    )  # fmt: skip
    for source, target in itertools.pairwise(("OrderCreated", *path)):
        await db.execute("UPDATE trading_orders SET status = $2 WHERE id = $1", order, target)
        await db.execute(
            """INSERT INTO trading_order_events (order_id, source, target, reason, ts_event,
                                                 ts_init) VALUES ($1, $2, $3, 'test', $4, $4)""",
            order, source, target, OLD,
        )  # fmt: skip
    if path[-1] == "Filled":
        await db.execute(
            """INSERT INTO trading_executions (id, order_id, user_id, symbol, side, quantity,
                                               price, ts_event, ts_init)
               VALUES ($1, $2, $3, $4, 'buy', 10, 187.5, $5, $5)""",
            uuid.uuid4(), order, user, symbol, OLD,
        )  # fmt: skip
    return order


async def _left(db: asyncpg.Connection[Any], sql: str) -> list[Any]:
    return sorted([r[0] for r in await db.fetch(sql)], key=str)


async def test_a_hold_on_a_users_orders_keeps_their_executions(
    db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    held, other = await rows.new_user(db), await rows.new_user(db)
    held_order = await _order(db, held, FILLED)
    await _order(db, other, FILLED)
    await _hold(db, "orders", held, None)
    policy = _policy(tmp_path.as_uri(), *TRADES)
    store = objectstore.LocalStore(tmp_path)
    dry = {r.dataset: r for r in await archiving.run_policy(db, policy, store, now=NOW,
                                                            dry_run=True)}  # fmt: skip
    assert (dry["executions"].eligible, dry["executions"].held) == (2, 1)
    reports = {r.dataset: r for r in await archiving.run_policy(db, policy, store, now=NOW)}
    assert reports["executions"].purged == reports["orders"].purged == 1
    assert await _left(db, "SELECT user_id FROM trading_executions") == [held]
    assert await _left(db, "SELECT id FROM trading_orders") == [held_order]


async def test_a_hold_on_a_users_executions_keeps_their_orders_filled_or_not(
    db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    held, other = await rows.new_user(db), await rows.new_user(db)
    filled, cancelled = await _order(db, held, FILLED), await _order(db, held, CANCELLED)
    await _order(db, other, CANCELLED)
    await _hold(db, "executions", held, None)
    policy = _policy(tmp_path.as_uri(), *TRADES)
    reports = await archiving.run_policy(db, policy, objectstore.LocalStore(tmp_path), now=NOW)
    assert [(r.dataset, r.purged) for r in reports] == [("executions", 0), ("orders", 1)]
    assert await _left(db, "SELECT id FROM trading_orders") == sorted([filled, cancelled], key=str)
    assert await _left(db, "SELECT order_id FROM trading_executions") == [filled]


class HoldOnOrdersDuringRun(objectstore.LocalStore):
    """Legal holds a user's orders, from a connection of its own, while the executions run
    uploads its only part: after the part was selected, before it is purged."""

    def __init__(self, root: Path, database_url: str, user: uuid.UUID) -> None:
        super().__init__(root)
        self.database_url, self.user = database_url, user

    async def put(self, key: str, data: bytes) -> None:
        await super().put(key, data)
        if key.startswith("executions/") and "manifest" not in key:
            legal = await asyncpg.connect(self.database_url)
            try:
                await _hold(legal, "orders", self.user, "AAPL")
            finally:
                await legal.close()


async def test_a_hold_on_orders_placed_during_a_run_keeps_their_fills_counted_as_kept(
    db: asyncpg.Connection[Any], database_url: str, tmp_path: Path
) -> None:
    held, other = await rows.new_user(db), await rows.new_user(db)
    await _order(db, held, FILLED)
    await _order(db, held, FILLED, symbol="MSFT")
    await _order(db, other, FILLED)
    store = HoldOnOrdersDuringRun(tmp_path, database_url, held)
    (report,) = await archiving.run_policy(
        db, _policy(tmp_path.as_uri(), "executions"), store, now=NOW
    )
    assert (report.archived, report.purged, report.kept) == (3, 2, 1)
    kept = await db.fetch("SELECT user_id, symbol FROM trading_executions")
    assert [(r["user_id"], r["symbol"]) for r in kept] == [(held, "AAPL")]
    assert await db.fetchval(
        "SELECT rows_kept FROM retention_runs WHERE dataset = 'executions'"
    ) == 1  # fmt: skip


async def _snapshot(db: asyncpg.Connection[Any], user: uuid.UUID) -> None:
    await db.execute(
        """INSERT INTO portfolio_snapshots (user_id, ts, cash, positions_value, equity,
                                            realized_pnl, unrealized_pnl, max_drawdown)
           VALUES ($1, $2, 100, 50, 150, 0, 0, 0)""",
        user,
        OLD,
    )


async def _alert_event(db: asyncpg.Connection[Any], user: uuid.UUID | None) -> None:
    await db.execute(
        """INSERT INTO alert_events (user_id, rule, kind, severity, state, fingerprint, summary,
                                     created_at)
           VALUES ($1, 'r', 'price', 'info', 'triggered', $2, 'AAPL above 200', $3)""",
        user,
        uuid.uuid4().hex,
        OLD,
    )


async def _bar(db: asyncpg.Connection[Any], symbol: str) -> None:
    await db.execute(
        """INSERT INTO market_bars (symbol, interval, ts, open, high, low, close, volume, vwap,
                                    trades)
           VALUES ($1, '1m', $2, 1, 1, 1, 1, 1, 1, 1)""",
        symbol,
        OLD,
    )


async def _analysis(db: asyncpg.Connection[Any], user: uuid.UUID, symbols: list[str]) -> None:
    await db.execute(
        """INSERT INTO ai_analyses (id, user_id, kind, symbols, horizon, cache_key,
                                    data_version, status, created_at)
           VALUES ($1, $2, 'technical', $3, '1d', 'k', 'v', 'done', $4)""",
        uuid.uuid4(), user, symbols, OLD,
    )  # fmt: skip


async def test_a_user_and_symbol_hold_keeps_all_the_users_rows_where_rows_have_no_symbol(
    db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    held, everywhere, other = (
        await rows.new_user(db),
        await rows.new_user(db),
        await rows.new_user(db),
    )
    for user in (held, everywhere, other):
        await _snapshot(db, user)
        await _alert_event(db, user)
    await _alert_event(db, None)  # operational: no one's
    await _hold(db, "portfolio_snapshots", held, "AAPL")
    await _hold(db, None, everywhere, "aapl")
    policy = _policy(tmp_path.as_uri(), "portfolio_snapshots", "alert_events")
    store = objectstore.LocalStore(tmp_path)
    dry = await archiving.run_policy(db, policy, store, now=NOW, dry_run=True)
    assert [(r.eligible, r.held) for r in dry] == [(3, 2), (4, 1)]
    reports = await archiving.run_policy(db, policy, store, now=NOW)
    assert [r.purged for r in reports] == [1, 3]
    assert await _left(db, "SELECT user_id FROM portfolio_snapshots") == sorted(
        [held, everywhere], key=str
    )
    assert await _left(db, "SELECT user_id FROM alert_events") == [everywhere]


async def test_a_user_and_symbol_hold_keeps_the_symbols_rows_where_rows_have_no_user(
    db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    held, other = await rows.new_user(db), await rows.new_user(db)
    for symbol in ("AAPL", "MSFT"):
        await _bar(db, symbol)
    await _analysis(db, held, ["AAPL", "MSFT"])
    await _analysis(db, held, ["MSFT"])
    await _analysis(db, other, ["AAPL"])
    await _hold(db, "bars", held, "AAPL")
    await _hold(db, "ai_analyses", held, "AAPL")
    policy = _policy(tmp_path.as_uri(), "bars", "ai_analyses")
    reports = await archiving.run_policy(db, policy, objectstore.LocalStore(tmp_path), now=NOW)
    assert [r.purged for r in reports] == [1, 2]
    assert await _left(db, "SELECT symbol FROM market_bars") == ["AAPL"]
    left = await db.fetch("SELECT user_id, symbols FROM ai_analyses")
    assert [(r["user_id"], r["symbols"]) for r in left] == [(held, ["AAPL", "MSFT"])]


async def test_a_hold_that_would_hold_none_of_its_data_sets_rows_is_refused(
    db: asyncpg.Connection[Any],
) -> None:
    user = await rows.new_user(db)
    for name, spec in datasets.DATASETS.items():
        has_symbol = bool(spec.symbol_column or spec.symbols_column)
        for hold_user, symbol, holds_some in (
            (user, None, bool(spec.user_column)),
            (None, "AAPL", has_symbol),
            (user, "AAPL", bool(spec.user_column) or has_symbol),
        ):
            if holds_some:
                await _hold(db, name, hold_user, symbol)
                continue
            with pytest.raises(asyncpg.CheckViolationError, match=f"a hold on {name} cannot"):
                await _hold(db, name, hold_user, symbol)
    # Neither named: the whole data set; no data set named: wherever the rows have a user.
    await _hold(db, "news", None, None)
    await _hold(db, None, user, None)


async def test_a_hold_placed_before_holds_were_checked_can_still_be_released(
    db: asyncpg.Connection[Any],
) -> None:
    user = await rows.new_user(db)
    await db.execute("ALTER TABLE retention_legal_holds DISABLE TRIGGER USER")
    await _hold(db, "bars", user, None)
    await db.execute("ALTER TABLE retention_legal_holds ENABLE TRIGGER USER")
    legacy = await db.fetchval(
        """SELECT retention_hold_refusal(dataset, user_id, symbol) FROM retention_legal_holds
           WHERE released_at IS NULL"""
    )
    assert legacy.startswith("a hold on bars cannot name only a user")
    await db.execute("UPDATE retention_legal_holds SET released_at = now()")
    with pytest.raises(asyncpg.CheckViolationError, match="a hold on ticks cannot"):
        await db.execute("UPDATE retention_legal_holds SET dataset = 'ticks'")
