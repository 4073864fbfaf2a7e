"""The download stage end to end: the real daemon, a real HTTP origin on 127.0.0.1, real media
bytes and a real PostgreSQL; every row is checked in its columns, its event log and on disk."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from mediad import daemon
from mediad.media.decoders import DecoderPool
from mediad.net import fetch, ssrf
from mediad.net.fetch import Fetcher
from mediad.stage import Row
from mediad.stages import download
from mediad.storage.local import Store
from tests import media, support
from tests.origin import (
    Origin,
    body,
    chunked,
    redirect,
    serving,
    stalled,
    status,
    truncated,
)
from tests.support import event_names, make_config, row, wait_for

ALLOWED = "127.0.0.1/32"
PUBLIC_BASE = "https://media.example.org/m"
DONE = [
    "download_started", "media_downloaded", "archive_skipped", "ai_analysis_skipped",
    "derive_skipped",
]  # fmt: skip


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    async with serving() as served:
        yield served


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path.resolve() / "media"


async def download_once(db_url: str, root: Path, **overrides: str) -> None:
    """`mediad run --once` in-process with the real download stage, loopback allowed (and the
    derive stage off: these tests are about the stored original)."""
    settings = {"derive_enabled": "false"} | overrides
    cfg = make_config(storage_root=str(root), download_allowed_networks=ALLOWED, **settings)
    async with asyncio.timeout(30):
        await daemon.run(cfg, once=True, url=db_url)


async def insert(
    pool: asyncpg.Pool[Any],
    url: str,
    *,
    media_type: str = "image",
    post_id: str = "post-1",
    variants: list[dict[str, Any]] | None = None,
    url_expires_at: datetime | None = None,
) -> str:
    """One row, inserted the way a scraper does."""
    media_id: str = await pool.fetchval(
        "INSERT INTO post_media (post_id, media_url, media_type, variants, url_expires_at)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING media_id",
        post_id,
        url,
        media_type,
        variants,
        url_expires_at,
    )
    return media_id


def files_under(root: Path) -> list[str]:
    """Every file below the store root (temp files included), relative and sorted."""
    if not root.exists():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())


def temp_files(root: Path) -> list[str]:
    tmp = root / ".tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def stored_path(root: Path, data: bytes, folder: str, ext: str) -> Path:
    sha = hashlib.sha256(data).hexdigest()
    return root / folder / sha[:2] / f"{sha}.{ext}"


async def fast_forward(pool: asyncpg.Pool[Any]) -> None:
    """Stand-in for a backoff delay passing."""
    await pool.execute("UPDATE post_media SET download_next_attempt_at = now()")


def assert_stored(r: Mapping[str, Any], root: Path, data: bytes, folder: str, ext: str) -> None:
    """The row points at a file holding exactly `data`, at its content address."""
    path = stored_path(root, data, folder, ext)
    assert r["download_status"] == "completed"
    assert r["sha256_sum"] == hashlib.sha256(data).hexdigest()
    assert r["md5_sum"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert r["file_size"] == len(data)
    assert r["local_file_path"] == str(path)
    assert path.read_bytes() == data
    assert r["error_code"] is None and r["last_error"] is None


# --- success ------------------------------------------------------------------------------------


async def test_jpeg_with_exif_is_stored_with_its_metadata(
    pool: asyncpg.Pool[Any], db_url: str, origin: Origin, root: Path
) -> None:
    """A camera JPEG served as text/plain is sniffed, hashed, stored and its EXIF recorded."""
    data = media.jpeg_with_exif(80, 60)
    url = origin.serve("/photo.jpg", data, content_type="text/plain")
    media_id = await insert(pool, url)

    await download_once(db_url, root, storage_public_base_url=PUBLIC_BASE)

    r = await row(pool, media_id)
    assert_stored(r, root, data, "images", "jpg")
    sha = r["sha256_sum"]
    assert r["hosted_url"] == f"{PUBLIC_BASE}/images/{sha[:2]}/{sha}.jpg"
    assert (r["mime_type"], r["width"], r["height"]) == ("image/jpeg", 80, 60)
    assert r["duration_seconds"] is None
    meta = r["metadata"]
    assert (meta["camera_make"], meta["camera_model"]) == ("Canon", "EOS R5")
    assert meta["taken_at"] == "2024-05-06T07:08:09"
    assert meta["gps"]["latitude"] == pytest.approx(48.8584, abs=1e-5)
    assert meta["gps"]["longitude"] == pytest.approx(2.2945, abs=1e-5)
    assert meta["fetch"]["final_url"] == url
    assert meta["fetch"]["headers"]["Content-Type"].startswith("text/plain")
    log = r["ai_analysis_log"]
    assert event_names(log) == DONE
    details = log[1]["details"]
    assert details["sha256"] == sha and details["mime_type"] == "image/jpeg"
    assert details["deduplicated"] is False
    assert r["downloaded_at"] is not None
    assert files_under(root) == [f"images/{sha[:2]}/{sha}.jpg"]
    assert origin.count("/photo.jpg") == 1


@dataclass(frozen=True)
class Format:
    make: Callable[[], bytes]
    mime: str
    folder: str
    ext: str
    size: tuple[int, int]
    metadata: Mapping[str, Any]
    duration: float | None = None


FORMATS = [
    pytest.param(
        Format(
            lambda: media.png(72, 40), "image/png", "images", "png", (72, 40), {"format": "PNG"}
        ),
        id="png",
    ),
    pytest.param(
        Format(
            lambda: media.animated_gif(frames=4),
            "image/gif",
            "images",
            "gif",
            (64, 48),
            {"format": "GIF", "frame_count": 4, "animated": True},
        ),
        id="animated-gif",
    ),
    pytest.param(
        Format(
            lambda: media.webp(66, 50), "image/webp", "images", "webp", (66, 50), {"format": "WEBP"}
        ),
        id="webp",
    ),
    pytest.param(
        Format(
            lambda: media.mp4(seconds=1.0, width=96, height=64, fps=10),
            "video/mp4",
            "videos",
            "mp4",
            (96, 64),
            {"video_codec": "h264", "fps": 10.0},
            duration=1.0,
        ),
        id="mp4",
    ),
    pytest.param(
        Format(
            lambda: media.webm(seconds=1.0, width=96, height=64, fps=10),
            "video/webm",
            "videos",
            "webm",
            (96, 64),
            {"video_codec": "vp8", "fps": 10.0},
            duration=1.0,
        ),
        id="webm",
    ),
]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_each_format_is_stored_and_probed(
    pool: asyncpg.Pool[Any], db_url: str, origin: Origin, root: Path, fmt: Format
) -> None:
    """Each image and video format lands in its folder with its type, size and metadata."""
    data = fmt.make()
    url = origin.serve(f"/file.{fmt.ext}", data)
    media_id = await insert(pool, url, media_type="video" if fmt.folder == "videos" else "image")

    await download_once(db_url, root)

    r = await row(pool, media_id)
    assert_stored(r, root, data, fmt.folder, fmt.ext)
    assert r["hosted_url"] is None
    assert (r["mime_type"], r["width"], r["height"]) == (fmt.mime, *fmt.size)
    assert fmt.metadata.items() <= r["metadata"].items()
    if fmt.duration is None:
        assert r["duration_seconds"] is None
    else:
        assert r["duration_seconds"] == pytest.approx(fmt.duration, abs=0.15)
    assert event_names(r["ai_analysis_log"]) == DONE
    assert temp_files(root) == []


async def test_same_bytes_from_two_urls_are_one_file(
    pool: asyncpg.Pool[Any], db_url: str, origin: Origin, root: Path
) -> None:
    """The same bytes from two URLs and two posts are stored once; the second is deduplicated."""
    data = media.jpeg(seed=3)
    first = await insert(pool, origin.serve("/a.jpg", data), post_id="post-a")
    await download_once(db_url, root)
    second = await insert(pool, origin.serve("/b.jpg", data), post_id="post-b")
    await download_once(db_url, root)

    r1, r2 = await row(pool, first), await row(pool, second)
    assert_stored(r1, root, data, "images", "jpg")
    assert_stored(r2, root, data, "images", "jpg")
    assert r1["local_file_path"] == r2["local_file_path"]
    assert r1["ai_analysis_log"][1]["details"]["deduplicated"] is False
    assert r2["ai_analysis_log"][1]["details"]["deduplicated"] is True
    sha = r1["sha256_sum"]
    assert files_under(root) == [f"images/{sha[:2]}/{sha}.jpg"]
    assert (origin.count("/a.jpg"), origin.count("/b.jpg")) == (1, 1)


async def test_rows_with_the_same_url_share_one_request(
    pool: asyncpg.Pool[Any], db_url: str, origin: Origin, root: Path
) -> None:
    """Two rows with the same URL downloading at once cost the origin a single request."""
    data = media.jpeg(seed=4)
    url = origin.serve("/shared.jpg", data, content_type="image/jpeg")
    ids = [await insert(pool, url, post_id=f"post-{i}") for i in range(2)]

    await download_once(db_url, root)

    assert origin.count("/shared.jpg") == 1
    rows = [await row(pool, media_id) for media_id in ids]
    for r in rows:
        assert_stored(r, root, data, "images", "jpg")
        assert event_names(r["ai_analysis_log"]) == DONE
    assert len(files_under(root)) == 1


async def test_five_redirects_are_followed_and_six_are_refused(
    pool: asyncpg.Pool[Any], db_url: str, origin: Origin, root: Path
) -> None:
    """A chain of five redirects reaches the file; a chain of six fails too_many_redirects."""
    data = media.jpeg(seed=5)
    for chain, length in (("five", 5), ("six", 6)):
        for n in range(1, length + 1):
            origin.route(f"/{chain}/{n}", redirect(f"/{chain}/{n - 1}"))
        origin.serve(f"/{chain}/0", data, content_type="image/jpeg")
    five = await insert(pool, origin.url("/five/5"))
    six = await insert(pool, origin.url("/six/6"))

    await download_once(db_url, root)

    r = await row(pool, five)
    assert_stored(r, root, data, "images", "jpg")
    assert r["metadata"]["fetch"]["final_url"] == origin.url("/five/0")
    assert origin.count("/five/0") == 1
    bad = await row(pool, six)
    assert (bad["download_status"], bad["error_code"]) == ("failed", "too_many_redirects")
    assert [p for p in origin.paths() if p.startswith("/six/")] == [
        f"/six/{n}" for n in range(6, 0, -1)
    ]
    assert temp_files(root) == []


async def test_a_unicode_url_is_fetched_percent_encoded(
    pool: asyncpg.Pool[Any], db_url: str, origin: Origin, root: Path
) -> None:
    """A URL with non-ASCII characters in its path is sent percent-encoded (UTF-8) and stored."""
    data = media.jpeg(seed=6)
    origin.serve("/imägé.jpg", data, content_type="image/jpeg")
    media_id = await insert(pool, origin.url("/imägé.jpg"))

    await download_once(db_url, root)

    assert_stored(await row(pool, media_id), root, data, "images", "jpg")
    [seen] = origin.requests
    assert seen.raw_path == "/im%C3%A4g%C3%A9.jpg"


async def test_the_best_variant_is_fetched(
    pool: asyncpg.Pool[Any], db_url: str, origin: Origin, root: Path
) -> None:
    """Of a row's variants, the highest-bitrate MP4 is fetched and recorded, not the manifest."""
    low = media.mp4(seconds=0.5, width=32, height=24, seed=1)
    high = media.mp4(seconds=0.5, width=128, height=96, seed=2)
    origin.serve("/low.mp4", low, content_type="video/mp4")
    high_url = origin.serve("/high.mp4", high, content_type="video/mp4")
    origin.serve("/pl.m3u8", b"#EXTM3U\n", content_type="application/x-mpegURL")
    variants: list[dict[str, Any]] = [
        {"url": origin.url("/low.mp4"), "bitrate": 100, "content_type": "video/mp4"},
        {"url": high_url, "bitrate": 2_000_000, "content_type": "video/mp4"},
        {"url": origin.url("/pl.m3u8"), "content_type": "application/x-mpegURL"},
    ]
    media_id = await insert(pool, origin.url("/low.mp4"), media_type="video", variants=variants)

    await download_once(db_url, root)

    assert origin.paths() == ["/high.mp4"]
    r = await row(pool, media_id)
    assert_stored(r, root, high, "videos", "mp4")
    assert (r["width"], r["height"]) == (128, 96)
    assert r["metadata"]["fetch"]["url"] == high_url
    assert r["ai_analysis_log"][1]["details"]["source_url"] == high_url
    assert r["variants"] == variants


