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
    extra_where: str = ""
    """Rows that may not move yet whatever their age (e.g. orders still working); the
    table is aliased ``t``."""
    document: str = "row_to_json(t)::text"
    """The archived JSON of one row ``t``: rows that a purge would cascade to travel in it."""
    default_years: int | None = None
    """The seed's age in calendar years (trade data 7, user activity 3, market data 2)."""

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
                extra_where=_ORDER_DONE, document=_ORDER_WITH_EVENTS, default_years=7),
        Dataset("executions", "trading_executions", "ts_event", (("id", "uuid"),), 7 * _D,
                "trade data", user_column="user_id", symbol_column="symbol", default_years=7),
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
                "market data", default_years=2),
        Dataset("ai_analyses", "ai_analyses", "created_at", (("id", "uuid"),), 90, "logs",
                user_column="user_id"),
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


def hold_filter(dataset: Dataset, holds: Sequence[Hold], first_param: int) -> tuple[str, list[Any]]:
    """SQL excluding held rows, and its parameters. A hold on a column the data set does not
    have (a user hold on ticks) cannot match any of its rows and is ignored; a hold naming
    neither holds the whole data set. A row whose user (or symbol) is NULL, such as an
    operational alert event, belongs to no one on hold: ``NULL <> ALL(...)`` is NULL, not
    true, so it is tested for explicitly or such rows would never be purged."""
    if any(h.user_id is None and h.symbol is None for h in holds):
        return "false", []
    users = sorted({h.user_id for h in holds if h.user_id and h.symbol is None})
    symbols = sorted({h.symbol for h in holds if h.symbol and h.user_id is None})
    clauses: list[str] = []
    params: list[Any] = []
    n = first_param
    if users and dataset.user_column:
        col = dataset.user_column
        clauses.append(f"({col} IS NULL OR {col}::text <> ALL(${n}::text[]))")
        params.append(users)
        n += 1
    if symbols and dataset.symbol_column:
        col = dataset.symbol_column
        clauses.append(f"({col} IS NULL OR {col} <> ALL(${n}::text[]))")
        params.append(symbols)
        n += 1
    for h in holds:
        if h.user_id and h.symbol and dataset.user_column and dataset.symbol_column:
            user, symbol = dataset.user_column, dataset.symbol_column
            clauses.append(
                f"({user} IS NULL OR {symbol} IS NULL"
                f" OR NOT ({user}::text = ${n} AND {symbol} = ${n + 1}))"
            )
            params += [h.user_id, h.symbol]
            n += 2
    return (" AND ".join(clauses) or "true"), params


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
    return f"DELETE FROM {dataset.table} WHERE {_part_keys(dataset)} AND {held}"


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
