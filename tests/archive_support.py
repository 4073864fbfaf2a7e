"""Helpers for archive tests: configs pointing at a test S3 server, real files stored as the
download stage stores them, rows that look downloaded, and the archive stage run in-process."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from mediad import config, daemon
from mediad.stage import Row
from mediad.stages import archive
from mediad.storage import s3
from mediad.storage.local import Store, StoredFile
from tests.s3server import S3Endpoint
from tests.support import make_config


def archive_settings(server: S3Endpoint, root: Path, **overrides: str) -> dict[str, str]:
    """MEDIAD_* style overrides: the archive on `server`, under a key prefix of this test's own
    (every test shares the bucket), the store at `root`, and quick retries."""
    prefix = "t-" + secrets.token_hex(4)
    settings = {
        "archive_enabled": "true",
        "archive_bucket": server.bucket,
        "archive_endpoint_url": server.endpoint,
        "archive_addressing_style": "path",
        "archive_key_template": prefix + "/media/{sha256[:2]}/{sha256}.{ext}",
        "archive_outage_pause": "200ms",
        "archive_outage_pause_max": "1s",
        "archive_connect_timeout": "2s",
        "storage_root": str(root),
        "storage_public_base_url": "https://media.example.org",
        "daemon_backoff_base": "100ms",
        "daemon_backoff_max": "1s",
        "daemon_poll_interval": "200ms",
    }
    settings.update(overrides)
    return settings


def archive_config(server: S3Endpoint, root: Path, **overrides: str) -> config.Config:
    return make_config(**archive_settings(server, root, **overrides))


def store_bytes(store: Store, data: bytes, kind: str = "images", ext: str = "jpg") -> StoredFile:
    """Put bytes in the store exactly as the download stage does (temp file, hash, link)."""
    with store.open_temp() as tmp:
        tmp.write(data)
        return store.commit(tmp, kind, ext)


@dataclass(frozen=True)
class Downloaded:
    media_id: str
    stored: StoredFile


async def downloaded_rows(
    pool: asyncpg.Pool[Any],
    store: Store,
    files: Sequence[bytes | tuple[bytes, str, str]],
    *,
    analysis: str = "skipped",
    node: str | None = None,
    derive: str = "skipped",
) -> list[Downloaded]:
    """Rows whose download has completed, one per file (bytes, or (bytes, kind, ext)), stored on
    `node` (None: before rows recorded their node); the archive stage takes them next. Their
    analysis and derive stages are `analysis` and `derive` (skipped: eviction need not wait)."""
    made = []
    for index, item in enumerate(files):
        data, kind, ext = (item, "images", "jpg") if isinstance(item, bytes) else item
        stored = store_bytes(store, data, kind, ext)
        media_id = await pool.fetchval(
            "INSERT INTO post_media (post_id, media_url, media_type) VALUES ($1, $2, 'image')"
            " RETURNING media_id",
            f"post-{index}",
            f"https://cdn.example/{index}.{ext}",
        )
        await pool.execute(
            "UPDATE post_media SET download_status = 'completed', local_file_path = $2,"
            " hosted_url = $3, md5_sum = $4, sha256_sum = $5, file_size = $6,"
            " mime_type = 'image/jpeg', downloaded_at = now(), ai_analysis_status = $7,"
            " storage_node = $8, derive_status = $9,"
            " ai_analysis_log = ai_analysis_log || mediad_event('media_downloaded', 'success',"
            " '{}') WHERE media_id = $1",
            media_id,
            str(stored.path),
            stored.hosted_url,
            stored.md5,
            stored.sha256,
            stored.size,
            analysis,
            node,
            derive,
        )
        made.append(Downloaded(media_id, stored))
    return made


async def run_archive(cfg: config.Config, url: str) -> None:
    """`mediad run --once` in-process with only the archive stage."""
    await daemon.run(cfg, once=True, url=url, openers={"archive": archive.open_stage})


@dataclass(frozen=True)
class Uploads:
    """What `upload_stored` did: the file, its key, and each upload's outcome in turn."""

    stored: StoredFile
    key: str
    outcomes: list[archive.Archived]


async def upload_stored(cfg: config.Config, data: bytes, times: int = 1) -> Uploads:
    """Store `data` as a JPEG and upload it `times` times, by the archive stage's own upload of
    one row's file, on a client of its own."""
    store = store_of(cfg)
    stored = store_bytes(store, data)
    outcomes = []
    async with s3.open_client(cfg.archive) as client:
        archiver = archive.Archiver(cfg.archive, client, store)
        local = archive.Local(stored.path, stored.sha256, stored.md5, stored.size, "jpg")
        key = archiver.key_for(Row("med-1", 1, "https://x.example/1.jpg", "image"), local)
        for _ in range(times):
            outcome, _gone = await archiver.upload(local, key)
            outcomes.append(outcome)
    return Uploads(stored, key, outcomes)


def store_of(cfg: config.Config) -> Store:
    return Store.from_config(cfg.storage)


def events(row: Any, name: str) -> list[dict[str, Any]]:
    """The row's log entries called `name`."""
    return [entry for entry in row["ai_analysis_log"] if entry["event"] == name]
