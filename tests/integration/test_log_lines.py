"""Logs worth tailing: one `row_completed` line per finished row in both formats, and a
`progress` line saying what each stage did and what is due, silent while idle."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mediad import stages
from mediad.pool import StagePool
from mediad.progress_log import Progress
from mediad.queue import StageQueue
from mediad.retry import Backoff
from mediad.stage import Stage
from tests import media
from tests.integration.test_download import download_once, insert
from tests.origin import Origin, serving
from tests.support import captured_log, insert_rows, make_config, noop


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    async with serving() as served:
        yield served


async def test_every_downloaded_row_logs_one_json_line(
    pool: asyncpg.Pool[Any], db_url: str, origin: Origin, tmp_path: Path
) -> None:
    """A real download run logs `row_completed` once per row, with its stage, seconds, bytes and
    whether the bytes were already stored."""
    data = media.jpeg(seed=5)
    first = await insert(pool, origin.serve("/a.jpg", data), post_id="post-a")
    second = await insert(pool, origin.serve("/b.jpg", data), post_id="post-b")
    with captured_log("json") as out:
        await download_once(db_url, tmp_path / "media", download_concurrency="1")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    completed = {r["media_id"]: r for r in records if r["event"] == "row_completed"}
    assert set(completed) == {first, second}
    for record in completed.values():
        assert record["level"] == "info"
        assert record["stage"] == "download"
        assert record["bytes"] == len(data)
        assert 0 <= record["seconds"] < 30
    # One of the two stored the bytes, the other found them stored.
    assert sorted(r["deduplicated"] for r in completed.values()) == [False, True]


async def test_console_lines_stay_one_line_each(
    pool: asyncpg.Pool[Any], db_url: str, origin: Origin, tmp_path: Path
) -> None:
    """In the console format each finished row is one line of plain key=value pairs, and a
    failure still logs its own line."""
    good = [await insert(pool, origin.serve(f"/{i}.png", media.png(seed=i))) for i in range(3)]
    gone = await insert(pool, origin.url("/nothing-here.jpg"))
    with captured_log("console") as out:
        await download_once(db_url, tmp_path / "media")
    lines = out.getvalue().splitlines()
    completed = [line for line in lines if " row_completed " in line]
    assert len(completed) == 3
    for media_id, line in zip(sorted(good), sorted(completed, key=_media_id), strict=True):
        assert f"media_id={media_id}" in line
        assert re.search(r"\bstage=download\b", line)
        assert re.search(r"\bseconds=\d+\.?\d*\b", line)
        assert re.search(r"\bbytes=\d+\b", line)
        assert "deduplicated=False" in line
        assert "{" not in line
    assert any(" row_failed " in line and f"media_id={gone}" in line for line in lines)


def _media_id(line: str) -> str:
    match = re.search(r"media_id=(\S+)", line)
    assert match is not None
    return match.group(1)


async def test_progress_says_what_was_done_and_due_and_nothing_when_idle(
    pool: asyncpg.Pool[Any],
) -> None:
    """Before a run the line says what is due; after it, what each stage completed; once
    nothing happens, no line at all. The console line is one line of plain pairs."""
    await insert_rows(pool, 5)
    config = make_config()
    stage = Stage.configured(stages.DOWNLOAD, noop, config)
    queue = StageQueue(pool, stage, "w1", 60.0, disabled=stages.disabled(config))
    stage_pool = StagePool(stage, queue, backoff=Backoff(1, 2), claim_batch=10, poll_interval=3600)
    progress = Progress([stage_pool])

    assert await progress.line() == {
        "interval_seconds": pytest.approx(0, abs=5),
        "download": {"in_flight": 0, "due": 5},
    }

    stop = asyncio.Event()
    running = asyncio.create_task(stage_pool.run(stop, grace=5))
    await asyncio.wait_for(stage_pool.idle.wait(), timeout=20)
    stop.set()
    await asyncio.wait_for(running, timeout=20)

    with captured_log("console") as out:
        await progress.log_line()
    [line] = out.getvalue().splitlines()
    assert " progress " in line
    assert "download.completed=5" in line and "download.due=0" in line
    assert "{" not in line
    assert await progress.line() is None
