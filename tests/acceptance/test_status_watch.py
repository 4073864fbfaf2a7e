"""`mediad status --watch` in a subprocess: plain reports one after another into a pipe, a
redrawn screen on a terminal (a pty), stopped cleanly by Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import pty
import signal
import sys
from typing import Any

import asyncpg

from tests.support import insert_rows

HEADER = "mediad status at "


def _env(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAD_")}
    return env | {"MEDIAD_DATABASE_URL": db_url}


async def _read_until(read: Any, done: Any) -> str:
    """Read chunks with `read()` until `done(text so far)` holds (a minute at most)."""
    text = ""
    async with asyncio.timeout(60):
        while not done(text):
            chunk = await read()
            if not chunk:
                break
            text += chunk.decode(errors="replace")
    return text


async def test_watch_into_a_pipe_prints_plain_reports(db_url: str, pool: asyncpg.Pool[Any]) -> None:
    """Not a terminal: each interval appends one whole report (counts, rates per minute once
    there are two, failures), with no escape code; SIGINT ends it with status 0."""
    await insert_rows(pool, 3)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mediad", "status", "--watch", "--interval", "0.2",
        env=_env(db_url), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        text = await _read_until(
            lambda: proc.stdout.read(4096),
            lambda t: t.count(HEADER) >= 3 and t.endswith("\n\n"),
        )
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err
    assert "\x1b" not in text
    frames = [f for f in text.split(HEADER) if f]
    assert len(frames) >= 3
    assert "download  not_started           3" in frames[0]
    assert "rates per minute: from the next report on" in frames[0]
    assert "rates per minute:\n  download  0.0 completed, 0.0 failed, 0.0 skipped" in frames[1]
    assert "no failures" in frames[1]


async def test_watch_on_a_terminal_redraws_the_screen(db_url: str, pool: asyncpg.Pool[Any]) -> None:
    """On a terminal (a pty) each report clears the screen and draws itself again."""
    await insert_rows(pool, 2)
    leader, follower = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mediad", "status", "--watch", "--interval", "0.2",
        env=_env(db_url), stdout=follower, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    os.close(follower)
    try:
        text = await _read_until(
            lambda: asyncio.to_thread(os.read, leader, 4096),
            lambda t: t.count("\x1b[H\x1b[2J" + HEADER) >= 2,
        )
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        os.close(leader)
    assert proc.returncode == 0, err
    assert text.startswith("\x1b[H\x1b[2J" + HEADER)
    assert "download  not_started           2" in text
