"""The counts `status` reads (kept by statement triggers) stay exact through every way a row
changes, and a bulk write wakes the daemon with one NOTIFY per statement."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from mediad import errors, stages
from mediad.commands import status
from mediad.queue import (
    Completed,
    Deferred,
    Failed,
    Outcome,
    Released,
    Retry,
    Skipped,
    StageQueue,
)
from mediad.stage import Result, Row, Stage
from tests.acceptance.test_cli import mediad
from tests.support import insert_rows, make_config, noop, run_once

# Counted straight from the table, the way `status` did before it had counts of its own.
FULL_COUNT = """
SELECT stage, status, CASE WHEN status = 'failed' THEN coalesce(error_code, 'unknown') END AS code,
    count(*) AS rows
FROM post_media,
LATERAL (VALUES ('download', download_status), ('archive', archive_status),
                ('analysis', ai_analysis_status), ('derive', derive_status)) AS s(stage, status)
GROUP BY 1, 2, 3
"""

# How often this transaction called the trigger function.
TRIGGER_CALLS = (
    "SELECT calls FROM pg_stat_xact_user_functions WHERE funcname = 'mediad_after_write'"
)

BULK_INSERT = """
INSERT INTO post_media (post_id, media_url, media_type)
SELECT 'bulk-' || i, 'https://pbs.twimg.com/media/bulk-' || i || '-' || $2 || '.jpg', 'image'
FROM generate_series(1, $1::integer) AS i
"""


async def assert_exact(pool: asyncpg.Pool[Any]) -> dict[str, Any]:
    """status.report() says what a full count of the table says; returns the report."""
    report = await status.report(pool)
    expected_rows: dict[str, dict[str, int]] = {d.name: {} for d in stages.ALL}
    expected_failures = []
    for r in await pool.fetch(FULL_COUNT):
        by_status = expected_rows[r["stage"]]
        by_status[r["status"]] = by_status.get(r["status"], 0) + r["rows"]
        if r["code"] is not None:
            expected_failures.append((r["stage"], r["code"], r["rows"]))
    assert {name: entry["rows"] for name, entry in report["stages"].items()} == expected_rows
    got_failures = [(f["stage"], f["error_code"], f["rows"]) for f in report["failures"]]
    assert sorted(got_failures) == sorted(expected_failures)
    return report


async def process(r: Row) -> Result:
    """Outcomes by URL: done, gone (permanent) or flaky (transient)."""
    url = r.media_url or ""
    if "/gone-" in url:
        raise errors.PermanentError("HTTP 404", error_code="http_404")
    if "/flaky-" in url:
        raise errors.TransientError("HTTP 503", error_code="http_5xx")
    return Result(details={"file_size": 10})


async def test_counts_stay_exact_through_every_transition(
    db_url: str, pool: asyncpg.Pool[Any]
) -> None:
    """Inserts (row by row, INSERT ... SELECT, COPY), claims, completions, skips, retries,
    failures, worker_lost, releases, deferrals, `mediad retry`, an operator's UPDATE and
    DELETE, and a TRUNCATE: after each, status counts what a count(*) of the table counts."""
    await insert_rows(pool, 6, url="https://cdn.example/ok-{i}.jpg")
    await insert_rows(pool, 3, url="https://cdn.example/gone-{i}.jpg")
    await insert_rows(pool, 2, url="https://cdn.example/flaky-{i}.jpg")
    await pool.execute(BULK_INSERT, 50, "a")
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "post_media",
            records=[(f"copied-{i}", f"https://cdn.example/ok-copied-{i}.jpg", "image")
                     for i in range(20)],
            columns=["post_id", "media_url", "media_type"],
        )  # fmt: skip
    report = await assert_exact(pool)
    assert report["stages"]["download"]["rows"] == {"not_started": 81}
    assert report["queue_depth"]["download"] == 81

    # Claims, completions (which skip the disabled archive and analysis), permanent failures
    # and retries: backoff_base 0 makes retried rows due again within the same run.
    await run_once(db_url, process, download_max_attempts="2", daemon_backoff_base="0s")
    report = await assert_exact(pool)
    download = report["stages"]["download"]
    assert download["rows"] == {"completed": 76, "failed": 5}
    assert (download["due"], download["leased"]) == (0, 0)
    assert ("download", "http_404", 3) in [tuple(f.values()) for f in report["failures"]]
    assert report["stages"]["archive"]["rows"] == {"not_started": 5, "skipped": 76}
    # Derive is enabled but not running here: its completed downloads wait for it. A derive
    # worker completes some, skips some (nothing to derive) and fails one.
    assert report["queue_depth"]["derive"] == 76
    deriver = Stage(stages.DERIVE, noop, concurrency=4, max_attempts=3)
    derive_queue = StageQueue(pool, deriver, "d1", 60.0)
    batch = await derive_queue.claim(6)
    assert len(batch) == 6
    await assert_exact(pool)
    done = [Completed(r, Result()) for r in batch[:3]]
    skipped = [Skipped(r, "a document") for r in batch[3:5]]
    assert await derive_queue.finish([*done, *skipped, Failed(batch[5], "corrupt_media", "x")])
    report = await assert_exact(pool)
    assert report["stages"]["derive"]["rows"] == {
        "completed": 3, "failed": 1, "not_started": 75, "skipped": 2,
    }  # fmt: skip

    # `mediad retry` re-queues the failed rows; claims lease them; a lease lapsed on the last
    # attempt fails the row worker_lost at the next claim.
    cfg_env = {"MEDIAD_DATABASE_URL": db_url}
    code, _, _ = await mediad("retry", "--failed", "--error-code", "http_5xx", env=cfg_env)
    assert code == 0
    await assert_exact(pool)
    config = make_config()
    stage = Stage(stages.DOWNLOAD, noop, concurrency=4, max_attempts=1)
    queue = StageQueue(pool, stage, "w1", 60.0, disabled=stages.disabled(config))
    claimed = await queue.claim(10)
    assert len(claimed) == 2
    report = await assert_exact(pool)
    assert report["stages"]["download"]["leased"] == 2
    await pool.execute(
        "UPDATE post_media SET download_lease_expires_at = now() - interval '1 second'"
        " WHERE download_status = 'started'"
    )
    assert await queue.claim(10) == []
    report = await assert_exact(pool)
    assert ("download", "worker_lost", 2) in [tuple(f.values()) for f in report["failures"]]

    # A release and a deferral hand rows back.
    await pool.execute(BULK_INSERT, 3, "b")
    first, second, _third = await queue.claim(3)
    assert await queue.finish([Released(first, "shutdown"), Deferred(second, 60, "busy", "x")])
    await assert_exact(pool)

    # An operator's UPDATE of error_code alone moves a failure to another code; a DELETE and a
    # TRUNCATE take rows away.
    await pool.execute(
        "UPDATE post_media SET error_code = 'http_410' WHERE error_code = 'http_404'"
        " AND media_url LIKE '%gone-0%'"
    )
    report = await assert_exact(pool)
    assert ("download", "http_410", 1) in [tuple(f.values()) for f in report["failures"]]
    await pool.execute("DELETE FROM post_media WHERE media_url LIKE '%ok-copied-%'")
    await assert_exact(pool)
    await pool.execute("TRUNCATE post_media")
    report = await assert_exact(pool)
    assert all(entry["rows"] == {} for entry in report["stages"].values())


async def test_counts_stay_exact_under_concurrent_writers(
    db_url: str, pool: asyncpg.Pool[Any]
) -> None:
    """Statements racing on several connections, and folds racing with them, lose no count."""
    await pool.execute(BULK_INSERT, 400, "c")
    config = make_config()
    stage = Stage.configured(stages.DOWNLOAD, noop, config)
    queues = [StageQueue(pool, stage, f"w{i}", 60.0) for i in range(4)]

    async def drain(queue: StageQueue) -> None:
        while batch := await queue.claim(7):
            # The first of each batch is retried at once (twice at most), the rest fail.
            first, rest = batch[0], batch[1:]
            outcomes: list[Outcome] = [Failed(r, "http_404", "gone") for r in rest]
            if first.attempt < 3:
                outcomes.append(Retry(first, 0.0, "http_5xx", "busy"))
            else:
                outcomes.append(Failed(first, "http_5xx", "still busy"))
            assert len(await queue.finish(outcomes)) == len(batch)

    async def fold_often() -> None:
        for _ in range(20):
            await status.report(pool)
            await asyncio.sleep(0)

    await asyncio.gather(*(drain(q) for q in queues), fold_often())
    await assert_exact(pool)


async def test_a_bulk_insert_notifies_once_per_statement(
    db_url: str, pool: asyncpg.Pool[Any]
) -> None:
    """INSERT ... SELECT and COPY of 100,000 rows each call the trigger function once, and the
    daemon's channel hears from each statement."""
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(db_url)
    await listener.add_listener("mediad", lambda *args: heard.put_nowait(str(args[3])))
    try:
        async with pool.acquire() as conn:
            try:
                await conn.execute("SET track_functions = 'all'")
            except asyncpg.InsufficientPrivilegeError:
                pytest.skip("counting function calls needs a superuser")
            async with conn.transaction():
                await conn.execute(BULK_INSERT, 100_000, "d")
                calls = await conn.fetchval(TRIGGER_CALLS)
            assert calls == 1
            assert await asyncio.wait_for(heard.get(), timeout=10) == "download"
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "post_media",
                    records=[(f"c-{i}", f"https://cdn.example/c-{i}.jpg", "image")
                             for i in range(100_000)],
                    columns=["post_id", "media_url", "media_type"],
                )  # fmt: skip
                calls = await conn.fetchval(TRIGGER_CALLS)
            assert calls == 1
            assert await asyncio.wait_for(heard.get(), timeout=10) == "download"
    finally:
        await listener.close()
    report = await status.report(pool)
    assert report["stages"]["download"]["rows"] == {"not_started": 200_000}
