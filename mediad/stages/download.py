"""The download stage: a row's URL becomes a verified, content-addressed file on disk.

validate ▸ pick the best source ▸ fetch (streamed, hashed) ▸ probe ▸ store ▸ record.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import structlog
from yarl import URL

from mediad import errors, metrics, stages
from mediad.media import containers, decoders, kinds, sniff
from mediad.media.info import MAX_IMAGE_PIXELS, MediaInfo
from mediad.net import platforms
from mediad.net.fetch import Fetched, Fetcher, HttpStatusError, Spool, check_url
from mediad.net.hostlimits import HostLimits, LocalHostLimits
from mediad.resources import Resources
from mediad.singleflight import SingleFlight
from mediad.stage import Result, Row, Stage
from mediad.storage.local import Store, StoredFile, TempFile

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

MAX_URL_LENGTH = 8192
# A file's blocking work (write and hash, probe, fsync and link) runs in a thread of the
# stage's own pool. Much of it waits for the disk (fsync) rather than a core, so there are many
# more threads than cores: the cores probe and hash while other threads wait (on 2 cores, 16
# threads stored 5,000 photos 25% faster than 4, and finished rows in bigger batches)...
_THREADS = min(64, 8 * (os.cpu_count() or 2))


@contextlib.asynccontextmanager
async def open_stage(resources: Resources) -> AsyncIterator[Stage]:
    """The download stage on the daemon's HTTP session, store and a thread pool of its own."""
    config = resources.config
    fetcher = Fetcher(
        await resources.http(),
        max_file_size=config.storage.max_file_size,
        total_timeout=config.download.total_timeout,
    )
    downloader = Downloader(
        resources.store,
        fetcher,
        await resources.decoders(),
        await resources.host_limits(),
        executor=resources.executor("mediad-download", _THREADS),
        storage_node=config.storage.node_name,
    )
    yield Stage.configured(stages.DOWNLOAD, downloader.process, config)


@dataclass(frozen=True)
class Downloaded:
    source_url: str
    fetched: Fetched
    info: MediaInfo
    stored: StoredFile


def validate(row: Row) -> str:
    """The URL to start from, or a BadRowError naming what is wrong with the row."""
    if kinds.canonical(row.media_type) is None:
        raise errors.PermanentError(
            f"media_type {row.media_type!r} is not one of {', '.join(sorted(kinds.MEDIA_TYPES))}",
            error_code="bad_media_type",
        )
    url = (row.media_url or "").strip()
    if not url:
        raise errors.BadRowError("media_url is empty")
    if len(url) > MAX_URL_LENGTH:
        raise errors.BadRowError(
            f"media_url is {len(url)} characters; the limit is {MAX_URL_LENGTH}"
        )
    check_url(url)
    return url


def source_url(row: Row, url: str) -> str:
    """The best source: the highest-bitrate variant when the row lists any, else its URL."""
    if isinstance(row.variants, list) and row.variants:
        best = platforms.best_variant([v for v in row.variants if isinstance(v, dict)])
        if best is not None:
            return str(best["url"])
    return url


