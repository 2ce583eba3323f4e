"""Rows PostgreSQL refuses: told apart from failures a retry cures, found by bisection.

A COPY or a multi-row upsert is all or nothing, so one row the server will never take (a value
beyond a column's range, text it cannot hold, a CHECK added by a DBA) fails its whole batch,
every time: retrying it stops storage for the whole feed while the heartbeat still looks alive.
The writer therefore retries only failures of the connection or of the server's state
(:func:`transient`). On any other failure, :func:`store_all` writes each half of the batch on
its own, down to single rows: every row the server takes is stored, and each one it refuses
comes back to be dead-lettered (reason ``storage_refused``) with the server's message. One
refused row in a batch of n costs about 2·log2(n) extra statements.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import asyncpg

from starkmatter.market import models

Row = TypeVar("Row")
_Row_co = TypeVar("_Row_co", covariant=True)

_RETRIED_CLASSES = frozenset(
    {
        "08",  # connection exception
        "25",  # invalid transaction state: read-only after a failover, idle-session timeouts
        "28",  # invalid authorization: a rotated password
        "3D",  # invalid catalog name: the database is not (yet) there
        "3F",  # invalid schema name
        "40",  # transaction rollback: serialization failure, deadlock
        "42",  # syntax or access rule: a missing table or grant fails every row, not one
        "53",  # insufficient resources: too many connections, disk full, out of memory
        "55",  # object not in prerequisite state: lock not available
        "57",  # operator intervention: shutting down, statement timeout, cannot connect now
        "58",  # system error: I/O
        "72",  # snapshot too old
        "F0",  # configuration file error
        "XX",  # internal error
    }
)
"""SQLSTATE classes of failures that are not the rows' fault: the same rows are retried."""

_REFUSALS = (asyncpg.PostgresError, ValueError, ArithmeticError, struct.error)
"""What a refused row raises: a server error (sorted by :func:`transient`), or a value the
client cannot encode (asyncpg's client-side ``DataError`` is a ``ValueError``)."""


def transient(exc: BaseException) -> bool:
    """Whether writing the same rows again may succeed: the connection, the server's state or
    its resources failed, not the data."""
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "XX")[:2] in _RETRIED_CLASSES
    if isinstance(exc, ValueError | ArithmeticError | struct.error):
        return False
    return isinstance(exc, OSError | asyncpg.InterfaceError)


@dataclasses.dataclass(frozen=True, slots=True)
class Refused(Generic[_Row_co]):
    row: _Row_co
    error: BaseException

    def detail(self, table: str) -> str:
        """The dead letter's detail: which table refused the row, and the server's words."""
        state = getattr(self.error, "sqlstate", None)
        code = f" ({state})" if state else ""
        return f"{table} refused it{code}: {type(self.error).__name__}: {self.error}"[:1000]


async def store_all(
    rows: Sequence[Row], write: Callable[[Sequence[Row]], Awaitable[object]]
) -> list[Refused[Row]]:
    """Write ``rows`` with ``write`` (all or nothing per call), bisecting around refusals.

    Returns the refused rows in their order; every other row is written. A transient failure
    (or any other error) is raised at once: the caller retries, and rows written meanwhile
    are de-duplicated by then.
    """
    refused: list[Refused[Row]] = []
    pending = [rows]
    while pending:
        part = pending.pop()
        try:
            await write(part)
        except _REFUSALS as exc:
            if transient(exc):
                raise
            if len(part) == 1:
                refused.append(Refused(part[0], exc))
                continue
            middle = len(part) // 2
            pending += (part[middle:], part[:middle])
    return refused


def payload(row: models.Trade | models.Quote | models.Bar) -> str:
    """A refused row as the canonical message it was read from (the keys of
    :mod:`~starkmatter.market.normalizing`): the dead letter's raw payload, readable again.
    ``ts`` is integer nanoseconds, exactly as received."""
    text = models.to_text
    fields: dict[str, object]
    if isinstance(row, models.Trade):
        fields = {"type": "trade", "symbol": row.symbol, "ts": row.ts_ns,
                  "price": text(row.price), "size": text(row.size)}  # fmt: skip
        if row.trade_id is not None:
            fields["trade_id"] = row.trade_id
    elif isinstance(row, models.Quote):
        fields = {"type": "quote", "symbol": row.symbol, "ts": row.ts_ns, "bid": text(row.bid),
                  "ask": text(row.ask), "bid_size": text(row.bid_size),
                  "ask_size": text(row.ask_size)}  # fmt: skip
    else:
        fields = {"type": "bar", "symbol": row.symbol, "interval": row.interval,
                  "ts": row.start_ns, "open": text(row.open), "high": text(row.high),
                  "low": text(row.low), "close": text(row.close), "volume": text(row.volume),
                  "vwap": text(row.vwap), "trades": row.trades}  # fmt: skip
    if not isinstance(row, models.Bar) and row.seq is not None:
        fields["seq"] = row.seq
    return json.dumps(fields, separators=(",", ":"))
