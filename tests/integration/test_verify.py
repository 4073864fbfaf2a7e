"""Scrub and repair, the best URL and local eviction, against a real S3 (SeaweedFS)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from mediad import config, daemon
from mediad.commands import evict, url, verify
from mediad.stages import archive
from mediad.storage import s3
from mediad.storage.local import Store, store_size
from tests import media
from tests.archive_support import (
    Downloaded,
    archive_config,
    downloaded_rows,
    events,
    run_archive,
    store_of,
)
from tests.s3server import SeaweedFS
from tests.support import row


def key_of(archive_url: str) -> str:
    return archive_url.removeprefix("s3://media/")


@contextlib.asynccontextmanager
async def tools(cfg: config.Config) -> AsyncIterator[tuple[Store, s3.S3, archive.Archiver]]:
    store = store_of(cfg)
    async with s3.open_client(cfg.archive) as client:
        yield store, client, archive.Archiver(cfg.archive, client, store)


async def archived(
    db_url: str, pool: asyncpg.Pool[Any], cfg: config.Config, files: list[bytes]
) -> list[Downloaded]:
    rows = await downloaded_rows(pool, store_of(cfg), files)
    await run_archive(cfg, db_url)
    statuses = await pool.fetch("SELECT archive_status FROM post_media")
    assert {s["archive_status"] for s in statuses} == {"completed"}
    return rows


async def test_repair_mends_a_corrupt_local_file_and_a_deleted_object(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """verify finds a flipped byte on disk and an object deleted from S3; --repair restores the
    file from its object and re-uploads the object from its file; a deep check then passes."""
    cfg = archive_config(s3_server, tmp_path / "store")
    damaged, lost, fine = await archived(
        db_url, pool, cfg, [media.jpeg_with_exif(seed=s) for s in (1, 2, 3)]
    )
    original = damaged.stored.path.read_bytes()
    flipped = bytearray(original)
    flipped[100] ^= 0x01
    damaged.stored.path.write_bytes(bytes(flipped))
    lost_url = (await row(pool, lost.media_id))["archive_url"]
    s3_server.client().delete_object(Bucket="media", Key=key_of(lost_url))

    async with tools(cfg) as (store, client, archiver):
        seen: list[verify.Progress] = []
        report = await verify.verify(pool, store, client, archiver, progress=seen.append)
        assert report.by_kind() == {"archive_missing": (1, 0), "local_corrupt": (1, 0)}
        assert {d.where for d in report.remaining} == {str(damaged.stored.path), lost_url}
        assert (report.local_checked, report.objects_checked) == (3, 3)
        assert seen[-1].groups_done == seen[-1].groups_total == 3
        r = await row(pool, lost.media_id)
        assert (r["archive_status"], r["error_code"]) == ("failed", "archive_missing")
        assert events(await row(pool, damaged.media_id), "local_file_damaged")

        report = await verify.verify(pool, store, client, archiver, repair=True)
        assert report.by_kind() == {"archive_missing": (1, 1), "local_corrupt": (1, 1)}
        assert report.remaining == []
        assert damaged.stored.path.read_bytes() == original
        body = s3_server.client().get_object(Bucket="media", Key=key_of(lost_url))["Body"]
        assert body.read() == lost.stored.path.read_bytes()
        r = await row(pool, lost.media_id)
        assert (r["archive_status"], r["error_code"]) == ("completed", None)
        [repaired] = events(r, "archive_repaired")
        assert repaired["details"]["outcome"] == "uploaded"
        assert events(await row(pool, damaged.media_id), "local_file_repaired")
        assert not events(await row(pool, fine.media_id), "local_file_repaired")

        report = await verify.verify(pool, store, client, archiver, deep=True)
        assert (report.damage, report.objects_checked) == ([], 3)


async def test_nothing_is_repaired_from_a_copy_that_does_not_match(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """When the local file and the object are both wrong, --repair touches neither and the
    damage is reported (exit 1 on the command line)."""
    cfg = archive_config(s3_server, tmp_path / "store")
    [both] = await archived(db_url, pool, cfg, [media.jpeg(seed=5)])
    good = both.stored.path.read_bytes()
    bad_local = good[:-1] + bytes([good[-1] ^ 0xFF])
    both.stored.path.write_bytes(bad_local)
    url = (await row(pool, both.media_id))["archive_url"]
    bad_object = bytes([good[0] ^ 0xFF]) + good[1:]
    s3_server.client().put_object(Bucket="media", Key=key_of(url), Body=bad_object)

    async with tools(cfg) as (store, client, archiver):
        report = await verify.verify(pool, store, client, archiver, repair=True, deep=True)
    assert report.by_kind() == {"archive_corrupt": (1, 0), "local_corrupt": (1, 0)}
    assert both.stored.path.read_bytes() == bad_local
    body = s3_server.client().get_object(Bucket="media", Key=key_of(url))["Body"].read()
    assert body == bad_object


async def test_repair_refuses_to_upload_under_digests_that_are_not_valid(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """A row whose MD5 is gone cannot vouch for a re-upload: --repair leaves the missing object
    reported, and does not fail the run."""
    cfg = archive_config(s3_server, tmp_path / "store")
    [done] = await archived(db_url, pool, cfg, [media.jpeg(seed=7)])
    lost_url = (await row(pool, done.media_id))["archive_url"]
    s3_server.client().delete_object(Bucket="media", Key=key_of(lost_url))
    await pool.execute("UPDATE post_media SET md5_sum = NULL")

    async with tools(cfg) as (store, client, archiver):
        report = await verify.verify(pool, store, client, archiver, repair=True)
    assert report.by_kind() == {"archive_missing": (1, 0)}
    assert [d.where for d in report.remaining] == [lost_url]


async def test_url_is_hosted_then_presigned_then_original(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """A local file gives its hosted URL; an evicted one a presigned URL that serves its bytes;
    a row never downloaded its original URL; each says why."""
    cfg = archive_config(s3_server, tmp_path / "store")
    local, gone = await archived(db_url, pool, cfg, [media.jpeg(seed=6), media.png(seed=6)])
    await pool.execute(
        "UPDATE post_media SET local_file_path = NULL, hosted_url = NULL WHERE media_id = $1",
        gone.media_id,
    )
    fresh = await pool.fetchval(
        "INSERT INTO post_media (post_id, media_url, media_type)"
        " VALUES ('p', 'https://pbs.twimg.com/media/X.jpg', 'image') RETURNING media_id"
    )
    async with tools(cfg) as (_, client, _a):

        async def presign(bucket: str, key: str, seconds: float) -> str:
            return await client.presign_get(key, bucket, seconds)

        hosted = await url.best_url(pool, local.media_id, presign=presign, expiry=60)
        signed = await url.best_url(pool, gone.media_id, presign=presign, expiry=60)
        original = await url.best_url(pool, fresh, presign=presign, expiry=60)
    assert (hosted.kind, hosted.url) == ("hosted", local.stored.hosted_url)
    assert hosted.url.startswith("https://media.example.org/images/")
    assert signed.kind == "presigned" and "X-Amz-Signature=" in signed.url
    assert signed.expires_at is not None and "presigned for 60 s" in signed.reason
    async with aiohttp.ClientSession() as http, http.get(signed.url) as response:
        assert response.status == 200
        assert hashlib.sha256(await response.read()).hexdigest() == gone.stored.sha256
    assert (original.kind, original.url) == ("original", "https://pbs.twimg.com/media/X.jpg")
    assert "no local copy" in original.reason and "not archived" in original.reason
    with pytest.raises(url.UnknownMediaError):
        await url.best_url(pool, "med-nope", presign=presign, expiry=60)


async def test_eviction_honours_the_limit_and_never_evicts_what_is_still_needed(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """Least recently downloaded archived files go first until the store fits; a file that is
    not archived (even the oldest), or shared with a row not yet archived, stays."""
    cfg = archive_config(s3_server, tmp_path / "store")
    store = store_of(cfg)
    files = [media.sized_jpeg(30_000 + 1000 * i, seed=20 + i) for i in range(5)]
    rows = await archived(db_url, pool, cfg, files[:4])
    [unarchived] = await downloaded_rows(pool, store, [files[4]])
    [sharing] = await downloaded_rows(pool, store, [files[3]])  # same bytes as rows[3]
    # Recency: rows[0] oldest ... rows[3] newest; the unarchived file is older than all.
    for age, done in zip((4, 3, 2, 1), rows, strict=True):
        await pool.execute(
            "UPDATE post_media SET downloaded_at = now() - $2::interval WHERE media_id = $1",
            done.media_id,
            timedelta(days=age),
        )
    await pool.execute(
        "UPDATE post_media SET downloaded_at = now() - interval '9 days' WHERE media_id = $1",
        unarchived.media_id,
    )
    sizes = [d.stored.size for d in rows]
    total = store_size(store)
    assert total == sum(sizes) + unarchived.stored.size
    limit = total - sizes[0] - sizes[1] // 2  # needs the two oldest archived files gone

    async with tools(cfg) as (_, client, _a):
        report = await evict.evict(pool, store, client, limit, by="test")
        assert (report.evicted, report.freed) == (2, sizes[0] + sizes[1])
        assert store_size(store) == report.after <= limit
        for done in rows[:2]:
            r = await row(pool, done.media_id)
            assert (r["local_file_path"], r["hosted_url"]) == (None, None)
            assert r["archive_url"] and r["archive_status"] == "completed"
            [event] = events(r, "local_file_evicted")
            assert event["details"]["file_size"] == done.stored.size
            assert not done.stored.path.exists()
        for done in (*rows[2:], unarchived, sharing):
            assert (await row(pool, done.media_id))["local_file_path"] == str(done.stored.path)
            assert done.stored.path.exists()

        # Nothing else may go: what is left is unarchived or needed by an unarchived row.
        report = await evict.evict(pool, store, client, 0, by="test")
        assert report.evicted == 1  # rows[2]; rows[3]'s file is shared with `sharing`
        assert report.after == unarchived.stored.size + rows[3].stored.size
        assert unarchived.stored.path.exists() and rows[3].stored.path.exists()


async def test_a_file_whose_object_is_gone_is_not_evicted(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """Before deleting a local copy, eviction asks S3; a missing object keeps the file and marks
    the row's archive failed."""
    cfg = archive_config(s3_server, tmp_path / "store")
    [done] = await archived(db_url, pool, cfg, [media.jpeg(seed=30)])
    url = (await row(pool, done.media_id))["archive_url"]
    s3_server.client().delete_object(Bucket="media", Key=key_of(url))
    async with tools(cfg) as (store, client, _a):
        report = await evict.evict(pool, store, client, 0, by="test")
    assert (report.evicted, report.archive_damaged) == (0, [url])
    assert done.stored.path.exists()
    r = await row(pool, done.media_id)
    assert (r["archive_status"], r["error_code"]) == ("failed", "archive_missing")


async def test_the_daemon_evicts_down_to_max_cache_size(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """With storage.max_cache_size set, the daemon's run leaves the store within it, archived
    files first and nothing unarchived."""
    cfg = archive_config(
        s3_server,
        tmp_path / "store",
        storage_max_cache_size="1",
        database_url=db_url,
    )
    rows = await downloaded_rows(pool, store_of(cfg), [media.jpeg(seed=s) for s in (40, 41)])
    await daemon.run(cfg, once=True, url=db_url, openers={"archive": archive.open_stage})
    for done in rows:
        r = await row(pool, done.media_id)
        assert r["archive_status"] == "completed" and r["local_file_path"] is None
        assert events(r, "local_file_evicted")[0]["details"]["by"] == "daemon"
    assert store_size(store_of(cfg)) == 0
