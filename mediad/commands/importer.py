"""`mediad import`: the media of posts saved as JSON files, queued as rows.

Scrapers and archives keep posts as JSON in a few shapes; each shape has one small function
that lists a post's media:
- seed 001's post: `{"post_id", "media": {"type": "image" | "images" | "video", "url",
  "images": [{"url"}]}}`;
- seed 000's output: `{"media": [{"url", "type": "photo" | "video"}]}`;
- a Twitter API v1.1 tweet: `extended_entities.media` (else `entities.media`), videos with
  `video_info.variants`;
- a Twitter API v2 response: `{"data": post or [posts], "includes": {"media": [...]}}`.
A file holds one JSON value (a post, a list of posts, a v2 response) or JSON Lines. Importing
is idempotent: media already queued for the same post and URL are not queued twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from mediad import errors, queries
from mediad.media import kinds
from mediad.net import platforms

# Files a directory argument contributes.
SUFFIXES = (".json", ".jsonl", ".ndjson")


class ImportFileError(errors.MediadError):
    """A file that cannot be imported: unreadable, or not JSON."""


@dataclass(frozen=True)
class Media:
    """One media item of a post, as a row will hold it."""

    post_id: str | None
    media_url: str
    media_type: str
    platform: str | None = None
    variants: list[dict[str, Any]] | None = None


@dataclass
class FileReport:
    """What importing one file did: posts read, rows queued or already queued, or its error."""

    path: str
    posts: int = 0
    queued: list[str] = field(default_factory=list)  # media_ids of the new rows
    already_queued: int = 0
    without_url: int = 0  # media entries with no URL to download
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "posts": self.posts,
            "queued": len(self.queued),
            "media_ids": self.queued,
            "already_queued": self.already_queued,
            "without_url": self.without_url,
            "error": self.error,
        }


# --- reading files ------------------------------------------------------------------------


def files_in(paths: Sequence[str]) -> list[Path]:
    """The files named, and the .json/.jsonl/.ndjson files under the directories named."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES))
        else:
            found.append(path)
    return found


