"""The daemon in-process against a real PostgreSQL: pools, retries, NOTIFY, shutdown."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from mediad import errors, stages
from mediad.pool import StagePool
from mediad.queue import StageQueue
from mediad.retry import Backoff
from mediad.stage import Result, Row, Stage
from tests.support import (
    captured_log,
    event_names,
    insert_rows,
    make_config,
    row,
    run_once,
    running_daemon,
    wait_for,
)


async def test_run_once_processes_every_row(db_url: str, pool: asyncpg.Pool[Any]) -> None:
    """run --once completes every due row, logging start and finish, and returns."""
    ids = await insert_rows(pool, 250)
    seen: list[str] = []

    async def process(r: Row) -> Result:
        seen.append(r.media_id)
        return Result(columns={"file_size": 1}, details={"n": 1})

    await run_once(db_url, process, download_concurrency="8")
    assert sorted(seen) == sorted(ids)
    statuses = await pool.fetch(
        "SELECT download_status, download_lease_owner, archive_status, ai_analysis_status,"
        " ai_analysis_log FROM post_media"
    )
    for r in statuses:
        assert r["download_status"] == "completed"
        assert r["download_lease_owner"] is None
        assert (r["archive_status"], r["ai_analysis_status"]) == ("skipped", "skipped")
        assert event_names(r["ai_analysis_log"]) == [
            "download_started",
            "media_downloaded",
            "archive_skipped",
            "ai_analysis_skipped",
        ]


async def test_concurrency_is_bounded(db_url: str, pool: asyncpg.Pool[Any]) -> None:
    """No more rows run at once than download.concurrency."""
    await insert_rows(pool, 60)
    running = peak = 0

    async def process(r: Row) -> Result:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        running -= 1
        return Result()

    await run_once(db_url, process, download_concurrency="5")
    assert 1 < peak <= 5


async def test_transient_errors_back_off_then_fail_at_max_attempts(
    db_url: str,
    pool: asyncpg.Pool[Any],
) -> None:
    """A transient error re-queues with a growing delay; the last allowed attempt fails the row."""
    [media_id] = await insert_rows(pool, 1)
    attempts: list[int] = []

    async def process(r: Row) -> Result:
        attempts.append(r.attempt)
        raise errors.TransientError("HTTP 503", error_code="http_5xx")

    delays = []
    for attempt in (1, 2):
        await run_once(db_url, process, download_max_attempts="3")
        r = await row(pool, media_id)
        assert r["download_status"] == "not_started"
        assert r["error_code"] == "http_5xx"
        delays.append(r["ai_analysis_log"][-1]["details"]["retry_in_seconds"])
        assert attempts == list(range(1, attempt + 1)), "not due again until the backoff passes"
        # Stand-in for the backoff delay passing.
        await pool.execute("UPDATE post_media SET download_next_attempt_at = now()")
    # backoff_base 10s: attempt 1 waits 5-10s, attempt 2 waits 10-20s.
    assert 5 <= delays[0] <= 10 and 10 <= delays[1] <= 20
    await run_once(db_url, process, download_max_attempts="3")
    r = await row(pool, media_id)
    assert attempts == [1, 2, 3]
    assert (r["download_status"], r["error_code"]) == ("failed", "http_5xx")
    assert "after 3 attempts" in r["last_error"]
    assert event_names(r["ai_analysis_log"]) == [
        "download_started",
        "retry_scheduled",
        "download_started",
        "retry_scheduled",
        "download_started",
        "download_failed",
    ]


async def test_retry_after_sets_the_delay(db_url: str, pool: asyncpg.Pool[Any]) -> None:
    """A Retry-After longer than the backoff decides when the row is due again."""
    [media_id] = await insert_rows(pool, 1)

    async def process(r: Row) -> Result:
        raise errors.TransientError("429", error_code="rate_limited", retry_after=600)

    await run_once(db_url, process)
    r = await row(pool, media_id)
    assert r["ai_analysis_log"][-1]["details"]["retry_in_seconds"] == 600


async def test_permanent_errors_fail_at_once(db_url: str, pool: asyncpg.Pool[Any]) -> None:
    """A permanent error fails the row on its first attempt with its error_code."""
    [media_id] = await insert_rows(pool, 1)

    async def process(r: Row) -> Result:
        raise errors.PermanentError("HTTP 404", error_code="http_404")

    await run_once(db_url, process)
    r = await row(pool, media_id)
    assert (r["download_status"], r["error_code"], r["download_attempts"]) == (
        "failed",
        "http_404",
        1,
    )
    assert r["ai_analysis_log"][-1]["details"] == {
        "attempt": 1,
        "error_code": "http_404",
        "error": "HTTP 404",
    }


async def test_a_crashing_stage_does_not_crash_the_daemon(
    db_url: str, pool: asyncpg.Pool[Any]
) -> None:
    """An unexpected exception is an internal_error retry for that row; the others complete."""
    ids = await insert_rows(pool, 3)

    async def process(r: Row) -> Result:
        if r.media_id == ids[1]:
            raise ZeroDivisionError("boom")
        return Result()

    await run_once(db_url, process)
    assert (await row(pool, ids[0]))["download_status"] == "completed"
    bad = await row(pool, ids[1])
    assert (bad["download_status"], bad["error_code"]) == ("not_started", "internal_error")
    assert "ZeroDivisionError: boom" in bad["last_error"]
    assert (await row(pool, ids[2]))["download_status"] == "completed"


async def test_a_paused_stage_fails_nothing(db_url: str, pool: asyncpg.Pool[Any]) -> None:
    """When the stage cannot work at all (disk full), rows are handed back, not failed."""
    ids = await insert_rows(pool, 3)

    async def process(r: Row) -> Result:
        raise errors.StagePausedError("No space left on device", error_code="disk_full")

    await run_once(db_url, process)
    for media_id in ids:
        r = await row(pool, media_id)
        assert r["download_status"] == "not_started"
        assert r["download_attempts"] == 0
        assert r["error_code"] is None


async def test_notify_wakes_an_idle_daemon(db_url: str, pool: asyncpg.Pool[Any]) -> None:
    """A plain INSERT is picked up at once through NOTIFY, long before the next poll."""
    claimed = asyncio.Event()

    async def process(r: Row) -> Result:
        claimed.set()
        return Result()

    async with running_daemon(db_url, process, daemon_poll_interval="10m"):
        # Give the pool its first (empty) look so it is idle and waiting.
        await wait_for(lambda: _listening(pool))
        started = time.monotonic()
        await insert_rows(pool, 1)
        await asyncio.wait_for(claimed.wait(), timeout=5)
        assert time.monotonic() - started < 5


async def _listening(pool: asyncpg.Pool[Any]) -> bool:
    count = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE query LIKE 'LISTEN %' AND datname = current_database()"
    )
    return bool(count)


async def test_listen_connection_is_reestablished(db_url: str, pool: asyncpg.Pool[Any]) -> None:
    """When the LISTEN connection is killed, the daemon reconnects and still hears inserts."""
    claimed = asyncio.Event()

    async def process(r: Row) -> Result:
        claimed.set()
        return Result()

    async with running_daemon(db_url, process, daemon_poll_interval="10m"):
        await wait_for(lambda: _listening(pool))
        await pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE query LIKE 'LISTEN %' AND datname = current_database()"
        )
        await wait_for(lambda: _listening(pool))
        await insert_rows(pool, 1)
        await asyncio.wait_for(claimed.wait(), timeout=5)


async def test_shutdown_finishes_quick_work_and_releases_the_rest(
    db_url: str,
    pool: asyncpg.Pool[Any],
) -> None:
    """On stop, rows that finish within the grace complete; the others are released at once."""
    quick, stuck = await insert_rows(pool, 2)
    both_started = asyncio.Event()
    started: set[str] = set()
    finish_quick = asyncio.Event()

    async def process(r: Row) -> Result:
        started.add(r.media_id)
        if len(started) == 2:
            both_started.set()
        if r.media_id == quick:
            await finish_quick.wait()
            return Result()
        await asyncio.Event().wait()  # never finishes on its own
        raise AssertionError("unreachable")

    async with running_daemon(db_url, process, daemon_shutdown_grace="1s") as stop:
        await asyncio.wait_for(both_started.wait(), timeout=10)
        stop.set()
        finish_quick.set()
    q, s = await row(pool, quick), await row(pool, stuck)
    assert q["download_status"] == "completed"
    assert s["download_status"] == "not_started"
    assert s["download_lease_owner"] is None
    assert s["download_attempts"] == 0
    assert s["ai_analysis_log"][-1]["event"] == "download_released"
    assert s["ai_analysis_log"][-1]["details"]["reason"] == "shutdown"


async def test_heartbeats_keep_a_long_job_from_running_twice(
    db_url: str, pool: asyncpg.Pool[Any]
) -> None:
    """A job longer than its lease keeps it by heartbeats, so no second worker takes it."""
    [media_id] = await insert_rows(pool, 1)
    release = asyncio.Event()
    runs: list[int] = []

    async def process(r: Row) -> Result:
        runs.append(r.attempt)
        await release.wait()
        return Result()

    async with running_daemon(db_url, process, daemon_lease="2s"):
        await wait_for(lambda: _started(pool, media_id))
        first_expiry = await _expiry(pool, media_id)
        await wait_for(lambda: _expiry_after(pool, media_id, first_expiry), within=10)
        # The lease was renewed: the row is still leased past its first expiry.
        async with running_daemon(db_url, process, daemon_lease="2s"):
            await wait_for(lambda: _expiry_after(pool, media_id, first_expiry + 2), within=10)
        release.set()
        await wait_for(lambda: _status_is(pool, media_id, "completed"))
    assert runs == [1]


async def _started(pool: asyncpg.Pool[Any], media_id: str) -> bool:
    return await _status_is(pool, media_id, "started")


async def _status_is(pool: asyncpg.Pool[Any], media_id: str, status: str) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT download_status = $2 FROM post_media WHERE media_id = $1", media_id, status
        )
    )


async def _expiry(pool: asyncpg.Pool[Any], media_id: str) -> float:
    value = await pool.fetchval(
        "SELECT extract(epoch FROM download_lease_expires_at) FROM post_media WHERE media_id = $1",
        media_id,
    )
    return float(value)


async def _expiry_after(pool: asyncpg.Pool[Any], media_id: str, when: float) -> bool:
    return await _expiry(pool, media_id) > when


async def test_a_poison_row_is_failed_without_being_processed(
    db_url: str, pool: asyncpg.Pool[Any]
) -> None:
    """run --once fails a row whose worker died on its last attempt (worker_lost) without
    handing it to the stage again, and processes the others."""
    poisoned, healthy = await insert_rows(pool, 2)
    await pool.execute(
        "UPDATE post_media SET download_status = 'started', download_attempts = 5,"
        " download_lease_owner = 'gone:1', download_lease_expires_at = now() - interval '1s'"
        " WHERE media_id = $1",
        poisoned,
    )
    seen: list[str] = []

    async def process(r: Row) -> Result:
        seen.append(r.media_id)
        return Result()

    await run_once(db_url, process, download_max_attempts="5")
    assert seen == [healthy]
    r = await row(pool, poisoned)
    assert (r["download_status"], r["error_code"]) == ("failed", "worker_lost")


async def test_a_batch_whose_write_broke_off_midway_is_finished_without_losing_a_row(
    pool: asyncpg.Pool[Any],
) -> None:
    """A batch of completions and failures is written one statement per kind. When the second
    statement meets a transient database error, the pool sends again only what is not written:
    every row is recorded once, and none of the completed ones counts as a lost lease."""
    completed = await insert_rows(pool, 4, url="https://cdn.example/good-{i}.jpg")
    failed = await insert_rows(pool, 3, url="https://cdn.example/gone-{i}.jpg")
    # The first row a statement fails, once: a sequence, which the failed statement's rollback
    # does not undo. Completions are claimed (older rows first) and written first.
    await pool.execute("""
        CREATE SEQUENCE failures_injected;
        CREATE FUNCTION fail_one_failure_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.download_status = 'failed' AND nextval('failures_injected') = 1 THEN
                RAISE EXCEPTION 'injected' USING ERRCODE = 'serialization_failure';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER fail_one_failure_once BEFORE UPDATE ON post_media
            FOR EACH ROW EXECUTE FUNCTION fail_one_failure_once();
    """)  # fmt: skip

    async def process(r: Row) -> Result:
        if "/gone-" in (r.media_url or ""):
            raise errors.PermanentError("HTTP 404", error_code="http_404")
        return Result(details={"noop": True})

    config = make_config()
    stop = asyncio.Event()
    with captured_log() as out:
        stage = Stage.configured(stages.DOWNLOAD, process, config)
        queue = StageQueue(pool, stage, "w1", 60.0, disabled=stages.disabled(config))
        stage_pool = StagePool(
            stage, queue, backoff=Backoff(1, 2), claim_batch=10, poll_interval=3600
        )
        running = asyncio.create_task(stage_pool.run(stop, grace=5))
        await asyncio.wait_for(stage_pool.idle.wait(), timeout=20)
        stop.set()
        await asyncio.wait_for(running, timeout=20)

    # The failure was injected, after the completions were written.
    assert await pool.fetchval("SELECT last_value FROM failures_injected") > 1
    assert "finish_failed" in out.getvalue()
    assert (stage_pool.stats.completed, stage_pool.stats.failed) == (4, 3)
    assert stage_pool.stats.lost == 0
    assert "result_discarded_lease_lost" not in out.getvalue()
    for media_id in completed:
        r = await row(pool, media_id)
        assert r["download_status"] == "completed"
        assert event_names(r["ai_analysis_log"]).count("media_downloaded") == 1
    for media_id in failed:
        r = await row(pool, media_id)
        assert (r["download_status"], r["error_code"]) == ("failed", "http_404")
        assert event_names(r["ai_analysis_log"]).count("download_failed") == 1


class _BatchCountingQueue(StageQueue):
    """The real queue, noting the size of every batch of outcomes the pool hands it."""

    batches: list[int]

    async def finish(self, outcomes: Any, recorded: Any = None) -> Any:
        self.batches.append(len(outcomes))
        return await super().finish(outcomes, recorded)


class _HeldWritesQueue(StageQueue):
    """The real queue, whose writes wait until the test lets them through."""

    let_through: asyncio.Event

    async def finish(self, outcomes: Any, recorded: Any = None) -> Any:
        await self.let_through.wait()
        return await super().finish(outcomes, recorded)


async def test_a_row_waiting_for_its_write_frees_its_place_and_leased_rows_stay_bounded(
    pool: asyncpg.Pool[Any],
) -> None:
    """`concurrency` bounds the rows at work: a finished row waiting for its write (a slow
    database, or the pool's linger) no longer holds a place, so the stage keeps working; but
    the rows leased, at work or waiting, never pass twice `concurrency`."""
    await insert_rows(pool, 40, url="https://cdn.example/p-{i}.jpg")
    started: list[str] = []
    at_work = most_at_work = 0

    async def process(r: Row) -> Result:
        nonlocal at_work, most_at_work
        started.append(r.media_id)
        at_work += 1
        most_at_work = max(most_at_work, at_work)
        await asyncio.sleep(0)
        at_work -= 1
        return Result()

    config = make_config(download_concurrency="4")
    stop = asyncio.Event()
    stage = Stage.configured(stages.DOWNLOAD, process, config)
    queue = _HeldWritesQueue(pool, stage, "w1", 60.0, disabled=stages.disabled(config))
    queue.let_through = asyncio.Event()
    stage_pool = StagePool(stage, queue, backoff=Backoff(1, 2), claim_batch=50, poll_interval=3600)
    running = asyncio.create_task(stage_pool.run(stop, grace=5))

    async def next_look() -> None:
        stage_pool.looked.clear()
        await stage_pool.looked.wait()

    async def until_eight_wait_for_their_write() -> None:
        while not (len(started) == 8 and stage_pool.in_flight == 8):
            await next_look()

    await asyncio.wait_for(until_eight_wait_for_their_write(), timeout=10)
    # One more look at the queue claims nothing: eight rows leased is twice the concurrency.
    stage_pool.wake()
    await asyncio.wait_for(next_look(), timeout=10)
    assert len(started) == 8
    leased = "SELECT count(*) FROM post_media WHERE download_status = 'started'"
    assert await pool.fetchval(leased) == 8

    queue.let_through.set()
    await asyncio.wait_for(stage_pool.idle.wait(), timeout=30)
    stop.set()
    await asyncio.wait_for(running, timeout=20)
    assert stage_pool.stats.completed == 40
    assert sorted(set(started)) == sorted(started)
    assert most_at_work <= 4


async def test_rows_finishing_together_share_their_writes(pool: asyncpg.Pool[Any]) -> None:
    """Rows that finish while a write is in flight (or within the pool's linger while it is
    busy) are written together: the database sees a statement per batch, not one per row, and
    every row is written once."""
    ids = await insert_rows(pool, 200, url="https://cdn.example/p-{i}.jpg")

    async def process(r: Row) -> Result:
        await asyncio.sleep(0)
        return Result(details={"noop": True})

    config = make_config()
    stop = asyncio.Event()
    stage = Stage.configured(stages.DOWNLOAD, process, config)
    queue = _BatchCountingQueue(pool, stage, "w1", 60.0, disabled=stages.disabled(config))
    queue.batches = []
    stage_pool = StagePool(stage, queue, backoff=Backoff(1, 2), claim_batch=50, poll_interval=3600)
    running = asyncio.create_task(stage_pool.run(stop, grace=5))
    await asyncio.wait_for(stage_pool.idle.wait(), timeout=30)
    stop.set()
    await asyncio.wait_for(running, timeout=20)

    assert sum(queue.batches) == 200
    assert stage_pool.stats.completed == 200
    # One write per row would be 200; the rows in flight (the stage's concurrency) that finish
    # together share one: 13 writes when this was written.
    assert len(queue.batches) <= 40, queue.batches
    statuses = await pool.fetch(
        "SELECT download_status FROM post_media WHERE media_id = ANY($1)", ids
    )
    assert {r["download_status"] for r in statuses} == {"completed"}
