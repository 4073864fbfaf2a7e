"""The queue against a real PostgreSQL: claims, leases, fencing and the event log."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import asyncpg

from mediad import errors, queries, stages
from mediad.queue import Completed, Failed, Released, Retry, StageQueue
from mediad.stage import Result, Row, Stage
from tests.support import event_names, insert_rows, make_config, noop, row, run_once


def queue(pool: asyncpg.Pool[Any], owner: str, lease: float = 60.0) -> StageQueue:
    config = make_config()
    stage = Stage.configured(stages.DOWNLOAD, noop, config)
    return StageQueue(pool, stage, owner, lease, disabled=stages.disabled(config))


async def expire_leases(pool: asyncpg.Pool[Any]) -> None:
    """Stand-in for time passing beyond the lease: a dead worker never renews it."""
    await pool.execute(
        "UPDATE post_media SET download_lease_expires_at = now() - interval '1 second'"
        " WHERE download_status = 'started'"
    )


async def test_concurrent_claimers_never_share_a_row(pool: asyncpg.Pool[Any]) -> None:
    """Four claimers draining one queue at once each get distinct rows, and all rows are taken."""
    ids = await insert_rows(pool, 2000)
    claimers = [queue(pool, f"w{i}") for i in range(4)]

    async def drain(q: StageQueue) -> list[str]:
        taken: list[str] = []
        while batch := await q.claim(37):
            taken += [r.media_id for r in batch]
        return taken

    results = await asyncio.gather(*(drain(q) for q in claimers))
    every = [media_id for taken in results for media_id in taken]
    assert len(every) == len(set(every)) == 2000
    assert set(every) == set(ids)
    # Each row's lease names the claimer that got it.
    owners = dict(await pool.fetch("SELECT media_id, download_lease_owner FROM post_media"))
    for index, taken in enumerate(results):
        assert {owners[media_id] for media_id in taken} <= {f"w{index}"}


async def test_claim_takes_rows_nearest_expiry_first_then_oldest(pool: asyncpg.Pool[Any]) -> None:
    """Signed URLs about to die are fetched before older rows without expiry."""
    old = await insert_rows(pool, 2)
    fb = await insert_rows(pool, 2, url="https://scontent.fbcdn.net/v/{i}.jpg?oe=" + "7A000000")
    soon = await insert_rows(pool, 1, url="https://scontent.fbcdn.net/v/s.jpg?oe=79000000")
    q = queue(pool, "w")
    # One at a time: the order within one claimed batch is not meaningful, the order of
    # successive claims is.
    claimed = [r.media_id for _ in range(5) for r in await q.claim(1)]
    # Rows inserted in one transaction share created_at; their mutual order is free.
    assert claimed[:1] == soon
    assert set(claimed[1:3]) == set(fb)
    assert set(claimed[3:]) == set(old)


async def test_claim_leases_and_logs_the_start(pool: asyncpg.Pool[Any]) -> None:
    """A claim marks the row started, sets owner and expiry, counts the attempt, logs it."""
    [media_id] = await insert_rows(pool, 1)
    [claimed] = await queue(pool, "w1", lease=30).claim(5)
    assert claimed.media_id == media_id and claimed.attempt == 1
    r = await row(pool, media_id)
    assert r["download_status"] == "started"
    assert r["download_lease_owner"] == "w1"
    assert r["download_attempts"] == 1
    lease_left = await pool.fetchval(
        "SELECT extract(epoch FROM download_lease_expires_at - now()) FROM post_media"
    )
    assert 25 < lease_left <= 30
    [entry] = r["ai_analysis_log"]
    assert entry["event"] == "download_started"
    assert entry["status"] == "info"
    assert entry["details"] == {"attempt": 1, "worker": "w1"}
    assert entry["timestamp"].endswith("Z")


async def test_live_lease_is_not_claimed_twice(pool: asyncpg.Pool[Any]) -> None:
    """While a worker holds a lease, no other claimer gets the row."""
    await insert_rows(pool, 3)
    assert len(await queue(pool, "a").claim(10)) == 3
    assert await queue(pool, "b").claim(10) == []


async def test_lapsed_lease_is_reclaimed(pool: asyncpg.Pool[Any]) -> None:
    """A dead worker's rows go to another worker once the lease lapses, as a new attempt."""
    await insert_rows(pool, 3)
    dead = await queue(pool, "dead").claim(10)
    await expire_leases(pool)
    taken = await queue(pool, "alive").claim(10)
    assert {r.media_id for r in taken} == {r.media_id for r in dead}
    assert {r.attempt for r in taken} == {2}
    r = await row(pool, taken[0].media_id)
    assert r["ai_analysis_log"][-1]["details"]["reclaimed_from"] == "dead"