def documents(path: Path) -> list[Any]:
    """The JSON values in `path`: one value, or one per line (JSON Lines)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFileError(f"cannot read it: {exc}") from None
    try:
        return [json.loads(text)]
    except json.JSONDecodeError as whole:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if len(lines) < 2:
            raise ImportFileError(f"not JSON: {whole}") from None
        values = []
        for number, line in lines:
            try:
                values.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ImportFileError(f"line {number}: not JSON: {exc}") from None
        return values


# --- shapes -------------------------------------------------------------------------------


def posts_of(document: Any) -> Iterator[list[Media | None]]:
    """The media of each post in a JSON value; None for an entry without a URL."""
    if isinstance(document, list):
        for item in document:
            yield from posts_of(item)
    elif isinstance(document, Mapping):
        if isinstance(document.get("includes"), Mapping) and "data" in document:
            yield from _twitter_v2(document)
        else:
            yield media_of(document)


def media_of(post: Mapping[str, Any]) -> list[Media | None]:
    """The media of one post, whatever its shape (an empty list for a post without media);
    None for an entry without a URL."""
    post_id = _post_id(post)
    entities = post.get("extended_entities") or post.get("entities")
    if isinstance(entities, Mapping) and isinstance(entities.get("media"), list):
        return list(_twitter_v1(post_id, entities["media"]))
    media = post.get("media")
    if isinstance(media, Mapping):
        return list(_seed_001(post_id, media))
    if isinstance(media, list):
        return list(_media_list(post_id, media))
    return []


def _post_id(post: Mapping[str, Any]) -> str | None:
    for key in ("post_id", "id_str", "id", "tweet_id"):
        value = post.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def _media_type(kind: Any, default: str = "image") -> str:
    kind = str(kind or "").lower()
    return kinds.canonical(kind) or kind or default


def _seed_001(post_id: str | None, media: Mapping[str, Any]) -> Iterator[Media | None]:
    if media.get("type") == "images":
        for image in media.get("images") or []:
            if isinstance(image, Mapping):
                yield _one(post_id, image.get("url"), "image")
    else:
        yield _one(post_id, media.get("url"), _media_type(media.get("type")), media.get("variants"))


def _media_list(post_id: str | None, items: Iterable[Any]) -> Iterator[Media | None]:
    for item in items:
        if isinstance(item, Mapping):
            url = item.get("url") or item.get("media_url")
            yield _one(post_id, url, _media_type(item.get("type")), item.get("variants"))


def _twitter_v1(post_id: str | None, items: Iterable[Any]) -> Iterator[Media | None]:
    for item in items:
        if isinstance(item, Mapping):
            info = item.get("video_info")
            yield _tweet_medium(
                post_id,
                item.get("type"),
                item.get("media_url_https") or item.get("media_url"),
                info.get("variants") if isinstance(info, Mapping) else None,
            )


def _twitter_v2(response: Mapping[str, Any]) -> Iterator[list[Media | None]]:
    # Posts name their media by key in attachments.media_keys; the media are in includes.
    by_key = {
        item.get("media_key"): item
        for item in response["includes"].get("media") or []
        if isinstance(item, Mapping)
    }
    data = response["data"]
    for post in data if isinstance(data, list) else [data]:
        if not isinstance(post, Mapping):
            continue
        attachments = post.get("attachments")
        keys = attachments.get("media_keys") if isinstance(attachments, Mapping) else None
        post_id = _post_id(post)
        yield [
            _tweet_medium(post_id, item.get("type"), item.get("url"), item.get("variants"))
            for item in (by_key[key] for key in keys or [] if key in by_key)
        ]


def _tweet_medium(post_id: str | None, kind: Any, url: Any, variants: Any) -> Media | None:
    """A photo by its URL; a video or GIF by its variants (their best URL as media_url)."""
    media_type = _media_type(kind)
    if media_type in ("video", "gif") and isinstance(variants, list) and variants:
        return _one(post_id, _best_url(variants), media_type, variants, platform="twitter")
    return _one(post_id, url, media_type, platform="twitter")


def _best_url(variants: list[Any]) -> Any:
    # The row's media_url is one real URL of the media; the download stage chooses the best
    # variant again from `variants` when it fetches.
    best = platforms.best_variant([v for v in variants if isinstance(v, Mapping)])
    return best["url"] if best is not None else None


def _one(
    post_id: str | None,
    url: Any,
    media_type: str,
    variants: Any = None,
    platform: str | None = None,
) -> Media | None:
    if not isinstance(url, str) or not url.strip():
        return None
    kept = (
        [dict(v) for v in variants if isinstance(v, Mapping)]
        if isinstance(variants, list)
        else None
    )
    return Media(post_id, url.strip(), media_type, platform, kept or None)


# --- queueing -----------------------------------------------------------------------------


async def import_file(pool: asyncpg.Pool[Any], path: Path) -> FileReport:
    """Queue the media of every post in `path`, all or nothing; the error, if any, is in the
    report."""
    report = FileReport(str(path))
    try:
        values = documents(path)
    except ImportFileError as exc:
        report.error = str(exc)
        return report
    wanted: list[Media] = []
    for value in values:
        for media in posts_of(value):
            report.posts += 1
            wanted.extend(m for m in media if m is not None)
            report.without_url += sum(m is None for m in media)
    sql = queries.plain()["import_media"]
    async with pool.acquire() as conn, conn.transaction():
        # One import at a time, so two runs over the same files cannot both queue a medium.
        await conn.execute(queries.plain()["import_lock"])
        for item in wanted:
            media_id = await conn.fetchval(
                sql, item.post_id, item.media_url, item.media_type, item.platform, item.variants
            )
            if media_id is None:
                report.already_queued += 1
            else:
                report.queued.append(media_id)
    return report
