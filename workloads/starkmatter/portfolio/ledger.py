"""Accounts and positions read, changed in memory, snapshotted, written back.

The order worker and the marking job call this inside their transaction: ``load`` reads
the accounts and all their positions without locking them, ``execute`` and ``release``
apply executions and freed reservations with the pure :mod:`positions` rules, ``record``
stores a valuation snapshot with metrics per user and the day's closing value, and
``write`` — last, just before commit — locks the accounts (ids ascending, as every writer
does) and their positions and writes them back.

So the accounts are locked only for that last write and the commit, not while the batch
is recorded: an order placement for the same account (which takes the account lock) waits
that much less. What ``load`` read is checked by ``write``: the cash and each position's
quantity, average cost and realized P&L must still be what was read (only ledger writers
change them), else :class:`LedgerConflict` and the caller's transaction is redone. The
reservation counters, which placement changes meanwhile, are written as differences.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import pydantic_settings

from starkmatter.portfolio import metrics, valuation
from starkmatter.portfolio.positions import Position, cash_delta

ZERO = Decimal(0)


class PortfolioConfig(pydantic_settings.BaseSettings):
    model_config = pydantic_settings.SettingsConfigDict(
        env_prefix="STARKMATTER_PORTFOLIO_", extra="ignore", frozen=True
    )

    starting_cash: Decimal = Decimal(100_000)
    """currency a new user's paper account is funded with on first use"""
    cache_ttl_s: int = 30
    """how long GET /portfolio may be served from Redis; changes invalidate it at once"""


@functools.cache
def get_config() -> PortfolioConfig:
    """Read from the environment once: building settings costs more than a request."""
    return PortfolioConfig()


async def ensure_account(
    conn: Any, user_id: uuid.UUID, starting_cash: Decimal | None = None
) -> None:
    """Open a paper account, funded with the configured starting cash, if there is none."""
    cash = starting_cash if starting_cash is not None else get_config().starting_cash
    await conn.execute(
        "INSERT INTO trading_accounts (user_id, cash, starting_cash) VALUES ($1, $2, $2)"
        " ON CONFLICT (user_id) DO NOTHING",
        user_id,
        cash,
    )


class LedgerConflict(Exception):
    """An account or position changed between ``load`` and ``write``: redo the transaction."""


@dataclasses.dataclass
class Account:
    cash: Decimal
    starting_cash: Decimal
    changed: bool = False
    read_cash: Decimal | None = None
    """the cash as loaded; ``write`` applies only if it is still that"""
    released_cash: Decimal = ZERO
    """reservation freed by this transaction; placements own the rest of reserved_cash"""
    closed_orders: int = 0


@dataclasses.dataclass
class Holding:
    position: Position
    mark: Decimal | None
    changed: bool = False
    read: Position | None = None
    """the position as loaded (None: no row yet); ``write`` applies only if it is still that"""
    released_quantity: Decimal = ZERO


@dataclasses.dataclass
class Ledger:
    accounts: dict[uuid.UUID, Account]
    holdings: dict[tuple[uuid.UUID, str], Holding]

    def holding(self, user_id: uuid.UUID, symbol: str) -> Holding:
        key = (user_id, symbol)
        if key not in self.holdings:
            self.holdings[key] = Holding(Position(), None)
        return self.holdings[key]

    def execute(
        self,
        user_id: uuid.UUID,
        symbol: str,
        signed_quantity: Decimal,
        price: Decimal,
        fee: Decimal = ZERO,
    ) -> Position:
        """Apply one execution to cash and the position (average cost, realized P&L)."""
        account = self.accounts[user_id]
        account.cash += cash_delta(signed_quantity, price, fee)
        account.changed = True
        held = self.holding(user_id, symbol)
        held.position = held.position.apply(signed_quantity, price)
        held.changed = True
        return held.position

    def release(
        self,
        user_id: uuid.UUID,
        symbol: str,
        cash: Decimal,
        quantity: Decimal,
        closes_order: bool,
    ) -> None:
        """Free part of an order's reservation; ``closes_order`` when the order ended."""
        account = self.accounts[user_id]
        account.released_cash += cash
        account.closed_orders += 1 if closes_order else 0
        account.changed = True
        if quantity:
            held = self.holding(user_id, symbol)
            held.released_quantity += quantity
            held.changed = True

    def changed_users(self) -> list[uuid.UUID]:
        return sorted(u for u, a in self.accounts.items() if a.changed)


