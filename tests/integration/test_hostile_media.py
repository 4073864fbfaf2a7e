"""Hostile media against the real download stage: decoders run in worker processes, so a killed
or hung decode costs its own row an attempt, a burst of decompression bombs queues within the
decode memory budget, and the daemon and every other row carry on."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mediad import daemon
from mediad.media import decoders
from tests import media
from tests.acceptance.test_run import daemon_env
from tests.origin import Origin, serving
from tests.support import event_names, insert_urls, make_config, row, wait_for

ALLOWED = "127.0.0.1/32"


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    async with serving() as served:
        yield served


@pytest.fixture
def stalling(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Probes stall until `<root>/stall/done` exists, each writing its worker's pid there."""
    monkeypatch.setitem(decoders.TASKS, "probe", "tests.hostile_decoders:stalling_probe")
    control = root / "stall"
    control.mkdir(parents=True)
    return control


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path.resolve() / "media"


def stalled_pids(control: Path) -> list[int]:
    return [int(p.name) for p in control.iterdir() if p.name.isdigit()]


async def statuses(pool: asyncpg.Pool[Any], ids: list[str]) -> list[str]:
    return [r["download_status"] for r in await pool.fetch(
        "SELECT download_status FROM post_media WHERE media_id = ANY($1)", ids
    )]  # fmt: skip


async def test_a_decoder_killed_mid_decode_costs_its_row_one_retry(
    db_url: str, pool: asyncpg.Pool[Any], origin: Origin, root: Path, stalling: Path
) -> None:
    """SIGKILL of a decoder worker while it probes: that row is retried (decoder_crashed) and
    completes, the daemon stays up, and every other row completes untouched. (PNGs: a photo held
    in memory is walked in the daemon, no decoder worker probes it.)"""
    urls = [
        origin.serve(f"/p{i}.png", media.png(seed=i), content_type="image/png") for i in range(4)
    ]
    ids = await insert_urls(pool, urls)
    cfg = make_config(
        storage_root=str(root), download_allowed_networks=ALLOWED,
        daemon_backoff_base="0.1s", daemon_backoff_max="0.2s",
    )  # fmt: skip
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(cfg, url=db_url, stop=stop))
    try:

        async def stalled() -> bool:
            return bool(stalled_pids(stalling))

        await wait_for(stalled, within=30)
        os.kill(stalled_pids(stalling)[0], signal.SIGKILL)
        (stalling / "done").write_text("go")

        async def all_completed() -> bool:
            return set(await statuses(pool, ids)) == {"completed"}

        await wait_for(all_completed, within=30)
        assert not running.done(), "the daemon stopped"
    finally:
        stop.set()
        await running
    crashed = []
    for media_id in ids:
        log = (await row(pool, media_id))["ai_analysis_log"]
        assert event_names(log).count("media_downloaded") == 1
        codes = [e["details"].get("error_code") for e in log if e["event"] == "retry_scheduled"]
        if codes:
            assert codes == ["decoder_crashed"]
            crashed.append(media_id)
    assert len(crashed) == 1


async def test_a_decode_past_its_time_limit_fails_its_row(
    db_url: str, pool: asyncpg.Pool[Any], origin: Origin, root: Path, stalling: Path
) -> None:
    """A decode that runs past media.decode_timeout is killed: decode_timeout, retried once,
    failed the second time, while another picture still completes."""
    [stuck] = await insert_urls(pool, [origin.serve("/stuck.png", media.png(seed=1))])
    cfg = make_config(
        storage_root=str(root), download_allowed_networks=ALLOWED, media_decode_timeout="1s",
        daemon_backoff_base="0.1s", daemon_backoff_max="0.2s",
    )  # fmt: skip
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(cfg, url=db_url, stop=stop))
    try:

        async def failed() -> bool:
            return await statuses(pool, [stuck]) == ["failed"]

        await wait_for(failed, within=30)
        (stalling / "done").write_text("go")
        [fine] = await insert_urls(pool, [origin.serve("/fine.png", media.png(seed=2))])

        async def completed() -> bool:
            return await statuses(pool, [fine]) == ["completed"]

        await wait_for(completed, within=30)
    finally:
        stop.set()
        await running
    r = await row(pool, stuck)
    assert r["error_code"] == "decode_timeout"
    log = r["ai_analysis_log"]
    assert [e["details"]["error_code"] for e in log if e["event"] == "retry_scheduled"] == [
        "decode_timeout"
    ]
    assert log[-1]["event"] == "download_failed"


@functools.cache
def bomb() -> bytes:
    return media.huge_png(13000, 13000)


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants, now."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += rss.get(current, 0)
        todo += children.get(current, [])
    return total


@pytest.mark.parametrize("processes", [1, 2])
async def test_decompression_bombs_queue_within_the_memory_budget(
    db_url: str, pool: asyncpg.Pool[Any], origin: Origin, tmp_path: Path, processes: int
) -> None:
    """Four 13000x13000 RGBA PNGs (0.7 MB each on the wire, 676 MB each decoded) beside 40
    photos, in one `mediad run --once`: the whole daemon, decoder workers included, stays under
    1.2 GB resident, and every file is stored. With two processes, each claims a bomb among its
    first rows: their decodes, each over its process's share of the budget, take turns."""
    photos = [origin.serve(f"/photo{i}.jpg", media.jpeg(640, 480, seed=i)) for i in range(40)]
    urls = []
    for i in range(4):
        urls.append(origin.serve(f"/bomb{i}.png", bomb(), content_type="image/png"))
        urls += photos[i * 10 : i * 10 + 10]
    ids = await insert_urls(pool, urls)
    env = daemon_env(
        db_url, tmp_path, MEDIAD_LOG_LEVEL="warning", MEDIAD_DAEMON_PROCESSES=str(processes)
    )
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mediad", "run", "--once", env=env, stdout=log, stderr=log
        )
        peak = 0
        deadline = time.monotonic() + 240
        # Sampled every 20 ms: the peak is held for the seconds a bomb takes to decode.
        while proc.returncode is None and time.monotonic() < deadline:
            peak = max(peak, tree_rss(proc.pid))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=0.02)
    assert proc.returncode == 0, log_path.read_text()[-2000:]
    assert set(await statuses(pool, ids)) == {"completed"}
    print(f"peak RSS of the daemon and its decoders: {peak / 1e6:.0f} MB")
    assert peak < 1.2e9, f"peak RSS {peak / 1e6:.0f} MB"
