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
                extra_where=_ORDER_DONE, document=_ORDER_WITH_EVENTS),
        Dataset("executions", "trading_executions", "ts_event", (("id", "uuid"),), 7 * _D,
                "trade data", user_column="user_id", symbol_column="symbol"),
        Dataset("portfolio_snapshots", "portfolio_snapshots", "ts", (("id", "bigint"),),
                7 * _D, "trade data", user_column="user_id"),
        Dataset("audit", "audit_log", "ts", (("seq", "bigint"),), 3 * _D, "user activity",
                purgeable=False),
        Dataset("ticks", "market_ticks", "ts",
                (("symbol", "text"), ("ts", "timestamptz"), ("uid", "bigint")), 2 * _D,
                "market data", symbol_column="symbol"),
        Dataset("bars", "market_bars", "ts",
                (("symbol", "text"), ("interval", "text"), ("ts", "timestamptz")), 2 * _D,
                "market data", symbol_column="symbol"),
        Dataset("news", "news_articles", "published_at", (("id", "bigint"),), 2 * _D,
                "market data"),
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
    neither holds the whole data set."""
    if any(h.user_id is None and h.symbol is None for h in holds):
        return "false", []
    users = sorted({h.user_id for h in holds if h.user_id and h.symbol is None})
    symbols = sorted({h.symbol for h in holds if h.symbol and h.user_id is None})
    clauses: list[str] = []
    params: list[Any] = []
    n = first_param
    if users and dataset.user_column:
        clauses.append(f"{dataset.user_column}::text <> ALL(${n}::text[])")
        params.append(users)
        n += 1
    if symbols and dataset.symbol_column:
        clauses.append(f"{dataset.symbol_column} <> ALL(${n}::text[])")
        params.append(symbols)
        n += 1
    for h in holds:
        if h.user_id and h.symbol and dataset.user_column and dataset.symbol_column:
            clauses.append(
                f"NOT ({dataset.user_column}::text = ${n} AND {dataset.symbol_column} = ${n + 1})"
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


def delete_query(dataset: Dataset) -> str:
    """DELETE of one part's rows by key: one array parameter per key column."""
    cols = dataset.key_columns
    arrays = ", ".join(f"${i + 1}::{t}[]" for i, (_, t) in enumerate(dataset.key))
    return (
        f"DELETE FROM {dataset.table} WHERE ({', '.join(cols)}) IN (SELECT * FROM unnest({arrays}))"
    )


def key_json(values: Sequence[Any]) -> str:
    return json.dumps([v.isoformat() if isinstance(v, dt.datetime) else str(v) for v in values])


def cutoff(now: dt.datetime, days: int) -> dt.datetime:
    return now - dt.timedelta(days=days)
