"""Connections to PostgreSQL: the URL (configured or embedded) and the asyncpg pool."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg

from mediad import embedded, errors
from mediad.config import Config

# Database hiccups (a restart, a dropped connection) are waited out, never fatal. asyncpg
# raises InternalClientError ("cannot switch to state ...") from a connection the server
# terminated in the middle of a query: a dropped connection too.
DB_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def database_url(config: Config) -> str:
    """The configured URL, or the embedded server's when `database.url` is empty."""
    if config.database.url:
        return config.database.url
    return embedded.start(Path(config.daemon.state_dir))


async def _init_connection(conn: asyncpg.Connection[Any]) -> None:
    # jsonb in and out as Python objects, so results and event details need no hand encoding.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection[Any]) -> None:
    """Pooled connections hold no session state (LISTEN and migrations use their own), so
    asyncpg's default reset, a round trip on every release, buys nothing."""


def _describe(url: str, exc: BaseException) -> str:
    # The URL may hold a password: name only where we tried to go.
    safe = url.split("@")[-1] if "@" in url else url
    return f"cannot connect to the database at {safe}: {exc}"


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool[Any]:
    """An asyncpg pool whose connections speak jsonb as Python objects.

    Statements give up after a minute, so a wedged server stalls a pool loop visibly (the
    systemd watchdog notices) instead of forever.
    """
    try:
        pool: asyncpg.Pool[Any] = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            reset=_keep_session,
            timeout=10,
            command_timeout=60,
        )
    except (OSError, asyncpg.PostgresError, TimeoutError, ValueError) as exc:
        raise errors.DatabaseError(_describe(url, exc)) from None
    return pool


async def connect(url: str) -> asyncpg.Connection[Any]:
    """One connection (the LISTEN connection, the migrator)."""
    try:
        conn: asyncpg.Connection[Any] = await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError, ValueError) as exc:
        raise errors.DatabaseError(_describe(url, exc)) from None
    await _init_connection(conn)
    return conn
