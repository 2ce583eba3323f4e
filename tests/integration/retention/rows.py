"""Rows the retention tests write."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg


async def new_user(db: asyncpg.Connection[Any]) -> uuid.UUID:
    """A user of its own (a random e-mail), for rows and holds that name one."""
    user: uuid.UUID = await db.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id",
        f"{uuid.uuid4().hex[:8]}@example.com",
    )
    return user
