"""An S3 server that lies: a local HTTP proxy in front of a real one (SeaweedFS) that passes every
request through untouched, signature and all, records it, and lets a test rewrite the answers'
headers.

For what no honest server does: a PUT answered with a checksum other than the one sent, a HEAD
that says the object holds other bytes, an answer that proves nothing; and, rewriting nothing,
for seeing every request a client sends, whatever library sends it.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from tests.s3server import S3Service

# Rewrites an answer's headers in place: (request method, request path, headers).
Rewrite = Callable[[str, str, CIMultiDict[str]], None]
# Answers a request itself instead of passing it on (None: pass it on): (method, path).
Refuse = Callable[[str, str], web.Response | None]

# Hop-by-hop headers, and those aiohttp sets itself for the body it sends.
_NOT_FORWARDED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
)


@dataclass(frozen=True)
class Sent:
    """One request the proxy passed on, as it came."""

    method: str
    path: str
    headers: CIMultiDict[str]


@dataclass
class LyingS3:
    """The proxy's address, and the requests it passed."""

    upstream: S3Service
    endpoint: str
    requests: list[Sent] = field(default_factory=list)

    @property
    def bucket(self) -> str:
        return self.upstream.bucket

    @property
    def methods(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]


def _honest(method: str, path: str, headers: CIMultiDict[str]) -> None:
    """Rewrite nothing."""


def _passing(method: str, path: str) -> None:
    """Refuse nothing."""


@contextlib.asynccontextmanager
async def lying_s3(
    upstream: S3Service,
    rewrite: Rewrite = _honest,
    refuse: Refuse = _passing,
    *,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[LyingS3]:
    """The proxy on a free port of 127.0.0.1 for as long as the block runs; over https with
    the server context `tls`."""
    session = aiohttp.ClientSession(auto_decompress=False)
    proxy = LyingS3(upstream, "")

    async def forward(request: web.Request) -> web.StreamResponse:
        proxy.requests.append(Sent(request.method, request.path, CIMultiDict(request.headers)))
        body = await request.read()
        if (refused := refuse(request.method, request.path)) is not None:
            return refused
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
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    proxy.endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield proxy
    finally:
        await runner.cleanup()
        await session.close()