async def test_heartbeat_keeps_the_lease_and_reports_losses(pool: asyncpg.Pool[Any]) -> None:
    """A heartbeat extends the leases still held and leaves out the ones lost."""
    await insert_rows(pool, 2)
    a = queue(pool, "a", lease=5)
    first, second = await a.claim(2)
    await expire_leases(pool)
    # The first row is taken over by b; a still believes it holds both.
    await pool.execute(
        "UPDATE post_media SET download_lease_expires_at = now() + interval '1 hour'"
        " WHERE media_id = $1",
        second.media_id,
    )
    [taken] = await queue(pool, "b").claim(5)
    assert taken.media_id == first.media_id
    held = await a.heartbeat([first, second])
    assert held == {second.media_id}
    left = await pool.fetchval(
        "SELECT extract(epoch FROM download_lease_expires_at - now()) FROM post_media"
        " WHERE media_id = $1",
        second.media_id,
    )
    assert 0 < left <= 5


async def test_claims_and_heartbeats_write_no_index_entry(pool: asyncpg.Pool[Any]) -> None:
    """A claim and a heartbeat change no indexed column, so each is a HOT update: the busiest
    statements write no entry into any of the table's indexes. An index on a column they
    change (updated_at, a lease column) would cost every claim an entry in every index."""
    # Few rows, so that one page has room for the new versions one transaction cannot prune.
    await insert_rows(pool, 4)
    async with pool.acquire() as conn, conn.transaction():
        # One transaction on one connection, so its own statistics count just these updates.
        q = queue(cast("asyncpg.Pool[Any]", conn), "w")
        claimed = await q.claim(4)
        assert len(await q.heartbeat(claimed)) == 4
        counted = await conn.fetchrow(
            "SELECT pg_stat_get_xact_tuples_updated('post_media'::regclass) AS updated,"
            " pg_stat_get_xact_tuples_hot_updated('post_media'::regclass) AS hot"
        )
    assert counted is not None
    assert (counted["updated"], counted["hot"]) == (8, 8)


def _batch_reads(plan: dict[str, Any]) -> list[int]:
    """How many times each scan of the batch (the unnest aliased `h`) ran, in a plan that was
    executed (EXPLAIN ANALYZE, JSON)."""
    found = [plan["Actual Loops"]] if plan.get("Alias") == "h" else []
    for child in plan.get("Plans", []):
        found += _batch_reads(child)
    return found


async def test_a_large_batch_is_matched_to_its_rows_once(pool: asyncpg.Pool[Any]) -> None:
    """Completing or heartbeating 500 leased rows of a 20,000-row table, analysed while nothing
    was leased, reads the batch once. With the fence said as conditions on the row alone, the
    planner expected one leased row, and read the whole batch again for each row the table gave
    (500 times: 250,000 comparisons for 500 rows)."""
    await pool.execute(
        "INSERT INTO post_media (post_id, media_url, media_type)"
        " SELECT 'post-' || i, 'https://cdn.example/' || i || '.jpg', 'image'"
        " FROM generate_series(1, 20000) AS i"
    )
    await pool.execute("ANALYZE post_media")
    q = queue(pool, "w")
    claimed = await q.claim(500)
    sql = queries.for_stage(stages.DOWNLOAD, tuple(stages.ALL), stages.disabled(make_config()))
    ids, attempts = [r.media_id for r in claimed], [r.attempt for r in claimed]
    empty: list[dict[str, Any]] = [{}] * len(claimed)
    statements = {
        "complete": (ids, attempts, empty, empty, empty, q.owner),
        "heartbeat": (ids, attempts, q.lease, q.owner),
    }

    assert len(claimed) == 500
    for name, args in statements.items():
        async with pool.acquire() as conn:
            writing = conn.transaction()
            await writing.start()
            [run] = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql[name]}", *args)
            await writing.rollback()
        assert run["Plan"]["Actual Rows"] == 500, name
        assert _batch_reads(run["Plan"]) == [1], name


