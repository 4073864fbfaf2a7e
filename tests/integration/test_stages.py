"""A stage is one declaration: a throwaway stage, declared here and nowhere else, runs through
claim, completion, skip, wake-up, status, requeue and eviction's conditions against a real
PostgreSQL, with no other module knowing of it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from mediad import daemon, db, errors, migrate, queries, stages
from mediad.commands import status
from mediad.resources import Resources
from mediad.stage import Declaration, Opener, Result, Row, Stage
from tests.support import (
    event_names,
    insert_rows,
    make_config,
    noop,
    row,
    trivial_openers,
    wait_for,
)

# What a new stage's migration adds: its status, a column of its own, and the bookkeeping
# columns its declaration implies.
THROWAWAY_MIGRATION = """
ALTER TABLE post_media
    ADD COLUMN throwaway_status text NOT NULL DEFAULT 'not_started',
    ADD COLUMN throwaway_note text,
    ADD COLUMN throwaway_done_at timestamptz,
    ADD COLUMN throwaway_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN throwaway_lease_owner text,
    ADD COLUMN throwaway_lease_expires_at timestamptz,
    ADD COLUMN throwaway_next_attempt_at timestamptz,
    ADD COLUMN throwaway_queued boolean GENERATED ALWAYS AS (
        throwaway_status IN ('not_started', 'started') AND download_status = 'completed') STORED;
CREATE INDEX post_media_throwaway_queue
    ON post_media (url_expires_at, created_at, media_id) WHERE throwaway_queued;
"""


def throwaway(*, enabled: bool = True) -> Declaration:
    return Declaration(
        name="throwaway",
        status_column="throwaway_status",
        event_prefix="throwaway",
        completed_event="throwaway_done",
        enabled=lambda config: enabled,
        disabled_reason="throwaway is off",
        implementation=None,
        waits_for=("download",),
        evictable_when=("completed", "skipped"),
        fields=("media_url", "media_type"),
        columns=("throwaway_note",),
        completed_at="throwaway_done_at",
    )


async def add_stage(db_url: str, declaration: Declaration) -> tuple[Declaration, ...]:
    """The new stage's migration, then migrate with it in the registry (its wake-up trigger)."""
    registry = (*stages.ALL, declaration)
    conn = await db.connect(db_url)
    try:
        await conn.execute(THROWAWAY_MIGRATION)
        await migrate.migrate(conn, registry)
    finally:
        await conn.close()
    return registry


async def process(r: Row) -> Result:
    """The throwaway stage's work: audio is none of its business."""
    if r.media_type == "audio":
        raise errors.SkipRowError("audio has nothing to throw away")
    return Result(
        columns={"throwaway_note": f"saw {r.media_url}"},
        metadata={"throwaway": {"length": len(r.media_url or "")}},
        details={"noted": True},
    )


def openers(declaration: Declaration) -> dict[str, Opener]:
    @contextlib.asynccontextmanager
    async def opener(resources: Resources) -> AsyncIterator[Stage]:
        yield Stage(declaration, process, concurrency=3, max_attempts=2)

    return {**trivial_openers(noop), declaration.name: opener}


async def test_a_declared_stage_runs_after_download(db_url: str, pool: asyncpg.Pool[Any]) -> None:
    """The throwaway stage claims rows once downloaded, completes them with its column, metadata
    and event, skips what it has no work for, and `status` counts it."""
    declaration = throwaway()
    registry = await add_stage(db_url, declaration)
    images = await insert_rows(pool, 3)
    [audio] = await insert_rows(pool, 1, url="https://cdn.example/a{i}.mp3", media_type="audio")
    await daemon.run(
        make_config(), once=True, url=db_url, registry=registry, openers=openers(declaration)
    )
    for media_id in images:
        r = await row(pool, media_id)
        assert r["throwaway_status"] == "completed"
        assert r["throwaway_note"] == f"saw {r['media_url']}"
        assert r["throwaway_done_at"] is not None
        assert r["metadata"]["throwaway"] == {"length": len(r["media_url"])}
        assert r["throwaway_lease_owner"] is None
        assert event_names(r["ai_analysis_log"])[-2:] == ["throwaway_started", "throwaway_done"]
    a = await row(pool, audio)
    assert a["throwaway_status"] == "skipped"
    assert a["ai_analysis_log"][-1]["event"] == "throwaway_skipped"
    assert a["ai_analysis_log"][-1]["details"] == {"reason": "audio has nothing to throw away"}
    report = await status.report(pool, registry)
    assert report["stages"]["throwaway"]["rows"] == {"completed": 3, "skipped": 1}
    assert report["stages"]["download"]["rows"] == {"completed": 4}


