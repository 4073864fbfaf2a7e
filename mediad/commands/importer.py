"""`mediad import`: the media of posts saved as JSON files, queued as rows.

Scrapers and archives keep posts as JSON in a few shapes; each shape has one small function
that lists a post's media:
- seed 001's post: `{"post_id", "media": {"type": "image" | "images" | "video", "url",
  "images": [{"url"}]}}`;
- seed 000's output: `{"media": [{"url", "type": "photo" | "video"}]}`;
- a Twitter API v1.1 tweet: `extended_entities.media` (else `entities.media`), videos with
  `video_info.variants`;
- a Twitter API v2 response: `{"data": post or [posts], "includes": {"media": [...]}}`;
- a Facebook Graph API post: `full_picture`, then each of `attachments.data[]` (an album by its
  `subattachments.data[]`), a video by `media.source` and then its picture `media.image.src`;
- an Instagram Graph API IG Media: `media_url` (a VIDEO then its `thumbnail_url`), a
  CAROUSEL_ALBUM by its `children.data[]`.
A file holds one JSON value (a post, a list of posts, a v2 response, a Graph API page
`{"data": [...], "paging": ...}`) or JSON Lines. A post's media come in the order the post
shows them, the same URL once; the first is the post's primary medium. Importing is
idempotent: media already queued for the same post and URL are not queued twice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from mediad import errors, queries
from mediad.media import kinds
from mediad.net import platforms

# Files a directory argument contributes.
SUFFIXES = (".json", ".jsonl", ".ndjson")

# JSON objects arrive as dicts: the shapes test `isinstance(x, dict)`, several times cheaper
# than an ABC check such as Mapping, which a backfill would pay a million times.


class ImportFileError(errors.MediadError):
    """A file that cannot be imported: unreadable, or not JSON."""


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True)
class Document:
    """One JSON value of a file, and its line when the file is JSON Lines."""

    value: Any
    line: int | None = None


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


def documents(path: Path) -> list[Document]:
    """The JSON values in `path`: one value, or one per line (JSON Lines)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFileError(f"cannot read it: {exc}") from None
    try:
        return [Document(json.loads(text))]
    except json.JSONDecodeError as whole:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if len(lines) < 2:
            raise ImportFileError(f"not JSON: {whole}") from None
        values = []
        for number, line in lines:
            try:
                values.append(Document(json.loads(line), number))
            except json.JSONDecodeError as exc:
                raise ImportFileError(f"line {number}: not JSON: {exc}") from None
        return values


# --- shapes -------------------------------------------------------------------------------


def posts_of(document: Any) -> Iterator[list[Media | None]]:
    """The media of each post in a JSON value; None for an entry without a URL."""
    if isinstance(document, list):
        for item in document:
            yield from posts_of(item)
    elif isinstance(document, dict):
        data = document.get("data")
        if isinstance(document.get("includes"), dict) and data is not None:
            yield from _twitter_v2(document)
        elif isinstance(data, list) and "id" not in document:
            # A page of a Graph API edge (/{page-id}/posts, /{ig-user-id}/media) or of any
            # other API that wraps its list in `data`.
            yield from posts_of(data)
        else:
            yield media_of(document)


def media_of(post: Mapping[str, Any]) -> list[Media | None]:
    """The media of one post, whatever its shape (an empty list for a post without media);
    None for an entry without a URL."""
    post_id = _post_id(post)
    entities = post.get("extended_entities") or post.get("entities")
    if isinstance(entities, dict) and isinstance(entities.get("media"), list):
        return list(_twitter_v1(post_id, entities["media"]))
    if "full_picture" in post or _graph_list(post.get("attachments")) is not None:
        return list(_facebook_post(post_id, post))
    if post.get("media_type") in _INSTAGRAM_TYPES:
        return list(_instagram_media(post_id, post))
    media = post.get("media")
    if isinstance(media, dict):
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
            if isinstance(image, dict):
                yield _one(post_id, image.get("url"), "image")
    else:
        yield _one(post_id, media.get("url"), _media_type(media.get("type")), media.get("variants"))


def _media_list(post_id: str | None, items: Iterable[Any]) -> Iterator[Media | None]:
    for item in items:
        if isinstance(item, dict):
            url = item.get("url") or item.get("media_url")
            yield _one(post_id, url, _media_type(item.get("type")), item.get("variants"))


def _twitter_v1(post_id: str | None, items: Iterable[Any]) -> Iterator[Media | None]:
    for item in items:
        if isinstance(item, dict):
            info = item.get("video_info")
            yield _tweet_medium(
                post_id,
                item.get("type"),
                item.get("media_url_https") or item.get("media_url"),
                info.get("variants") if isinstance(info, dict) else None,
            )