async def test_late_writer_is_fenced(pool: asyncpg.Pool[Any]) -> None:
    """A worker whose lease was taken over cannot overwrite the new owner's result."""
    [media_id] = await insert_rows(pool, 1)
    slow, fast = queue(pool, "slow"), queue(pool, "fast")
    [stale] = await slow.claim(1)
    await expire_leases(pool)
    [fresh] = await fast.claim(1)
    done = Result(columns={"sha256_sum": "a" * 64}, details={"by": "fast"})
    assert (await fast.finish([Completed(fresh, done)])).keys() == {media_id}
    late = Result(columns={"sha256_sum": "b" * 64}, details={"by": "slow"})
    assert not await slow.finish([Completed(stale, late)])
    assert not await slow.finish([Failed(stale, "timeout", "late")])
    r = await row(pool, media_id)
    assert r["download_status"] == "completed"
    assert r["sha256_sum"] == "a" * 64
    assert r["error_code"] is None
    assert event_names(r["ai_analysis_log"])[-3:] == [
        "media_downloaded",
        "archive_skipped",
        "ai_analysis_skipped",
    ]


async def test_finish_writes_each_outcome_with_its_event(pool: asyncpg.Pool[Any]) -> None:
    """One batch records completions, retries, failures and releases, each with its event."""
    ids = await insert_rows(pool, 4)
    q = queue(pool, "w")
    rows = {r.media_id: r for r in await q.claim(4)}
    a, b, c, d = (rows[i] for i in ids)
    written = await q.finish(
        [
            Completed(a, Result(columns={"file_size": 10}, details={"file_size": 10})),
            Retry(b, 12.5, "http_5xx", "HTTP 503 from https://cdn.example/1.jpg?sig=x"),
            Failed(c, "http_404", "HTTP 404"),
            Released(d, "shutdown"),
        ]
    )
    assert written.keys() == set(ids)
    ra, rb, rc, rd = [await row(pool, i) for i in ids]
    assert (ra["download_status"], ra["file_size"]) == ("completed", 10)
    assert ra["ai_analysis_log"][-3]["details"] == {"file_size": 10}
    assert rb["download_status"] == "not_started"
    assert rb["error_code"] == "http_5xx"
    assert "sig=x" not in rb["last_error"]
    retry_event = rb["ai_analysis_log"][-1]
    assert retry_event["event"] == "retry_scheduled"
    assert retry_event["status"] == "failure"
    assert retry_event["details"]["error_code"] == "http_5xx"
    assert retry_event["details"]["retry_in_seconds"] == 12.5
    due_in = await pool.fetchval(
        "SELECT extract(epoch FROM download_next_attempt_at - now()) FROM post_media"
        " WHERE media_id = $1",
        b.media_id,
    )
    assert 11 < due_in <= 12.5
    assert (rc["download_status"], rc["error_code"]) == ("failed", "http_404")
    assert rc["ai_analysis_log"][-1]["event"] == "download_failed"
    assert rc["ai_analysis_log"][-1]["details"]["error_code"] == "http_404"
    assert rd["download_status"] == "not_started"
    assert rd["download_attempts"] == 0
    assert rd["ai_analysis_log"][-1]["event"] == "download_released"
    # The retried row is not due yet; the released one is due at once.
    assert [r.media_id for r in await q.claim(10)] == [d.media_id]


