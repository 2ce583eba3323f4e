"""The ledger is read without locks and locked only for its write, just before commit; the
write refuses an account or position another writer changed meanwhile, and keeps the
reservations that placements made meanwhile."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from starkmatter.portfolio import ledger

NOW = dt.datetime(2026, 12, 3, 15, 0, tzinfo=dt.UTC)


async def _account(db: asyncpg.Connection[Any], cash: str = "10000") -> uuid.UUID:
    user = await db.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id",
        f"{uuid.uuid4().hex}@example.com",
    )
    await ledger.ensure_account(db, user, Decimal(cash))
    return uuid.UUID(str(user))


async def test_reading_the_ledger_leaves_the_account_free_for_placements(
    db: asyncpg.Connection[Any], database_url: str
) -> None:
    user = await _account(db)
    other = await asyncpg.connect(database_url)
    try:
        async with db.transaction():
            book = await ledger.load(db, [user])
            book.execute(user, "AAPL", Decimal(10), Decimal("100"))
            await ledger.record(db, book, {"AAPL": Decimal("100")}, NOW)
            # A placement takes the account lock: it does not wait on this transaction.
            locked = await other.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM trading_accounts WHERE user_id = $1"
                " FOR UPDATE NOWAIT) l",
                user,
            )
            assert locked == 1
            await ledger.write(db, book, NOW)
            # From the write on, until commit, it does.
            with pytest.raises(asyncpg.LockNotAvailableError):
                await other.fetchval(
                    "SELECT 1 FROM trading_accounts WHERE user_id = $1 FOR UPDATE NOWAIT", user
                )
    finally:
        await other.close()
    row = await db.fetchrow("SELECT cash FROM trading_accounts WHERE user_id = $1", user)
    assert row["cash"] == Decimal("9000")
    position = await db.fetchrow(
        "SELECT quantity, avg_cost FROM trading_positions WHERE user_id = $1", user
    )
    assert (position["quantity"], position["avg_cost"]) == (Decimal(10), Decimal(100))


async def test_a_write_refuses_cash_changed_since_it_was_read(
    db: asyncpg.Connection[Any], database_url: str
) -> None:
    user = await _account(db)
    book = await ledger.load(db, [user])
    book.execute(user, "AAPL", Decimal(1), Decimal("100"))
    # Another ledger writer (a second worker, the marking job) got there first.
    await db.execute("UPDATE trading_accounts SET cash = cash - 50 WHERE user_id = $1", user)
    with pytest.raises(ledger.LedgerConflict):
        async with db.transaction():
            await ledger.write(db, book, NOW)
    assert await db.fetchval(
        "SELECT cash FROM trading_accounts WHERE user_id = $1", user
    ) == Decimal("9950")


async def test_a_write_refuses_a_position_changed_or_opened_since_it_was_read(
    db: asyncpg.Connection[Any],
) -> None:
    user = await _account(db)
    first = await ledger.load(db, [user])
    first.execute(user, "AAPL", Decimal(2), Decimal("100"))
    second = await ledger.load(db, [user])
    second.execute(user, "AAPL", Decimal(3), Decimal("101"))
    await ledger.write(db, first, NOW)
    with pytest.raises(ledger.LedgerConflict):
        async with db.transaction():
            await ledger.write(db, second, NOW)
    assert await db.fetchval(
        "SELECT quantity FROM trading_positions WHERE user_id = $1", user
    ) == Decimal(2)


async def test_reservations_placed_meanwhile_are_kept_when_a_fill_releases_its_own(
    db: asyncpg.Connection[Any],
) -> None:
    user = await _account(db)
    await db.execute(
        "UPDATE trading_accounts SET reserved_cash = 1010, open_orders = 1 WHERE user_id = $1",
        user,
    )
    book = await ledger.load(db, [user])
    book.execute(user, "AAPL", Decimal(10), Decimal("100"))
    book.release(user, "AAPL", Decimal("1010"), Decimal(0), closes_order=True)
    # A placement for the same account commits between the read and the write.
    await db.execute(
        "UPDATE trading_accounts SET reserved_cash = reserved_cash + 505,"
        " open_orders = open_orders + 1 WHERE user_id = $1",
        user,
    )
    await ledger.write(db, book, NOW)
    row = await db.fetchrow(
        "SELECT cash, reserved_cash, open_orders FROM trading_accounts WHERE user_id = $1", user
    )
    assert (row["cash"], row["reserved_cash"], row["open_orders"]) == (
        Decimal("9000"),
        Decimal("505"),
        1,
    )