async def test_twitter_candidates_fall_back_to_the_next_size(
    origin: Origin, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the best candidate size is missing (404), the Downloader stores the next one."""
    large = media.jpeg(96, 72, seed=8)
    origin.route("/media/orig", status(404))
    large_url = origin.serve("/media/large", large, content_type="image/jpeg")
    candidates = [origin.url("/media/orig"), large_url]
    monkeypatch.setattr("mediad.stages.download.platforms.candidate_urls", lambda url: candidates)
    connector = ssrf.make_connector(ssrf.parse_networks([ALLOWED]), limit=4, limit_per_host=2)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        DecoderPool.open(make_config().media) as decoder_pool,
    ):
        downloader = download.Downloader(
            Store(root, None),
            Fetcher(session, max_file_size=10_000_000, total_timeout=30),
            decoder_pool,
        )
        result = await downloader.process(
            Row(
                media_id="med-twitter",
                attempt=1,
                media_url="https://pbs.twimg.com/media/ABC123?format=jpg&name=small",
                media_type="photo",
            )
        )

    assert origin.paths() == ["/media/orig", "/media/large"]
    path = stored_path(root, large, "images", "jpg")
    assert result.columns["local_file_path"] == str(path)
    assert result.columns["sha256_sum"] == hashlib.sha256(large).hexdigest()
    assert (result.columns["width"], result.columns["height"]) == (96, 72)
    assert result.details["source_url"] == large_url
    assert path.read_bytes() == large
    assert files_under(root) == [path.relative_to(root).as_posix()]


@contextlib.asynccontextmanager
async def downloading_on_demand(
    root: Path,
) -> AsyncIterator[tuple[download.Downloader, DecoderPool]]:
    """A Downloader on a real session and store, with a decoder pool that starts its workers
    only when asked (as the daemon's does), to see when it starts."""
    connector = ssrf.make_connector(ssrf.parse_networks([ALLOWED]), limit=4, limit_per_host=2)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        DecoderPool.open(make_config().media, start=False) as decoder_pool,
    ):
        fetcher = Fetcher(session, max_file_size=10_000_000, total_timeout=60)
        yield download.Downloader(Store(root, None), fetcher, decoder_pool), decoder_pool


async def test_a_photo_held_in_memory_is_proven_without_a_decoder_worker(
    origin: Origin, root: Path
) -> None:
    """A JPEG small enough to be held whole is walked in the daemon itself (pure Python, no
    decoder): the decoder pool, started on demand, never starts for it. A PNG still goes to a
    decoder worker, where Pillow decodes it."""
    photo = media.jpeg_with_exif(80, 60, orientation=6)
    picture = media.png(40, 30)
    photo_url = origin.serve("/photo", photo, content_type="image/jpeg")
    picture_url = origin.serve("/picture", picture, content_type="image/png")
    async with downloading_on_demand(root) as (downloader, decoder_pool):
        stored_photo = await downloader.process(
            Row(media_id="med-photo", attempt=1, media_url=photo_url, media_type="photo")
        )
        assert (decoder_pool.stats.tasks, decoder_pool.worker_pids) == (0, [])
        stored_picture = await downloader.process(
            Row(media_id="med-picture", attempt=1, media_url=picture_url, media_type="photo")
        )
        assert decoder_pool.stats.tasks >= 1

    assert (stored_photo.columns["width"], stored_photo.columns["height"]) == (60, 80)  # turned
    assert stored_photo.metadata["camera_make"] == "Canon"
    assert stored_photo.metadata["format"] == "JPEG"
    assert stored_picture.columns["mime_type"] == "image/png"
    assert stored_path(root, photo, "images", "jpg").read_bytes() == photo
    assert temp_files(root) == []


async def test_a_body_too_big_to_hold_starts_the_decoders_while_it_downloads(
    origin: Origin, root: Path
) -> None:
    """A body past fetch.MEMORY_LIMIT goes to disk and is proven in a decoder worker once it is
    whole; the workers start while it still downloads, not after (a second of imports)."""
    big = media.sized_jpeg(3_000_000)
    first = fetch.MEMORY_LIMIT + 400_000  # sent before the origin stalls: on disk by then
    go_on = asyncio.Event()

    async def stalling(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = len(big)
        await resp.prepare(request)
        await resp.write(big[:first])
        await go_on.wait()
        await resp.write(big[first:])
        return resp

    url = origin.route("/big.jpg", stalling)
    async with downloading_on_demand(root) as (downloader, decoder_pool):
        downloading = asyncio.create_task(
            downloader.process(
                Row(media_id="med-big", attempt=1, media_url=url, media_type="photo")
            )
        )

        async def warming() -> bool:
            return decoder_pool._starting_all is not None

        await wait_for(warming, within=30)
        starting = decoder_pool._starting_all
        assert starting is not None
        await starting
        assert len(decoder_pool.worker_pids) == 2 and not downloading.done()
        go_on.set()
        stored = await downloading

    assert stored.columns["sha256_sum"] == hashlib.sha256(big).hexdigest()
    assert stored_path(root, big, "images", "jpg").read_bytes() == big


# --- retries ------------------------------------------------------------------------------------


async def test_a_5xx_is_retried_then_completes(
    pool: asyncpg.Pool[Any], db_url: str, origin: Origin, root: Path
) -> None:
    """HTTP 500 schedules a retry (http_5xx); once due, the next attempt completes the row."""
    data = media.jpeg(seed=9)
    url = origin.route("/flaky.jpg", status(500), body(data, content_type="image/jpeg"))
    media_id = await insert(pool, url)

    await download_once(db_url, root)
    r = await row(pool, media_id)
    assert (r["download_status"], r["error_code"], r["download_attempts"]) == (
        "not_started",
        "http_5xx",
        1,
    )
    assert event_names(r["ai_analysis_log"]) == ["download_started", "retry_scheduled"]
    assert files_under(root) == []

    await fast_forward(pool)
    await download_once(db_url, root)
    r = await row(pool, media_id)
    assert_stored(r, root, data, "images", "jpg")
    assert r["download_attempts"] == 2
    assert event_names(r["ai_analysis_log"]) == ["download_started", "retry_scheduled", *DONE]
    assert origin.count("/flaky.jpg") == 2


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [
        pytest.param("120", 120, 120, id="seconds"),
        pytest.param("http-date", 590, 600, id="http-date"),
    ],
)
async def test_429_honours_retry_after(
    pool: asyncpg.Pool[Any],
    db_url: str,
    origin: Origin,
    root: Path,
    retry_after: str,
    low: float,
    high: float,
) -> None:
    """A 429 is rate_limited, retried no sooner than its Retry-After (seconds or HTTP date)."""
    if retry_after == "http-date":
        when = datetime.now(UTC) + timedelta(seconds=600)
        retry_after = email.utils.format_datetime(when, usegmt=True)
    url = origin.route("/busy.jpg", status(429, {"Retry-After": retry_after}))
    media_id = await insert(pool, url)

    await download_once(db_url, root)

    r = await row(pool, media_id)
    assert (r["download_status"], r["error_code"]) == ("not_started", "rate_limited")
    last = r["ai_analysis_log"][-1]
    assert last["event"] == "retry_scheduled"
    assert low <= last["details"]["retry_in_seconds"] <= high
    assert files_under(root) == []


# --- failures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    # Sets up the origin and returns the row's URL.
    setup: Callable[[Origin], str]
    error_codes: frozenset[str]
    permanent: bool = True
    media_type: str = "image"
    overrides: Mapping[str, str] = field(default_factory=dict)
    # Paths the origin must have seen, in order; None: do not check.
    requests: list[str] | None = None


def _jpeg() -> bytes:
    return media.jpeg(160, 120, seed=11)


def _html(o: Origin) -> str:
    page = b"<!DOCTYPE html><html><head><title>Log in</title></head><body>no</body></html>"
    return o.serve("/x.jpg", page, content_type="image/jpeg")


def _garbage(o: Origin) -> str:
    noise = random.Random(12).randbytes(20_000)
    return o.serve("/x.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + noise, content_type="image/jpeg")


def _zero_tail(o: Origin) -> str:
    """A whole-length body whose tail is zeros (a CDN's hole): it decodes, but is not whole."""
    data = bytearray(_jpeg())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)
    return o.serve("/x.jpg", bytes(data), content_type="image/jpeg")


def _redirect_loop(o: Origin) -> str:
    o.route("/a", redirect("/b"))
    return o.route("/b", redirect("/a"))


def _redirect_to(target: str) -> Callable[[Origin], str]:
    def setup(o: Origin) -> str:
        o.serve("/x.jpg", _jpeg(), content_type="image/jpeg")
        return o.route("/hop", redirect(target.format(port=o.port)))

    return setup


def _direct(target: str) -> Callable[[Origin], str]:
    def setup(o: Origin) -> str:
        o.serve("/x.jpg", _jpeg(), content_type="image/jpeg")
        return target.format(port=o.port)

    return setup


def _code(*codes: str) -> frozenset[str]:
    return frozenset(codes)


FAILURES = [
    pytest.param(
        Failure(lambda o: o.route("/x.jpg", status(404)), _code("http_404"), requests=["/x.jpg"]),
        id="404",
    ),
    pytest.param(Failure(lambda o: o.route("/x.jpg", status(410)), _code("http_410")), id="410"),
    pytest.param(Failure(lambda o: o.route("/x.jpg", status(400)), _code("http_4xx")), id="400"),
    pytest.param(
        Failure(
            lambda o: o.route("/x.jpg", stalled(o, _jpeg(), send=1000)),
            _code("timeout"),
            permanent=False,
            overrides={"download_read_timeout": "300ms"},
        ),
        id="slow-body",
    ),
    pytest.param(
        Failure(
            lambda o: o.route("/x.jpg", truncated(_jpeg(), send=2000)),
            _code("truncated"),
            permanent=False,
        ),
        id="truncated-body",
    ),
    pytest.param(
        Failure(
            lambda o: o.serve("/x.jpg", media.jpeg(256, 256, seed=13), content_type="image/jpeg"),
            _code("too_large"),
            overrides={"storage_max_file_size": "10kB"},
        ),
        id="too-large-content-length",
    ),
    pytest.param(
        Failure(
            lambda o: o.route("/x.jpg", chunked(media.jpeg(256, 256, seed=13), chunk=4096)),
            _code("too_large"),
            overrides={"storage_max_file_size": "10kB"},
        ),
        id="too-large-chunked",
    ),
    pytest.param(Failure(_html, _code("not_media")), id="html-as-jpeg"),
    pytest.param(
        Failure(lambda o: o.serve("/x.jpg", b"", content_type="image/jpeg"), _code("not_media")),
        id="empty-body",
    ),
    pytest.param(
        Failure(
            lambda o: o.serve("/x.jpg", b'{"error": "not found"}', content_type="application/json"),
            _code("not_media"),
        ),
        id="json",
    ),
    pytest.param(
        Failure(
            lambda o: o.serve("/x.jpg", _jpeg()[:1500], content_type="image/jpeg"),
            _code("corrupt_media"),
        ),
        id="cut-jpeg",
    ),
    pytest.param(Failure(_garbage, _code("corrupt_media")), id="garbage-jpeg"),
    pytest.param(Failure(_zero_tail, _code("corrupt_media")), id="zero-tail-jpeg"),
    pytest.param(
        Failure(
            _redirect_loop,
            _code("too_many_redirects"),
            requests=["/b", "/a"],
        ),
        id="redirect-loop",
    ),
    pytest.param(
        Failure(
            _redirect_to("http://127.0.0.2:{port}/x.jpg"),
            _code("blocked_address"),
            requests=["/hop"],
        ),
        id="redirect-to-127.0.0.2",
    ),
    pytest.param(
        Failure(
            _redirect_to("http://[::1]:{port}/x.jpg"), _code("blocked_address"), requests=["/hop"]
        ),
        id="redirect-to-ipv6-loopback",
    ),
    pytest.param(
        Failure(
            _redirect_to("http://[::ffff:127.0.0.2]:{port}/x.jpg"),
            _code("blocked_address"),
            requests=["/hop"],
        ),
        id="redirect-to-ipv4-mapped",
    ),
    pytest.param(
        Failure(_direct("http://127.0.0.2:{port}/x.jpg"), _code("blocked_address"), requests=[]),
        id="direct-127.0.0.2",
    ),
    pytest.param(
        Failure(
            _direct("http://2130706434:{port}/x.jpg"),
            _code("blocked_address", "bad_url"),
            requests=[],
        ),
        id="direct-integer-host",
    ),
    pytest.param(Failure(lambda o: "", _code("bad_url"), requests=[]), id="empty-url"),
    pytest.param(
        Failure(lambda o: "ftp://127.0.0.1/x.jpg", _code("bad_url"), requests=[]), id="ftp"
    ),
    pytest.param(
        Failure(lambda o: o.url("/x.jpg?pad=" + "a" * 10_000), _code("bad_url"), requests=[]),
        id="10kB-url",
    ),
    pytest.param(
        Failure(
            lambda o: o.serve("/x.jpg", _jpeg(), content_type="image/jpeg"),
            _code("bad_media_type"),
            media_type="sticker",
            requests=[],
        ),
        id="sticker",
    ),
]


@pytest.mark.parametrize("case", FAILURES)
async def test_failures_are_classified_and_leave_no_file(
    pool: asyncpg.Pool[Any], db_url: str, origin: Origin, root: Path, case: Failure
) -> None:
    """Each hostile answer or bad row ends in its error_code, permanent or retried, no file left."""
    media_id = await insert(pool, case.setup(origin), media_type=case.media_type)

    await download_once(db_url, root, **case.overrides)

    r = await row(pool, media_id)
    assert r["error_code"] in case.error_codes, r["last_error"]
    assert r["download_attempts"] == 1
    assert r["local_file_path"] is None and r["sha256_sum"] is None
    log = r["ai_analysis_log"]
    if case.permanent:
        assert r["download_status"] == "failed"
        assert event_names(log) == ["download_started", "download_failed"]
    else:
        assert r["download_status"] == "not_started"
        assert event_names(log) == ["download_started", "retry_scheduled"]
    assert log[-1]["details"]["error_code"] == r["error_code"]
    assert log[-1]["details"]["error"]
    assert files_under(root) == [], "no file and no temp file may remain"
    assert origin.off_origin() == [], "a refused address was reached"
    if case.requests is not None:
        assert origin.paths() == case.requests


async def test_an_expired_signed_url_fails_and_a_live_one_retries(
    pool: asyncpg.Pool[Any], db_url: str, origin: Origin, root: Path
) -> None:
    """A 403 past url_expires_at is url_expired (permanent); before it, http_403 (retried)."""
    past = int((datetime.now(UTC) - timedelta(hours=1)).timestamp())
    future = datetime.now(UTC) + timedelta(days=1)
    dead_url = origin.route("/dead.jpg", status(403)) + f"?oe={past:x}&oh=s3cr3tsig"
    live_url = (
        origin.route("/live.jpg", status(403)) + f"?oe={int(future.timestamp()):x}&oh=s3cr3tsig"
    )
    dead = await insert(pool, dead_url, url_expires_at=datetime.fromtimestamp(past, UTC))
    live = await insert(pool, live_url, url_expires_at=future)

    await download_once(db_url, root)

    d, lv = await row(pool, dead), await row(pool, live)
    assert (d["download_status"], d["error_code"]) == ("failed", "url_expired")
    assert event_names(d["ai_analysis_log"]) == ["download_started", "download_failed"]
    assert (lv["download_status"], lv["error_code"]) == ("not_started", "http_403")
    assert event_names(lv["ai_analysis_log"]) == ["download_started", "retry_scheduled"]
    for r in (d, lv):
        assert "s3cr3tsig" not in json.dumps(r["ai_analysis_log"]) + (r["last_error"] or "")
    assert files_under(root) == []


async def test_a_failing_host_defers_its_remaining_rows(
    pool: asyncpg.Pool[Any], db_url: str, origin: Origin, root: Path
) -> None:
    """Once a host's breaker opens, its other rows are deferred without spending an attempt."""
    urls = [origin.route(f"/down/{i}.jpg", status(503)) for i in range(24)]
    ids = [await insert(pool, url, post_id=f"post-{i}") for i, url in enumerate(urls)]

    await download_once(db_url, root)

    burned, deferred = [], []
    for media_id in ids:
        r = await row(pool, media_id)
        assert r["download_status"] == "not_started"
        names = event_names(r["ai_analysis_log"])
        if names == ["download_started", "retry_scheduled"]:
            assert (r["download_attempts"], r["error_code"]) == (1, "http_5xx")
            burned.append(media_id)
        else:
            assert names == ["download_started", "download_deferred"]
            assert r["download_attempts"] == 0
            details = r["ai_analysis_log"][-1]["details"]
            assert details["reason"] == "host_backoff"
            # The first trip's pause: failures of fetches already under way do not lengthen it.
            assert 0 < details["retry_in_seconds"] <= 30
            deferred.append(media_id)
    # The breaker opens after 5 failures; only fetches already under way (at most
    # per_host_concurrency - 1 of them) may still fail after it.
    assert 5 <= len(burned) <= 5 + 4 - 1
    assert len(deferred) == 24 - len(burned)
    assert len(origin.requests) == len(burned)
    assert files_under(root) == []


# --- crashes and full disks ---------------------------------------------------------------------


async def test_a_killed_download_leaves_no_partial_file_and_is_retried(
    pool: asyncpg.Pool[Any], db_url: str, origin: Origin, root: Path, tmp_path: Path
) -> None:
    """A SIGKILL mid-body leaves only a temp file, cleaned at the next start; the row completes.

    The body is big enough to have left memory for a temp file before the kill (a smaller one
    is written only once complete, so a kill leaves nothing of it at all).
    """
    data = media.sized_jpeg(fetch.MEMORY_LIMIT * 3 // 2, seed=14)
    half_sent = asyncio.Event()
    url = origin.route(
        "/big.jpg",
        stalled(origin, data, send=fetch.MEMORY_LIMIT + 500_000, sent=half_sent),
        body(data, content_type="image/jpeg"),
    )
    media_id = await insert(pool, url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAD_")}
    env |= {
        "MEDIAD_HTTP_LISTEN": "",
        "MEDIAD_DATABASE_URL": db_url,
        "MEDIAD_STORAGE_ROOT": str(root),
        "MEDIAD_DOWNLOAD_ALLOWED_NETWORKS": ALLOWED,
        "MEDIAD_LOG_FORMAT": "json",
    }
    with (tmp_path / "daemon.log").open("wb") as output:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mediad",
            "run",
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            # Mid-body, or dead before it got there (then its log says why).
            waiters = {asyncio.ensure_future(proc.wait()), asyncio.ensure_future(half_sent.wait())}
            _, pending = await asyncio.wait(
                waiters, timeout=30, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in pending:
                waiter.cancel()
            assert half_sent.is_set(), (tmp_path / "daemon.log").read_text()

            async def temp_file_exists() -> bool:
                return bool(temp_files(root))

            await wait_for(temp_file_exists)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            await proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "daemon.log").read_text()
    leftovers = temp_files(root)
    assert len(leftovers) == 1
    r = await row(pool, media_id)
    assert (r["download_status"], r["download_attempts"]) == ("started", 1)
    assert [p for p in files_under(root) if not p.startswith(".tmp/")] == []

    # Stand-in for the dead worker's lease lapsing.
    await pool.execute("UPDATE post_media SET download_lease_expires_at = now()")
    await download_once(db_url, root)

    r = await row(pool, media_id)
    assert_stored(r, root, data, "images", "jpg")
    assert r["download_attempts"] == 2
    log = r["ai_analysis_log"]
    assert event_names(log) == ["download_started", *DONE]
    assert log[1]["details"]["attempt"] == 2
    assert "reclaimed_from" in log[1]["details"]
    assert temp_files(root) == []
    assert origin.count("/big.jpg") == 2


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with support.tiny_tmpfs(tmp_path, "256k") as point:
        yield point


async def test_a_full_disk_releases_the_row_without_failing_it(
    pool: asyncpg.Pool[Any], db_url: str, origin: Origin, tiny_tmpfs: Path
) -> None:
    """When the store's disk fills, the row is handed back untouched and the run still exits."""
    root = tiny_tmpfs / "media"
    data = media.sized_jpeg(600_000, seed=15)
    media_id = await insert(pool, origin.serve("/big.jpg", data, content_type="image/jpeg"))

    await download_once(db_url, root)

    r = await row(pool, media_id)
    assert (r["download_status"], r["download_attempts"]) == ("not_started", 0)
    assert r["error_code"] is None
    log = r["ai_analysis_log"]
    assert event_names(log) == ["download_started", "download_released"]
    assert log[-1]["details"]["reason"] == "disk_full"
    assert files_under(root) == []
