"""`mediad run` with daemon.processes = 2: a parent and two worker processes, as operators run
it (a subprocess speaking systemd's protocol, stopped by signal)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from mediad import supervisor
from tests import media
from tests import origin as test_origin
from tests.acceptance.test_run import (  # noqa: F401 - `origin` is a fixture
    NotifySocket,
    Origin,
    daemon_env,
    origin,
    start_daemon,
)
from tests.http_support import parse, value
from tests.nginx_support import free_port
from tests.support import event_names, insert_rows, row, wait_for

JPEG = media.jpeg_with_exif(seed=3)


async def _statuses(pool: asyncpg.Pool[Any], ids: list[str]) -> Counter[str]:
    records = await pool.fetch(
        "SELECT download_status FROM post_media WHERE media_id = ANY($1)", ids
    )
    return Counter(r["download_status"] for r in records)


async def _claimed_by(pool: asyncpg.Pool[Any]) -> set[str]:
    """The workers (lease owners) that claimed any row, from the rows' events."""
    return {
        e["details"]["worker"]
        for r in await pool.fetch("SELECT ai_analysis_log FROM post_media")
        for e in r["ai_analysis_log"]
        if e["event"] == "download_started"
    }


async def _owners(pool: asyncpg.Pool[Any], ids: list[str]) -> dict[str, str]:
    records = await pool.fetch(
        "SELECT media_id, download_lease_owner FROM post_media WHERE media_id = ANY($1)", ids
    )
    return {r["media_id"]: r["download_lease_owner"] for r in records}


