"""Fetching one URL into a temporary file of the store, safely and with bounded memory.

Redirects are followed by hand (at most five, http and https only) so every hop is checked;
the SSRF guard in the connector checks every address actually connected. The body streams to
disk, hashed in the same pass, and the size limit stops the transfer the moment it is crossed.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

import aiohttp
from yarl import URL

from mediad import errors
from mediad.net import platforms, ssrf
from mediad.storage.local import TempFile

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 256 * 1024
# A body up to this size is kept in memory until it is complete (nearly every photo): the
# stage then stores it with one thread call. Bodies waiting for a thread hold this much at most.
MEMORY_LIMIT = 2 * 1024 * 1024
# A bigger body is handed to a thread for writing and hashing in slices of this size, so the
# event loop keeps reading other downloads while a core hashes. A body in flight holds about
# three (the chunks being gathered, their join, the slice being written): at 4 MB a big
# download held 12-14 MB more than at 1 MB, at the same speed (benchmarks/download.py).
_BLOCK = 1024 * 1024
_KEPT_HEADERS = ("Content-Type", "Content-Length", "ETag", "Last-Modified")


class HttpStatusError(errors.FetchError):
    """The origin answered with an error status; `status` is the code."""

    def __init__(self, message: str, *, status: int, error_code: str) -> None:
        super().__init__(message, error_code=error_code)
        self.status = status


class PermanentHttpError(HttpStatusError, errors.PermanentFetchError):
    """404, 410, other 4xx, an expired signed URL."""


class TransientHttpError(HttpStatusError, errors.TransientFetchError):
    """5xx, 429, a 403 on a signed URL that has not expired yet."""

    def __init__(
        self, message: str, *, status: int, error_code: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status, error_code=error_code)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Fetched:
    """What the transfer of one URL learned, besides the bytes."""

    url: str
    final_url: str
    headers: dict[str, str]
    seconds: float

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def status_error(
    status: int, url: str, *, expires_at: datetime | None, retry_after: float | None
) -> HttpStatusError:
    """The error for an HTTP error status, classed transient or permanent."""
    where = platforms.redact_url(url)
    expired = expires_at is not None and datetime.now(UTC) >= expires_at
    if status in (403, 410) and expired:
        assert expires_at is not None
        return PermanentHttpError(
            f"HTTP {status} from {where}: the signed URL expired at {expires_at.isoformat()};"
            " re-scrape the post for a fresh URL",
            status=status,
            error_code="url_expired",
        )
    if status == 403 and expires_at is not None:
        # A signed URL still inside its lifetime: the CDN is blocking us for now.
        return TransientHttpError(
            f"HTTP 403 from {where} before the URL's expiry", status=status, error_code="http_403"
        )
    if status == 404:
        return PermanentHttpError(f"HTTP 404 from {where}", status=status, error_code="http_404")
    if status == 410:
        return PermanentHttpError(f"HTTP 410 from {where}", status=status, error_code="http_410")
    if status == 429:
        return TransientHttpError(
            f"HTTP 429 from {where}",
            status=status,
            error_code="rate_limited",
            retry_after=retry_after,
        )
    if status >= 500:
        return TransientHttpError(
            f"HTTP {status} from {where}",
            status=status,
            error_code="http_5xx",
            retry_after=retry_after,
        )
    if status == 408:
        return TransientHttpError(f"HTTP 408 from {where}", status=status, error_code="timeout")
    return PermanentHttpError(f"HTTP {status} from {where}", status=status, error_code="http_4xx")


def check_url(url: str) -> URL:
    """The URL parsed, if it is one we may fetch (absolute http or https with a host)."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise errors.BadRowError(f"unparseable URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        shown = parsed.scheme or "none"
        raise errors.BadRowError(f"URL scheme {shown!r} is not http or https")
    if not parsed.host:
        raise errors.BadRowError("URL has no host")
    return parsed