async def load(conn: Any, user_ids: Iterable[uuid.UUID]) -> Ledger:
    """The accounts and all positions of these users, read without locks (see ``write``)."""
    users = sorted(set(user_ids))
    rows = await conn.fetch(
        "SELECT user_id, cash, starting_cash FROM trading_accounts WHERE user_id = ANY($1::uuid[])",
        users,
    )
    accounts = {
        r["user_id"]: Account(r["cash"], r["starting_cash"], read_cash=r["cash"]) for r in rows
    }
    rows = await conn.fetch(
        "SELECT user_id, symbol, quantity, avg_cost, realized_pnl, mark_price"
        " FROM trading_positions WHERE user_id = ANY($1::uuid[])",
        users,
    )
    holdings = {}
    for r in rows:
        position = Position(r["quantity"], r["avg_cost"], r["realized_pnl"])
        holdings[(r["user_id"], r["symbol"])] = Holding(position, r["mark_price"], read=position)
    return Ledger(accounts, holdings)


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as columns, one array parameter each (``unnest`` turns them back into rows)."""
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def marks_from_quotes(quotes: Mapping[str, str | bytes | None]) -> dict[str, Decimal]:
    """Marks from raw ``quote:{SYMBOL}`` JSON: the mid when both sides are quoted, else the
    last trade; symbols without a quote get no mark."""
    out: dict[str, Decimal] = {}
    for symbol, raw in quotes.items():
        if not raw:
            continue
        q = json.loads(raw)
        bid, ask, last = (Decimal(str(q[k])) if q.get(k) else None for k in ("bid", "ask", "last"))
        if bid and ask:
            out[symbol] = (bid + ask) / 2
        elif last:
            out[symbol] = last
    return out


def _changed_holdings(ledger: Ledger) -> list[tuple[tuple[uuid.UUID, str], Holding]]:
    """Every holding of a changed account (marks move on all of them), in key order."""
    return [
        (key, held)
        for key, held in sorted(ledger.holdings.items())
        if key[0] in ledger.accounts and ledger.accounts[key[0]].changed
    ]


async def record(
    conn: Any, ledger: Ledger, marks: Mapping[str, Decimal], now: dt.datetime
) -> dict[uuid.UUID, dict[str, Any]]:
    """Value each changed account at ``marks`` and store the snapshot and the day's close;
    returns the snapshots. Takes no account lock (``write`` does, after)."""
    users = ledger.changed_users()
    if not users:
        return {}
    by_user: dict[uuid.UUID, dict[str, Position]] = defaultdict(dict)
    user_marks: dict[uuid.UUID, dict[str, Decimal]] = defaultdict(dict)
    for (user, symbol), held in _changed_holdings(ledger):
        held.mark = marks.get(symbol, held.mark)
        by_user[user][symbol] = held.position
        if held.mark is not None:
            user_marks[user][symbol] = held.mark
    today = now.date()
    history: dict[uuid.UUID, list[Decimal]] = defaultdict(list)
    for r in await conn.fetch(
        """SELECT user_id, close_equity FROM (
               SELECT user_id, day, close_equity,
                      row_number() OVER (PARTITION BY user_id ORDER BY day DESC) AS n
               FROM portfolio_daily WHERE user_id = ANY($1::uuid[]) AND day < $2) d
           WHERE n <= 252 ORDER BY user_id, day""",
        users,
        today,
    ):
        history[r["user_id"]].append(r["close_equity"])
    snapshots: dict[uuid.UUID, dict[str, Any]] = {}
    for user in users:
        account = ledger.accounts[user]
        value = valuation.value(account.cash, by_user.get(user, {}), user_marks[user])
        m = metrics.compute(account.starting_cash, [*history[user], value.equity])
        snapshots[user] = {
            "ts": now,
            "cash": value.cash,
            "positions_value": value.positions_value,
            "equity": value.equity,
            "realized_pnl": value.realized_pnl,
            "unrealized_pnl": value.unrealized_pnl,
            "daily_return": m.daily_return,
            "cumulative_return": m.cumulative_return,
            "volatility": m.volatility,
            "max_drawdown": m.max_drawdown,
            "sharpe": m.sharpe,
        }
    await conn.execute(
        """WITH x AS (
               SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::numeric[],
                   $4::numeric[], $5::numeric[], $6::numeric[], $7::numeric[], $8::numeric[],
                   $9::numeric[], $10::numeric[], $11::numeric[], $12::numeric[])
                   AS x (user_id, ts, cash, positions_value, equity, realized_pnl,
                         unrealized_pnl, daily_return, cumulative_return, volatility,
                         max_drawdown, sharpe)),
           daily AS (
               INSERT INTO portfolio_daily (user_id, day, close_equity)
               SELECT user_id, $13::date, equity FROM x
               ON CONFLICT (user_id, day) DO UPDATE SET close_equity = EXCLUDED.close_equity)
           INSERT INTO portfolio_snapshots (user_id, ts, cash, positions_value, equity,
               realized_pnl, unrealized_pnl, daily_return, cumulative_return, volatility,
               max_drawdown, sharpe)
           SELECT * FROM x""",
        *_columns([(u, *s.values()) for u, s in snapshots.items()], 12),
        today,
    )
    return snapshots


async def write(conn: Any, ledger: Ledger, now: dt.datetime) -> None:
    """Lock the changed accounts (ids ascending) and write them and their positions back;
    :class:`LedgerConflict` if any changed since ``load``. Call it last before commit: the
    locks are held from here to the end of the transaction."""
    users = ledger.changed_users()
    if not users:
        return
    await conn.execute(
        "SELECT 1 FROM trading_accounts WHERE user_id = ANY($1::uuid[]) ORDER BY user_id"
        " FOR UPDATE",
        users,
    )
    accounts = [ledger.accounts[u] for u in users]
    written = await conn.execute(
        """UPDATE trading_accounts a SET cash = x.cash,
               reserved_cash = a.reserved_cash - x.released_cash,
               open_orders = a.open_orders - x.closed_orders, updated_at = $6
           FROM unnest($1::uuid[], $2::numeric[], $3::numeric[], $4::integer[], $5::numeric[])
                AS x (user_id, cash, released_cash, closed_orders, read_cash)
           WHERE a.user_id = x.user_id AND a.cash = x.read_cash""",
        users,
        [a.cash for a in accounts],
        [a.released_cash for a in accounts],
        [a.closed_orders for a in accounts],
        [a.read_cash for a in accounts],
        now,
    )
    if written != f"UPDATE {len(users)}":
        raise LedgerConflict(f"accounts changed since read: {written} of {len(users)}")
    updates: list[tuple[Any, ...]] = []
    inserts: list[tuple[Any, ...]] = []
    for (user, symbol), h in _changed_holdings(ledger):
        p = h.position
        if h.read is None:
            inserts.append(
                (user, symbol, p.quantity, -h.released_quantity, p.avg_cost, p.realized_pnl,
                 h.mark, now)
            )  # fmt: skip
        else:
            updates.append(
                (user, symbol, p.quantity, p.avg_cost, p.realized_pnl, h.released_quantity,
                 h.mark, h.read.quantity, h.read.avg_cost, h.read.realized_pnl)
            )  # fmt: skip
    if updates:
        written = await conn.execute(
            """UPDATE trading_positions p SET quantity = x.quantity, avg_cost = x.avg_cost,
                   realized_pnl = x.realized_pnl,
                   reserved_quantity = p.reserved_quantity - x.released_quantity,
                   mark_price = x.mark_price, updated_at = $11
               FROM unnest($1::uuid[], $2::text[], $3::numeric[], $4::numeric[],
                           $5::numeric[], $6::numeric[], $7::numeric[], $8::numeric[],
                           $9::numeric[], $10::numeric[])
                    AS x (user_id, symbol, quantity, avg_cost, realized_pnl,
                          released_quantity, mark_price, read_quantity, read_avg_cost,
                          read_realized_pnl)
               WHERE p.user_id = x.user_id AND p.symbol = x.symbol
                 AND p.quantity = x.read_quantity AND p.avg_cost = x.read_avg_cost
                 AND p.realized_pnl = x.read_realized_pnl""",
            *_columns(updates, 10),
            now,
        )
        if written != f"UPDATE {len(updates)}":
            raise LedgerConflict(f"positions changed since read: {written} of {len(updates)}")
    if inserts:
        written = await conn.execute(
            """INSERT INTO trading_positions (user_id, symbol, quantity, reserved_quantity,
                   avg_cost, realized_pnl, mark_price, updated_at)
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::numeric[], $4::numeric[],
                                    $5::numeric[], $6::numeric[], $7::numeric[],
                                    $8::timestamptz[])
               ON CONFLICT (user_id, symbol) DO NOTHING""",
            *_columns(inserts, 8),
        )
        if written != f"INSERT 0 {len(inserts)}":
            raise LedgerConflict(f"positions opened since read: {written} of {len(inserts)}")