class Downloader:
    """Turns one row into a stored file; concurrent rows with the same source share one fetch."""

    def __init__(
        self,
        store: Store,
        fetcher: Fetcher,
        decoder_pool: decoders.DecoderPool,
        hosts: HostLimits | None = None,
        *,
        executor: concurrent.futures.Executor | None = None,
        storage_node: str | None = None,
    ) -> None:
        self._store = store
        # Recorded in each row, so the stages that read local files know whose store has it.
        self._storage_node = storage_node
        self._fetcher = fetcher
        self._decoders = decoder_pool
        # Per-host slots and the circuit breaker: this process's own, or the whole host's.
        self._hosts = hosts or LocalHostLimits(per_host=4)
        # The same URL wanted by two rows at once is fetched once.
        self._in_flight: SingleFlight[str, Downloaded] = SingleFlight(
            lambda: errors.TransientFetchError("the shared download was interrupted")
        )
        # Where files' blocking work runs (None: the event loop's default executor); a file
        # waits for one of `_THREADS` slots here, rather than in the executor's queue, so a
        # cancelled row never leaves work queued.
        self._executor = executor
        self._thread_slots = asyncio.Semaphore(_THREADS)

    async def process(self, row: Row) -> Result:
        source = source_url(row, validate(row))
        expires_at = row.url_expires_at or platforms.url_expires_at(source)
        try:
            done = await self._single_flight(source, expires_at)
        except (decoders.DecoderCrashedError, decoders.DecodeTimeoutError) as exc:
            if row.error_code == exc.error_code:
                # Once may be the machine; twice in a row is the file: fail it, never loop.
                raise errors.PermanentError(
                    f"{exc}, on two attempts in a row: the file is not tried again",
                    error_code=exc.error_code,
                ) from None
            raise
        if done.stored.existed:
            metrics.DEDUP_HITS.inc()
        return _result(row, done, expires_at, self._storage_node)

    async def _single_flight(self, source: str, expires_at: datetime | None) -> Downloaded:
        if source in self._in_flight:
            log.info("download_shared", source=platforms.redact_url(source))
        done, _ = await self._in_flight.run(source, lambda: self._download(source, expires_at))
        return done

    async def _download(self, source: str, expires_at: datetime | None) -> Downloaded:
        host = URL(source).host or ""
        candidates = platforms.candidate_urls(source)
        for index, candidate in enumerate(candidates):
            try:
                done = await self._fetch_one(candidate, host, expires_at)
            except HttpStatusError as exc:
                # The best size of a Twitter image may not exist: try the next one down.
                if exc.status in (400, 403, 404) and index + 1 < len(candidates):
                    continue
                self._note_failure(host, exc)
                raise
            except errors.TransientFetchError as exc:
                self._note_failure(host, exc)
                raise
            self._hosts.success(host)
            return done
        raise AssertionError("candidate_urls always returns at least one URL")

    def _note_failure(self, host: str, exc: errors.StageError) -> None:
        if isinstance(exc, errors.TransientError) and self._hosts.failure(host):
            log.warning("host_backing_off", host=host, error_code=exc.error_code)

    async def _fetch_one(self, url: str, host: str, expires_at: datetime | None) -> Downloaded:
        self._check_breaker(host)
        async with Spool(self._open_temp) as spool:
            async with self._hosts.slot(host):
                # Asked again once a slot is free: rows that queued behind a host's failing
                # fetches are deferred instead of failing in turn.
                self._check_breaker(host)
                fetched = await self._fetcher.fetch_into(url, spool, expires_at=expires_at)
            body = await spool.finish()
        metrics.DOWNLOAD_SECONDS.observe(fetched.seconds)
        head = body[: sniff.HEAD_BYTES] if isinstance(body, bytes) else None
        if isinstance(body, bytes) and _sniffed(head) == "image/jpeg":
            # A photo held whole in memory (the commonest file by far): walked, written, hashed
            # and put in its place in one thread call. The walk is pure Python over at most
            # fetch.MEMORY_LIMIT bytes, no decoder (jpeg.py), so it needs no decoder worker.
            async with self._thread_slots:
                info, stored = await self._in_thread(self._store_photo, body)
        else:
            info, stored = await self._probe_and_store(body, head, fetched.content_type)
        metrics.DOWNLOAD_BYTES.inc(stored.size)
        return Downloaded(url, fetched, info, stored)

    def _store_photo(self, data: bytes) -> tuple[MediaInfo, StoredFile]:
        """A JPEG in memory, proven whole and stored (blocking)."""
        # Imported by the first photo: the walk and its EXIF reader, with Pillow's tag tables,
        # take 1.2 MB that a worker fetching none (a video archive's) need not hold.
        from mediad.media import jpeg

        info = jpeg.probe(data, MAX_IMAGE_PIXELS)
        tmp = self._write_temp(data)
        return info, self._store.commit(tmp, info.folder, info.extension)

    async def _probe_and_store(
        self, body: bytes | TempFile, head: bytes | None, declared: str | None
    ) -> tuple[MediaInfo, StoredFile]:
        """Any other file, written (a body in memory) and proven whole in a decoder worker, then
        put in its place."""
        if isinstance(body, bytes):
            async with self._thread_slots:
                tmp = await self._in_thread(self._write_temp, body)
        else:
            tmp = body
        try:
            info = await self._probe(tmp, head, declared)
            async with self._thread_slots:
                stored = await self._in_thread(self._store.commit, tmp, info.folder, info.extension)
        finally:
            if not tmp.committed:
                await self._in_thread(tmp.discard)
        return info, stored

    async def _probe(self, tmp: TempFile, head: bytes | None, declared: str | None) -> MediaInfo:
        """Prove the file whole in a decoder worker, admitted by the memory its decode takes."""
        payload = {"path": str(tmp.path), "declared_type": declared}
        mime = _sniffed(head)
        if mime == "image/jpeg":
            cost = 0  # walked, not decoded (jpeg.py)
        elif mime in containers.FAMILIES:
            cost = decoders.VIDEO_DECODE_BYTES  # the probe decodes its first frames
        else:
            # An image (or not known yet): its header says how much its pixels will take.
            try:
                header = await self._decoders.run("image_header", payload)
            except errors.PermanentError:
                cost = 0  # not a picture Pillow opens: the probe says what it is instead
            else:
                cost = decoders.pixel_bytes(header)
        result = await self._decoders.run("probe", payload, cost_bytes=cost)
        return MediaInfo.from_task(result)

    async def _open_temp(self) -> TempFile:
        # A body too big to hold in memory is proven in a decoder worker once it is whole:
        # their start (a second of imports) overlaps its download instead of following it.
        self._decoders.warm_up()
        # Creating and locking the temp file touches the disk: not on the event loop.
        return await self._in_thread(self._store.open_temp)

    def _in_thread(self, func: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        # run_in_executor rather than to_thread: nothing run here logs, so the copy of the
        # context that to_thread makes for every call would be wasted.
        return asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    def _write_temp(self, data: bytes) -> TempFile:
        """A temp file holding `data`, with its digests (blocking)."""
        tmp = self._store.open_temp()
        try:
            tmp.write(data)
        except BaseException:
            tmp.discard()
            raise
        return tmp

    def _check_breaker(self, host: str) -> None:
        wait = self._hosts.blocked_for(host)
        if wait > 0:
            raise errors.DeferredError(
                f"{host} is backing off after repeated failures",
                error_code="host_backoff",
                delay=wait,
            )


def _sniffed(head: bytes | None) -> str | None:
    """The type the head's magic bytes name, None when unknown here (the probe will say)."""
    if head is None:
        return None
    try:
        return sniff.media_type(head)
    except errors.MediadError:
        return None


def _result(
    row: Row, done: Downloaded, expires_at: datetime | None, storage_node: str | None
) -> Result:
    fetched, info, stored = done.fetched, done.info, done.stored
    fetch_meta: dict[str, Any] = {
        "url": platforms.redact_url(done.source_url),
        "final_url": platforms.redact_url(fetched.final_url),
        "headers": fetched.headers,
        "seconds": fetched.seconds,
    }
    columns: dict[str, Any] = {
        "local_file_path": str(stored.path),
        "hosted_url": stored.hosted_url,
        "md5_sum": stored.md5,
        "sha256_sum": stored.sha256,
        "file_size": stored.size,
        "mime_type": info.mime_type,
        "width": info.width,
        "height": info.height,
        "duration_seconds": info.duration_seconds,
        "storage_node": storage_node,
    }
    if row.url_expires_at is None and expires_at is not None:
        # Only a row without its own expiry takes the one read from the URL.
        columns["url_expires_at"] = expires_at.isoformat()
    details = {
        "file_size": stored.size,
        "mime_type": info.mime_type,
        "sha256": stored.sha256,
        "deduplicated": stored.existed,
        "final_url": fetch_meta["final_url"],
        "seconds": fetched.seconds,
    }
    if done.source_url != row.media_url:
        details["source_url"] = fetch_meta["url"]
    return Result(columns=columns, metadata={**info.metadata, "fetch": fetch_meta}, details=details)
