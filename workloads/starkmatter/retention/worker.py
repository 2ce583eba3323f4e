"""``starkmatter archive --policy NAME [--dry-run]``: one run of a RetentionPolicy."""

from __future__ import annotations

import dataclasses
import json
import sys

import asyncpg

from starkmatter.core import db, migrating, settings
from starkmatter.retention import archiving, objectstore, policies


async def main(policy_name: str, *, dry_run: bool = False) -> int:
    """Reads ``STARKMATTER_RETENTION_CONFIG`` (or, in dev, the seed's table archiving to
    ``$STARKMATTER_DATA_DIR/archive``); prints one JSON report line per data set."""
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
    return 0
