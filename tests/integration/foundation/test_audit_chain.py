"""The audit trail is append-only and its hash chain exposes any tampering."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import asyncpg
import pytest

from starkmatter.core import audit

ACTOR = audit.Actor(id="user-1", service="tests", endpoint="POST /things")


async def _append(db: asyncpg.Connection[Any], n: int) -> None:
    for i in range(n):
        async with db.transaction():
            await audit.record(
                db,
                ACTOR,
                action="thing.updated",
                reason=f"change {i}",
                entity_type="thing",
                entity_id=str(i),
                before={"qty": i},
                after={"qty": i + 1},
            )


async def _tamper(db: asyncpg.Connection[Any], sql: str, *args: object) -> None:
    # What a DBA with superuser rights could do: bypass the append-only trigger.
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute(sql, *args)


async def test_intact_chain_verifies(db: asyncpg.Connection[Any]) -> None:
    await _append(db, 5)
    report = await audit.verify(db)
    assert report.ok
    assert report.rows_checked == 5


class _WriterCommitsAtTheEnd:
    """A connection for verify: as its walk reaches the end of the chain, another
    connection commits one more audited change, before verify reads the chain's head."""

    def __init__(self, conn: asyncpg.Connection[Any], writer: asyncpg.Connection[Any]) -> None:
        self._conn = conn
        self._writer = writer
        self.wrote = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._conn.fetch(query, *args)
        if not rows and "FROM audit_log" in query and not self.wrote:
            self.wrote = True
            await _append(self._writer, 1)
        return rows


async def test_a_change_committed_while_verify_walks_is_not_a_broken_chain(
    db: asyncpg.Connection[Any], database_url: str
) -> None:
    await _append(db, 3)
    writer = await asyncpg.connect(database_url)
    try:
        racing = _WriterCommitsAtTheEnd(db, writer)
        report = await audit.verify(racing)
    finally:
        await writer.close()
    assert racing.wrote
    assert report.ok, report.describe()
    assert report.rows_checked == 3
    assert (await audit.verify(db)).rows_checked == 4


async def test_each_row_records_who_what_where_why_before_and_after(
    db: asyncpg.Connection[Any],
) -> None:
    await _append(db, 1)
    row = await db.fetchrow("SELECT * FROM audit_log ORDER BY seq DESC LIMIT 1")
    assert row is not None
    assert (row["actor"], row["action"], row["service"], row["endpoint"], row["reason"]) == (
        "user-1",
        "thing.updated",
        "tests",
        "POST /things",
        "change 0",
    )
    assert (row["before"], row["after"]) == ({"qty": 0}, {"qty": 1})
    assert row["ts"].tzinfo is not None


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_log SET reason = 'x'", "DELETE FROM audit_log"]
)
async def test_updates_and_deletes_are_refused(db: asyncpg.Connection[Any], statement: str) -> None:
    await _append(db, 1)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute(statement)


async def test_an_edited_row_is_reported_as_the_first_broken_row(
    db: asyncpg.Connection[Any],
) -> None:
    await _append(db, 6)
    base = await db.fetchval("SELECT min(seq) FROM audit_log")
    await _tamper(db, "UPDATE audit_log SET after = '{\"qty\": 999}' WHERE seq = $1", base + 3)
    report = await audit.verify(db)
    assert not report.ok
    assert report.first_bad_seq == base + 3
    assert report.problem == "content does not match its hash"


async def test_a_deleted_row_is_reported(db: asyncpg.Connection[Any]) -> None:
    await _append(db, 6)
    base = await db.fetchval("SELECT min(seq) FROM audit_log")
    await _tamper(db, "DELETE FROM audit_log WHERE seq = $1", base + 2)
    report = await audit.verify(db)
    assert not report.ok
    assert report.first_bad_seq == base + 2
    assert "missing" in (report.problem or "")


async def test_a_deleted_last_row_is_reported_against_the_chain_head(
    db: asyncpg.Connection[Any],
) -> None:
    await _append(db, 3)
    last = await db.fetchval("SELECT max(seq) FROM audit_log")
    await _tamper(db, "DELETE FROM audit_log WHERE seq = $1", last)
    report = await audit.verify(db)
    assert not report.ok
    assert report.first_bad_seq == last


async def test_an_inserted_row_is_reported(db: asyncpg.Connection[Any]) -> None:
    await _append(db, 4)
    base = await db.fetchval("SELECT min(seq) FROM audit_log")
    # Forge a row in the middle: shift the later rows up and slip one in with a plausible hash.
    await _tamper(db, "UPDATE audit_log SET seq = -seq WHERE seq > $1", base + 1)
    await _tamper(db, "UPDATE audit_log SET seq = 1 - seq WHERE seq < 0")
    await _tamper(
        db,
        """INSERT INTO audit_log
           SELECT $1, ts, 'intruder', action, service, endpoint, 'forged', entity_type, entity_id,
                  before, after, hash,
                  audit_row_hash(hash, $1, ts, 'intruder', action, service, endpoint, 'forged',
                                 entity_type, entity_id, before, after)
           FROM audit_log WHERE seq = $2""",
        base + 2,
        base + 1,
    )
    report = await audit.verify(db)
    assert not report.ok
    assert report.first_bad_seq == base + 3


async def _verify_cli(env: dict[str, str]) -> tuple[int | None, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starkmatter.cli",
        "audit",
        "verify",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode, out.decode()


async def test_cli_verify_exits_nonzero_on_a_broken_chain(
    db: asyncpg.Connection[Any], database_url: str, redis_url: str
) -> None:
    await _append(db, 3)
    env = {"STARKMATTER_DATABASE_URL": database_url, "STARKMATTER_REDIS_URL": redis_url}
    code, out = await _verify_cli(env)
    assert code == 0, out
    assert "intact" in out
    base = await db.fetchval("SELECT min(seq) FROM audit_log")
    await _tamper(db, "UPDATE audit_log SET actor = 'someone-else' WHERE seq = $1", base)
    code, out = await _verify_cli(env)
    assert code == 1
    assert f"broken at seq {base}" in out
