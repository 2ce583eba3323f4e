"""The ingest writer's two kinds of failure: the connection, the server's state or the table
(retried, the same rows again) and rows the server refuses (found by bisection,
dead-lettered)."""

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
        pg.IdleInTransactionSessionTimeoutError("terminating connection due to idle timeout"),
        pg.TransactionTimeoutError("terminating connection due to transaction timeout"),
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
        # Class 25 is not retried whole: an aborted transaction fails every statement for ever.
        pg.InFailedSQLTransactionError("current transaction is aborted"),
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
    # Three rows probed alone, then up to four parts around them bisected.
    assert calls <= 1 + 3 + 4 + 2 * len(bad) * math.ceil(math.log2(len(rows)))
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


def _refusal(constraint: str | None) -> pg.CheckViolationError:
    fields = {"C": "23514", "M": "new row violates a check constraint"}
    if constraint is not None:
        fields["n"] = constraint
    error = pg.CheckViolationError.new(fields)
    assert isinstance(error, pg.CheckViolationError)
    return error


@pytest.mark.parametrize("constraint", ["nothing_goes", None])
async def test_a_table_that_refuses_every_row_alike_is_retried_not_bisected(
    constraint: str | None,
) -> None:
    calls = 0

    async def write(part: Sequence[int]) -> None:
        nonlocal calls
        calls += 1
        raise _refusal(constraint)

    with pytest.raises(refusals.TableRefused) as raised:
        await refusals.store_all(list(range(5_000)), write)
    # The batch, then three rows alone: not the 2n-1 statements of a full bisection.
    assert calls == 4
    assert raised.value.error.sqlstate == "23514"


@pytest.mark.parametrize("bad", [{0, 49}, {24, 25}, {0, 25}, {13, 31}])
async def test_a_batch_with_two_bad_rows_among_fifty_dead_letters_exactly_those_two(
    bad: set[int],
) -> None:
    rows = list(range(50))
    written: list[int] = []
    for _ in range(20):  # probes are drawn at random: they must never change the outcome
        written.clear()

        async def write(part: Sequence[int]) -> None:
            if bad.intersection(part):
                raise _refusal("no_lot_of_13")
            written.extend(part)

        refused = await refusals.store_all(rows, write)
        assert [r.row for r in refused] == sorted(bad)
        assert sorted(written) == [r for r in rows if r not in bad]


async def test_rows_refused_by_different_constraints_are_bisected_not_retried() -> None:
    # Every row is refused, but not alike: the rows are at fault, each one dead-lettered.
    async def write(part: Sequence[int]) -> None:
        raise _refusal(f"rule_{part[0] % 4}" if len(part) == 1 else "rule_batch")

    refused = await refusals.store_all(list(range(8)), write)
    assert [r.row for r in refused] == list(range(8))


async def test_a_batch_of_fewer_rows_than_probes_is_bisected() -> None:
    async def write(part: Sequence[int]) -> None:
        raise _refusal("nothing_goes")

    refused = await refusals.store_all([1, 2], write)
    assert [r.row for r in refused] == [1, 2]


def test_a_row_without_a_partition_is_told_from_a_constraint_refusing_it() -> None:
    assert refusals.partition_missing(_refusal(None))
    assert not refusals.partition_missing(_refusal("no_lot_of_13"))
    assert not refusals.partition_missing(pg.NotNullViolationError("null value"))


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
