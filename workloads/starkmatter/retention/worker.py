"""``starkmatter archive --policy NAME [--dry-run]``: one run of a RetentionPolicy."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from starkmatter.core import db, logs, migrating, settings
from starkmatter.retention import archiving, objectstore, policies

log = logs.get_logger(__name__)

# Where Kubernetes reads a container's termination message (the pod's
# terminationMessagePath, /dev/termination-log unless the pod says otherwise).
TERMINATION_MESSAGE_PATH_ENV = "STARKMATTER_TERMINATION_MESSAGE_PATH"
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
# The kubelet keeps at most this many bytes of a termination message.
TERMINATION_MESSAGE_LIMIT = 4096


async def main(policy_name: str, *, dry_run: bool = False) -> int:
    """Reads ``STARKMATTER_RETENTION_CONFIG`` (or, in dev, the seed's table archiving to
    ``$STARKMATTER_DATA_DIR/archive``); prints one JSON report line per data set and
    leaves their totals as the container's termination message (see summary)."""
    cfg = settings.get_settings()
    policy = policies.load(policy_name, data_dir=cfg.data_dir if cfg.env == "dev" else None)
    store = None
    if policy.archive is not None:
        store = objectstore.open_store(
            policy.archive.url, endpoint=policy.archive.endpoint, lock_days=policy.archive.lock_days
        )
    if cfg.database_url is None:
        raise settings.SettingsError("STARKMATTER_DATABASE_URL is not set")
    conn = await asyncpg.connect(cfg.database_url)
    await db.init_connection(conn)
    try:
        await migrating.apply(conn)
        reports = await archiving.run_policy(conn, policy, store, dry_run=dry_run)
    finally:
        await conn.close()
    for report in reports:
        sys.stdout.write(json.dumps(dataclasses.asdict(report), default=str) + "\n")
    write_termination_message(summary(policy_name, reports, dry_run=dry_run))
    return 0


def summary(policy_name: str, reports: Sequence[archiving.DatasetReport], *, dry_run: bool) -> str:
    """One JSON line of totals: what the operator puts into the RetentionPolicy's status.

    Totals only, never one entry per data set, so it stays far below the kubelet's limit
    on a termination message however many data sets a policy names (a cut line would be
    no JSON at all).
    """
    return json.dumps(
        {
            "policy": policy_name,
            "dryRun": dry_run,
            "datasets": len(reports),
            "archived": sum(r.archived for r in reports),
            "purged": sum(r.purged for r in reports),
        },
        separators=(",", ":"),
    )


def write_termination_message(text: str) -> None:
    """Best effort: the run has succeeded whether or not its summary can be left.

    Only written where the file exists (the kubelet creates it in every container):
    outside Kubernetes there is no one to read it.
    """
    path = Path(os.environ.get(TERMINATION_MESSAGE_PATH_ENV) or DEFAULT_TERMINATION_MESSAGE_PATH)
    data = text.encode()[:TERMINATION_MESSAGE_LIMIT]
    try:
        if path.exists():
            path.write_bytes(data)
    except OSError as e:
        log.warning("archive.summary_not_written", path=str(path), error=str(e))
