"""Applies the numbered migrations once each, then (re)installs what derives from the stage
declarations (the wake-up and counting triggers), all under an advisory lock so hosts can race
safely."""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from mediad import db, queries, stages
from mediad.queries import Registry

log = structlog.get_logger(__name__)

# Any fixed number: every mediad process migrating any database takes the same lock.
_LOCK_KEY = 0x6D65646961640001


# The stubs' generics, not the runtime classes'.
Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"

# The objects built from the stage declarations, in the order they are installed.
_DERIVED = ("write_function", "write_triggers")


async def migrate(conn: Connection, registry: Registry = stages.ALL) -> list[str]:
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
        await _install_derived(conn, registry)
    finally:
        await conn.execute(plain["migration_unlock"], _LOCK_KEY)
    return applied_now


async def _install_derived(conn: Connection, registry: Registry) -> None:
    """Install the declarations' triggers where they differ from what is there: replacing a
    trigger locks the table, so unchanged ones are left alone. New triggers start counting from
    a full count, taken while no row may change."""
    sql = queries.plain(registry)
    await conn.execute(sql["derived_table"])
    installed = {r["name"]: r["definition"] for r in await conn.fetch(sql["derived_definitions"])}
    changed = [name for name in _DERIVED if installed.get(name) != sql[name]]
    if changed:
        async with conn.transaction():
            await conn.execute(sql["count_lock"])
            await conn.execute(sql["recount_rows"])
            for name in _DERIVED:
                await conn.execute(sql[name])
                await conn.execute(sql["derived_record"], name, sql[name])
        log.info("stage_triggers_installed", stages=[d.name for d in registry])


async def migrate_url(url: str, registry: Registry = stages.ALL) -> list[str]:
    """Migrate the database at `url` on a connection of its own, free of statement timeouts
    (adopting a large existing table takes a while)."""
    conn = await db.connect(url)
    try:
        return await migrate(conn, registry)
    finally:
        await conn.close()
