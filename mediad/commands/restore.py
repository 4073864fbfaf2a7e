"""`mediad restore`: evicted originals back from the archive.

Each distinct file is downloaded into a temp file of the store and proven against its row's
SHA-256 before it is linked at its content address (bytes that do not hash to it are refused);
its rows get their local path and hosted URL back, each with a `local_file_restored` event, or
a `restore_failed` one saying why not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from mediad import errors, queries
from mediad.storage import objectkeys, originals, s3
from mediad.storage.local import Store

log = structlog.get_logger(__name__)

_EXT = re.compile(r"[a-z0-9]{1,8}")
# The store's folder for a mime type's major part (as the download stage files them).
_FOLDERS = {"image": "images", "video": "videos", "audio": "audio"}


@dataclass
class Report:
    restored: list[str] = field(default_factory=list)  # media_ids
    failed: dict[str, str] = field(default_factory=dict)  # media_id -> error_code

    def as_json(self) -> dict[str, Any]:
        return {"restored": self.restored, "failed": self.failed}


def placement(mime_type: str | None, archive_url: str) -> tuple[str, str]:
    """(folder, ext) of a restored file: the folder its type files it in, the extension its
    archived key ends with (else one from its type)."""
    major, _, minor = (mime_type or "").partition("/")
    folder = _FOLDERS.get(major, "documents")
    try:
        _, key = objectkeys.parse_s3_url(archive_url)
    except ValueError:
        key = ""
    ext = key.rpartition(".")[2].lower() if "." in key.rpartition("/")[2] else ""
    if not _EXT.fullmatch(ext):
        ext = {"jpeg": "jpg", "tiff": "tif", "quicktime": "mov"}.get(minor, minor)
    return folder, ext if _EXT.fullmatch(ext) else "bin"


async def restore(
    pool: asyncpg.Pool[Any],
    store: Store,
    client: s3.S3,
    *,
    media_ids: Sequence[str] = (),
    post_id: str | None = None,
    everything: bool = False,
    by: str = "mediad restore",
) -> Report:
    """Bring back the evicted files of the rows named, of a post, or of all of this node (and
    of every evicted row holding the same bytes)."""
    sql = queries.plain()
    report = Report()
    groups = await pool.fetch(
        sql["restore_candidates"], everything, list(media_ids), post_id, store.node
    )
    for group in groups:
        ids: list[str] = list(group["media_ids"])
        urls = [u for u in group["archive_urls"] if u]
        folder, ext = placement(group["mime_type"], urls[0])
        target = store.path_for(folder, group["sha256_sum"], ext)
        failure: errors.StageError | None = None
        source = "local copy"
        if not await asyncio.to_thread(store.verify, target, group["sha256_sum"]):
            failure = errors.PermanentError("no archived copy", error_code="archive_missing")
            for url in urls:
                try:
                    tmp = await originals.fetch(client, store, url, group["sha256_sum"])
                except errors.StageError as exc:
                    failure = exc
                    log.warning("restore_refused", archive_url=url, error=str(exc))
                    continue
                # A file of the wrong bytes at the address would pass for ours: move it out.
                await asyncio.to_thread(_unlink, target)
                await asyncio.to_thread(store.commit, tmp, folder, ext)
                failure, source = None, url
                break
        if failure is not None:
            await pool.execute(sql["restore_failed"], ids, failure.error_code, str(failure), by)
            report.failed.update(dict.fromkeys(ids, failure.error_code))
            continue
        await pool.execute(
            sql["local_file_relinked"],
            ids,
            str(target),
            store.hosted_url(target),
            "local_file_restored",
            store.relative(target),
            source,
            by,
        )
        report.restored.extend(ids)
        log.info("local_file_restored", path=store.relative(target), rows=len(ids))
    return report


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
