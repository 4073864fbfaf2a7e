"""The best URL of a media file right now: its hosted URL when the file is local, else a presigned
URL of its archived object, else the original URL; with the reason for the choice."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from mediad import errors, queries
from mediad.storage import objectkeys, s3errors

# (bucket, key, seconds) -> a presigned GET URL.
Presign = Callable[[str, str, float], Awaitable[str]]


class UnknownMediaError(errors.MediadError):
    """No row has this media_id."""


@dataclass(frozen=True)
class BestUrl:
    media_id: str
    kind: str  # hosted, presigned or original
    url: str
    reason: str
    expires_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "media_id": self.media_id,
            "kind": self.kind,
            "url": self.url,
            "reason": self.reason,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }


async def best_url(
    pool: asyncpg.Pool[Any],
    media_id: str,
    *,
    presign: Presign | None,
    expiry: float,
    now: datetime | None = None,
) -> BestUrl:
    """The best URL for `media_id`; `presign` is None where no archive is configured."""
    record = await pool.fetchrow(queries.plain()["best_url_row"], media_id)
    if record is None:
        raise UnknownMediaError(f"no row with media_id {media_id!r}")
    return await choose(dict(record), presign=presign, expiry=expiry, now=now)


async def choose(
    row: dict[str, Any], *, presign: Presign | None, expiry: float, now: datetime | None = None
) -> BestUrl:
    """The choice itself, on one row's columns."""
    now = now or datetime.now(UTC)
    media_id = row["media_id"]
    why: list[str] = []
    local, hosted = row["local_file_path"], row["hosted_url"]
    if local and hosted:
        if await asyncio.to_thread(os.path.isfile, local):
            return BestUrl(media_id, "hosted", hosted, f"the file is stored locally at {local}")
        why.append(f"the local file {local} is missing")
    elif local:
        why.append("the file is local, but storage.public_base_url is empty: no hosted URL")
    else:
        why.append("no local copy")
    archive_url = row["archive_url"]
    if row["archive_status"] == "completed" and archive_url:
        if presign is None:
            why.append(f"archived at {archive_url}, but the archive is not configured here")
        else:
            try:
                bucket, key = objectkeys.parse_s3_url(archive_url)
                url = await presign(bucket, key, expiry)
            except (ValueError, s3errors.S3Error) as exc:
                why.append(f"archived at {archive_url}, but no URL could be presigned: {exc}")
            else:
                why.append(f"archived at {archive_url}; presigned for {int(expiry)} s")
                expires = now + timedelta(seconds=expiry)
                return BestUrl(media_id, "presigned", url, "; ".join(why), expires)
    else:
        why.append(f"not archived (archive_status {row['archive_status']})")
    expires_at = row["url_expires_at"]
    if expires_at is not None and expires_at <= now:
        why.append(f"the original URL expired at {expires_at.isoformat()}")
    elif expires_at is not None:
        why.append(f"the original URL expires at {expires_at.isoformat()}")
    else:
        why.append("the original URL")
    return BestUrl(media_id, "original", row["media_url"], "; ".join(why), expires_at)
