"""What each retention data set is made of: table, age column, key, what may be purged. Pure.

The key orders a data set for archiving in parts: each part is the next rows after the
previous part's last key, so progress is one key and a resumed run continues exactly there.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

_D = 365


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    table: str
    ts_column: str
    key: tuple[tuple[str, str], ...]
    """(column, PostgreSQL type) in index order."""
    default_days: int
    """The seed's age in days; for a year-based class, the nominal ``365 * years``, shown only:
    its cutoff is ``default_years`` calendar years (see ``cutoff_years``)."""
    data_class: str
    """The seed's retention class: trade data, user activity, market data, logs, sessions."""
    purgeable: bool = True
    user_column: str | None = None
    symbol_column: str | None = None
    symbols_column: str | None = None
    """Instead of ``symbol_column``: a ``text[]`` of the symbols a row is about (a news story,
    an AI analysis); a symbol hold holds the rows whose array has the symbol."""
    extra_where: str = ""
    """Rows that may not move yet whatever their age (e.g. orders still working); the
    table is aliased ``t``."""
    document: str = "row_to_json(t)::text"
    """The archived JSON of one row ``t``: rows that a purge would cascade to travel in it."""
    default_years: int | None = None
    """The seed's age in calendar years (trade data 7, user activity 3, market data 2)."""
    held_with: tuple[str, ...] = ()
    """Data sets whose legal holds hold this one's rows too: an order and its executions are
    one trade record, and a hold that kept one but purged the other would keep half of it."""
    parent: tuple[str, str] | None = None
    """(data set, column of ``t`` with its row's key): a row whose parent a hold covers is
    held with it (an execution with its order), whatever its own user and symbol say."""

    @property
    def key_columns(self) -> list[str]:
        return [c for c, _ in self.key]


# An order is finished, and none of its executions is left behind (deleting the order would
# cascade to it): an execution younger than its order's cutoff keeps the order in place.
_ORDER_DONE = """t.status IN ('Filled', 'Cancelled', 'Rejected')
    AND NOT EXISTS (SELECT 1 FROM trading_executions x WHERE x.order_id = t.id)"""
# Its events (the state machine's history) cascade with it, so they are archived inside it.
# status_path is only ever set within a write (migration 0215), never stored: left out.
_ORDER_WITH_EVENTS = """(to_jsonb(t) - 'status_path' || jsonb_build_object('events', (
    SELECT coalesce(jsonb_agg(to_jsonb(e) ORDER BY e.id), '[]'::jsonb)
    FROM trading_order_events e WHERE e.order_id = t.id)))::text"""

DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("orders", "trading_orders", "created_at", (("id", "uuid"),), 7 * _D,
                "trade data", user_column="user_id", symbol_column="symbol",
                extra_where=_ORDER_DONE, document=_ORDER_WITH_EVENTS, default_years=7,
                held_with=("executions",)),
        Dataset("executions", "trading_executions", "ts_event", (("id", "uuid"),), 7 * _D,
                "trade data", user_column="user_id", symbol_column="symbol", default_years=7,
                held_with=("orders",), parent=("orders", "order_id")),
        Dataset("portfolio_snapshots", "portfolio_snapshots", "ts", (("id", "bigint"),),
                7 * _D, "trade data", user_column="user_id", default_years=7),
        Dataset("audit", "audit_log", "ts", (("seq", "bigint"),), 3 * _D, "user activity",
                purgeable=False, default_years=3),
        Dataset("ticks", "market_ticks", "ts",
                (("symbol", "text"), ("ts", "timestamptz"), ("uid", "bigint")), 2 * _D,
                "market data", symbol_column="symbol", default_years=2),
        Dataset("bars", "market_bars", "ts",
                (("symbol", "text"), ("interval", "text"), ("ts", "timestamptz")), 2 * _D,
                "market data", symbol_column="symbol", default_years=2),
        Dataset("news", "news_articles", "published_at", (("id", "bigint"),), 2 * _D,
                "market data", symbols_column="symbols", default_years=2),
        Dataset("ai_analyses", "ai_analyses", "created_at", (("id", "uuid"),), 90, "logs",
                user_column="user_id", symbols_column="symbols"),
        Dataset("alert_events", "alert_events", "created_at", (("id", "bigint"),), 90, "logs",
                user_column="user_id"),
        Dataset("sessions", "refresh_tokens", "issued_at", (("id", "uuid"),), 30, "sessions",
                user_column="user_id"),
    )
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Hold:
    user_id: str | None
    symbol: str | None


