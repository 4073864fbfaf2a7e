"""A real HTTP origin for tests: aiohttp.web on 127.0.0.1 (port 0), routes set per test, and a
log of every request it received.

Decoy listeners on 127.0.0.2 and [::1], on the same port and serving the same routes, make the
SSRF tests meaningful: a hop the guard failed to refuse would reach them and be logged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DECOYS = ("127.0.0.2", "::1")


@dataclass(frozen=True)
class Seen:
    """One request as the origin received it."""

    method: str
    path: str  # decoded, without the query
    raw_path: str  # as sent on the wire, query included
    local_address: str  # the address it arrived on: 127.0.0.1, or a decoy's


class Origin:
    """The routes a test set (by decoded path) and the requests that arrived."""

    def __init__(self) -> None:
        self.port = 0
        self.decoys: list[str] = []
        self.requests: list[Seen] = []
        # Handlers that hang wait on this; it is set when the origin stops, so none outlives it.
        self.released = asyncio.Event()
        self._routes: dict[str, Handler] = {}
        # Requests being answered now, and the most there ever were at once.
        self.active = 0
        self.most_active = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def route(self, path: str, *handlers: Handler) -> str:
        """Answer `path` with the n-th handler on the n-th request (the last one thereafter)."""
        calls = 0

        async def handle(request: web.Request) -> web.StreamResponse:
            nonlocal calls
            handler = handlers[min(calls, len(handlers) - 1)]
            calls += 1
            return await handler(request)

        self._routes[path] = handle
        return self.url(path)

    def serve(
        self,
        path: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Answer `path` with fixed bytes; returns its URL."""
        return self.route(
            path, body(data, content_type=content_type, status=status, headers=headers)
        )

    def requests_for(self, path: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.path == path]

    def count(self, path: str) -> int:
        return len(self.requests_for(path))

    def paths(self) -> list[str]:
        return [seen.path for seen in self.requests]

    def off_origin(self) -> list[Seen]:
        """Requests that reached a decoy address instead of 127.0.0.1."""
        return [seen for seen in self.requests if seen.local_address != "127.0.0.1"]

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        local = str(sockname[0]) if sockname else "?"
        self.requests.append(Seen(request.method, request.path, request.raw_path, local))
        handler = self._routes.get(request.path)
        if handler is None:
            return web.Response(status=404, text="no such route\n")
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            return await handler(request)
        finally:
            self.active -= 1


def body(
    data: bytes,
    *,
    content_type: str = "application/octet-stream",
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Handler:
    """Fixed bytes with a Content-Length."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=data, status=status, headers={"Content-Type": content_type, **(headers or {})}
        )

    return handle


def slow(data: bytes, seconds: float, *, content_type: str = "image/jpeg") -> Handler:
    """Fixed bytes after `seconds`: an origin far away, so requests overlap."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.Response(body=data, content_type=content_type)

    return handle


def status(code: int, headers: Mapping[str, str] | None = None) -> Handler:
    """An error status with a short text body."""
    return body(f"HTTP {code}\n".encode(), content_type="text/plain", status=code, headers=headers)


def redirect(location: str, code: int = 302) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, headers={"Location": location})

    return handle


def chunked(data: bytes, *, chunk: int = 16 * 1024, content_type: str = "image/jpeg") -> Handler:
    """The bytes with chunked transfer encoding: no Content-Length announces the size."""

    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for start in range(0, len(data), chunk):
            await resp.write(data[start : start + chunk])
        await resp.write_eof()
        return resp

    return handle


def truncated(data: bytes, *, send: int, content_type: str = "image/jpeg") -> Handler:
    """Announces all of `data` in Content-Length, sends `send` bytes, then drops the connection."""

    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        resp.content_length = len(data)
        await resp.prepare(request)
        await resp.write(data[:send])
        assert request.transport is not None
        request.transport.close()
        return resp

    return handle


def stalled(
    origin: Origin,
    data: bytes,
    *,
    send: int,
    sent: asyncio.Event | None = None,
    content_type: str = "image/jpeg",
) -> Handler:
    """Announces all of `data`, sends `send` bytes, sets `sent`, then hangs until shutdown."""

    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        resp.content_length = len(data)
        await resp.prepare(request)
        await resp.write(data[:send])
        if sent is not None:
            sent.set()
        await origin.released.wait()
        return resp

    return handle


@contextlib.asynccontextmanager
async def serving(decoys: Sequence[str] = DECOYS) -> AsyncIterator[Origin]:
    """An origin listening on 127.0.0.1 (and on `decoys` where they can be bound)."""
    origin = Origin()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", origin._dispatch)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        origin.port = int(runner.addresses[0][1])
        for host in decoys:
            try:
                await web.TCPSite(runner, host, origin.port).start()
            except OSError:
                continue  # no such address here, or the port is taken on it
            origin.decoys.append(host)
        yield origin
    finally:
        origin.released.set()
        await runner.cleanup()