async def test_requeue_puts_failed_rows_back(pool: asyncpg.Pool[Any]) -> None:
    """The retry command's query re-queues failed rows with attempts reset and an event."""
    ids = await insert_rows(pool, 2)
    q = queue(pool, "w")
    claimed = await q.claim(2)
    await q.finish([Failed(r, "http_404", "gone") for r in claimed])
    from mediad import queries

    requeued = await pool.fetch(
        queries.for_stage(stages.DOWNLOAD)["requeue"], ["failed"], None, "http_404", None, "test"
    )
    assert {r["media_id"] for r in requeued} == set(ids)
    r = await row(pool, ids[0])
    assert (r["download_status"], r["download_attempts"]) == ("not_started", 0)
    assert r["ai_analysis_log"][-1]["event"] == "requeued"


async def test_a_row_whose_worker_died_on_every_attempt_fails_worker_lost(
    pool: asyncpg.Pool[Any],
) -> None:
    """A row left `started` with a lapsed lease on its last allowed attempt (its worker died
    each time) is failed worker_lost at the next claim and never handed out again."""
    [poisoned, alive] = await insert_rows(pool, 2)
    q = queue(pool, "w")
    limit = make_config().download.max_attempts
    await pool.execute(
        "UPDATE post_media SET download_status = 'started', download_attempts = $2,"
        " download_lease_owner = 'dead:1', download_lease_expires_at = now() - interval '1s'"
        " WHERE media_id = $1",
        poisoned,
        limit,
    )
    claimed = await q.claim(10)
    assert [r.media_id for r in claimed] == [alive]
    r = await row(pool, poisoned)
    assert (r["download_status"], r["error_code"]) == ("failed", "worker_lost")
    assert r["download_attempts"] == limit
    assert r["download_lease_owner"] is None
    failed = r["ai_analysis_log"][-1]
    assert (failed["event"], failed["details"]["error_code"]) == ("download_failed", "worker_lost")
    assert failed["details"]["worker"] == "dead:1"
    assert await q.claim(10) == []


async def test_a_lapsed_lease_with_attempts_left_is_reclaimed(pool: asyncpg.Pool[Any]) -> None:
    """A lapsed lease before the last attempt is simply taken over, as a dead host's rows are."""
    [media_id] = await insert_rows(pool, 1)
    q = queue(pool, "w")
    await pool.execute(
        "UPDATE post_media SET download_status = 'started', download_attempts = $1,"
        " download_lease_owner = 'dead:1', download_lease_expires_at = now() - interval '1s'",
        make_config().download.max_attempts - 1,
    )
    [claimed] = await q.claim(10)
    assert (claimed.media_id, claimed.attempt) == (media_id, make_config().download.max_attempts)
    r = await row(pool, media_id)
    assert r["ai_analysis_log"][-1]["details"]["reclaimed_from"] == "dead:1"


async def test_a_result_the_database_refuses_fails_its_row_and_no_other(
    db_url: str, pool: asyncpg.Pool[Any]
) -> None:
    """A result holding a value PostgreSQL refuses (a size past bigint) is recorded as its row's
    failure, `result_unrecordable` naming what was refused; the other rows of the same batch
    complete, an error text with a NUL in it is stored, and run --once ends instead of retrying
    the batch for ever."""
    ids = await insert_rows(pool, 6)
    refused, nul = ids[2], ids[4]

    async def process(r: Row) -> Result:
        if r.media_id == refused:
            return Result(columns={"file_size": 2**70}, details={"noop": True})
        if r.media_id == nul:
            raise errors.PermanentError("bad name 'a\x00b'", error_code="bad_name")
        return Result(details={"noop": True})

    await asyncio.wait_for(run_once(db_url, process), timeout=60)
    failed = await row(pool, refused)
    assert (failed["download_status"], failed["error_code"]) == ("failed", "result_unrecordable")
    assert "out of range" in failed["last_error"]
    assert "download_failed" in event_names(failed["ai_analysis_log"])
    named = await row(pool, nul)
    assert (named["download_status"], named["error_code"]) == ("failed", "bad_name")
    assert named["last_error"] == "bad name 'a\ufffdb'"
    others = [await row(pool, i) for i in ids if i not in (refused, nul)]
    assert [r["download_status"] for r in others] == ["completed"] * 4