def hold_datasets(dataset: Dataset) -> list[str]:
    """The data sets whose holds apply to ``dataset``'s rows (holds naming no data set apply
    to all)."""
    return [dataset.name, *dataset.held_with]


def _criteria(dataset: Dataset, hold: Hold) -> tuple[str | None, str | None] | None:
    """(user, symbol) a hold asks of ``dataset``'s rows, or None if it holds none of them.

    A criterion the data set has no column for is dropped, which widens the hold rather than
    weakening it: a hold on a user's AAPL trading keeps all that user's portfolio snapshots
    (any of them may show AAPL), and on bars all AAPL bars (the market the user traded in).
    A hold left with no criterion it can apply holds nothing here, not everything: bars
    belong to no user, so a hold on a user keeps none of them, just as it keeps no row
    whose user is NULL. Migration 0360 refuses such a hold when it names this one data set.
    """
    user = hold.user_id if dataset.user_column else None
    symbol = hold.symbol if dataset.symbol_column or dataset.symbols_column else None
    if (hold.user_id or hold.symbol) and not (user or symbol):
        return None
    return user, symbol


def _covered(
    dataset: Dataset, alias: str, holds: Sequence[Hold], first_param: int
) -> tuple[list[str], list[Any]]:
    """Conditions (any one suffices) under which row ``alias`` of ``dataset`` is covered by
    one of ``holds`` naming a user or a symbol, and their parameters. A NULL user or symbol
    makes its condition NULL, never true: that row is no one's on hold."""
    criteria = {c for h in holds if (c := _criteria(dataset, h)) is not None}
    users = sorted({u for u, s in criteria if u and s is None})
    symbols = sorted({s for u, s in criteria if s and u is None})
    pairs = sorted({(u, s) for u, s in criteria if u and s})
    user = f"{alias}.{dataset.user_column}::text"
    conditions: list[str] = []
    params: list[Any] = []
    n = first_param
    if users:
        conditions.append(f"{user} = ANY(${n}::text[])")
        params.append(users)
        n += 1
    if symbols:
        if dataset.symbols_column:
            conditions.append(f"{alias}.{dataset.symbols_column} && ${n}::text[]")
        else:
            conditions.append(f"{alias}.{dataset.symbol_column} = ANY(${n}::text[])")
        params.append(symbols)
        n += 1
    if pairs:
        if dataset.symbols_column:
            symbol = f"h.symbol = ANY({alias}.{dataset.symbols_column})"
        else:
            symbol = f"h.symbol = {alias}.{dataset.symbol_column}"
        conditions.append(
            f"EXISTS (SELECT 1 FROM unnest(${n}::text[], ${n + 1}::text[]) AS h (user_id, symbol)"
            f" WHERE h.user_id = {user} AND {symbol})"
        )
        params += [[u for u, _ in pairs], [s for _, s in pairs]]
    return conditions, params


