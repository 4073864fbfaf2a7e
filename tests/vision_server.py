"""A local HTTP server speaking OpenAI's chat-completions wire protocol, as a vision model would:
it checks the key and the pictures it is sent, and answers as a test scripts it (JSON content
with usage, 429 with Retry-After, 5xx, refusals, bad JSON, cut-off, slow, HTML, huge)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

DEFAULT_FIELDS = {
    "description": "A red square on a plain background.",
    "tags": ["red", "square"],
    "visible_text": "",
    "objects": ["square"],
    "language": None,
}


@dataclass
class Reply:
    """One scripted answer: an HTTP status, headers, and a JSON body or raw text."""

    status: int = 200
    body: Any = None
    text: str | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def completion(
    content: str | None = None,
    *,
    refusal: str | None = None,
    finish_reason: str = "stop",
    prompt_tokens: int = 1200,
    completion_tokens: int = 80,
    choices: bool = True,
) -> Reply:
    """A 200 chat completion; by default its content is the JSON document asked for."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": json.dumps(DEFAULT_FIELDS) if content is None and refusal is None else content,
        "refusal": refusal,
    }
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "vision-test-2026",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]
        if choices
        else [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return Reply(body=body)


def api_error(status: int, code: str, message: str, **headers: str) -> Reply:
    return Reply(
        status=status,
        body={"error": {"message": message, "type": "error", "code": code, "param": None}},
        headers=headers,
    )


@dataclass
class Seen:
    """One request as the server saw it."""

    at: float
    authorization: str | None
    model: str
    response_format: Any
    picture_sizes: list[tuple[int, int]]
    prompt: str


class VisionServer:
    """Answers POST /v1/chat/completions from `replies` in order (then the default answer)."""

    def __init__(self, key: str | None = None, latency: float = 0.0) -> None:
        self.key = key
        # How long every answer takes, as a model's would (a scripted reply adds its own).
        self.latency = latency
        self.replies: deque[Reply] = deque()
        self.seen: list[Seen] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        authorization = request.headers.get("Authorization")
        if self.key is not None and authorization != f"Bearer {self.key}":
            return web.json_response(
                {"error": {"message": "bad key", "type": "invalid_request_error",
                           "code": "invalid_api_key", "param": None}},
                status=401,
            )  # fmt: skip
        body = await request.json()
        sizes = []
        for message in body["messages"]:
            if isinstance(message["content"], list):
                for part in message["content"]:
                    if part["type"] == "image_url":
                        sizes.append(_picture_size(part["image_url"]["url"]))
        system = next(m["content"] for m in body["messages"] if m["role"] == "system")
        self.seen.append(
            Seen(time.time(), authorization, body["model"], body.get("response_format"), sizes,
                 system)
        )  # fmt: skip
        reply = self.replies.popleft() if self.replies else completion()
        if reply.delay or self.latency:
            await asyncio.sleep(reply.delay + self.latency)
        if reply.text is not None:
            return web.Response(
                status=reply.status, text=reply.text, content_type=reply.content_type,
                headers=reply.headers,
            )  # fmt: skip
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _picture_size(url: str) -> tuple[int, int]:
    """The size of a data:image/jpeg;base64 picture; a URL of anything else is a test failure."""
    prefix = "data:image/jpeg;base64,"
    assert url.startswith(prefix), url[:40]
    with Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :]))) as img:
        assert img.format == "JPEG"
        return img.size


async def serving(key: str | None = None) -> AsyncIterator[VisionServer]:
    """A started server, stopped at the end."""
    server = VisionServer(key)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