def _twitter_v2(response: Mapping[str, Any]) -> Iterator[list[Media | None]]:
    # Posts name their media by key in attachments.media_keys; the media are in includes.
    by_key = {
        item.get("media_key"): item
        for item in response["includes"].get("media") or []
        if isinstance(item, dict)
    }
    data = response["data"]
    for post in data if isinstance(data, list) else [data]:
        if not isinstance(post, dict):
            continue
        attachments = post.get("attachments")
        keys = attachments.get("media_keys") if isinstance(attachments, dict) else None
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
    best = platforms.best_variant([v for v in variants if isinstance(v, dict)])
    return best["url"] if best is not None else None


def _graph_list(edge: Any) -> list[Mapping[str, Any]] | None:
    """The items of a Graph API edge (`{"data": [...]}`), or None when `edge` is not one."""
    if not isinstance(edge, dict) or not isinstance(edge.get("data"), list):
        return None
    return [item for item in edge["data"] if isinstance(item, dict)]


def _facebook_post(post_id: str | None, post: Mapping[str, Any]) -> Iterator[Media | None]:
    # full_picture is the picture Facebook shows for the post (its first photo, a video's
    # poster, a shared link's image), so it leads; the attachments follow in their order.
    if "full_picture" in post:
        yield _one(post_id, post["full_picture"], "image", platform="facebook")
    for attachment in _graph_list(post.get("attachments")) or []:
        parts = [
            m
            for part in _graph_list(attachment.get("subattachments")) or []
            for m in _facebook_attachment(post_id, part)
        ]
        # An album's own media is its cover, one of its subattachments again: only when they
        # name no picture is it taken.
        yield from parts if any(parts) else _facebook_attachment(post_id, attachment)
    if isinstance(post.get("source"), str):
        # The post's own `source` field: the URL of its video.
        yield _one(post_id, post["source"], "video", platform="facebook")


def _facebook_attachment(post_id: str | None, item: Mapping[str, Any]) -> Iterator[Media | None]:
    """A photo by `media.image.src`; a video by `media.source`, then its poster picture."""
    media = item.get("media")
    if not isinstance(media, dict):
        return
    image = media.get("image")
    picture = image.get("src") if isinstance(image, dict) else None
    if media.get("source") is not None:
        # The poster's CDN link expires as well, and it is the picture the post showed.
        yield _one(post_id, media.get("source"), "video", platform="facebook")
        if picture is not None:
            yield _one(post_id, picture, "image", platform="facebook")
    else:
        yield _one(post_id, picture, "image", platform="facebook")


_INSTAGRAM_TYPES = {"IMAGE": "image", "VIDEO": "video", "CAROUSEL_ALBUM": "album"}


def _instagram_media(post_id: str | None, media: Mapping[str, Any]) -> Iterator[Media | None]:
    kind = _INSTAGRAM_TYPES.get(str(media.get("media_type")))
    children = _graph_list(media.get("children"))
    if kind == "album":
        parts = [m for child in children or [] for m in _instagram_media(post_id, child)]
        # The album's own media_url is its cover, its first child again: only when the
        # children were asked for without their media_url is it taken.
        cover = [_one(post_id, media.get("media_url"), "image", platform="instagram")]
        yield from parts if any(parts) else cover
    elif kind == "video":
        # The video, then its cover picture (thumbnail_url), whose CDN link expires as well.
        yield _one(post_id, media.get("media_url"), "video", platform="instagram")
        if media.get("thumbnail_url") is not None:
            yield _one(post_id, media.get("thumbnail_url"), "image", platform="instagram")
    else:
        yield _one(post_id, media.get("media_url"), "image", platform="instagram")


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
        [dict(v) for v in variants if isinstance(v, dict)] if isinstance(variants, list) else None
    )
    return Media(post_id, url.strip(), media_type, platform, kept or None)


# --- checking -----------------------------------------------------------------------------

# The table's index on post_id takes keys of up to about 2700 bytes; a longer one would fail
# the whole batch with an index error instead of naming the post.
MAX_POST_ID_BYTES = 2000


@dataclass(frozen=True, slots=True)
class Queued:
    """A medium to queue: its place among its post's media (0: the primary one)."""

    media: Media
    position: int