def hold_filter(dataset: Dataset, holds: Sequence[Hold], first_param: int) -> tuple[str, list[Any]]:
    """SQL true for the rows of ``dataset`` (aliased ``t``) that no hold covers, and its
    parameters. ``holds`` are those of ``hold_datasets(dataset)`` and of no data set. A hold
    naming neither user nor symbol holds the whole data set; otherwise see ``_criteria``
    for criteria the data set cannot express. A row with a ``parent`` is also held when a
    hold covers its parent row (an order's executions stay with it)."""
    if any(h.user_id is None and h.symbol is None for h in holds):
        return "false", []
    conditions, params = _covered(dataset, "t", holds, first_param)
    if dataset.parent is not None:
        name, column = dataset.parent
        parent = DATASETS[name]
        via, via_params = _covered(parent, "p", holds, first_param + len(params))
        if via:
            conditions.append(
                f"EXISTS (SELECT 1 FROM {parent.table} AS p"
                f" WHERE p.{parent.key_columns[0]} = t.{column}"
                f" AND ({' OR '.join(via)}))"
            )
            params += via_params
    if not conditions:
        return "true", []
    # coalesce: NOT of a NULL condition (a row without a user) would keep the row forever.
    return f"NOT coalesce({' OR '.join(conditions)}, false)", params


def chunk_query(
    dataset: Dataset, holds: Sequence[Hold], resume: bool, since: bool = False
) -> tuple[str, int]:
    """SELECT of the next part: $1 cutoff, $2 limit, then the last key's columns if resuming,
    then the lower time bound if ``since``, then the hold parameters. Returns the SQL and the
    first hold parameter's number."""
    cols = dataset.key_columns
    where = [f"{dataset.ts_column} < $1"]
    n = 3
    if resume:
        # The last key travels as text (it is stored as JSON) and is cast back here.
        placeholders = ", ".join(f"${n + i}::text::{t}" for i, (_, t) in enumerate(dataset.key))
        where.append(f"({', '.join(cols)}) > ({placeholders})")
        n += len(cols)
    if since:
        where.append(f"{dataset.ts_column} >= ${n}")
        n += 1
    if dataset.extra_where:
        where.append(f"({dataset.extra_where})")
    held, _ = hold_filter(dataset, holds, n)
    where.append(held)
    sql = (
        f"SELECT {', '.join(cols)}, {dataset.document} AS doc FROM {dataset.table} AS t"
        f" WHERE {' AND '.join(where)} ORDER BY {', '.join(cols)} LIMIT $2"
    )
    return sql, n


def _part_keys(dataset: Dataset) -> str:
    cols = dataset.key_columns
    arrays = ", ".join(f"${i + 1}::{t}[]" for i, (_, t) in enumerate(dataset.key))
    return f"({', '.join(cols)}) IN (SELECT * FROM unnest({arrays}))"


def delete_query(dataset: Dataset, holds: Sequence[Hold] = ()) -> str:
    """DELETE of one part's rows by key (one array parameter per key column) that are not
    under ``holds`` (their parameters follow the keys', see ``hold_filter``): a hold placed
    after the part was selected keeps its rows in place."""
    held, _ = hold_filter(dataset, holds, len(dataset.key) + 1)
    return f"DELETE FROM {dataset.table} AS t WHERE {_part_keys(dataset)} AND {held}"


def count_query(dataset: Dataset) -> str:
    """How many of one part's rows (same parameters as ``delete_query``'s keys) remain."""
    return f"SELECT count(*) FROM {dataset.table} WHERE {_part_keys(dataset)}"


def key_json(values: Sequence[Any]) -> str:
    return json.dumps([v.isoformat() if isinstance(v, dt.datetime) else str(v) for v in values])


def cutoff(now: dt.datetime, days: int) -> dt.datetime:
    return now - dt.timedelta(days=days)


def cutoff_years(now: dt.datetime, years: int) -> dt.datetime:
    """The same wall-clock instant ``years`` calendar years before ``now`` (7 years is not
    7 * 365 days: that cutoff falls up to 2 leap days too late, so rows would be purged
    before their anniversary). 29 February maps to the 28th, the earlier candidate, so a
    row is never taken before it is ``years`` old."""
    year = now.year - years
    try:
        return now.replace(year=year)
    except ValueError:  # 29 February in a year that has none
        return now.replace(year=year, day=28)
