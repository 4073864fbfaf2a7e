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


# --- derivatives --------------------------------------------------------------------------

DERIVED_KINDS = ("thumbnail", "preview", "optimized", "public")


class NoDerivativeError(errors.MediadError):
    """The row has no such derivative (not derived yet, or none is made of its kind)."""


async def derivative_url(
    pool: asyncpg.Pool[Any],
    media_id: str,
    kind: str,
    *,
    presign: Presign | None,
    expiry: float,
    now: datetime | None = None,
) -> BestUrl:
    """The URL of the row's `kind` derivative: its hosted file; for a public copy with nothing
    to strip, the original's best URL; for an optimized copy not kept (it was not smaller),
    the public copy's."""
    record = await pool.fetchrow(queries.plain()["derivative_url_row"], media_id)
    if record is None:
        raise UnknownMediaError(f"no row with media_id {media_id!r}")
    row = dict(record)
    derived = row["derivatives"] or {}
    entry = derived.get(kind)
    if isinstance(entry, dict) and entry.get("original"):
        best = await choose(row, presign=presign, expiry=expiry, now=now)
        why = f"the original has nothing to strip, so it is its own {kind} copy; {best.reason}"
        return BestUrl(media_id, best.kind, best.url, why, best.expires_at)
    if isinstance(entry, dict):
        path, url = entry.get("path"), entry.get("url")
        if not url:
            raise NoDerivativeError(
                f"{media_id}'s {kind} is at {path}, but storage.public_base_url is empty: no URL"
            )
        if not await asyncio.to_thread(os.path.isfile, str(path)):
            raise NoDerivativeError(
                f"{media_id}'s {kind} file {path} is missing (mediad verify --repair makes it"
                " again)"
            )
        return BestUrl(media_id, "derived", url, f"the {kind} is stored at {path}")
    not_kept = (row["not_kept"] or {}).get(kind)
    if kind == "optimized" and not_kept and "public" in derived:
        best = await derivative_url(
            pool, media_id, "public", presign=presign, expiry=expiry, now=now
        )
        why = f"no optimized copy was kept ({not_kept}); the public copy serves: {best.reason}"
        return BestUrl(media_id, best.kind, best.url, why, best.expires_at)
    why = f": {not_kept}" if not_kept else f" (derive_status {row['derive_status']})"
    raise NoDerivativeError(f"{media_id} has no {kind}{why}")


async def derivatives_of(pool: asyncpg.Pool[Any], media_id: str) -> dict[str, Any]:
    """The row's derivatives as `url --json` lists them: kind -> url, size and type."""
    record = await pool.fetchrow(queries.plain()["derivative_url_row"], media_id)
    listed: dict[str, Any] = {}
    for kind, entry in sorted(((record and record["derivatives"]) or {}).items()):
        if isinstance(entry, dict):
            listed[kind] = {
                k: entry.get(k)
                for k in ("url", "width", "height", "file_size", "mime_type", "original")
                if entry.get(k) is not None
            }
    return listed
