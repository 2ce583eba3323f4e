"""The dead-letter queue: failed tasks in PostgreSQL, listed and replayed by an operator."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

from starkmatter.core import logs, settings


def _dsn() -> str:
    cfg = settings.get_settings()
    if cfg.database_url is None:
        raise settings.SettingsError("STARKMATTER_DATABASE_URL is not set")
    return cfg.database_url


async def store(
    db: asyncpg.Pool | asyncpg.Connection[Any], task_id: str, name: str, args: list[Any],
    kwargs: dict[str, Any], error: str, retries: int,
) -> None:  # fmt: skip
    await db.execute(
        """INSERT INTO task_dead_letters (task_id, task_name, args, kwargs, error, retries)
           VALUES ($1, $2, $3::text::jsonb, $4::text::jsonb, $5, $6)
           ON CONFLICT (task_id) DO NOTHING""",
        task_id,
        name,
        json.dumps(args, default=str),
        json.dumps(kwargs, default=str),
        logs.mask_text(error)[:2000],  # kept for operators to read: no secrets in it
        retries,
    )


async def record(
    dsn: str, task_id: str, name: str, args: list[Any], kwargs: dict[str, Any], error: str,
    retries: int,
) -> None:  # fmt: skip
    conn = await asyncpg.connect(dsn)
    try:
        await store(conn, task_id, name, args, kwargs, error, retries)
    finally:
        await conn.close()


def record_sync(
    task_id: str, name: str, args: list[Any], kwargs: dict[str, Any], error: str, retries: int
) -> None:
    asyncio.run(record(_dsn(), task_id, name, args, kwargs, error, retries))
