"""A real headless Chromium (Debian's `chromium`) driven through the DevTools protocol: load a
page, wait for its load event (every image fetched or failed), and evaluate JavaScript in it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

_LISTENING = re.compile(rb"DevTools listening on (ws://\S+)")


class Browser:
    """One DevTools connection to the browser; each `load` opens a fresh tab."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []

    async def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        await self._ws.send_json(message)
        while True:
            received = await self._ws.receive_json()
            if received.get("id") == message_id:
                if "error" in received:
                    raise RuntimeError(f"{method}: {received['error']}")
                return received.get("result", {})
            self._events.append(received)

    async def _event(self, method: str, session: str) -> dict[str, Any]:
        while True:
            for event in self._events:
                if event.get("method") == method and event.get("sessionId") == session:
                    self._events.remove(event)
                    return event
            self._events.append(await self._ws.receive_json())

    async def load(self, url: str, expression: str) -> Any:
        """Open `url` in a new tab, wait for its load event, return `expression`'s value."""
        target = (await self.call("Target.createTarget", url="about:blank"))["targetId"]
        attached = await self.call("Target.attachToTarget", targetId=target, flatten=True)
        session = attached["sessionId"]
        try:
            await self.call("Page.enable", session)
            await self.call("Page.navigate", session, url=url)
            await self._event("Page.loadEventFired", session)
            result = await self.call(
                "Runtime.evaluate", session, expression=expression, returnByValue=True
            )
            if "exceptionDetails" in result:
                raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
            return result["result"].get("value")
        finally:
            await self.call("Target.closeTarget", targetId=target)


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not installed: apt-get install chromium (make test does)"
    return found


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Browser]:
    """Headless Chromium with a throwaway profile, its DevTools on a free loopback port."""
    command = [
        chromium_binary(), "--headless=new", "--disable-gpu", "--no-first-run",
        "--no-default-browser-check", "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank",
    ]  # fmt: skip
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium's sandbox refuses to run as root
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    drain: asyncio.Task[bytes] | None = None
    try:
        async with asyncio.timeout(60):
            while not (match := _LISTENING.search(line := await proc.stderr.readline())):
                assert line, "chromium exited before its DevTools listened"
        # The rest of its chatter must be read, or a full pipe would stall it.
        drain = asyncio.create_task(proc.stderr.read())
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(match.group(1).decode(), max_msg_size=0) as ws,
        ):
            yield Browser(ws)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            await drain
