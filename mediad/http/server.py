"""The HTTP endpoint inside `mediad run` (http.listen): /metrics, /healthz, /readyz, and the
read-only dashboard with its JSON API (pages.py).

It shares the daemon's event loop but never its stages' resources: it has its own two database
connections, its own accept loop, and at most http.max_connections connections at once (the
rest wait in the kernel's backlog, costing neither descriptors nor CPU), each closed after
http.idle_timeout of silence. Bound to loopback by default; on any other address every request
needs the bearer token of $MEDIAD_HTTP_TOKEN.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mediad import db, errors, health
from mediad.config import Config, HttpConfig
from mediad.db import DB_ERRORS
from mediad.http import collectors, pages
from mediad.http.access import check_access
from mediad.pool import StagePool
from mediad.queries import Registry
from mediad.resources import Resources

log = structlog.get_logger(__name__)

_READY_TIMEOUT = 2.0
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _authorization(token: str | None) -> Any:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def authorize(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if token is not None:
            given = request.headers.get("Authorization", "").encode()
            # Constant time, so the token cannot be guessed a byte at a time from timings.
            if not hmac.compare_digest(given, expected):
                return web.Response(
                    status=401,
                    text="401: this endpoint needs Authorization: Bearer $MEDIAD_HTTP_TOKEN\n",
                    headers={"WWW-Authenticate": 'Bearer realm="mediad"'},
                )
        response = await handler(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    return authorize


@web.middleware
async def _database_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """A page whose query the database cannot answer says so (503); the daemon carries on."""
    try:
        return await handler(request)
    except (*DB_ERRORS, errors.DatabaseError) as exc:
        log.warning("http_database_error", path=request.path, error=str(exc))
        return web.Response(status=503, text=f"503: the database does not answer: {exc}\n")


class Endpoint:
    """The routes that are not the dashboard's: /metrics, /healthz, /readyz."""

    def __init__(
        self,
        config: Config,
        pool: asyncpg.Pool[Any],
        counts: collectors.CountsCache,
        store_sizes: collectors.StoreCollector,
        pools: Sequence[StagePool],
    ) -> None:
        self._config = config
        self._pool = pool
        self._counts = counts
        self._store_sizes = store_sizes
        self._pools = pools
        self._exposition = collectors.Exposition(
            [collectors.RowsCollector(counts), store_sizes, collectors.PoolsCollector(pools)]
        )

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/metrics", self.metrics),
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
        ]

    async def metrics(self, _request: web.Request) -> web.Response:
        await asyncio.gather(self._counts.fresh(), self._store_sizes.fresh())
        body = generate_latest(self._exposition)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, _request: web.Request) -> web.Response:
        stuck = health.stuck_stages(self._pools, self._config.daemon)
        if stuck:
            return web.Response(status=503, text=f"stuck: {', '.join(stuck)}\n")
        return web.Response(text="ok\n")

    async def readyz(self, _request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(self._pool.fetchval("SELECT 1"), _READY_TIMEOUT)
        except (*DB_ERRORS, errors.DatabaseError) as exc:
            return web.Response(status=503, text=f"the database does not answer: {exc}\n")
        return web.Response(text="ok\n")


class _Connection(RequestHandler):
    """aiohttp's handler of one connection, giving its slot back when the connection ends."""

    __slots__ = ("_release",)

    def __init__(self, manager: web.Server, release: Callable[[], None], **options: Any) -> None:
        super().__init__(manager, **options)
        self._release: Callable[[], None] | None = release

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if self._release is not None:
            release, self._release = self._release, None
            release()


async def _accept(sock: socket.socket, server: web.Server, http: HttpConfig) -> None:
    """Accept connections while fewer than max_connections are open; hand each to aiohttp."""
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(http.max_connections)
    while True:
        await slots.acquire()
        try:
            conn, _ = await loop.sock_accept(sock)
        except OSError as exc:
            # Out of descriptors (EMFILE): the stages' work frees some; try again in a moment.
            slots.release()
            log.warning("http_accept_failed", error=str(exc))
            await asyncio.sleep(1.0)
            continue
        handler = _Connection(
            server,
            slots.release,
            loop=loop,
            keepalive_timeout=http.idle_timeout,
            access_log=None,
            timeout_ceil_threshold=1,
        )
        try:
            await loop.connect_accepted_socket(lambda handler=handler: handler, conn)  # type: ignore[misc]
        except OSError:
            conn.close()
            slots.release()


def _listen(http: HttpConfig) -> socket.socket:
    assert http.listen is not None
    host, port = http.listen
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise errors.ConfigError(f"http.listen: cannot listen on {host}:{port}: {exc}") from None
    return sock


@contextlib.asynccontextmanager
async def serving(
    resources: Resources, url: str, registry: Registry, pools: Sequence[StagePool]
) -> AsyncIterator[str | None]:
    """Serve http.listen until the block ends; yields the base URL (None when http is off)."""
    config = resources.config
    http = config.http
    if http.listen is None:
        yield None
        return
    token = check_access(http)
    sock = _listen(http)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(sock.close)
        # Its own connections: a slow dashboard query never holds one a stage needs.
        pool = await db.create_pool(url, min_size=0, max_size=2)
        stack.push_async_callback(pool.close)
        counts = collectors.CountsCache(pool, registry, http.counts_max_age)
        stack.push_async_callback(counts.close)
        store_sizes = collectors.StoreCollector(resources.store, config.storage.evict_interval)
        stack.push_async_callback(store_sizes.close)
        app = web.Application(middlewares=[_authorization(token), _database_errors])
        app.add_routes(Endpoint(config, pool, counts, store_sizes, pools).routes())
        app.add_routes(pages.Dashboard(resources, pool, counts, registry).routes())
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        assert runner.server is not None
        acceptor = asyncio.create_task(_accept(sock, runner.server, http), name="http-accept")
        stack.push_async_callback(_cancelled, acceptor)
        host, port = sock.getsockname()[:2]
        base = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
        log.info("http_listening", url=base, token_required=token is not None)
        yield base


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