async def test_two_processes_drain_500_rows_each_processed_once(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """`run --once` with two processes downloads every row exactly once, in both processes,
    and exits 0 when the queue is drained."""
    async with test_origin.serving(decoys=()) as server:
        for i in range(500):
            server.serve(f"/p/{i}.jpg", JPEG, content_type="image/jpeg")
        ids = await insert_rows(pool, 500, url=server.url("/p/{i}.jpg"))
        env = daemon_env(db_url, tmp_path, MEDIAD_DAEMON_PROCESSES="2",
                         MEDIAD_DAEMON_CLAIM_BATCH="10")  # fmt: skip
        proc = await start_daemon(env, "--once")
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode == 0, output.decode()[-3000:]
    assert await _statuses(pool, ids) == {"completed": 500}
    for record in await pool.fetch("SELECT ai_analysis_log FROM post_media"):
        events = Counter(event_names(record["ai_analysis_log"]))
        assert events["download_started"] == 1 and events["media_downloaded"] == 1, events
    assert len(await _claimed_by(pool)) == 2
    assert server.count("/p/0.jpg") == 1


async def test_run_once_starts_no_more_workers_than_its_backlog_keeps_busy(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """One row due and two processes configured: `run --once` starts one worker (a second would
    import everything and idle to the end); the row goes through every stage in it, and the
    run exits 0."""
    async with test_origin.serving(decoys=()) as server:
        server.serve("/p/0.jpg", JPEG, content_type="image/jpeg")
        ids = await insert_rows(pool, 1, url=server.url("/p/{i}.jpg"))
        env = daemon_env(db_url, tmp_path, MEDIAD_DAEMON_PROCESSES="2")
        proc = await start_daemon(env, "--once")
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=180)
    text = output.decode()
    assert proc.returncode == 0, text[-3000:]
    started = [json.loads(line) for line in text.splitlines() if '"supervisor_started"' in line]
    assert [record["processes"] for record in started] == [1], text[-3000:]
    assert '"workers_for_backlog"' in text
    assert await _statuses(pool, ids) == {"completed": 1}


async def test_sigterm_drains_both_processes(
    db_url: str,
    pool: asyncpg.Pool[Any],
    origin: Origin,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """SIGTERM reaches both workers: each finishes what finishes within the grace, hands back
    the rest, and the parent exits 0; systemd hears READY=1 once both are up."""
    ids = await insert_rows(pool, 4, url=origin.url + "/hold/{i}.jpg")
    notify = NotifySocket(tmp_path / "notify.sock")
    env = daemon_env(
        db_url,
        tmp_path,
        MEDIAD_DAEMON_PROCESSES="2",
        # Two rows in each process.
        MEDIAD_DOWNLOAD_CONCURRENCY="4",
        MEDIAD_DAEMON_SHUTDOWN_GRACE="2s",
        NOTIFY_SOCKET=str(notify.path),
        WATCHDOG_USEC="1000000",
    )
    proc = await start_daemon(env)
    lines: list[bytes] = []

    async def collect() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            lines.append(line)

    collector = asyncio.create_task(collect())
    try:
        # Two spawned interpreters import everything: slow on a busy machine.
        await notify.wait_for("READY=1", within=180)
        for i in range(4):
            await asyncio.wait_for(origin.event(origin.arrived, f"{i}.jpg").wait(), 60)
        await notify.wait_for("WATCHDOG=1", within=60)
        status = await notify.wait_for("STATUS=2/2 processes; download: 4 in flight", within=60)
        assert "0 done" in status
        owners = await _owners(pool, ids)
        assert len(set(owners.values())) == 2, owners
        # One row of each process finishes after the signal; the other of each never does.
        finishing = {owner: media_id for media_id, owner in owners.items()}
        proc.send_signal(signal.SIGTERM)
        await notify.wait_for("STOPPING=1", within=60)
        for media_id in finishing.values():
            origin.event(origin.release, f"{ids.index(media_id)}.jpg").set()
        await asyncio.wait_for(proc.wait(), timeout=60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        notify.close()
    await collector
    output = b"".join(lines)
    assert proc.returncode == 0, output.decode()[-3000:]
    for media_id in ids:
        record = await row(pool, media_id)
        if media_id in finishing.values():
            assert record["download_status"] == "completed"
        else:
            assert record["download_status"] == "not_started"
            assert record["download_lease_owner"] is None
            assert event_names(record["ai_analysis_log"])[-1] == "download_released"
    text = output.decode()
    # The parent heard it, and each worker once from the parent.
    assert text.count('"event": "stopping"') == 3, text[-3000:]


async def test_a_killed_worker_is_restarted_and_its_rows_complete(
    db_url: str,
    pool: asyncpg.Pool[Any],
    origin: Origin,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """SIGKILL to one worker: the parent starts another, the dead one's row returns through
    its lease and completes; the other worker's row was never disturbed."""
    ids = await insert_rows(pool, 2, url=origin.url + "/hold/{i}.jpg")
    env = daemon_env(
        db_url,
        tmp_path,
        MEDIAD_DAEMON_PROCESSES="2",
        MEDIAD_DOWNLOAD_CONCURRENCY="2",  # one row in each process
        MEDIAD_DAEMON_LEASE="3s",
        MEDIAD_DAEMON_POLL_INTERVAL="1s",
    )
    proc = await start_daemon(env)
    try:
        for i in range(2):
            # Two spawned interpreters import everything: slow on a busy machine.
            await asyncio.wait_for(origin.event(origin.arrived, f"{i}.jpg").wait(), 180)
        owners = await _owners(pool, ids)
        victim_owner = owners[ids[0]]
        assert victim_owner != owners[ids[1]]
        victim_pid = int(victim_owner.split(":")[-2])
        os.kill(victim_pid, signal.SIGKILL)
        origin.event(origin.arrived, "0.jpg").clear()
        # The row's next fetch comes from a new worker, once the dead one's lease lapsed.
        await asyncio.wait_for(origin.event(origin.arrived, "0.jpg").wait(), 180)
        for i in range(2):
            origin.event(origin.release, f"{i}.jpg").set()
        await wait_for(lambda: _all_completed(pool, ids), within=60)
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, output.decode()[-3000:]
    victim = await row(pool, ids[0])
    started = [e for e in victim["ai_analysis_log"] if e["event"] == "download_started"]
    assert [e["details"]["attempt"] for e in started] == [1, 2]
    assert started[1]["details"]["reclaimed_from"] == victim_owner
    assert int(started[1]["details"]["worker"].split(":")[-2]) != victim_pid
    other = await row(pool, ids[1])
    assert event_names(other["ai_analysis_log"]).count("download_started") == 1
    assert '"worker_died"' in output.decode()


async def _all_completed(pool: asyncpg.Pool[Any], ids: list[str]) -> bool:
    return await _statuses(pool, ids) == {"completed": len(ids)}


async def test_per_host_limit_holds_across_processes(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """per_host_concurrency is the host's, not each process's: two processes with 8 download
    slots each never have more than 3 requests at one origin in flight, and do reach 3."""
    notify = NotifySocket(tmp_path / "notify.sock")
    async with test_origin.serving(decoys=()) as server:
        for i in range(40):
            # Far enough away that fetches overlap.
            server.route(f"/p/{i}.jpg", test_origin.slow(JPEG, 0.1))
        env = daemon_env(
            db_url,
            tmp_path,
            MEDIAD_DAEMON_PROCESSES="2",
            MEDIAD_DOWNLOAD_CONCURRENCY="16",
            MEDIAD_DOWNLOAD_PER_HOST_CONCURRENCY="3",
            MEDIAD_DAEMON_CLAIM_BATCH="2",
            NOTIFY_SOCKET=str(notify.path),
        )
        proc = await start_daemon(env)
        try:
            # Both workers are up before there is anything to take, so both take rows.
            await notify.wait_for("READY=1", within=180)
            ids = await insert_rows(pool, 40, url=server.url("/p/{i}.jpg"))
            await wait_for(lambda: _all_completed(pool, ids), within=120)
            proc.send_signal(signal.SIGTERM)
            output, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            notify.close()
    assert proc.returncode == 0, output.decode()[-3000:]
    assert len(await _claimed_by(pool)) == 2
    assert server.most_active == 3


async def test_one_endpoint_serves_the_counters_of_both_processes(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """With two processes and http.listen on, /metrics counts the rows both workers completed
    (worker 0 serves it; the other's counters reach it through the multiprocess files)."""
    port = free_port()
    async with (
        test_origin.serving(decoys=()) as server,
        aiohttp.ClientSession() as session,
    ):
        for i in range(60):
            server.serve(f"/m/{i}.jpg", JPEG, content_type="image/jpeg")
        env = daemon_env(db_url, tmp_path, MEDIAD_DAEMON_PROCESSES="2",
                         MEDIAD_DAEMON_CLAIM_BATCH="5", MEDIAD_DOWNLOAD_CONCURRENCY="4",
                         MEDIAD_HTTP_LISTEN=f"127.0.0.1:{port}")  # fmt: skip
        notify = NotifySocket(tmp_path / "notify.sock")
        env["NOTIFY_SOCKET"] = str(notify.path)
        proc = await start_daemon(env)
        try:
            await notify.wait_for("READY=1", within=180)
            ids = await insert_rows(pool, 60, url=server.url("/m/{i}.jpg"))

            async def all_done() -> bool:
                return await _statuses(pool, ids) == {"completed": 60}

            await wait_for(all_done, within=120)
            assert len(await _claimed_by(pool)) == 2

            async def counted() -> float:
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    assert response.status == 200
                    samples = parse(await response.text())
                return value(samples, "mediad_outcomes_total", stage="download",
                             status="completed", error_code="")  # fmt: skip

            # Outcomes are counted when their batch is written, a moment after the rows say so.
            async def all_counted() -> bool:
                return await counted() == 60

            await wait_for(all_counted, within=30)
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.communicate(), timeout=120)
            notify.close()
    assert proc.returncode == 0


async def test_run_once_gives_up_on_workers_that_never_start(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """A worker process that dies as soon as it starts (here: every spawned child of the parent
    exits 3 at interpreter start-up, as with an install broken for them alone) is restarted with
    backoff; under run --once, after ONCE_DEATHS such deaths in a row the run ends with exit 1,
    naming why, instead of waiting for ever for a drain that cannot come. No row is touched."""
    ids = await insert_rows(pool, 3)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sitecustomize.py").write_text(
        "import os, sys\nif '--multiprocessing-fork' in sys.orig_argv:\n    os._exit(3)\n"
    )
    path = os.pathsep.join([str(broken), os.environ.get("PYTHONPATH", "")])
    env = daemon_env(db_url, tmp_path, MEDIAD_DAEMON_PROCESSES="2", PYTHONPATH=path)
    proc = await start_daemon(env, "--once")
    output, _ = await asyncio.wait_for(proc.communicate(), timeout=180)
    text = output.decode()
    assert proc.returncode == 1, text[-3000:]
    assert text.count('"event": "worker_died"') >= supervisor.ONCE_DEATHS - 1, text[-3000:]
    assert '"event": "workers_failing"' in text
    assert "died 5 times in a row" in text
    assert await _statuses(pool, ids) == {"not_started": 3}


async def test_a_worker_refusing_the_config_stops_the_daemon_with_its_error(
    db_url: str, tmp_path: Path
) -> None:
    """A worker that cannot start (worker 0 serves http.listen, and its port is taken) is not
    restarted for ever: the daemon exits with the worker's error, as a single process does."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = daemon_env(db_url, tmp_path, MEDIAD_DAEMON_PROCESSES="2",
                         MEDIAD_HTTP_LISTEN=f"127.0.0.1:{port}")  # fmt: skip
        proc = await start_daemon(env)
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    text = output.decode()
    assert proc.returncode == 2, text[-3000:]
    assert f"mediad: config: http.listen: cannot listen on 127.0.0.1:{port}" in text
    assert "worker_died" not in text  # stopped, not restarted
