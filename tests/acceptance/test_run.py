"""`mediad run` as operators run it: a subprocess speaking systemd's protocol, stopped by signal."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from tests import media
from tests.support import event_names, insert_rows, row, wait_for

JPEG = media.jpeg_with_exif(seed=1)


class Origin:
    """A local HTTP origin: /ok/* answers at once, /hold/* waits until released."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.release: dict[str, asyncio.Event] = {}
        self.arrived: dict[str, asyncio.Event] = {}
        self.url = ""

    def event(self, table: dict[str, asyncio.Event], name: str) -> asyncio.Event:
        return table.setdefault(name, asyncio.Event())

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        kind, _, name = request.path.strip("/").partition("/")
        if kind == "hold":
            self.event(self.arrived, name).set()
            await self.event(self.release, name).wait()
        # Each name its own picture (rows of one name share bytes, as a retry refetches):
        # the seed is the name's own bytes, the same on every run and never another name's.
        body = media.jpeg_with_exif(seed=int.from_bytes(name.encode(), "big"))
        return web.Response(body=body, content_type="image/jpeg")


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    server = Origin()
    app = web.Application()
    app.router.add_get("/{tail:.*}", server.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}"
    yield server
    for event in server.release.values():
        event.set()
    await runner.cleanup()


def daemon_env(db_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAD_")}
    env.update(
        MEDIAD_DATABASE_URL=db_url,
        MEDIAD_STORAGE_ROOT=str(tmp_path / "media"),
        MEDIAD_DOWNLOAD_ALLOWED_NETWORKS="127.0.0.1/32",
        MEDIAD_LOG_FORMAT="json",
        MEDIAD_HTTP_LISTEN="",  # tests that serve HTTP pick their own port
        MEDIAD_CONFIG=str(tmp_path / "absent.toml"),
    )
    env.pop("MEDIAD_CONFIG")
    env.update(extra)
    return env


async def start_daemon(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mediad",
        "run",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


class NotifySocket:
    """The systemd side of sd_notify: a datagram socket collecting what the daemon says."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    async def wait_for(self, prefix: str, within: float = 30.0) -> str:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(within):
            while True:
                for message in self.messages:
                    for line in message.splitlines():
                        if line.startswith(prefix):
                            return line
                data = await loop.sock_recv(self.sock, 4096)
                self.messages.append(data.decode())

    def close(self) -> None:
        self.sock.close()


async def test_sigterm_finishes_in_flight_work_and_releases_the_rest(
    db_url: str, pool: asyncpg.Pool[Any], origin: Origin, tmp_path: Path
) -> None:
    """On SIGTERM the daemon stops claiming, lets work finish within the grace, hands back
    the rest, speaks the systemd protocol throughout, and exits 0."""
    quick = await insert_rows(pool, 3, url=origin.url + "/ok/{i}.jpg")
    [finishing] = await insert_rows(pool, 1, url=origin.url + "/hold/finishing.jpg")
    [stuck] = await insert_rows(pool, 1, url=origin.url + "/hold/stuck.jpg")
    notify = NotifySocket(tmp_path / "notify.sock")
    env = daemon_env(
        db_url,
        tmp_path,
        MEDIAD_DAEMON_SHUTDOWN_GRACE="2s",
        NOTIFY_SOCKET=str(notify.path),
        WATCHDOG_USEC="1000000",
    )
    proc = await start_daemon(env)
    try:
        await notify.wait_for("READY=1")
        await notify.wait_for("WATCHDOG=1")
        await asyncio.wait_for(origin.event(origin.arrived, "finishing.jpg").wait(), 30)
        await asyncio.wait_for(origin.event(origin.arrived, "stuck.jpg").wait(), 30)
        await wait_for(lambda: _all_completed(pool, quick))
        status = await notify.wait_for("STATUS=download:")
        assert "in flight" in status
        proc.send_signal(signal.SIGTERM)
        await notify.wait_for("STOPPING=1")
        origin.event(origin.release, "finishing.jpg").set()
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        notify.close()
    assert proc.returncode == 0, output.decode()
    done, left = await row(pool, finishing), await row(pool, stuck)
    assert done["download_status"] == "completed"
    assert left["download_status"] == "not_started"
    assert left["download_lease_owner"] is None
    assert event_names(left["ai_analysis_log"])[-1] == "download_released"
    # Every log line is one JSON object carrying its context.
    lines = [line for line in output.decode().splitlines() if line.strip()]
    assert lines and all(line.startswith("{") for line in lines), output.decode()
    assert any('"stopping"' in line and "SIGTERM" in line for line in lines)


async def _all_completed(pool: asyncpg.Pool[Any], ids: list[str]) -> bool:
    count = await pool.fetchval(
        "SELECT count(*) FROM post_media"
        " WHERE media_id = ANY($1) AND download_status = 'completed'",
        ids,
    )
    return bool(count == len(ids))


async def test_run_once_drains_and_exits(
    db_url: str, pool: asyncpg.Pool[Any], origin: Origin, tmp_path: Path
) -> None:
    """`mediad run --once` downloads every due row, then exits 0 by itself."""
    ids = await insert_rows(pool, 5, url=origin.url + "/ok/{i}.jpg")
    proc = await start_daemon(daemon_env(db_url, tmp_path), "--once")
    output, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, output.decode()
    assert await _all_completed(pool, ids)
    stored = list((tmp_path / "media" / "images").rglob("*.jpg"))
    assert len(stored) == 5