async def test_a_declared_stage_is_woken_by_notify(db_url: str, pool: asyncpg.Pool[Any]) -> None:
    """A download's completion wakes the throwaway pool through the derived trigger, long before
    its poll interval would."""
    declaration = throwaway()
    registry = await add_stage(db_url, declaration)
    stop = asyncio.Event()
    cfg = make_config(daemon_poll_interval="1h")
    task = asyncio.create_task(
        daemon.run(cfg, url=db_url, registry=registry, openers=openers(declaration), stop=stop)
    )
    try:
        [media_id] = await insert_rows(pool, 1)

        async def noted() -> bool:
            return bool((await row(pool, media_id))["throwaway_status"] == "completed")

        await wait_for(noted, within=20)
    finally:
        stop.set()
        await task


async def test_a_disabled_stage_skips_by_its_own_declaration(
    db_url: str, pool: asyncpg.Pool[Any]
) -> None:
    """Off: rows waiting from before are skipped at start, and later downloads skip it in their
    completion, each with the reason its declaration gives."""
    declaration = throwaway(enabled=False)
    registry = await add_stage(db_url, declaration)
    [waiting] = await insert_rows(pool, 1)
    await pool.execute(
        "UPDATE post_media SET download_status = 'completed' WHERE media_id = $1", waiting
    )
    [later] = await insert_rows(pool, 1, url="https://cdn.example/later{i}.jpg")
    await daemon.run(
        make_config(), once=True, url=db_url, registry=registry, openers=trivial_openers(noop)
    )
    for media_id in (waiting, later):
        r = await row(pool, media_id)
        assert r["throwaway_status"] == "skipped"
        skips = [e for e in r["ai_analysis_log"] if e["event"] == "throwaway_skipped"]
        assert [e["details"] for e in skips] == [{"reason": "throwaway is off"}]


async def test_requeue_and_eviction_follow_the_declaration(
    db_url: str, pool: asyncpg.Pool[Any]
) -> None:
    """`retry --stage throwaway` requeues its failed rows, and eviction waits for it."""
    declaration = throwaway()
    registry = await add_stage(db_url, declaration)
    [media_id] = await insert_rows(pool, 1)
    await pool.execute(
        "UPDATE post_media SET download_status = 'completed', archive_status = 'completed',"
        " ai_analysis_status = 'skipped', derive_status = 'skipped', archive_url = 's3://b/k',"
        " local_file_path = '/s/f',"
        " throwaway_status = 'failed', error_code = 'boom' WHERE media_id = $1",
        media_id,
    )
    evictable = queries.plain(registry)["evict_lock_file"]
    async with pool.acquire() as conn, conn.transaction():
        [held] = await conn.fetch(evictable, "/s/f", None)
    assert held["evictable"] is False
    requeue = queries.for_stage(declaration, registry)["requeue"]
    assert [r["media_id"] for r in await pool.fetch(requeue, ["failed"], None, "boom", None, "t")]
    r = await row(pool, media_id)
    assert (r["throwaway_status"], r["throwaway_queued"]) == ("not_started", True)
    await pool.execute("UPDATE post_media SET throwaway_status = 'completed'")
    async with pool.acquire() as conn, conn.transaction():
        [held] = await conn.fetch(evictable, "/s/f", None)
    assert held["evictable"] is True


def test_a_declaration_refuses_names_that_are_not_identifiers() -> None:
    """Declarations are spliced into SQL: anything but a plain identifier is refused."""
    with pytest.raises(ValueError, match="plain identifier"):
        Declaration(
            name="x; DROP TABLE post_media",
            status_column="x_status",
            event_prefix="x",
            completed_event="x_done",
            enabled=lambda config: True,
            disabled_reason="",
            implementation=None,
        )
