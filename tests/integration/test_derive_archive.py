"""Derivatives and the archive, against a real S3 (SeaweedFS): eviction frees originals only,
derive reads an evicted original from the archive, and `restore` brings originals back only
when their bytes prove to be the row's."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import asyncpg

from mediad import config
from mediad.commands import derive as derive_commands
from mediad.commands import evict, restore
from mediad.storage import s3
from mediad.storage.local import Store, store_size
from tests import media
from tests.archive_support import archive_settings, events
from tests.derive_support import derived_rows, opened, read, run_derive
from tests.s3server import SeaweedFS
from tests.support import make_config, row


def settings(server: SeaweedFS, root: Path, **overrides: str) -> config.Config:
    extra = {"media_workers": "1", "derive_thumbnail_px": "40"} | overrides
    return make_config(**archive_settings(server, root, **extra))


def is_file(path: str) -> bool:
    return Path(path).is_file()


async def archived_and_derived(
    db_url: str, pool: asyncpg.Pool[Any], cfg: config.Config, files: list[bytes]
) -> list[str]:
    store = Store.from_config(cfg.storage)
    ids = await derived_rows(pool, store, [(data, "image/jpeg") for data in files])
    await run_derive(cfg, db_url, with_archive=True)
    for media_id in ids:
        r = await row(pool, media_id)
        assert (r["archive_status"], r["derive_status"]) == ("completed", "completed")
    return ids


async def test_derivatives_survive_eviction_and_derive_reads_the_archived_original(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """Eviction deletes the original and leaves every derivative and thumbnail_url; re-derived
    after a size change, the row's original is read from the archive."""
    cfg = settings(s3_server, tmp_path / "store")
    store = Store.from_config(cfg.storage)
    [media_id] = await archived_and_derived(db_url, pool, cfg, [media.jpeg_with_exif(seed=60)])
    before = await row(pool, media_id)
    async with s3.open_client(cfg.archive) as client:
        report = await evict.evict(pool, store, client, 0, by="test")
    assert report.evicted == 1
    evicted = await row(pool, media_id)
    assert evicted["local_file_path"] is None and not is_file(before["local_file_path"])
    assert evicted["derivatives"] == before["derivatives"]
    assert evicted["thumbnail_url"] == before["thumbnail_url"]
    for entry in before["derivatives"].values():
        assert is_file(entry["path"]) and store.verify(Path(entry["path"]), entry["sha256"])

    await derive_commands.requeue(pool, media_ids=[media_id])
    await run_derive(settings(s3_server, tmp_path / "store", derive_thumbnail_px="20"), db_url)
    after = await row(pool, media_id)
    assert after["derive_status"] == "completed" and after["local_file_path"] is None
    assert events(after, "derivatives_created")[-1]["details"]["source"] == "archive"
    assert max(opened(after["derivatives"]["thumbnail"]).size) == 20
    assert list((tmp_path / "store" / ".tmp").iterdir()) == []


async def test_restore_brings_an_evicted_original_back(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """restore downloads the archived object, proves its SHA-256, links it at its address and
    gives every row of those bytes its path and hosted URL back, with an event each."""
    cfg = settings(s3_server, tmp_path / "store")
    store = Store.from_config(cfg.storage)
    data = media.jpeg_with_exif(seed=61)
    ids = await archived_and_derived(db_url, pool, cfg, [data, data])
    original = await row(pool, ids[0])
    async with s3.open_client(cfg.archive) as client:
        await evict.evict(pool, store, client, 0, by="test")
        report = await restore.restore(pool, store, client, media_ids=[ids[0]])
    assert sorted(report.restored) == sorted(ids) and report.failed == {}
    for media_id in ids:
        r = await row(pool, media_id)
        assert r["local_file_path"] == original["local_file_path"]
        assert r["hosted_url"] == original["hosted_url"]
        [restored] = events(r, "local_file_restored")
        assert restored["details"]["by"] == "mediad restore"
        assert restored["details"]["source"] == r["archive_url"]
    assert hashlib.sha256(read(original["local_file_path"])).hexdigest() == original["sha256_sum"]


async def test_a_restored_file_counts_as_used_now_for_eviction(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """Eviction takes the least recently used file first. A file restored by `mediad restore`
    is wanted now: the next eviction takes a file downloaded after it was, not the one just
    brought back."""
    cfg = settings(s3_server, tmp_path / "store")
    store = Store.from_config(cfg.storage)
    older, newer = await archived_and_derived(
        db_url, pool, cfg, [media.jpeg_with_exif(seed=64), media.jpeg_with_exif(seed=65)]
    )
    for media_id, hours_ago in ((older, 2), (newer, 1)):
        await pool.execute(
            "UPDATE post_media SET downloaded_at = now() - make_interval(hours => $2)"
            " WHERE media_id = $1",
            media_id,
            hours_ago,
        )

    async def evict_one() -> list[str]:
        """Evict one file (the store one byte over); the media_ids left without a local file."""
        async with s3.open_client(cfg.archive) as client:
            report = await evict.evict(pool, store, client, store_size(store) - 1, by="t")
        assert report.evicted == 1
        return [m for m in (older, newer) if (await row(pool, m))["local_file_path"] is None]

    assert await evict_one() == [older]  # downloaded first, evicted first
    async with s3.open_client(cfg.archive) as client:
        assert (await restore.restore(pool, store, client, media_ids=[older])).restored == [older]
    assert (await row(pool, older))["restored_at"] is not None
    assert await evict_one() == [newer]  # the restored file stays


async def test_restore_refuses_bytes_whose_sha256_is_not_the_rows(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """An archived object overwritten with other bytes is not linked in: the row stays evicted,
    with a restore_failed event (archive_corrupt), and no file appears at its address."""
    cfg = settings(s3_server, tmp_path / "store")
    store = Store.from_config(cfg.storage)
    [media_id] = await archived_and_derived(db_url, pool, cfg, [media.jpeg_with_exif(seed=62)])
    original = await row(pool, media_id)
    async with s3.open_client(cfg.archive) as client:
        await evict.evict(pool, store, client, 0, by="test")
        key = original["archive_url"].removeprefix("s3://media/")
        s3_server.client().put_object(Bucket="media", Key=key, Body=media.jpeg(seed=63))
        report = await restore.restore(pool, store, client, everything=True)
    assert report.restored == [] and report.failed == {media_id: "archive_corrupt"}
    r = await row(pool, media_id)
    assert r["local_file_path"] is None
    [failed] = events(r, "restore_failed")
    assert failed["status"] == "failure" and failed["details"]["error_code"] == "archive_corrupt"
    assert not is_file(original["local_file_path"])
    assert list((tmp_path / "store" / ".tmp").iterdir()) == []
