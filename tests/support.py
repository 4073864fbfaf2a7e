"""Helpers shared by tests: configs, trivial stages, and running the daemon in-process."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import shutil
import subprocess
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mediad import config, daemon, log, stages
from mediad.resources import Resources
from mediad.stage import Opener, Result, Row, Stage


def make_config(**overrides: str) -> config.Config:
    """A config from defaults plus MEDIAD_* style overrides given as section_key=value; the HTTP
    endpoint is off unless asked for (tests run side by side must not contend for its port)."""
    overrides = {"http_listen": "", **overrides}
    env = {"MEDIAD_" + key.upper(): value for key, value in overrides.items()}
    return config.load(None, env=env)


def clear_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy variable of this machine's environment, in either case, for this test."""
    for name in ("https_proxy", "http_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def trivial_openers(process: Callable[[Row], Awaitable[Result]]) -> dict[str, Opener]:
    """Only a download stage, whose work is `process`, for testing the queue machinery alone."""

    @contextlib.asynccontextmanager
    async def opener(resources: Resources) -> AsyncIterator[Stage]:
        yield Stage.configured(stages.DOWNLOAD, process, resources.config)

    return {"download": opener}


async def noop(row: Row) -> Result:
    return Result(details={"noop": True})


async def run_once(
    url: str, process: Callable[[Row], Awaitable[Result]] = noop, **overrides: str
) -> None:
    """`mediad run --once` in-process, with a trivial download stage."""
    cfg = make_config(**overrides)
    await daemon.run(cfg, once=True, url=url, openers=trivial_openers(process))


@contextlib.asynccontextmanager
async def running_daemon(
    url: str, process: Callable[[Row], Awaitable[Result]], **overrides: str
) -> AsyncIterator[asyncio.Event]:
    """The daemon running in the background until the block ends; yields its stop event."""
    stop = asyncio.Event()
    cfg = make_config(**overrides)
    task = asyncio.create_task(
        daemon.run(cfg, url=url, openers=trivial_openers(process), stop=stop)
    )
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def insert_rows(
    pool: asyncpg.Pool[Any], count: int, *, url: str = "https://cdn.example/{i}.jpg", **extra: Any
) -> list[str]:
    """Insert rows the way a scraper does; returns their media_ids in insertion order."""
    ids = []
    async with pool.acquire() as conn, conn.transaction():
        for i in range(count):
            media_id = await conn.fetchval(
                "INSERT INTO post_media (post_id, media_url, media_type) VALUES ($1, $2, $3)"
                " RETURNING media_id",
                extra.get("post_id", f"post-{i}"),
                url.format(i=i),
                extra.get("media_type", "image"),
            )
            ids.append(media_id)
    return ids


async def insert_urls(pool: asyncpg.Pool[Any], urls: list[str]) -> list[str]:
    """One image row per URL, all of post `p`; their media_ids in order."""
    return [
        await pool.fetchval(
            "INSERT INTO post_media (post_id, media_url, media_type) VALUES ('p', $1, 'image')"
            " RETURNING media_id",
            url,
        )
        for url in urls
    ]


async def row(pool: asyncpg.Pool[Any], media_id: str) -> Mapping[str, Any]:
    record = await pool.fetchrow("SELECT * FROM post_media WHERE media_id = $1", media_id)
    assert record is not None
    return dict(record)


def event_names(log: list[dict[str, Any]]) -> list[str]:
    return [entry["event"] for entry in log]


async def wait_for(predicate: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Wait until a condition held by another process (the database) is true, or fail.

    There is no event to await across processes, so the condition is re-read every 20 ms;
    the test moves on the moment it holds.
    """
    async with asyncio.timeout(within):
        while not await predicate():  # noqa: ASYNC110 - the state lives in PostgreSQL
            await asyncio.sleep(0.02)


@contextlib.contextmanager
def tiny_tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A real, nearly full-able filesystem of `size` mounted at `directory/tiny` (root only)."""
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        pytest.skip("mounting a tmpfs needs root")
    point = directory / "tiny"
    point.mkdir()
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs not permitted: {done.stderr.decode().strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


@contextlib.contextmanager
def captured_log(format: str = "json") -> Iterator[io.StringIO]:
    """mediad's logs, set up as `log.format` = `format` does, into a buffer; the root logger and
    warnings are restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        log.configure(format, "info", stream=stream)
        try:
            yield stream
        finally:
            logging.captureWarnings(False)
            root.handlers, root.level = handlers, level
