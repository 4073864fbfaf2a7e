"""An S3 server that lies: a local HTTP proxy in front of a real one (SeaweedFS) that passes every
request through untouched, signature and all, and lets a test rewrite the answers' headers.

For what no honest server does: a PUT answered with a checksum other than the one sent, a HEAD
that says the object holds other bytes, an answer that proves nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from tests.s3server import S3Service

# Rewrites an answer's headers in place: (request method, request path, headers).
Rewrite = Callable[[str, str, CIMultiDict[str]], None]

# Hop-by-hop headers, and those aiohttp sets itself for the body it sends.
_NOT_FORWARDED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
)


@dataclass
class LyingS3:
    """The proxy's address, and the requests it passed (method, path)."""

    upstream: S3Service
    endpoint: str
    methods: list[tuple[str, str]] = field(default_factory=list)

    @property
    def bucket(self) -> str:
        return self.upstream.bucket


@contextlib.asynccontextmanager
async def lying_s3(upstream: S3Service, rewrite: Rewrite) -> AsyncIterator[LyingS3]:
    """The proxy on a free port of 127.0.0.1 for as long as the block runs."""
    session = aiohttp.ClientSession(auto_decompress=False)
    proxy = LyingS3(upstream, "")

    async def forward(request: web.Request) -> web.StreamResponse:
        proxy.methods.append((request.method, request.path))
        body = await request.read()
        # Host stays as the client sent (and signed) it; the rest passes as it came.
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        url = URL(upstream.endpoint + request.raw_path, encoded=True)
        async with session.request(
            request.method, url, headers=headers, data=body, allow_redirects=False
        ) as answer:
            payload = await answer.read()
            answered = CIMultiDict(
                (k, v) for k, v in answer.headers.items() if k.lower() not in _NOT_FORWARDED
            )
        rewrite(request.method, request.path, answered)
        if request.method == "HEAD":
            # A HEAD's Content-Length is the object's size, with no body to count it from.
            if answer.content_length is not None:
                answered["Content-Length"] = str(answer.content_length)
            return web.Response(status=answer.status, headers=answered)
        return web.Response(status=answer.status, headers=answered, body=payload)

    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    proxy.endpoint = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield proxy
    finally:
        await runner.cleanup()
        await session.close()
