"""``starkmatter archive --policy NAME``: move rows past their age to object storage.

For each rule, in parts of ``part_rows`` rows ordered by the data set's key:
1. select the next rows older than the cutoff (not under legal hold) after the last key;
2. write them as gzip'd JSON lines to ``{dataset}/{run}/part-NNNNN.jsonl.gz`` (the
   object name is fixed by the part number, so a retried part overwrites itself);
3. in one transaction: delete those rows (if the rule purges), record the part and move
   the run's last key. The transaction first locks the legal holds against change (SHARE
   mode: a hold being placed waits for it, or it waits for the hold) and reads them again,
   so a hold placed while the run is under way keeps its rows, even ones already archived
   (an archived copy is harmless; they are counted as ``kept``).
A crash between 2 and 3 leaves the rows in place and the part is written again on resume;
a crash after 3 resumes after the last key. Either way no row is lost or archived twice.
Finally a manifest (parts, row counts, SHA-256 of each object and of its content) is
written and the run is recorded in the audit trail. Audit rows are archived, never
deleted or edited.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import hashlib
import json
import uuid
from typing import Any

import asyncpg

from starkmatter.core import audit, logs
from starkmatter.retention import datasets, objectstore, policies

log = logs.get_logger(__name__)

# Children before parents: deleting an order cascades to its executions (so those go first,
# and an order waits for its youngest execution) and to its events (archived inside it).
ORDER = ("executions", "orders", "portfolio_snapshots", "ticks", "bars", "news",
         "ai_analyses", "alert_events", "sessions", "audit")  # fmt: skip
ACTOR = audit.Actor(id="retention", service="archive", endpoint="starkmatter archive")


class ArchiveMismatch(Exception):
    """An archive's objects do not match its manifest."""


@dataclasses.dataclass
class DatasetReport:
    dataset: str
    action: str
    cutoff: dt.datetime
    dry_run: bool
    eligible: int = 0
    held: int = 0
    archived: int = 0
    purged: int = 0
    kept: int = 0
    """Rows the run took but did not purge: a legal hold placed on them during the run."""
    parts: int = 0
    resumed: bool = False
    manifest_key: str | None = None
    skipped: str | None = None


async def _holds(conn: asyncpg.Connection[Any], dataset: str) -> list[datasets.Hold]:
    rows = await conn.fetch(
        """SELECT user_id::text, symbol FROM retention_legal_holds
           WHERE released_at IS NULL AND (dataset IS NULL OR dataset = ANY($1::text[]))""",
        datasets.hold_datasets(datasets.DATASETS[dataset]),
    )
    return [datasets.Hold(r["user_id"], r["symbol"]) for r in rows]


async def _dry_run(
    conn: asyncpg.Connection[Any], spec: datasets.Dataset, report: DatasetReport,
    holds: list[datasets.Hold], since: dt.datetime | None,
) -> None:  # fmt: skip
    """Counts what the run would take: the same bounds as ``chunk_query``, so an archive-only
    rule counts only the rows that aged since the previous run's cutoff."""
    base = f"{spec.ts_column} < $1" + (f" AND ({spec.extra_where})" if spec.extra_where else "")
    if since is not None:
        base += f" AND {spec.ts_column} >= $2"
    held_sql, params = datasets.hold_filter(spec, holds, 3 if since is not None else 2)
    row = await conn.fetchrow(
        f"""SELECT count(*) AS eligible, count(*) FILTER (WHERE NOT ({held_sql})) AS held
            FROM {spec.table} AS t WHERE {base}""",
        report.cutoff,
        *([since] if since is not None else []),
        *params,
    )
    assert row is not None
    report.eligible, report.held = row["eligible"], row["held"]


def encode_part(docs: list[str]) -> tuple[bytes, str, str]:
    """(gzip bytes, SHA-256 of the object, SHA-256 of the JSON lines). Deterministic: the
    same rows give the same bytes (gzip mtime 0), so a rewritten part is identical."""
    content = ("\n".join(docs) + "\n").encode()
    packed = gzip.compress(content, compresslevel=6, mtime=0)
    return packed, hashlib.sha256(packed).hexdigest(), hashlib.sha256(content).hexdigest()


