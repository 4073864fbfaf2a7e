"""What the daemon opens once and hands to its stages: the database pool, the store, the
download HTTP session (behind the SSRF guard), the S3 client, the decoder worker processes,
sessions for operator-configured services, and thread pools. Each is opened the first time
something asks, and everything is closed, in reverse order, when the daemon stops.

The libraries behind them (aiohttp, aiobotocore, the decoder pool's) are imported by the first
to ask as well: the parent of several worker processes holds Resources for its database pool
and store alone, and never pays for them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import structlog

from mediad import db, errors
from mediad.config import Config, MediaConfig
from mediad.net.hostgate import GateClient
from mediad.net.hostlimits import HostLimits, LocalHostLimits
from mediad.storage.local import Store

if TYPE_CHECKING:
    import aiohttp

    from mediad.media.decoders import DecoderPool
    from mediad.storage import s3

log = structlog.get_logger(__name__)
_T = TypeVar("_T")


class Resources:
    """One of each for the daemon's life; see the module docstring."""

    def __init__(
        self,
        config: Config,
        url: str,
        pool: asyncpg.Pool[Any],
        store: Store,
        owner: str,
        stack: contextlib.AsyncExitStack,
        host_gate: str | None = None,
        decode_lock: str | None = None,
    ) -> None:
        self.config = config
        # The database's URL (the LISTEN connection is a connection of its own).
        self.url = url
        self.pool = pool
        self.store = store
        # This process's name in leases and events.
        self.owner = owner
        self._stack = stack
        # The unix socket of the parent's host gate when this is one of several worker processes
        # (mediad/supervisor.py); None: this process holds its own per-host limits.
        self._host_gate = host_gate
        # The file the parent's workers lock in turn to run an oversized decode (decoders.py);
        # None: this process is the host's only one.
        self._decode_lock = decode_lock
        self._opened: dict[str, Any] = {}
        self._opening = asyncio.Lock()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        config: Config,
        url: str,
        owner: str,
        pool_size: int,
        host_gate: str | None = None,
        decode_lock: str | None = None,
    ) -> AsyncIterator[Resources]:
        """The database pool and the store now; the rest on first use; all closed at the end."""
        async with contextlib.AsyncExitStack() as stack:
            pool = await db.create_pool(url, max_size=pool_size)
            stack.push_async_callback(pool.close)
            store = await asyncio.to_thread(Store.from_config, config.storage)
            removed = await asyncio.to_thread(store.clean_temp)
            if removed:
                log.info("temp_files_removed", count=removed)
            yield cls(config, url, pool, store, owner, stack, host_gate, decode_lock)

    async def _once(self, name: str, opening: Callable[[], Awaitable[_T]]) -> _T:
        async with self._opening:
            if name not in self._opened:
                self._opened[name] = await opening()
            found: _T = self._opened[name]
            return found

    async def _enter(self, manager: AbstractAsyncContextManager[_T]) -> _T:
        return await self._stack.enter_async_context(manager)

    async def http(self) -> aiohttp.ClientSession:
        """The one session for downloads from the internet, every connection checked by the
        SSRF guard."""
        return await self._once("http", lambda: self._enter(self._download_session()))

    def _download_session(self) -> aiohttp.ClientSession:
        import aiohttp

        from mediad.net import ssrf

        download = self.config.download
        try:
            allowed = ssrf.parse_networks(download.allowed_networks)
        except ValueError as exc:
            raise errors.ConfigError(f"download.allowed_networks: {exc}") from None
        connector = ssrf.make_connector(
            allowed, limit=download.concurrency, limit_per_host=download.per_host_concurrency
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=download.connect_timeout, sock_read=download.read_timeout
            ),
            headers={"User-Agent": download.user_agent, "Accept-Encoding": "identity"},
            auto_decompress=False,
            trust_env=False,  # a proxy would make the SSRF guard check the proxy, not the origin
        )

    async def host_limits(self) -> HostLimits:
        """Per-host fetch slots and the host circuit breaker: the parent's, shared by every
        worker process of the host, or this process's own."""
        if self._host_gate is None:
            limits = LocalHostLimits(self.config.download.per_host_concurrency)
            return await self._once("host_limits", lambda: _ready(limits))
        gate = self._host_gate
        return await self._once("host_limits", lambda: self._enter(GateClient.connected(gate)))

    async def s3(self) -> s3.S3:
        """The one S3 client (archive.*); aiobotocore is imported only now (~0.3 s)."""
        from mediad.storage import s3

        return await self._once("s3", lambda: self._enter(s3.open_client(self.config.archive)))

    async def decoders(self, name: str = "media", config: MediaConfig | None = None) -> DecoderPool:
        """The worker processes decodes run in: hostile bytes never reach a decoder inside the
        daemon. `media` (media.*) serves every stage by default; a stage whose decoder needs
        other limits (the local analyser's OCR models) asks for a pool of its own by name."""
        from mediad import stages
        from mediad.media.decoders import DecoderPool

        settings = config or self.config.media
        # The tasks of the stages that are on are imported by the process's one forkserver
        # (every pool's, so every pool names the same), the others by a worker that runs one.
        ready = stages.decoder_tasks(self.config)
        lock = self._decode_lock
        # Its workers start with the first decode, not with the stage that may never decode.
        return await self._once(
            f"decoders:{name}",
            lambda: self._enter(
                DecoderPool.open(settings, ready=ready, host_lock=lock, start=False)
            ),
        )

    async def session(self, **options: Any) -> aiohttp.ClientSession:
        """A session of its own for a service the operator configured (an analysis API): not
        behind the SSRF guard, whose job is the internet's addresses, not the operator's."""
        import aiohttp

        return await self._enter(aiohttp.ClientSession(**options))

    def executor(self, name: str, threads: int) -> concurrent.futures.ThreadPoolExecutor:
        """The thread pool called `name`, made on first use."""
        if name not in self._opened:
            executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix=name)
            # Not waited for: work a cancelled row left running (a commit) ends on its own, and
            # the event loop must not block on it.
            self._stack.callback(executor.shutdown, wait=False)
            self._opened[name] = executor
        found: concurrent.futures.ThreadPoolExecutor = self._opened[name]
        return found


async def _ready(value: _T) -> _T:
    return value
