"""Rows PostgreSQL refuses: told apart from failures a retry cures, found by bisection.

A COPY or a multi-row upsert is all or nothing, so one row the server will never take (a value
beyond a column's range, text it cannot hold, a CHECK added by a DBA) fails its whole batch,
every time: retrying it stops storage for the whole feed while the heartbeat still looks alive.
The writer therefore retries only failures of the connection or of the server's state
(:func:`transient`). On any other failure, :func:`store_all` writes each half of the batch on
its own, down to single rows: every row the server takes is stored, and each one it refuses
comes back to be dead-lettered (reason ``storage_refused``) with the server's message. One
refused row in a batch of n costs about 2·log2(n) extra statements.

A refusal of every row is the table's fault, not the rows': a DBA's CHECK or trigger that
refuses everything, or a day partition dropped by retention while the writer's cache still
lists it. Dead-lettering it would turn a whole feed into dead letters, at 2n-1 statements a
batch. So before bisecting, :func:`store_all` writes three rows of the failed batch alone (at
random, drawn again on each try); if all three fail with the batch's exact SQLSTATE and
constraint, it raises :class:`TableRefused` and the writer retries the batch with backoff
instead. The trade-off: a batch whose rows are all bad for the same reason looks the same and
is retried until someone acts (logged as an error, counted in the store retries), as is, rarely,
one whose three probes all happen to hit bad rows (then the next try draws other rows). A
batch of fewer than three rows is always bisected: at a trickle, a table-level refusal is
still dead-lettered. Checking costs at most three statements, and those the server takes are
not written again. A missing partition (:func:`partition_missing`) is told apart on its own,
since a batch may span days of which only one is gone: the caller forgets its cached
partitions, creates them again and retries.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
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

_RETRIED_STATES = frozenset(
    {
        "25006",  # read_only_sql_transaction: a standby after a failover
        "25P03",  # idle_in_transaction_session_timeout: the session was ended, reconnect
        "25P04",  # transaction_timeout (PostgreSQL 17): the session was ended, reconnect
    }
)
"""Single SQLSTATEs retried from classes that are not retried whole: the rest of class 25 is a
caller's transaction gone wrong (25P02 "current transaction is aborted" fails for ever)."""

_PROBES = 3
"""Rows of a failed batch written alone before bisecting it: all refused alike, the table
refuses everything."""

_probing = random.Random()  # noqa: S311 - not for security: probes vary between tries

_REFUSALS = (asyncpg.PostgresError, ValueError, ArithmeticError, struct.error)
"""What a refused row raises: a server error (sorted by :func:`transient`), or a value the
client cannot encode (asyncpg's client-side ``DataError`` is a ``ValueError``)."""


def transient(exc: BaseException) -> bool:
    """Whether writing the same rows again may succeed: the connection, the server's state or
    its resources failed, not the data."""
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or "XX"
        return state in _RETRIED_STATES or state[:2] in _RETRIED_CLASSES
    if isinstance(exc, ValueError | ArithmeticError | struct.error):
        return False
    return isinstance(exc, OSError | asyncpg.InterfaceError)


def partition_missing(exc: BaseException) -> bool:
    """Whether ``exc`` may be a row that found no partition (a day dropped by retention): a
    check violation that names no constraint, which routing a row to a partition raises."""
    return isinstance(exc, asyncpg.CheckViolationError) and not exc.constraint_name


class TableRefused(Exception):
    """The whole batch and every row probed alone failed alike: the table refuses, not the
    rows. Retried as a transient failure; nothing is dead-lettered."""

    def __init__(self, error: asyncpg.PostgresError) -> None:
        super().__init__(f"every row refused alike ({error.sqlstate}): {error}")
        self.error = error


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
    rows: Sequence[Row],
    write: Callable[[Sequence[Row]], Awaitable[object]],
    retried: Callable[[BaseException], bool] = transient,
) -> list[Refused[Row]]:
    """Write ``rows`` with ``write`` (all or nothing per call), bisecting around refusals.

    Returns the refused rows in their order; every other row is written. A failure
    ``retried`` says a retry may cure (:func:`transient` by default), or any other error, is
    raised at once, and :class:`TableRefused` when the table refuses every row probed: the
    caller retries, and rows written meanwhile are de-duplicated by then.
    """
    try:
        await write(rows)
        return []
    except _REFUSALS as exc:
        if retried(exc):
            raise
        if len(rows) == 1:
            return [Refused(rows[0], exc)]
        failure = exc
    refused, pending = await _probe(rows, write, retried, failure)
    while pending:
        part = pending.pop()
        try:
            await write(part)
        except _REFUSALS as exc:
            if retried(exc):
                raise
            if len(part) == 1:
                refused.append(Refused(part[0], exc))
                continue
            pending += _halves(part)
    order = {id(row): i for i, row in enumerate(rows)}
    return sorted(refused, key=lambda r: order[id(r.row)])


async def _probe(
    rows: Sequence[Row],
    write: Callable[[Sequence[Row]], Awaitable[object]],
    retried: Callable[[BaseException], bool],
    failure: BaseException,
) -> tuple[list[Refused[Row]], list[Sequence[Row]]]:
    """Write a few rows of the failed batch alone; raise :class:`TableRefused` if each fails
    exactly as the batch did. Returns those refused and the parts left to bisect, last first
    (popped in order); the probed rows are not written again."""
    if len(rows) < _PROBES or not isinstance(failure, asyncpg.PostgresError):
        return [], _halves(rows)  # a value the client cannot encode is the row's alone
    picked = sorted(_probing.sample(range(len(rows)), _PROBES))
    refused: list[Refused[Row]] = []
    for i in picked:
        try:
            await write(rows[i : i + 1])
        except _REFUSALS as exc:
            if retried(exc):
                raise
            refused.append(Refused(rows[i], exc))
    if len(refused) == _PROBES and all(_alike(r.error, failure) for r in refused):
        raise TableRefused(failure) from failure
    bounds = [-1, *picked, len(rows)]
    parts = [rows[a + 1 : b] for a, b in itertools.pairwise(bounds) if b - a > 1]
    return refused, parts[::-1]


def _halves(part: Sequence[Row]) -> list[Sequence[Row]]:
    """The two halves of ``part``, the last first (the first is popped first)."""
    middle = len(part) // 2
    return [part[middle:], part[:middle]]


def _alike(error: BaseException, failure: asyncpg.PostgresError) -> bool:
    """Whether a row's error is exactly its batch's: the same SQLSTATE and constraint."""
    return (
        isinstance(error, asyncpg.PostgresError)
        and error.sqlstate == failure.sqlstate
        and getattr(error, "constraint_name", None) == getattr(failure, "constraint_name", None)
    )


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
