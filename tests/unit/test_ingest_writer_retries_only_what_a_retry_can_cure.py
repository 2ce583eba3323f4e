"""The ingest writer's two kinds of failure: the connection or the server's state (retried,
the same rows again) and rows the server refuses (found by bisection, dead-lettered)."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence

import asyncpg
import asyncpg.exceptions as pg
import pytest

from starkmatter.ingest import refusals
from starkmatter.market import models, normalizing

P = models.SCALE


@pytest.mark.parametrize(
    "error",
    [
        pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        pg.AdminShutdownError("terminating connection due to administrator command"),
        pg.CannotConnectNowError("the database system is starting up"),
        pg.TooManyConnectionsError("sorry, too many clients already"),
        pg.SerializationError("could not serialize access"),
        pg.DeadlockDetectedError("deadlock detected"),
        pg.QueryCanceledError("canceling statement due to statement timeout"),
        pg.ReadOnlySQLTransactionError("cannot execute COPY in a read-only transaction"),
        pg.DiskFullError("could not extend file"),
        pg.InsufficientPrivilegeError("permission denied for table market_ticks"),
        pg.UndefinedTableError('relation "market_ticks" does not exist'),
        asyncpg.InterfaceError("connection is closed"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
    ],
)
def test_failures_of_the_connection_or_the_server_are_transient(error: Exception) -> None:
    assert refusals.transient(error)


@pytest.mark.parametrize(
    "error",
    [
        pg.NumericValueOutOfRangeError("numeric field overflow"),
        pg.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'),
        pg.InvalidTextRepresentationError("invalid input syntax for type numeric"),
        pg.DatetimeFieldOverflowError("timestamp out of range"),
        pg.CheckViolationError('new row violates check constraint "positive_price"'),
        pg.NotNullViolationError('null value in column "price"'),
        pg.ProgramLimitExceededError("index row size 3000 exceeds btree version 4 maximum"),
        pg.RaiseError("refused by a trigger"),
        asyncpg.exceptions._base.DataError("invalid input for query argument $4"),
        struct.error("'q' format requires -9223372036854775808 <= number"),
        OverflowError("int too big to convert"),
    ],
)
def test_rows_the_server_or_the_client_cannot_take_are_not_transient(error: Exception) -> None:
    assert not refusals.transient(error)


async def test_bisection_writes_every_good_row_once_and_returns_each_refused_one() -> None:
    rows = list(range(1_000))
    bad = {3, 500, 501, 999}
    written: list[int] = []
    calls = 0

    async def write(part: Sequence[int]) -> None:
        nonlocal calls
        calls += 1
        if bad.intersection(part):
            raise pg.CheckViolationError(f"refused {sorted(bad.intersection(part))}")
        written.extend(part)

    refused = await refusals.store_all(rows, write)
    assert [r.row for r in refused] == sorted(bad)
    assert sorted(written) == [r for r in rows if r not in bad]
    assert len(written) == len(set(written))
    assert calls <= 1 + 2 * len(bad) * math.ceil(math.log2(len(rows)))
    assert refused[0].detail("market_ticks") == (
        "market_ticks refused it (23514): CheckViolationError: refused [3]"
    )


async def test_bisection_stops_at_a_transient_failure_for_the_caller_to_retry() -> None:
    calls = 0

    async def write(part: Sequence[int]) -> None:
        nonlocal calls
        calls += 1
        raise pg.AdminShutdownError("terminating connection due to administrator command")

    with pytest.raises(pg.AdminShutdownError):
        await refusals.store_all(list(range(100)), write)
    assert calls == 1


@pytest.mark.parametrize(
    "row",
    [
        models.Trade("AAPL", 1_700_000_000_123_456_789, 22_750 * P // 100, 5 * P, "t1", seq=7),
        models.Quote("AAPL", 1_700_000_000_000_000_001, 227 * P, 228 * P, P, 2 * P),
        models.Bar(
            "AAPL",
            "1m",
            1_700_000_040 * 10**9,
            100 * P,
            101 * P,
            99 * P,
            100 * P,
            10 * P,
            100 * P,
            4,
        ),
    ],
)
def test_a_refused_row_is_dead_lettered_as_the_message_that_reads_back_to_it(
    row: models.Trade | models.Quote | models.Bar,
) -> None:
    payload = refusals.payload(row)
    assert normalizing.normalize(json.loads(payload)) == row