def _check(item: Media, where: str) -> None:
    """Refuse, naming the post's place in the file, what PostgreSQL would refuse mid-batch."""
    # One test of the fields joined is the common case; only a failure looks at each.
    joined = f"{item.post_id or ''}/{item.media_url}/{item.media_type}"
    if (
        item.variants is None
        and "\x00" not in joined
        and joined.isascii()
        and len(item.post_id or "") <= MAX_POST_ID_BYTES
    ):
        return
    fields: list[tuple[str, str | None]] = [
        ("post_id", item.post_id),
        ("URL", item.media_url),
        ("media type", item.media_type),
        *(("variants", text) for text in _texts(item.variants)),
    ]
    for name, text in fields:
        if text is None:
            continue
        if "\x00" in text:
            raise ImportFileError(f"{where}: its {name} holds a NUL character (\\u0000)")
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise ImportFileError(
                f"{where}: its {name} holds a lone surrogate (\\ud800-\\udfff), not text"
            ) from None
        if name == "post_id" and size > MAX_POST_ID_BYTES:
            raise ImportFileError(
                f"{where}: its post_id is {size} bytes long, over {MAX_POST_ID_BYTES}"
            )


def _texts(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield str(key)
            yield from _texts(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _texts(inner)


def rows_to_queue(values: Sequence[Document], report: FileReport) -> list[Queued]:
    """Every medium of the file once, checked, with its position in its post; counts posts,
    media without a URL, and media listed twice in the file into `report`."""
    wanted: list[Queued] = []
    seen: set[tuple[str | None, str]] = set()
    for document in values:
        for media in posts_of(document.value):
            report.posts += 1
            where = f"line {document.line}" if document.line else f"post {report.posts}"
            in_post: set[str] = set()
            for item in media:
                if item is None:
                    report.without_url += 1
                    continue
                if item.media_url in in_post:
                    # The same picture named twice by one post (full_picture and its
                    # attachment, say) is one medium.
                    continue
                _check(item, where)
                position = len(in_post)
                in_post.add(item.media_url)
                key = (item.post_id, item.media_url)
                if key in seen:
                    report.already_queued += 1
                else:
                    seen.add(key)
                    wanted.append(Queued(item, position))
    return wanted


# --- queueing -----------------------------------------------------------------------------

# Media per INSERT: large enough that a round trip and a statement cost little per row, small
# enough that the progress bar moves and one statement's arrays stay a few MB.
BATCH = 5000

# Told, after each batch, how many media it queued and how many were already queued.
OnBatch = Callable[[int, int], None]


@dataclass
class Prepared:
    """A file read and checked: what it holds to queue, and its report so far (or its error)."""

    report: FileReport
    wanted: list[Queued] = field(default_factory=list)


def prepare(path: Path) -> Prepared:
    """Read and check `path` (no database needed, so it can run in a thread)."""
    report = FileReport(str(path))
    try:
        return Prepared(report, rows_to_queue(documents(path), report))
    except ImportFileError as exc:
        report.error = str(exc)
        return Prepared(report)


async def queue(
    pool: asyncpg.Pool[Any], prepared: Prepared, on_batch: OnBatch | None = None
) -> FileReport:
    """Queue what a prepared file holds, all or nothing, in batches; its report."""
    report, wanted = prepared.report, prepared.wanted
    if report.error is not None:
        return report
    if on_batch is not None and report.already_queued:
        on_batch(0, report.already_queued)
    sql = queries.plain()["import_media"]
    async with pool.acquire() as conn, conn.transaction():
        # One import at a time, so two runs over the same files cannot both queue a medium.
        await conn.execute(queries.plain()["import_lock"])
        for start in range(0, len(wanted), BATCH):
            batch = wanted[start : start + BATCH]
            rows = await conn.fetch(
                sql,
                [q.media.post_id for q in batch],
                [q.media.media_url for q in batch],
                [q.media.media_type for q in batch],
                [q.media.platform for q in batch],
                # As JSON text: asyncpg would read a list of variants as a nested array.
                [json.dumps(q.media.variants) if q.media.variants else None for q in batch],
                [q.position for q in batch],
            )
            report.queued.extend(r["media_id"] for r in rows)
            report.already_queued += len(batch) - len(rows)
            if on_batch is not None:
                on_batch(len(rows), len(batch) - len(rows))
    return report


async def import_files(
    pool: asyncpg.Pool[Any], paths: Sequence[Path], on_batch: OnBatch | None = None
) -> AsyncIterator[FileReport]:
    """Each file's report as it is queued. The next file is read and checked in a thread while
    this one is written, so parsing JSON costs no time the database would not take anyway."""
    if not paths:
        return
    reading = asyncio.ensure_future(asyncio.to_thread(prepare, paths[0]))
    try:
        for following in [*paths[1:], None]:
            prepared = await reading
            if following is not None:
                reading = asyncio.ensure_future(asyncio.to_thread(prepare, following))
            yield await queue(pool, prepared, on_batch)
    finally:
        reading.cancel()
