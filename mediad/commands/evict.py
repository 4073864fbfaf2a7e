"""Local eviction: delete the local copies of archived files, least recently used first, until the
store holds at most a given size. Rows keep their archive_url; local_file_path (and hosted_url)
are cleared, with a `local_file_evicted` event.

Recency is the latest `downloaded_at` or `restored_at` of the rows sharing the file (a later
download of the same bytes, or `mediad restore` bringing it back, makes it recent again): mediad
does not see the reads nginx serves, and atime is unreliable (noatime mounts, backups). A file
is evicted only when every row that points at it has finished downloading, archiving and
analysis (nothing still needs the local bytes), and only after a HEAD shows its object still
holds those bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from mediad import errors, queries
from mediad.resources import Resources
from mediad.storage import checksums, objectkeys, s3
from mediad.storage.local import Store, store_size

log = structlog.get_logger(__name__)

_PAGE = 200
# What a pass of the daemon's evictor may meet and shrug off until its next pass.
_PASS_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, errors.MediadError)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Report:
    """What one eviction pass did; sizes in bytes."""

    limit: int
    before: int
    after: int
    evicted: int = 0
    freed: int = 0
    # Files kept because their object is missing or wrong (the rows are marked so).
    archive_damaged: list[str] = field(default_factory=list)


async def evict(
    pool: asyncpg.Pool[Any], store: Store, client: s3.S3, max_bytes: int, *, by: str
) -> Report:
    """Evict least recently used archived files until the store holds at most `max_bytes`."""
    total = await asyncio.to_thread(store_size, store)
    report = Report(limit=max_bytes, before=total, after=total)
    cursor: tuple[datetime, str] = (_EPOCH, "")
    sql = queries.plain()
    while report.after > max_bytes:
        page = await pool.fetch(
            sql["evict_candidates"], str(store.root) + "/", cursor[0], cursor[1], _PAGE, store.node
        )
        if not page:
            break
        for candidate in page:
            cursor = (candidate["last_used"], candidate["local_file_path"])
            if report.after <= max_bytes:
                break
            freed = await _evict_file(pool, store, client, candidate, by, max_bytes, report)
            if freed is not None:
                report.evicted += 1
                report.freed += freed
                report.after -= freed
    if report.evicted or report.archive_damaged:
        log.info(
            "cache_evicted",
            files=report.evicted,
            freed=report.freed,
            store_bytes=report.after,
            limit=max_bytes,
            archive_damaged=len(report.archive_damaged),
        )
    return report


async def _evict_file(
    pool: asyncpg.Pool[Any],
    store: Store,
    client: s3.S3,
    candidate: asyncpg.Record,
    by: str,
    max_bytes: int,
    report: Report,
) -> int | None:
    """Delete one file and clear its rows; the bytes freed, or None if it was kept."""
    path = Path(candidate["local_file_path"])
    try:
        relative = store.relative(path)
    except ValueError:
        return None
    sql = queries.plain()
    # Never drop the last local copy on the word of the database alone: ask S3 now.
    for copy in candidate["archive_copies"]:
        problem = await _object_problem(client, copy, candidate)
        if problem is not None:
            report.archive_damaged.append(copy["url"])
            log.warning("archive_copy_damaged", archive_url=copy["url"], problem=problem)
            code = "archive_missing" if problem == "missing" else "archive_corrupt"
            await pool.execute(
                sql["archive_damaged"], [copy["url"]], code, f"{copy['url']}: {problem}", by
            )
            return None
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(sql["evict_lock_file"], str(path), store.node)
        if not rows or not all(r["evictable"] for r in rows):
            return None  # something changed since the candidates were read
        try:
            size = (await asyncio.to_thread(os.stat, path)).st_size
            await asyncio.to_thread(os.unlink, path)
        except FileNotFoundError:
            size = 0
        except OSError as exc:
            log.warning("eviction_unlink_failed", path=relative, error=str(exc))
            return None
        # Inside the transaction: if the unlink fails, the rows stay as they were.
        await conn.execute(
            sql["evict_file"], [r["media_id"] for r in rows], relative, size, by, max_bytes
        )
    return size


async def _object_problem(
    client: s3.S3, copy: dict[str, Any], candidate: asyncpg.Record
) -> str | None:
    try:
        bucket, key = objectkeys.parse_s3_url(copy["url"])
    except ValueError:
        return "not an s3:// URL"
    expected = checksums.Expected(
        candidate["file_size"],
        candidate["sha256_sum"],
        candidate["md5_sum"],
        copy.get("checksum_sha256"),
    )
    _, verdict = await client.check(key, expected, bucket)
    return None if verdict.ok else verdict.how


@contextlib.asynccontextmanager
async def in_daemon(resources: Resources, limit: int) -> AsyncIterator[None]:
    """Evict down to `limit` every storage.evict_interval, and once more at the end (so
    `run --once` leaves the store within its limit)."""
    config = resources.config
    client = await resources.s3()

    async def evict_pass() -> None:
        try:
            await evict(resources.pool, resources.store, client, limit, by="daemon")
        except _PASS_ERRORS as exc:
            log.warning("eviction_failed", error=str(exc))

    async def evict_forever() -> None:
        while True:
            await evict_pass()
            await asyncio.sleep(config.storage.evict_interval)

    task = asyncio.create_task(evict_forever(), name="evictor")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        try:
            await asyncio.wait_for(evict_pass(), timeout=config.daemon.shutdown_grace)
        except TimeoutError:
            log.warning("eviction_failed", error="the last pass did not finish in time")
