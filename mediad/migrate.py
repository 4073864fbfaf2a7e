"""Applies the numbered migrations once each, under an advisory lock so hosts can race safely."""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from mediad import db, queries

log = structlog.get_logger(__name__)

# Any fixed number: every mediad process migrating any database takes the same lock.
_LOCK_KEY = 0x6D65646961640001


async def migrate(conn: asyncpg.Connection[Any] | PoolConnectionProxy[Any]) -> list[str]:
    """Apply what is missing; return the names applied now (empty when up to date)."""
    applied_now: list[str] = []
    plain = queries.plain()
    await conn.execute(plain["migration_lock"], _LOCK_KEY)
    try:
        await conn.execute(plain["migration_table"])
        done = {r["version"] for r in await conn.fetch(plain["migrations_applied"])}
        for migration in queries.migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(plain["migration_record"], migration.version, migration.name)
            applied_now.append(f"{migration.version:04d}_{migration.name}")
            log.info("migration_applied", migration=applied_now[-1])
    finally:
        await conn.execute(plain["migration_unlock"], _LOCK_KEY)
    return applied_now


async def migrate_url(url: str) -> list[str]:
    """Migrate the database at `url` on a connection of its own, free of statement timeouts
    (adopting a large existing table takes a while)."""
    conn = await db.connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
