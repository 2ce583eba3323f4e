"""The audit trail: who did what, when, where, why, with the state before and after.

Rows are appended by the database function ``audit_append`` inside the caller's
transaction, so an audit row exists exactly when the change it describes was committed.
Each row's hash covers its content and the previous row's hash; :func:`verify` walks the
chain and reports the first row that breaks it (edited, deleted or inserted).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import asyncpg


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who is acting and from where: a user id or a service id, plus the service/endpoint."""

    id: str
    service: str
    endpoint: str


def _json_text(value: Any) -> str | None:
    # Sent as text and cast in SQL, so it works whatever codecs the connection has.
    return None if value is None else json.dumps(value, default=str, sort_keys=True)


async def record(
    conn: asyncpg.Connection[Any],
    actor: Actor,
    *,
    action: str,
    reason: str,
    entity_type: str,
    entity_id: str,
    before: Any = None,
    after: Any = None,
) -> int:
    """Append one audit row in the caller's transaction; returns its sequence number.

    Call it as the last statement of the transaction: the chain head stays locked until
    commit, and every audited writer queues behind it.
    """
    seq: int = await conn.fetchval(
        "SELECT audit_append($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9::text::jsonb)",
        actor.id,
        action,
        actor.service,
        actor.endpoint,
        reason,
        entity_type,
        entity_id,
        _json_text(before),
        _json_text(after),
    )
    return seq


@dataclasses.dataclass(frozen=True)
class ChainReport:
    ok: bool
    rows_checked: int
    first_bad_seq: int | None = None
    problem: str | None = None

    def describe(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.rows_checked} rows verified"
        return f"audit chain broken at seq {self.first_bad_seq}: {self.problem}"


async def verify(conn: asyncpg.Connection[Any], *, batch: int = 5000) -> ChainReport:
    """Walk the whole chain in order; stop at the first row that does not follow.

    One snapshot for every read (a read-only repeatable-read transaction): a row committed
    between the last batch and the read of the head would otherwise look like a row cut
    off the end of the chain.
    """
    if conn.is_in_transaction():
        return await _verify(conn, batch)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _verify(conn, batch)


async def _verify(conn: asyncpg.Connection[Any], batch: int) -> ChainReport:
    prev_seq, prev_hash = (
        0,
        await conn.fetchval("SELECT '\\x'::bytea || sha256('starkmatter-audit-genesis')"),
    )
    checked = 0
    while True:
        rows = await conn.fetch(
            """SELECT seq, prev_hash, hash,
                      audit_row_hash(prev_hash, seq, ts, actor, action, service, endpoint,
                                     reason, entity_type, entity_id, before, after) AS expected
               FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2""",
            prev_seq,
            batch,
        )
        if not rows:
            break
        for row in rows:
            if row["seq"] != prev_seq + 1:
                return ChainReport(
                    False,
                    checked,
                    prev_seq + 1,
                    f"row missing (next row is seq {row['seq']})",
                )
            if bytes(row["prev_hash"]) != bytes(prev_hash):
                return ChainReport(
                    False,
                    checked,
                    row["seq"],
                    "does not link to the previous row's hash",
                )
            if bytes(row["hash"]) != bytes(row["expected"]):
                return ChainReport(False, checked, row["seq"], "content does not match its hash")
            prev_seq, prev_hash = row["seq"], row["hash"]
            checked += 1
    head = await conn.fetchrow("SELECT seq, hash FROM audit_head")
    if head is not None and head["seq"] != prev_seq:
        return ChainReport(
            False,
            checked,
            prev_seq + 1 if head["seq"] > prev_seq else head["seq"],
            f"chain ends at seq {prev_seq} but its head records seq {head['seq']}",
        )
    return ChainReport(True, checked)