class Fetcher:
    """Downloads into temp files through one shared, guarded aiohttp session."""

    def __init__(
        self, session: aiohttp.ClientSession, *, max_file_size: int, total_timeout: float
    ) -> None:
        self._session = session
        self._max_size = max_file_size
        self._total_timeout = total_timeout

    async def fetch_into(self, url: str, spool: Spool, *, expires_at: datetime | None) -> Fetched:
        """Stream `url` (following redirects) into `spool`; raise a FetchError on any failure."""
        started = time.monotonic()
        current = check_url(url)
        seen = {str(current)}
        try:
            async with asyncio.timeout(self._total_timeout):
                for _hop in range(MAX_REDIRECTS + 1):
                    async with self._session.get(current, allow_redirects=False) as resp:
                        if resp.status in _REDIRECTS:
                            current = self._next_hop(resp, seen)
                            continue
                        if resp.status >= 300:
                            raise status_error(
                                resp.status,
                                str(resp.url),
                                expires_at=expires_at,
                                retry_after=retry_after_seconds(resp.headers.get("Retry-After")),
                            )
                        await self._stream(resp, spool)
                        headers = {h: resp.headers[h] for h in _KEPT_HEADERS if h in resp.headers}
                        return Fetched(
                            url, str(resp.url), headers, round(time.monotonic() - started, 3)
                        )
                raise errors.PermanentFetchError(
                    f"more than {MAX_REDIRECTS} redirects from {platforms.redact_url(url)}",
                    error_code="too_many_redirects",
                )
        except errors.StageError:
            raise
        except aiohttp.ClientConnectorError as exc:
            blocked = ssrf.blocked_cause(exc)
            if blocked is not None:
                raise blocked from None
            raise _transient("connection_error", f"cannot connect: {exc}") from None
        except aiohttp.InvalidURL as exc:
            raise errors.BadRowError(f"invalid URL: {exc}") from None
        except aiohttp.ClientPayloadError as exc:
            raise _transient("truncated", f"body ended early: {exc}") from None
        except TimeoutError:
            took = time.monotonic() - started
            raise _transient("timeout", f"timed out after {took:.1f}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _transient("connection_error", f"{type(exc).__name__}: {exc}") from None

    def _next_hop(self, resp: aiohttp.ClientResponse, seen: set[str]) -> URL:
        location = resp.headers.get("Location")
        if not location:
            raise errors.PermanentFetchError(
                f"HTTP {resp.status} redirect without a Location", error_code="http_4xx"
            )
        try:
            target = resp.url.join(URL(location))
        except ValueError as exc:
            raise errors.PermanentFetchError(
                f"redirect to an unparseable URL: {exc}", error_code="bad_url"
            ) from None
        if target.scheme not in ("http", "https"):
            raise errors.PermanentFetchError(
                f"redirect to a {target.scheme!r} URL", error_code="bad_url"
            )
        if str(target) in seen:
            raise errors.PermanentFetchError(
                f"redirect loop back to {platforms.redact_url(str(target))}",
                error_code="too_many_redirects",
            )
        seen.add(str(target))
        return target

    async def _stream(self, resp: aiohttp.ClientResponse, spool: Spool) -> None:
        declared = resp.content_length
        if declared is not None and declared > self._max_size:
            raise _too_large(f"Content-Length {declared} exceeds", self._max_size)
        total = 0
        async for chunk in resp.content.iter_chunked(_CHUNK):
            total += len(chunk)
            if total > self._max_size:
                raise _too_large(f"body passed {total} bytes, over", self._max_size)
            await spool.write(chunk)
        if declared is not None and total < declared:
            raise _transient("truncated", f"body ended at {total} of {declared} bytes")


class Spool:
    """A body on its way in: kept in memory while it is small, spilled to a temp file of the
    store once it passes `memory_limit` bytes.

    Most media (photos) end in memory: the stage then writes, hashes, probes and commits each
    in a single thread call, and no temp file exists while the network is slow. A bigger body
    goes to disk in blocks of `block` bytes, each written and hashed in a thread while the next
    one is read: the network and the hashing overlap, and at most two blocks are held in
    memory. Use it as an async context manager: a temp file it did not hand over is deleted.
    """

    def __init__(
        self,
        open_temp: Callable[[], Awaitable[TempFile]],
        *,
        memory_limit: int = MEMORY_LIMIT,
        block: int = _BLOCK,
    ) -> None:
        self._open_temp = open_temp
        self._limit = memory_limit
        self._block = block
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._tmp: TempFile | None = None
        self._writing: asyncio.Future[None] | None = None

    async def write(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size < (self._limit if self._tmp is None else self._block):
            return
        block = b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        if self._tmp is None:
            self._tmp = await _opened(self._open_temp())
        if self._writing is not None:
            await self._writing
        self._writing = asyncio.ensure_future(asyncio.to_thread(self._tmp.write, block))

    async def finish(self) -> bytes | TempFile:
        """The whole body: its bytes if it stayed in memory, else the temp file holding it,
        which then belongs to the caller."""
        data = b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        if self._tmp is None:
            return data
        if data:
            if self._writing is not None:
                await self._writing
            self._writing = asyncio.ensure_future(asyncio.to_thread(self._tmp.write, data))
        if self._writing is not None:
            await self._writing
            self._writing = None
        tmp, self._tmp = self._tmp, None
        return tmp

    async def __aenter__(self) -> Spool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pending = []
        if self._writing is not None:
            await _settle(self._writing)
        if self._tmp is not None:
            self._tmp.discard()


async def _opened(opening: Awaitable[TempFile]) -> TempFile:
    """The temp file `opening` (a thread) creates; if we are cancelled meanwhile, it is deleted
    once created instead of leaking until the next start."""
    future = asyncio.ensure_future(opening)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        future.add_done_callback(
            lambda f: f.result().discard() if not f.cancelled() and f.exception() is None else None
        )
        raise


async def _settle(writing: asyncio.Future[None]) -> None:
    """Wait until a thread's write is over, even through a cancellation (re-raised after):
    the temp file must never be discarded while a thread still writes to it."""
    cancelled = False
    while not writing.done():
        try:
            await asyncio.shield(writing)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:
            break
    if not writing.cancelled():
        writing.exception()  # retrieved: the error already on its way out is the one reported
    if cancelled:
        raise asyncio.CancelledError


def _transient(code: str, message: str) -> errors.TransientFetchError:
    return errors.TransientFetchError(message, error_code=code)


def _too_large(what: str, limit: int) -> errors.PermanentFetchError:
    return errors.PermanentFetchError(
        f"{what} the limit of {limit} bytes (storage.max_file_size)", error_code="too_large"
    )