async def _since(
    conn: asyncpg.Connection[Any], policy: str, rule: policies.Rule
) -> dt.datetime | None:
    """The time from which a run takes rows. An archive-only run takes the rows that became
    old enough since the previous run's cutoff, since their older ones stay in place,
    archived. (Not after the previous run's last key: most keys do not grow with time, a
    random id or a symbol first, so rows that aged later behind that key were never
    archived.)"""
    if rule.action != "archive":
        return None
    since: dt.datetime | None = await conn.fetchval(
        """SELECT cutoff FROM retention_runs WHERE policy = $1 AND dataset = $2
             AND status = 'done' ORDER BY finished_at DESC LIMIT 1""",
        policy,
        rule.dataset,
    )
    return since


async def _start_run(
    conn: asyncpg.Connection[Any], policy: str, rule: policies.Rule, cutoff: dt.datetime
) -> tuple[uuid.UUID, dt.datetime, list[str] | None, bool, dt.datetime | None]:
    """Resume the unfinished run of (policy, dataset), or start one; also ``_since``."""
    since = await _since(conn, policy, rule)
    running = await conn.fetchrow(
        """SELECT id, cutoff, last_key FROM retention_runs
           WHERE policy = $1 AND dataset = $2 AND status = 'running'""",
        policy,
        rule.dataset,
    )
    if running is not None:
        return running["id"], running["cutoff"], running["last_key"], True, since
    run_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO retention_runs (id, policy, dataset, action, cutoff, status)
           VALUES ($1, $2, $3, $4, $5, 'running')""",
        run_id,
        policy,
        rule.dataset,
        rule.action,
        cutoff,
    )
    return run_id, cutoff, None, False, since


async def archive_dataset(
    conn: asyncpg.Connection[Any],
    store: objectstore.ObjectStore | None,
    policy: policies.Policy,
    rule: policies.Rule,
    *,
    now: dt.datetime,
    dry_run: bool = False,
) -> DatasetReport:
    spec = datasets.DATASETS[rule.dataset]
    report = DatasetReport(rule.dataset, rule.action, rule.cutoff(now), dry_run)
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", spec.table):
        report.skipped = f"table {spec.table} does not exist"
        return report
    if dry_run:
        holds = await _holds(conn, rule.dataset)
        await _dry_run(conn, spec, report, holds, await _since(conn, policy.name, rule))
        return report
    archives = rule.action in ("archive", "archiveThenDelete")
    purges = rule.action in ("delete", "archiveThenDelete") and spec.purgeable
    if archives and store is None:
        raise ValueError(f"{rule.dataset}: rule archives but the policy has no archive")
    run_id, report.cutoff, last_key, report.resumed, since = await _start_run(
        conn, policy.name, rule, report.cutoff
    )
    seq = await conn.fetchval(
        "SELECT coalesce(max(seq), 0) FROM retention_parts WHERE run_id = $1", run_id
    )
    while True:
        holds = await _holds(conn, rule.dataset)
        sql, first_hold = datasets.chunk_query(
            spec, holds, resume=last_key is not None, since=since is not None
        )
        _, hold_params = datasets.hold_filter(spec, holds, first_hold)
        rows = await conn.fetch(
            sql,
            report.cutoff,
            policy.part_rows,
            *(last_key or []),
            *([since] if since is not None else []),
            *hold_params,
        )
        if not rows:
            break
        keys = [[r[c] for c in spec.key_columns] for r in rows]
        first_json, last_json = datasets.key_json(keys[0]), datasets.key_json(keys[-1])
        seq += 1
        object_key = f"{rule.dataset}/{run_id}/part-{seq:05d}.jsonl.gz"
        packed = b""
        sha = content_sha = ""
        if archives:
            assert store is not None
            packed, sha, content_sha = encode_part([r["doc"] for r in rows])
            await store.put(object_key, packed)
        async with conn.transaction():
            deleted = kept = 0
            if purges:
                deleted, kept = await _purge_part(conn, spec, keys)
            if archives:
                await conn.execute(
                    """INSERT INTO retention_parts (run_id, seq, object_key, rows, bytes, sha256,
                           content_sha256, first_key, last_key)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9::text::jsonb)""",
                    run_id, seq, object_key, len(rows), len(packed), sha, content_sha,
                    first_json, last_json,
                )  # fmt: skip
            await conn.execute(
                """UPDATE retention_runs SET last_key = $2::text::jsonb,
                          rows_archived = rows_archived + $3, rows_purged = rows_purged + $4,
                          rows_kept = rows_kept + $5
                   WHERE id = $1""",
                run_id,
                last_json,
                len(rows) if archives else 0,
                deleted,
                kept,
            )
        last_key = json.loads(last_json)
    totals = await conn.fetchrow(
        "SELECT rows_archived, rows_purged, rows_kept FROM retention_runs WHERE id = $1", run_id
    )
    assert totals is not None
    report.archived, report.purged = totals["rows_archived"], totals["rows_purged"]
    report.kept = totals["rows_kept"]
    parts = await conn.fetch(
        """SELECT object_key, rows, bytes, sha256, content_sha256, first_key, last_key
           FROM retention_parts WHERE run_id = $1 ORDER BY seq""",
        run_id,
    )
    report.parts = len(parts)
    if archives:
        assert store is not None
        manifest = {
            "format": "jsonl.gz (one row_to_json object per line)",
            "policy": policy.name,
            "dataset": rule.dataset,
            "table": spec.table,
            "data_class": spec.data_class,
            "run_id": str(run_id),
            "action": rule.action,
            "cutoff": report.cutoff.isoformat(),
            "key": spec.key_columns,
            "rows": report.archived,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "parts": [_part_json(dict(p)) for p in parts],
        }
        report.manifest_key = f"{rule.dataset}/{run_id}/manifest.json"
        await store.put(report.manifest_key, json.dumps(manifest, indent=1, default=str).encode())
    async with conn.transaction():
        await conn.execute(
            """UPDATE retention_runs SET status = 'done', finished_at = now(), manifest_key = $2
               WHERE id = $1""",
            run_id,
            report.manifest_key,
        )
        await audit.record(
            conn, ACTOR, action="retention.archived",
            reason=f"policy {policy.name}: {rule.action} older than {rule.age}",
            entity_type="dataset", entity_id=rule.dataset,
            after={"run_id": str(run_id), "archived": report.archived, "purged": report.purged,
                   "kept_under_hold": report.kept, "manifest": report.manifest_key,
                   "cutoff": report.cutoff.isoformat()},
        )  # fmt: skip
    log.info("retention.dataset_done", **{k: str(v) for k, v in dataclasses.asdict(report).items()})
    return report


async def _purge_part(
    conn: asyncpg.Connection[Any], spec: datasets.Dataset, keys: list[list[Any]]
) -> tuple[int, int]:
    """Deletes one part's rows but those under a hold as it stands now; returns (deleted,
    kept). Runs inside the part's transaction, which the lock keeps until it commits: a
    hold inserted concurrently is either visible here or waits until this part is done.
    Rows of the part already gone (deleted by someone else) are neither."""
    await conn.execute("LOCK TABLE retention_legal_holds IN SHARE MODE")
    holds = await _holds(conn, spec.name)
    columns = [list(col) for col in zip(*keys, strict=True)]
    _, hold_params = datasets.hold_filter(spec, holds, len(spec.key) + 1)
    status = await conn.execute(datasets.delete_query(spec, holds), *columns, *hold_params)
    kept: int = await conn.fetchval(datasets.count_query(spec), *columns)
    return int(status.split()[-1]), kept


def _part_json(part: dict[str, Any]) -> dict[str, Any]:
    for name in ("first_key", "last_key"):
        if isinstance(part[name], str):
            part[name] = json.loads(part[name])
    return part


async def run_policy(
    conn: asyncpg.Connection[Any],
    policy: policies.Policy,
    store: objectstore.ObjectStore | None,
    *,
    now: dt.datetime | None = None,
    dry_run: bool = False,
) -> list[DatasetReport]:
    now = now or dt.datetime.now(dt.UTC)
    if policy.suspend:
        return []
    ordered = sorted(policy.rules, key=lambda r: ORDER.index(r.dataset))
    return [
        await archive_dataset(conn, store, policy, rule, now=now, dry_run=dry_run)
        for rule in ordered
    ]


async def verify(store: objectstore.ObjectStore, manifest_key: str) -> int:
    """Check every part of a manifest against its checksums; returns the rows verified."""
    manifest = json.loads(await store.get(manifest_key))
    total = 0
    for part in manifest["parts"]:
        packed = await store.get(part["object_key"])
        if hashlib.sha256(packed).hexdigest() != part["sha256"]:
            raise ArchiveMismatch(f"{part['object_key']}: object checksum differs")
        content = gzip.decompress(packed)
        if hashlib.sha256(content).hexdigest() != part["content_sha256"]:
            raise ArchiveMismatch(f"{part['object_key']}: content checksum differs")
        lines = content.decode().splitlines()
        if len(lines) != part["rows"]:
            raise ArchiveMismatch(
                f"{part['object_key']}: {len(lines)} rows, expected {part['rows']}"
            )
        total += len(lines)
    if total != manifest["rows"]:
        raise ArchiveMismatch(f"manifest counts {manifest['rows']} rows, parts hold {total}")
    return total
